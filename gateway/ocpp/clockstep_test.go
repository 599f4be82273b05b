package ocpp_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lorenzodonini/ocpp-go/ocpp1.6"
	"github.com/lorenzodonini/ocpp-go/ocpp1.6/core"
	types16 "github.com/lorenzodonini/ocpp-go/ocpp1.6/types"
	ocpp201 "github.com/lorenzodonini/ocpp-go/ocpp2.0.1"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/provisioning"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/transactions"
	types201 "github.com/lorenzodonini/ocpp-go/ocpp2.0.1/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/spool/record"
	"github.com/telegate/telegate/internal/ocpptest"
)

// counter reads one series of a counter from the harness registry (0 when
// the series does not exist).
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// split returns the stored session records and the dead letters.
func split(h *ocpptest.Harness) (stored []*wire.ChargingSession, dead []ocpptest.Rec) {
	for _, r := range h.Records() {
		switch {
		case r.Kind == record.KindDeadLetter:
			dead = append(dead, r)
		case r.Session != nil:
			stored = append(stored, r.Session)
		}
	}
	return stored, dead
}

func mv16(ts time.Time, kwh string) []types16.MeterValue {
	return []types16.MeterValue{{Timestamp: types16.NewDateTime(ts), SampledValue: []types16.SampledValue{
		{Value: kwh, Measurand: types16.MeasurandEnergyActiveImportRegister, Unit: types16.UnitOfMeasureKWh}}}}
}

// A 1.6J station's RTC steps back two hours in the middle of a
// transaction: its later MeterValues carry timestamps before the ones it
// already sent. Each new reading is stored (also two readings in the same
// second), each as its own record seq; an exact replay of a reading is
// deduplicated; a reading never seen before that arrives after the
// StopTransaction is dead-lettered with the session_stopped label, counted,
// and does not reopen the session.
func TestMeterValuesAfterClockStepBack16(t *testing.T) {
	const st = "CS-CLK16"
	h := ocpptest.Start(t, ocpptest.Options{Stations: []string{st}, Now: clock})
	cp := ocpp16.NewChargePoint(st, nil, basic(st))
	if err := cp.Start(h.URL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sync.OnceFunc(cp.Stop))
	if _, err := cp.BootNotification("sim", "telegate"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)
	begin, err := cp.StartTransaction(1, "TAG-CLK", 1000, types16.NewDateTime(t0))
	if err != nil {
		t.Fatal(err)
	}
	txID := begin.TransactionId
	withTx := func(r *core.MeterValuesRequest) { r.TransactionId = &txID }
	send := func(mv []types16.MeterValue) {
		t.Helper()
		if _, err := cp.MeterValues(1, mv, withTx); err != nil {
			t.Fatal(err)
		}
	}
	back := t0.Add(-2 * time.Hour) // the RTC stepped back
	send(mv16(t0.Add(10*time.Minute), "5"))
	send(mv16(back, "6"))
	send(mv16(back, "6.5")) // same second, another reading
	send(mv16(back, "6"))   // exact replay (answer lost)
	if _, err := cp.StopTransaction(7000, types16.NewDateTime(back.Add(30*time.Minute)), txID); err != nil {
		t.Fatal(err)
	}
	send(mv16(back.Add(15*time.Minute), "6.8")) // never sent before, after the stop
	send(mv16(back, "6.5"))                     // replay after the stop

	stored, dead := split(h)
	wantKinds := []uint8{wire.SessionStarted, wire.SessionUpdated, wire.SessionUpdated, wire.SessionUpdated, wire.SessionStopped}
	wantWh := []float64{0, 4000, 5000, 5500, 6000}
	if len(stored) != len(wantKinds) {
		t.Fatalf("%d session records %+v, want %d (start, 3 updates, stop)", len(stored), stored, len(wantKinds))
	}
	seqs := map[uint64]bool{}
	for i, s := range stored {
		if s.Kind != wantKinds[i] || s.EnergyWh != wantWh[i] {
			t.Fatalf("record %d: kind %d energy %v, want kind %d energy %v", i, s.Kind, s.EnergyWh, wantKinds[i], wantWh[i])
		}
		if seqs[s.Seq] {
			t.Fatalf("record %d reuses seq %d (same Nats-Msg-Id / InfluxDB point as an earlier reading)", i, s.Seq)
		}
		seqs[s.Seq] = true
	}
	if stored[2].TimeMs != back.UnixMilli() || stored[3].TimeMs != back.UnixMilli() {
		t.Fatalf("stepped-back readings keep the station's timestamps: %d, %d", stored[2].TimeMs, stored[3].TimeMs)
	}
	if len(dead) != 1 || !strings.HasPrefix(dead[0].Reason, "session_stopped") || dead[0].Session == nil ||
		dead[0].Session.Kind != wire.SessionUpdated || dead[0].Session.EnergyWh != 5800 {
		t.Fatalf("dead letters %+v, want the late reading (5800 Wh) labelled session_stopped", dead)
	}
	if n := counter(t, h.Reg, "telegate_ocpp_records_total", map[string]string{"kind": "session", "result": "replay"}); n != 2 {
		t.Fatalf("replays counted %v, want 2", n)
	}
	if n := counter(t, h.Reg, "telegate_ocpp_dead_letters_total", map[string]string{"kind": "session", "reason": "session_stopped"}); n != 1 {
		t.Fatalf("dead letters counted %v, want 1", n)
	}
}

// The 2.0.1 counterpart: ordering comes from seqNo, not the clock, but a
// station that reboots mid-transaction restarts its seqNo counter (and here
// its clock): its new Updated events reuse seqNos already stored and must
// still be stored; a replay (same seqNo, same reading, offline=true) is
// deduplicated; an Updated after Ended is dead-lettered, not dropped.
func TestTransactionEventsAfterSeqNoReset201(t *testing.T) {
	const st = "CS-CLK201"
	h := ocpptest.Start(t, ocpptest.Options{Stations: []string{st}, Now: clock})
	cs := ocpp201.NewChargingStation(st, nil, basic(st))
	if err := cs.Start(h.URL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sync.OnceFunc(cs.Stop))
	if _, err := cs.BootNotification(provisioning.BootReasonPowerUp, "sim", "telegate"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2031, 3, 14, 9, 0, 0, 0, time.UTC)
	ev := func(typ transactions.TransactionEvent, seq int, ts time.Time, offline bool, kwh float64) {
		t.Helper()
		req := transactions.NewTransactionEventRequest(typ, types201.NewDateTime(ts),
			transactions.TriggerReasonMeterValuePeriodic, seq, transactions.Transaction{TransactionID: "TX-CLK"})
		req.Offline = offline
		req.Evse = &types201.EVSE{ID: 1}
		req.MeterValue = []types201.MeterValue{{Timestamp: *types201.NewDateTime(ts), SampledValue: []types201.SampledValue{
			{Value: kwh, Measurand: types201.MeasurandEnergyActiveImportRegister, UnitOfMeasure: &types201.UnitOfMeasure{Unit: "kWh"}}}}}
		if _, err := cs.SendRequest(req); err != nil {
			t.Fatal(err)
		}
	}
	back := t0.Add(-time.Hour)
	ev(transactions.TransactionEventStarted, 0, t0, false, 10)
	ev(transactions.TransactionEventUpdated, 1, t0.Add(time.Minute), false, 12)
	ev(transactions.TransactionEventUpdated, 2, t0.Add(2*time.Minute), false, 13)
	// Reboot: seqNo and clock start over.
	ev(transactions.TransactionEventUpdated, 1, back, false, 14)
	ev(transactions.TransactionEventUpdated, 1, back, true, 14) // replay
	ev(transactions.TransactionEventEnded, 2, back.Add(time.Minute), false, 15)
	ev(transactions.TransactionEventUpdated, 3, back.Add(2*time.Minute), false, 15.5) // after Ended

	stored, dead := split(h)
	wantWh := []float64{0, 2000, 3000, 4000, 5000}
	if len(stored) != len(wantWh) {
		t.Fatalf("%d session records %+v, want %d", len(stored), stored, len(wantWh))
	}
	seqs := map[uint64]bool{}
	for i, s := range stored {
		if s.EnergyWh != wantWh[i] || seqs[s.Seq] {
			t.Fatalf("record %d: %+v, want %v Wh and a seq of its own", i, s, wantWh[i])
		}
		seqs[s.Seq] = true
	}
	if len(dead) != 1 || !strings.HasPrefix(dead[0].Reason, "session_stopped") {
		t.Fatalf("dead letters %+v, want the Updated after Ended labelled session_stopped", dead)
	}
	if n := counter(t, h.Reg, "telegate_ocpp_records_total", map[string]string{"kind": "session", "result": "replay"}); n != 1 {
		t.Fatalf("replays counted %v, want 1", n)
	}
	if n := counter(t, h.Reg, "telegate_ocpp_dead_letters_total", map[string]string{"kind": "session", "reason": "session_stopped"}); n != 1 {
		t.Fatalf("dead letters counted %v, want 1", n)
	}
}
