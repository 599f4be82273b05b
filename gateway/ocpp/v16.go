package ocpp

import (
	"encoding/json"
	"strconv"
	"strings"

	ocpp16 "github.com/lorenzodonini/ocpp-go/ocpp"
	cs16 "github.com/lorenzodonini/ocpp-go/ocpp1.6"
	"github.com/lorenzodonini/ocpp-go/ocpp1.6/core"
	"github.com/lorenzodonini/ocpp-go/ocpp1.6/types"
	"github.com/lorenzodonini/ocpp-go/ocppj"
	"github.com/lorenzodonini/ocpp-go/ws"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/ocpp/wsmux"
)

// known16 lists every OCPP 1.6 action (charge point to central system and
// back); anything else is answered NotImplemented.
var known16 = setOf("Authorize", "BootNotification", "DataTransfer", "DiagnosticsStatusNotification",
	"FirmwareStatusNotification", "Heartbeat", "MeterValues", "StartTransaction", "StatusNotification", "StopTransaction",
	"CancelReservation", "ChangeAvailability", "ChangeConfiguration", "ClearCache", "ClearChargingProfile", "GetCompositeSchedule",
	"GetConfiguration", "GetDiagnostics", "GetLocalListVersion", "RemoteStartTransaction", "RemoteStopTransaction", "ReserveNow",
	"Reset", "SendLocalList", "SetChargingProfile", "TriggerMessage", "UnlockConnector", "UpdateFirmware",
	"SecurityEventNotification", "SignCertificate", "SignedFirmwareStatusNotification", "LogStatusNotification",
	"CertificateSigned", "DeleteCertificate", "ExtendedTriggerMessage", "GetInstalledCertificateIds", "GetLog",
	"InstallCertificate", "SignedUpdateFirmware")

func setOf(names ...string) func(string) bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return func(s string) bool { return m[s] }
}

func (c *Central) start16() {
	v := c.Mux.Virtual(wsmux.V16)
	c.Mux.Known[wsmux.V16] = known16
	ep := ocppj.NewServer(v, nil, nil, core.Profile)
	ep.SetInvalidMessageHook(func(_ ws.Channel, err *ocpp16.Error, _ string, _ []interface{}) *ocpp16.Error {
		if err.Code == ocppj.NotSupported && strings.HasPrefix(err.Description, "Unsupported feature") {
			return ocpp16.NewError(ocppj.NotImplemented, err.Description, err.MessageId)
		}
		return nil
	})
	c.cs16 = cs16.NewCentralSystem(ep, v)
	c.cs16.SetCoreHandler(handler16{c})
	go c.cs16.Start(0, "")
}

type handler16 struct{ c *Central }

func internalErr(err error) error {
	return ocpp16.NewError(ocppj.InternalError, "record not stored, retry: "+err.Error(), "")
}

func (h handler16) OnAuthorize(_ string, r *core.AuthorizeRequest) (*core.AuthorizeConfirmation, error) {
	return core.NewAuthorizationConfirmation(types.NewIdTagInfo(types.AuthorizationStatusAccepted)), nil
}

func (h handler16) OnBootNotification(string, *core.BootNotificationRequest) (*core.BootNotificationConfirmation, error) {
	return core.NewBootNotificationConfirmation(types.NewDateTime(h.c.now()), int(h.c.HeartbeatInterval.Seconds()), core.RegistrationStatusAccepted), nil
}

func (h handler16) OnDataTransfer(string, *core.DataTransferRequest) (*core.DataTransferConfirmation, error) {
	return core.NewDataTransferConfirmation(core.DataTransferStatusUnknownVendorId), nil
}

func (h handler16) OnHeartbeat(string, *core.HeartbeatRequest) (*core.HeartbeatConfirmation, error) {
	return core.NewHeartbeatConfirmation(types.NewDateTime(h.c.now())), nil
}

func status16(s core.ChargePointStatus) uint8 {
	switch s {
	case core.ChargePointStatusAvailable:
		return wire.ConnectorAvailable
	case core.ChargePointStatusFaulted:
		return wire.ConnectorFaulted
	case core.ChargePointStatusUnavailable:
		return wire.ConnectorUnavailable
	}
	return wire.ConnectorOccupied // Preparing, Charging, Suspended*, Finishing, Reserved
}

func (h handler16) OnStatusNotification(id string, r *core.StatusNotificationRequest) (*core.StatusNotificationConfirmation, error) {
	ts := h.c.now()
	if r.Timestamp != nil {
		ts = r.Timestamp.Time
	}
	if err := h.c.storeStatus(id, clampConnector(r.ConnectorId), status16(r.Status), ts); err != nil {
		return nil, internalErr(err)
	}
	return core.NewStatusNotificationConfirmation(), nil
}

func meter16(mvs []types.MeterValue) (m meter) {
	for _, mv := range mvs {
		for _, sv := range mv.SampledValue {
			v, err := strconv.ParseFloat(sv.Value, 64)
			if err != nil {
				continue
			}
			switch sv.Measurand {
			case "", types.MeasurandEnergyActiveImportRegister:
				m.energyWh, m.hasEnergy = scale(v, string(sv.Unit)), true
			case types.MeasurandPowerActiveImport:
				m.powerW, m.hasPowr = scale(v, string(sv.Unit)), true
			case types.MeasurandSoC:
				m.soc, m.hasSoC = v, true
			}
		}
	}
	return m
}

func (h handler16) OnStartTransaction(id string, r *core.StartTransactionRequest) (*core.StartTransactionConfirmation, error) {
	ts := r.Timestamp.Time
	txID := txID16(id, r.ConnectorId, r.IdTag, ts)
	tx := strconv.Itoa(txID)
	conf := core.NewStartTransactionConfirmation(types.NewIdTagInfo(types.AuthorizationStatusAccepted), txID)
	prev, ok, err := h.c.lookup(id, tx)
	if err != nil {
		return nil, internalErr(err)
	}
	if ok && prev.Started {
		h.c.replay("session") // replayed Start: answered again, never restarted
		return conf, nil
	}
	seq := sessionSeq(wire.SessionStarted, uint64(ts.UnixMilli()))
	t := txn{Connector: clampConnector(r.ConnectorId), IDTag: r.IdTag, MeterStart: float64(r.MeterStart), HasStart: true,
		Started: true, LastSeq: seq}
	// SoC and power the connector reported since the car plugged in (1.6
	// StartTransaction carries neither).
	pl, err := h.c.takePlugged(id, t.Connector)
	if err != nil {
		return nil, internalErr(err)
	}
	err = h.c.storeSession(id, wire.ChargingSession{Seq: seq,
		TimeMs: ts.UnixMilli(), Kind: wire.SessionStarted, SessionID: wire.Ident(tx), Connector: t.Connector,
		IDTag: wire.Ident(r.IdTag), VIN: claimedVIN(r.IdTag), PowerW: pl.powerW, SoCPct: pl.soc})
	if err != nil {
		return nil, internalErr(err)
	}
	if err := h.c.setTxn(id, tx, t); err != nil {
		return nil, internalErr(err)
	}
	return conf, nil
}

func (h handler16) OnMeterValues(id string, r *core.MeterValuesRequest) (*core.MeterValuesConfirmation, error) {
	if len(r.MeterValue) == 0 {
		return core.NewMeterValuesConfirmation(), nil
	}
	if r.TransactionId == nil {
		// Not about a session: remember SoC/power of a plugged-in car for
		// the StartTransaction that follows.
		if m := meter16(r.MeterValue); m.hasSoC || m.hasPowr {
			if err := h.c.setPlugged(id, clampConnector(r.ConnectorId), m); err != nil {
				return nil, internalErr(err)
			}
		}
		return core.NewMeterValuesConfirmation(), nil
	}
	tx := strconv.Itoa(*r.TransactionId)
	t, ok, err := h.c.lookup(id, tx)
	if err != nil {
		return nil, internalErr(err)
	}
	m := meter16(r.MeterValue)
	ts := r.MeterValue[len(r.MeterValue)-1].Timestamp.Time
	// The charge point's clock is untrusted (an RTC reset or step back
	// makes later readings carry earlier timestamps): a reading is a
	// replay only when its fingerprint was seen for this transaction.
	reading, err := json.Marshal(r.MeterValue)
	if err != nil {
		return nil, internalErr(err)
	}
	seq := readingSeq(tx, []byte(strconv.Itoa(r.ConnectorId)), reading)
	if ok && t.seen(seq) {
		h.c.replay("session") // the same reading again (answer lost, queue resent)
		return core.NewMeterValuesConfirmation(), nil
	}
	if !ok {
		t = txn{Connector: clampConnector(r.ConnectorId)}
	}
	s := wire.ChargingSession{Seq: seq, TimeMs: ts.UnixMilli(),
		Kind: wire.SessionUpdated, SessionID: wire.Ident(tx), Connector: t.Connector, IDTag: wire.Ident(t.IDTag), VIN: claimedVIN(t.IDTag),
		PowerW: m.powerW, SoCPct: m.soc}
	if m.hasEnergy {
		s.EnergyWh = max(m.energyWh-t.MeterStart, 0)
	}
	if t.Stopped {
		// A new reading of a stopped transaction: kept as a dead letter
		// (session_stopped), the session is not resurrected.
		err = h.c.deadLetterSession(id, s)
	} else {
		err = h.c.storeSession(id, s)
	}
	if err != nil {
		return nil, internalErr(err)
	}
	if err := h.c.setTxn(id, tx, txn{Connector: t.Connector, Seen: []uint64{seq}}); err != nil {
		return nil, internalErr(err)
	}
	return core.NewMeterValuesConfirmation(), nil
}

func (h handler16) OnStopTransaction(id string, r *core.StopTransactionRequest) (*core.StopTransactionConfirmation, error) {
	tx := strconv.Itoa(r.TransactionId)
	conf := core.NewStopTransactionConfirmation()
	t, ok, err := h.c.lookup(id, tx)
	if err != nil {
		return nil, internalErr(err)
	}
	if ok && t.Stopped {
		h.c.replay("session")
		return conf, nil
	}
	m := meter16(r.TransactionData)
	ts := r.Timestamp.Time
	idTag := t.IDTag
	if idTag == "" {
		idTag = r.IdTag
	}
	seq := sessionSeq(wire.SessionStopped, uint64(ts.UnixMilli()))
	s := wire.ChargingSession{Seq: seq, TimeMs: ts.UnixMilli(),
		Kind: wire.SessionStopped, SessionID: wire.Ident(tx), Connector: t.Connector, IDTag: wire.Ident(idTag), VIN: claimedVIN(idTag),
		EnergyWh: max(float64(r.MeterStop)-t.MeterStart, 0), SoCPct: m.soc}
	if err := h.c.storeSession(id, s); err != nil {
		return nil, internalErr(err)
	}
	if err := h.c.setTxn(id, tx, txn{IDTag: idTag, Started: true, Stopped: true, LastSeq: seq}); err != nil {
		return nil, internalErr(err)
	}
	return conf, nil
}
