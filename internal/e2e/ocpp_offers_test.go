package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	ocpp16 "github.com/lorenzodonini/ocpp-go/ocpp1.6"
	"github.com/lorenzodonini/ocpp-go/ocpp1.6/core"
	types16 "github.com/lorenzodonini/ocpp-go/ocpp1.6/types"
	ocpp201 "github.com/lorenzodonini/ocpp-go/ocpp2.0.1"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/provisioning"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/transactions"
	types201 "github.com/lorenzodonini/ocpp-go/ocpp2.0.1/types"

	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/gateway/config"
)

// withOCPPStations places CS-0002 (OCPP 1.6J) and CS-0003 (OCPP 2.0.1)
// next to the partners' venues of withServices.
func withOCPPStations(t *testing.T) envOpt {
	p := filepath.Join(t.TempDir(), "stations.yaml")
	body := "stations:\n  - {id: CS-0002, lat: 48.1391, lon: 11.5662}\n  - {id: CS-0003, lat: 48.1392, lon: 11.5664}\n"
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) { c.Services.StationsFile = p }
}

// TestOCPPPartnerOffers: a consenting driver's car charging at an OCPP
// 1.6J and at an OCPP 2.0.1 station produces partner triggers, like the
// MQTT path (TestServicesOffersEndToEnd). The stations present the
// driver's id tag bound to the customer (customers.yaml id_tags), which is
// all an OCPP station reports about who charges: the session is attributed
// to that customer's only vehicle; the 1.6 station reports SoC and power in a
// connector meter value before StartTransaction, the 2.0.1 station in its
// Started event. A driver without the partner_offers consent and an
// anonymous RFID card produce none.
func TestOCPPPartnerOffers(t *testing.T) {
	e := startEnv(t, 3, 3, withOCPP, withServices(t), withOCPPStations(t))
	s := e.gw.Services()
	vin1, vin2 := sim.VIN(sim.DefaultVINPrefix, 1), sim.VIN(sim.DefaultVINPrefix, 2)
	st16, st201 := sim.StationID(sim.DefaultStationPrefix, 2), sim.StationID(sim.DefaultStationPrefix, 3)
	cafe := e.partner("cafe", "cafe-pass")
	cafe.sub(t, "partners.cafe.>")
	t0 := time.Now().Add(-time.Minute).Truncate(time.Second)

	cp := ocpp16.NewChargePoint(st16, nil, wsClient(st16, sim.Secret(fleetKey, st16)))
	if err := cp.Start(e.ocppURL()); err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	if _, err := cp.BootNotification("sim", "telegate"); err != nil {
		t.Fatal(err)
	}
	plug := func(connector int, soc, kw string, at time.Time) {
		t.Helper()
		if _, err := cp.MeterValues(connector, []types16.MeterValue{{Timestamp: types16.NewDateTime(at), SampledValue: []types16.SampledValue{
			{Value: soc, Measurand: types16.MeasurandSoC, Unit: types16.UnitOfMeasurePercent},
			{Value: kw, Measurand: types16.MeasurandPowerActiveImport, Unit: types16.UnitOfMeasureKW}}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cp.StatusNotification(1, core.NoError, core.ChargePointStatusPreparing); err != nil {
		t.Fatal(err)
	}
	plug(1, "30", "50", t0)
	if _, err := cp.StartTransaction(1, sim.ContractID(fleetKey, vin1), 1000, types16.NewDateTime(t0)); err != nil { // consent → triggers
		t.Fatal(err)
	}
	plug(2, "40", "22", t0)
	if _, err := cp.StartTransaction(2, "RFID0A1B2C3D", 5000, types16.NewDateTime(t0)); err != nil { // no VIN → none
		t.Fatal(err)
	}

	cs := ocpp201.NewChargingStation(st201, nil, wsClient(st201, sim.Secret(fleetKey, st201)))
	if err := cs.Start(e.ocppURL()); err != nil {
		t.Fatal(err)
	}
	defer cs.Stop()
	if _, err := cs.BootNotification(provisioning.BootReasonPowerUp, "sim", "telegate"); err != nil {
		t.Fatal(err)
	}
	start201 := func(tx, tag string, evse int) {
		t.Helper()
		req := transactions.NewTransactionEventRequest(transactions.TransactionEventStarted, types201.NewDateTime(t0),
			transactions.TriggerReasonAuthorized, 0, transactions.Transaction{TransactionID: tx})
		req.Evse = &types201.EVSE{ID: evse}
		req.IDToken = &types201.IdToken{IdToken: tag, Type: types201.IdTokenTypeISO14443}
		req.MeterValue = []types201.MeterValue{{Timestamp: *types201.NewDateTime(t0), SampledValue: []types201.SampledValue{
			{Value: 1000, Measurand: types201.MeasurandEnergyActiveImportRegister},
			{Value: 25, Measurand: types201.MeasurandSoC},
			{Value: 100, Measurand: types201.MeasurandPowerActiveImport, UnitOfMeasure: &types201.UnitOfMeasure{Unit: "kW"}}}}}
		if _, err := cs.SendRequest(req); err != nil {
			t.Fatal(err)
		}
	}
	start201("TX-OFFER-1", sim.ContractID(fleetKey, vin1), 1) // consent → triggers
	start201("TX-OFFER-2", sim.ContractID(fleetKey, vin2), 2) // owner without partner_offers consent → none

	eventually(t, "OCPP sessions evaluated", func() error {
		if n := s.Offers.Stats.Sessions.Load(); n < 4 {
			return fmt.Errorf("%d sessions", n)
		}
		return nil
	})
	eventually(t, "cafe triggers", func() error {
		if tr, _, _ := cafe.triggers(); len(tr) != 2 {
			return fmt.Errorf("%d triggers", len(tr))
		}
		return nil
	})
	tr, _, _ := cafe.triggers()
	stations := []string{tr[0].Station, tr[1].Station}
	slices.Sort(stations)
	if !slices.Equal(stations, []string{st16, st201}) {
		t.Fatalf("triggers at %v", stations)
	}
	for _, x := range tr {
		if x.OfferCode != "CAFE1" || x.ExpectedDwellMin <= 0 || x.DriverToken == "" {
			t.Fatalf("trigger %+v", x)
		}
	}
	eventually(t, "no-consent and RFID sessions skipped", func() error {
		if nc, no := s.Offers.Stats.NoConsent.Load(), s.Offers.Stats.NoOwner.Load(); nc < 1 || no < 1 {
			return fmt.Errorf("no consent %d, no owner %d", nc, no)
		}
		return nil
	})
	// Every session has been decided: nothing else arrives for the cafe.
	if tr, _, _ := cafe.triggers(); len(tr) != 2 {
		t.Fatalf("%d triggers", len(tr))
	}
}
