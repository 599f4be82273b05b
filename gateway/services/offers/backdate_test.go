package offers

import (
	"fmt"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/sink/eventsink"
	"github.com/telegate/telegate/internal/svctest"
)

// TestBackdatedSessionNotAttributed: the vehicle's last position puts it at
// the station three hours ago; the charger then sends a new session whose
// own timestamp is backdated to that moment, to borrow the old position as
// corroboration. The gateway received the session now: the session is
// stored as unverified (counted) and triggers nothing. The events go
// through the real consumer as JSON, with the gateway's received_at in the
// data as the event sink writes it.
func TestBackdatedSessionNotAttributed(t *testing.T) {
	f := newFixture(t)
	const vin = "TGSVSBACK00000001"
	if err := f.reg.Register(f.ctx, customers.Registration{ID: "c-back", Vehicles: []customers.Vehicle{{VIN: vin, BatteryKWh: 60}},
		Consents: []string{customers.ConsentPartnerOffers}}, "test"); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 6, 2, 10, 0, 0, 0, time.UTC) // T: the gateway's receive time of the session
	old := now.Add(-3 * time.Hour)
	st := testStations["CS-0001"]
	if err := f.pub.Publish(f.ctx, "vehicle.event."+vin, "vev-"+vin+"-1", "vehicle.ignition_off", vin, old,
		map[string]any{"vin": vin, "kind": "ignition_off", "seq": 1, "position": map[string]float64{"lat": st.Lat, "lon": st.Lon},
			"received_at": old}); err != nil {
		t.Fatal(err)
	}
	session := func(sid string, deviceAt, recvAt time.Time) {
		t.Helper()
		if err := f.pub.Publish(f.ctx, "charging.session.started.CS-0001", "session-"+sid, "charging.session.started", "CS-0001", deviceAt,
			map[string]any{"station": "CS-0001", "session_id": sid, "connector": 1, "event": "started", "vin": vin,
				"power_w": 11000, "soc_pct": 20, "target_soc_pct": 80, "seq": 1, "received_at": recvAt}); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(n int64) {
		t.Helper()
		svctest.Eventually(t, "sessions evaluated", func() error {
			if got := f.eng.Stats.Evaluated.Load(); got < n {
				return fmt.Errorf("%d of %d", got, n)
			}
			return nil
		})
	}
	session("backdated", old, now)
	wait(1)
	if n := f.eng.Stats.Triggers.Load(); n != 0 {
		t.Fatalf("backdated session triggered %d offers", n)
	}
	if n := f.eng.Stats.Unverified.Load(); n != 1 {
		t.Fatalf("unverified sessions: %d, want 1", n)
	}
	if n := f.eng.Attributor.Stats.Skewed.Load(); n != 1 {
		t.Fatalf("skewed sessions: %d, want 1", n)
	}
	// Honest timestamp, old position: the position is three hours older
	// than the session as the gateway saw them both.
	session("honest-stale", now, now)
	wait(2)
	if n := f.eng.Stats.Triggers.Load(); n != 0 {
		t.Fatalf("stale position triggered %d offers", n)
	}
	// A fresh position and a charger clock a few minutes off (within the
	// allowed skew): attributed, both partners' venues triggered.
	fresh := now.Add(time.Hour)
	if err := f.pub.Publish(f.ctx, "vehicle.event."+vin, "vev-"+vin+"-2", "vehicle.ignition_off", vin, fresh.Add(-time.Minute),
		map[string]any{"vin": vin, "kind": "ignition_off", "seq": 2, "position": map[string]float64{"lat": st.Lat, "lon": st.Lon},
			"received_at": fresh.Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	session("fresh", fresh.Add(-4*time.Minute), fresh)
	wait(3)
	if n := f.eng.Stats.Triggers.Load(); n != 2 {
		t.Fatalf("fresh session: %d triggers, want 2", n)
	}
	if n := f.eng.Attributor.Stats.Skewed.Load(); n != 1 {
		t.Fatalf("skewed sessions: %d, want 1", n)
	}
}

// TestOpeningHoursOnReceiveTime: a charger clock ten minutes behind
// (within the allowed skew) does not keep a venue open: cafe-syd closes at
// 19:00 Sydney time, the gateway received the session at 19:05.
func TestOpeningHoursOnReceiveTime(t *testing.T) {
	f := newFixture(t)
	if err := f.reg.Register(f.ctx, customers.Registration{ID: "c1", Vehicles: []customers.Vehicle{{VIN: "VINA", BatteryKWh: 60}},
		Consents: []string{customers.ConsentPartnerOffers}, IDTags: []string{"TAG-c1"}}, "test"); err != nil {
		t.Fatal(err)
	}
	recv := time.Date(2026, 6, 5, 9, 5, 0, 0, time.UTC) // Friday 19:05 in Sydney (AEST, UTC+10)
	d := eventsinkSession("CS-0002", "late", recv)
	if n, err := f.eng.HandleSession(f.ctx, recv.Add(-10*time.Minute), d); err != nil || n != 0 {
		t.Fatalf("closed venue (charger says 18:55): %d triggers, %v", n, err)
	}
	d = eventsinkSession("CS-0002", "open", recv.Add(-10*time.Minute))
	if n, err := f.eng.HandleSession(f.ctx, recv, d); err != nil || n != 1 {
		t.Fatalf("open venue (received 18:55, charger says 19:05): %d triggers, %v", n, err)
	}
}

func eventsinkSession(st, sid string, recv time.Time) eventsink.ChargingEvent {
	return eventsink.ChargingEvent{Station: st, SessionID: sid, VIN: "VINA", IDTag: "TAG-c1", PowerW: 11000, SoCPct: 20,
		TargetSoCPct: 80, ReceivedAt: recv}
}
