package offers

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/services/customers"
)

// TestCapsExpire: the daily cap counters (one key per driver, venue and
// local day) live in their own bucket with a TTL, not in the offers
// bucket forever; erasure still purges them.
func TestCapsExpire(t *testing.T) {
	f := newFixture(t)
	ctx := f.ctx
	st, err := f.eng.caps.B.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != CapTTL || CapTTL < 48*time.Hour {
		t.Fatalf("cap bucket TTL %v, want %v (≥ 2 days: a local day is over)", st.TTL(), CapTTL)
	}
	if err := f.reg.Register(ctx, customers.Registration{ID: "c1", Vehicles: []customers.Vehicle{{VIN: "VINA", BatteryKWh: 60}},
		Consents: []string{customers.ConsentPartnerOffers}, IDTags: []string{"TAG-c1"}}, "test"); err != nil {
		t.Fatal(err)
	}
	if n, err := f.handle(time.Date(2026, 6, 2, 10, 0, 0, 0, time.UTC), eventsinkSession("CS-0001", "a", time.Time{})); err != nil || n != 2 {
		t.Fatalf("session: %d %v", n, err)
	}
	caps := keys(t, f.eng.caps.B, "cap.>")
	if len(caps) != 2 {
		t.Fatalf("cap keys %v, want one per venue", caps)
	}
	if old := keys(t, f.eng.kv.B, "cap.>"); len(old) != 0 {
		t.Fatalf("cap keys in the offers bucket: %v", old)
	}
	if err := f.reg.Erase(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if left := keys(t, f.eng.caps.B, "cap.>"); len(left) != 0 {
		t.Fatalf("cap keys after erasure: %v", left)
	}
}

func keys(t *testing.T, b jetstream.KeyValue, filter string) []string {
	t.Helper()
	l, err := b.ListKeysFiltered(t.Context(), filter)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for k := range l.Keys() {
		out = append(out, k)
	}
	return out
}

// TestCapLocalDayDST: the daily cap counts per local day of the venue
// (Europe/Berlin), also on the DST switch days: it resets at local
// midnight, not UTC midnight. cafe-muc has a cap of 2, bakery-muc of 1.
func TestCapLocalDayDST(t *testing.T) {
	f := newFixture(t)
	if err := f.reg.Register(f.ctx, customers.Registration{ID: "c1", Vehicles: []customers.Vehicle{{VIN: "VINA", BatteryKWh: 60}},
		Consents: []string{customers.ConsentPartnerOffers}, IDTags: []string{"TAG-c1"}}, "test"); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		at   string
		want int
	}{
		{"2027-03-27T22:30:00Z", 2}, // Sat 23:30 CET: both
		{"2027-03-27T22:59:00Z", 1}, // Sat 23:59 CET: bakery capped
		{"2027-03-27T23:00:00Z", 2}, // Sun 00:00 CET (the 23-hour day): new day
		{"2027-03-28T21:59:00Z", 1}, // Sun 23:59 CEST: bakery capped
		{"2027-10-30T21:30:00Z", 2}, // Sat 23:30 CEST
		{"2027-10-30T22:00:00Z", 2}, // Sun 00:00 CEST (the 25-hour day)
		{"2027-10-31T22:59:00Z", 1}, // Sun 23:59 CET: same local day
		{"2027-10-31T23:00:00Z", 2}, // Mon 00:00 CET
	}
	for i, s := range steps {
		ts, err := time.Parse(time.RFC3339, s.at)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := f.handle(ts, eventsinkSession("CS-0001", "dst-"+s.at, time.Time{})); err != nil || n != s.want {
			t.Fatalf("step %d (%s): %d triggers, %v; want %d", i, s.at, n, err, s.want)
		}
	}
}
