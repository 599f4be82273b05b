package fleetstate

import (
	"fmt"
	"testing"
	"time"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
)

func vin(i int) string { return fmt.Sprintf("TGSVS%012d", i) }

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestModelOf(t *testing.T) {
	if ModelOf(vin(1)) != Models[0] || ModelOf(vin(2)) != Models[1] || ModelOf(vin(5)) != Models[0] {
		t.Fatalf("models: %s %s %s", ModelOf(vin(1)), ModelOf(vin(2)), ModelOf(vin(5)))
	}
	if m := ModelOf("WVWZZZ1JZXW00000A"); m == "" {
		t.Fatal("no model for a VIN without trailing digits")
	}
}

func TestDiagAndEventsConverge(t *testing.T) {
	s := New([]string{vin(1)})
	// Initial load: report at t0 with two codes.
	s.Diag(vin(1), t0, true, 1200, "P0301:confirmed,P0420:pending")
	d, _ := s.Get(vin(1))
	if len(d.OpenDTCs) != 2 || d.Health != HealthCritical || !d.MIL {
		t.Fatalf("after load: %+v", d)
	}
	if d.OpenDTCs[0].Code != "P0301" || d.OpenDTCs[0].Description == "" || d.OpenDTCs[0].Severity != "critical" {
		t.Fatalf("most severe first with description: %+v", d.OpenDTCs[0])
	}
	// Replayed events older than the snapshot change nothing.
	s.DTCEvent(vin(1), "P0171", "pending", true, 1100, t0.Add(-time.Minute))
	s.DTCEvent(vin(1), "P0301", "cleared", true, 1100, t0.Add(-30*time.Second))
	d, _ = s.Get(vin(1))
	if len(d.OpenDTCs) != 2 {
		t.Fatalf("old events applied: %+v", d.OpenDTCs)
	}
	// Newer events apply.
	s.DTCEvent(vin(1), "P0420", "confirmed", true, 1201, t0.Add(time.Minute))
	s.DTCEvent(vin(1), "P0301", "cleared", false, 1201, t0.Add(time.Minute))
	s.DTCEvent(vin(1), "U0100", "pending", false, 1202, t0.Add(2*time.Minute))
	d, _ = s.Get(vin(1))
	if len(d.OpenDTCs) != 2 || d.OpenDTCs[0].Code != "U0100" || d.OpenDTCs[1].Status != "confirmed" {
		t.Fatalf("after events: %+v", d.OpenDTCs)
	}
	if !d.OpenDTCs[1].FirstSeen.Equal(t0) || !d.OpenDTCs[1].LastSeen.Equal(t0.Add(time.Minute)) {
		t.Fatalf("first/last seen: %+v", d.OpenDTCs[1])
	}
	s.DTCSeen(vin(1), "P0420", t0.Add(-time.Hour), t0.Add(3*time.Minute))
	d, _ = s.Get(vin(1))
	if !d.OpenDTCs[1].FirstSeen.Equal(t0.Add(-time.Hour)) {
		t.Fatalf("DTCSeen: %+v", d.OpenDTCs[1])
	}
	// A newer full snapshot closes what it does not list.
	s.Diag(vin(1), t0.Add(5*time.Minute), false, 1210, "")
	d, _ = s.Get(vin(1))
	if len(d.OpenDTCs) != 0 || d.Health != HealthOK {
		t.Fatalf("after empty snapshot: %+v", d)
	}
	// Unknown vehicles are ignored.
	s.DTCEvent(vin(9), "P0301", "pending", false, 0, t0)
	if s.Known(vin(9)) {
		t.Fatal("unknown vin added")
	}
}

func TestConnectivityAndTelemetry(t *testing.T) {
	s := New([]string{vin(1)})
	s.Connectivity(vin(1), true, t0)
	s.Connectivity(vin(1), false, t0.Add(-time.Second)) // older: ignored
	s.Telemetry(vin(1), t0.Add(time.Second).UnixMilli(), []wire.Signal{{ID: catalog.Speed, Value: 42}, {ID: 9999, Value: 1}, {ID: catalog.TractionSoC, Value: 500}})
	s.Telemetry(vin(1), t0.UnixMilli(), []wire.Signal{{ID: catalog.Speed, Value: 1}}) // older frame
	d, _ := s.Get(vin(1))
	if !d.Connected || d.SpeedKmh == nil || *d.SpeedKmh != 42 || d.SoCPct != nil || len(d.Values) != 1 {
		t.Fatalf("detail: %+v", d)
	}
	if !d.LastSeen.Equal(t0.Add(time.Second)) {
		t.Fatalf("last seen %v", d.LastSeen)
	}
	s.SetValue(vin(1), "Vehicle.Speed", 7, t0) // older than live value: ignored
	s.SetValue(vin(1), "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", 80, t0)
	d, _ = s.Get(vin(1))
	if *d.SpeedKmh != 42 || d.SoCPct == nil || *d.SoCPct != 80 {
		t.Fatalf("SetValue: %+v", d)
	}
}

func TestListFiltersAndPages(t *testing.T) {
	var vins []string
	for i := 1; i <= 1000; i++ {
		vins = append(vins, vin(i))
	}
	s := New(vins)
	for i := 1; i <= 1000; i += 10 {
		s.Connectivity(vin(i), true, t0)
	}
	s.Diag(vin(7), t0, true, 10, "P0301:confirmed")
	s.Diag(vin(8), t0, false, 10, "P0420:pending")
	s.Diag(vin(9), t0, false, 10, "P0302:pending")
	p := s.List(Filter{}, 3, 100)
	if p.Total != 1000 || len(p.Items) != 100 || p.Items[0].VIN != vin(201) {
		t.Fatalf("page 3: total %d len %d first %s", p.Total, len(p.Items), p.Items[0].VIN)
	}
	if p := s.List(Filter{}, 11, 100); len(p.Items) != 0 {
		t.Fatalf("past the end: %d", len(p.Items))
	}
	if p := s.List(Filter{Status: "connected"}, 1, 500); p.Total != 100 {
		t.Fatalf("connected: %d", p.Total)
	}
	if p := s.List(Filter{DTC: "p03"}, 1, 10); p.Total != 2 {
		t.Fatalf("dtc prefix: %d", p.Total)
	}
	if p := s.List(Filter{Health: HealthCritical}, 1, 10); p.Total != 2 || p.Items[0].VIN != vin(7) {
		t.Fatalf("critical: %+v", p)
	}
	if p := s.List(Filter{Query: "000000000099"}, 1, 10); p.Total != 1 {
		t.Fatalf("vin search: %d", p.Total)
	}
	if p := s.List(Filter{Model: Models[1]}, 1, 10); p.Total != 250 {
		t.Fatalf("model: %d", p.Total)
	}
	if p := s.List(Filter{Sort: "health"}, 1, 3); p.Items[0].Health != HealthCritical || p.Items[2].Health != HealthWarning {
		t.Fatalf("sort by health: %+v", p.Items)
	}
	al, total := s.Alerts(AlertFilter{}, 2)
	if total != 3 || len(al) != 2 || al[0].Severity != "critical" {
		t.Fatalf("alerts: %d %+v", total, al)
	}
	if al, _ := s.Alerts(AlertFilter{Status: "pending", Code: "P04"}, 10); len(al) != 1 || al[0].VIN != vin(8) {
		t.Fatalf("alert filter: %+v", al)
	}
	total, conn, warn, crit := s.Counts()
	if total != 1000 || conn != 100 || warn != 1 || crit != 2 {
		t.Fatalf("counts %d %d %d %d", total, conn, warn, crit)
	}
}

func BenchmarkList1000(b *testing.B) {
	var vins []string
	for i := 1; i <= 1000; i++ {
		vins = append(vins, vin(i))
	}
	s := New(vins)
	for i := 1; i <= 1000; i += 3 {
		s.Diag(vin(i), t0, true, 10, "P0301:confirmed")
	}
	b.ReportAllocs()
	for b.Loop() {
		s.List(Filter{DTC: "P03"}, 2, 50)
	}
}
