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
