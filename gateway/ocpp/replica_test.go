package ocpp_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	ocpp16 "github.com/lorenzodonini/ocpp-go/ocpp1.6"
	"github.com/lorenzodonini/ocpp-go/ocpp1.6/core"
	types16 "github.com/lorenzodonini/ocpp-go/ocpp1.6/types"
	ocpp201 "github.com/lorenzodonini/ocpp-go/ocpp2.0.1"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/provisioning"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/transactions"
	types201 "github.com/lorenzodonini/ocpp-go/ocpp2.0.1/types"

	"github.com/telegate/telegate/decoders/wire"
	simocpp "github.com/telegate/telegate/firmware-sim/ocpp"
	"github.com/telegate/telegate/gateway/ocpp"
	"github.com/telegate/telegate/internal/ocpptest"
	"github.com/telegate/telegate/internal/testenv"
)

// clock is the central systems' clock: the test's messages are from 2031.
func clock() time.Time { return time.Date(2031, 3, 14, 10, 0, 0, 0, time.UTC) }

// replicas starts a 3-node NATS cluster with the OCPP bucket and stream
// (3 replicas) and returns a function starting a central system connected
// to node i (the gateway replica "on node i").
func replicas(t *testing.T, stations ...string) func(node int) *ocpptest.Harness {
	t.Helper()
	c := testenv.StartNATSCluster(t, 3)
	ocpptest.DeclareNATS(t, c.JetStream(t, 0), 3)
	return func(node int) *ocpptest.Harness {
		return ocpptest.Start(t, ocpptest.Options{Stations: stations, NATS: c.Connect(t, node), Now: clock})
	}
}

func sessions(h *ocpptest.Harness) []*wire.ChargingSession {
	var out []*wire.ChargingSession
	for _, r := range h.Records() {
		if r.Session != nil {
			out = append(out, r.Session)
		}
	}
	return out
}

// A 1.6J station runs a transaction on replica A; the gateway restarts
// (replica B, another NATS node, same ocpp_txn bucket); the station replays
// its queued Start and MeterValues, then stops: no second start, the stop's
// energy uses the start register recorded by A. After another restart
// (replica C) the replayed Start, MeterValues and Stop resurrect nothing.
// Meter values sent to A before a start reach B's start record.
func TestTxnTableSurvivesRestart16(t *testing.T) {
	const st = "CS-R16"
	start := replicas(t, st)
	t0 := time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)
	var stop func()
	connect := func(h *ocpptest.Harness) ocpp16.ChargePoint {
		t.Helper()
		cp := ocpp16.NewChargePoint(st, nil, basic(st))
		if err := cp.Start(h.URL); err != nil {
			t.Fatal(err)
		}
		stop = sync.OnceFunc(cp.Stop)
		t.Cleanup(stop)
		if _, err := cp.BootNotification("sim", "telegate"); err != nil {
			t.Fatal(err)
		}
		return cp
	}
	mv := []types16.MeterValue{{Timestamp: types16.NewDateTime(t0.Add(time.Minute)), SampledValue: []types16.SampledValue{
		{Value: "4.5", Measurand: types16.MeasurandEnergyActiveImportRegister, Unit: types16.UnitOfMeasureKWh}}}}
	plugged := []types16.MeterValue{{Timestamp: types16.NewDateTime(t0), SampledValue: []types16.SampledValue{
		{Value: "40", Measurand: types16.MeasurandSoC, Unit: types16.UnitOfMeasurePercent},
		{Value: "11000", Measurand: types16.MeasurandPowerActiveImport, Unit: types16.UnitOfMeasureW}}}}

	a := start(0)
	cp := connect(a)
	begin, err := cp.StartTransaction(1, "TAG16", 1000, types16.NewDateTime(t0))
	if err != nil {
		t.Fatal(err)
	}
	txID := begin.TransactionId
	withTx := func(r *core.MeterValuesRequest) { r.TransactionId = &txID }
	if _, err := cp.MeterValues(1, mv, withTx); err != nil {
		t.Fatal(err)
	}
	// Connector 2: a car plugged in, its SoC reported before the start.
	if _, err := cp.MeterValues(2, plugged); err != nil {
		t.Fatal(err)
	}
	if got := len(sessions(a)); got != 2 {
		t.Fatalf("replica A: %d session records, want 2 (started, updated)", got)
	}
	stop()
	a.Stop()

	b := start(1)
	cp = connect(b)
	again, err := cp.StartTransaction(1, "TAG16", 1000, types16.NewDateTime(t0))
	if err != nil || again.TransactionId != txID {
		t.Fatalf("replayed start on B: %v, id %d want %d", err, again.TransactionId, txID)
	}
	if _, err := cp.MeterValues(1, mv, withTx); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.StopTransaction(9000, types16.NewDateTime(t0.Add(2*time.Minute)), txID); err != nil {
		t.Fatal(err)
	}
	second, err := cp.StartTransaction(2, "TAG16", 0, types16.NewDateTime(t0.Add(3*time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	got := sessions(b)
	if len(got) != 2 || got[0].Kind != wire.SessionStopped || got[1].Kind != wire.SessionStarted {
		t.Fatalf("replica B: %d records %+v, want stopped, started", len(got), got)
	}
	if got[0].EnergyWh != 8000 {
		t.Fatalf("stopped energy on B: %v Wh, want 8000 (meterStart from A)", got[0].EnergyWh)
	}
	if got[1].SoCPct != 40 || got[1].PowerW != 11000 || string(got[1].SessionID) == "" {
		t.Fatalf("start on B after the plug-in report to A: %+v", got[1])
	}
	_ = second
	stop()
	b.Stop()

	c := start(2)
	cp = connect(c)
	if _, err := cp.StartTransaction(1, "TAG16", 1000, types16.NewDateTime(t0)); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.MeterValues(1, mv, withTx); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.StopTransaction(9000, types16.NewDateTime(t0.Add(2*time.Minute)), txID); err != nil {
		t.Fatal(err)
	}
	if got := sessions(c); len(got) != 0 {
		t.Fatalf("replica C: replays stored %d records %+v, want none", len(got), got)
	}
}

// The same for 2.0.1: TransactionEvents replayed with offline=true and
// their seqNos after a restart store nothing; new events of the running
// transaction measure energy from A's start register; after Ended, the
// replayed events resurrect nothing on a third replica.
func TestTxnTableSurvivesRestart201(t *testing.T) {
	const st = "CS-R201"
	start := replicas(t, st)
	t0 := time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)
	var stop func()
	connect := func(h *ocpptest.Harness) ocpp201.ChargingStation {
		t.Helper()
		cs := ocpp201.NewChargingStation(st, nil, basic(st))
		if err := cs.Start(h.URL); err != nil {
			t.Fatal(err)
		}
		stop = sync.OnceFunc(cs.Stop)
		t.Cleanup(stop)
		if _, err := cs.BootNotification(provisioning.BootReasonPowerUp, "sim", "telegate"); err != nil {
			t.Fatal(err)
		}
		return cs
	}
	ev := func(cs ocpp201.ChargingStation, typ transactions.TransactionEvent, seq int, offline bool, kwh float64) {
		t.Helper()
		req := transactions.NewTransactionEventRequest(typ, types201.NewDateTime(t0.Add(time.Duration(seq)*time.Minute)),
			transactions.TriggerReasonAuthorized, seq, transactions.Transaction{TransactionID: "TX-R201"})
		req.Offline = offline
		req.Evse = &types201.EVSE{ID: 1}
		req.IDToken = &types201.IdToken{IdToken: "TAG201", Type: types201.IdTokenTypeISO14443}
		req.MeterValue = []types201.MeterValue{{Timestamp: *types201.NewDateTime(t0), SampledValue: []types201.SampledValue{
			{Value: kwh, Measurand: types201.MeasurandEnergyActiveImportRegister, UnitOfMeasure: &types201.UnitOfMeasure{Unit: "kWh"}}}}}
		if _, err := cs.SendRequest(req); err != nil {
			t.Fatal(err)
		}
	}
	a := start(0)
	cs := connect(a)
	ev(cs, transactions.TransactionEventStarted, 0, false, 10)
	ev(cs, transactions.TransactionEventUpdated, 1, false, 12)
	if got := len(sessions(a)); got != 2 {
		t.Fatalf("replica A: %d records, want 2", got)
	}
	stop()
	a.Stop()

	b := start(1)
	cs = connect(b)
	ev(cs, transactions.TransactionEventStarted, 0, true, 10)
	ev(cs, transactions.TransactionEventUpdated, 1, true, 12)
	if got := sessions(b); len(got) != 0 {
		t.Fatalf("replica B: offline replay stored %+v", got)
	}
	ev(cs, transactions.TransactionEventUpdated, 2, true, 13)
	ev(cs, transactions.TransactionEventEnded, 3, false, 15)
	got := sessions(b)
	if len(got) != 2 || got[0].EnergyWh != 3000 || got[1].Kind != wire.SessionStopped || got[1].EnergyWh != 5000 {
		t.Fatalf("replica B: %+v, want updated 3000 Wh and stopped 5000 Wh (start register from A)", got)
	}
	stop()
	b.Stop()

	c := start(2)
	cs = connect(c)
	for seq, kwh := range []float64{10, 12, 13, 15} {
		typ := transactions.TransactionEventUpdated
		switch seq {
		case 0:
			typ = transactions.TransactionEventStarted
		case 3:
			typ = transactions.TransactionEventEnded
		}
		ev(cs, typ, seq, true, kwh)
	}
	if got := sessions(c); len(got) != 0 {
		t.Fatalf("replica C: replays of a stopped transaction stored %+v", got)
	}
}

// Two replicas: a station holds its socket on A; an operator's command on
// B is routed to A and answered by the station; both replicas list the
// result (from the CHARGING stream). A registered but unconnected station
// is ErrOffline at once (no replica subscribed: no responders).
func TestCommandRoutedToHoldingReplica(t *testing.T) {
	const st, away = "CS-CMD1", "CS-CMD2"
	start := replicas(t, st, away)
	a, b := start(0), start(1)
	station, err := simocpp.New(simocpp.Config{URL: a.URL, ID: st, Version: simocpp.V16, Secret: ocpptest.Secret(st),
		Seed: 5, ChargeEvery: -1, MeterInterval: time.Second, Retry: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = station.Run(runCtx)
	}()
	defer func() { stop(); wg.Wait() }()
	waitFor(t, ctx, func() bool { _, ok := a.Central.Mux.Connected(st); return ok })

	var res ocpp.CommandResult
	waitFor(t, ctx, func() bool { // A subscribes right after the connect
		res, err = b.Central.Send(ctx, st, ocpp.Command{Action: "reset"})
		return !errors.Is(err, ocpp.ErrOffline)
	})
	if err != nil || res.Status != "Accepted" || res.Station != st || res.Version != "ocpp1.6" {
		t.Fatalf("routed reset: %+v %v", res, err)
	}
	if _, err := b.Central.Send(ctx, st, ocpp.Command{Action: "launch"}); !errors.Is(err, ocpp.ErrBadCommand) {
		t.Fatalf("routed bad command: %v, want ErrBadCommand", err)
	}
	if _, err := b.Central.Send(ctx, away, ocpp.Command{Action: "reset"}); !errors.Is(err, ocpp.ErrOffline) {
		t.Fatalf("unconnected station: %v, want ErrOffline", err)
	}
	for name, h := range map[string]*ocpptest.Harness{"A": a, "B": b} {
		waitFor(t, ctx, func() bool {
			rs := h.Central.Results()
			return len(rs) == 1 && rs[0].Status == "Accepted" && rs[0].Action == "reset"
		})
		_ = name
	}
}

// waitFor polls cond until it holds or ctx ends (a test bound, not a
// timing assertion).
func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not reached")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// A station's half-open socket on replica A (held open and silent by a raw
// client) and its reconnect to replica B: B's claim in the sessions bucket
// makes A close its socket (1008 "taken over by another replica"), A no
// longer lists the station while B does, and a command sent through A
// reaches the station on B.
func TestStationTakeoverAcrossReplicas(t *testing.T) {
	const st = "CS-TAKE"
	start := replicas(t, st)
	a, b := start(0), start(1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	hdr := http.Header{}
	hdr.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(st+":"+ocpptest.Secret(st))))
	d := websocket.Dialer{Subprotocols: []string{"ocpp1.6"}, HandshakeTimeout: 10 * time.Second}
	stale, _, err := d.DialContext(ctx, a.URL+"/"+st, hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Close()
	waitFor(t, ctx, func() bool { return a.Presence.Stats().Claims.Load() == 1 })

	station, err := simocpp.New(simocpp.Config{URL: b.URL, ID: st, Version: simocpp.V16, Secret: ocpptest.Secret(st),
		Seed: 7, ChargeEvery: -1, MeterInterval: time.Second, Retry: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = station.Run(runCtx)
	}()
	defer func() { stop(); wg.Wait() }()

	// The stale socket gets the close frame (bounded wait, not a timing claim).
	_ = stale.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, _, err = stale.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != "taken over by another replica" {
		t.Fatalf("stale socket on A: %v, want close 1008 taken over by another replica", err)
	}
	waitFor(t, ctx, func() bool { _, ok := a.Central.Mux.Connected(st); return !ok })
	if _, ok := b.Central.Mux.Connected(st); !ok {
		t.Fatal("B lost the station's new socket")
	}
	if a.Presence.Stats().TakenOver.Load() != 1 || b.Presence.Stats().TakenOver.Load() != 0 {
		t.Fatalf("taken over: A %d, B %d", a.Presence.Stats().TakenOver.Load(), b.Presence.Stats().TakenOver.Load())
	}
	var res ocpp.CommandResult
	waitFor(t, ctx, func() bool {
		res, err = a.Central.Send(ctx, st, ocpp.Command{Action: "reset"})
		return !errors.Is(err, ocpp.ErrOffline)
	})
	if err != nil || res.Status != "Accepted" || res.Station != st {
		t.Fatalf("reset sent through A: %+v %v", res, err)
	}
	if _, ok := b.Central.Mux.Connected(st); !ok {
		waitFor(t, ctx, func() bool { _, ok := b.Central.Mux.Connected(st); return ok }) // the reset reboots the station onto B
	}
	if _, ok := a.Central.Mux.Connected(st); ok {
		t.Fatal("A holds the station again")
	}
}
