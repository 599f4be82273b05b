package partners_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/partners"
	"github.com/telegate/telegate/internal/svctest"
)

// TestStoredEmptyWindowPartnerKept: a partner the API stored before empty
// opening-hours windows ("00:00"-"00:00") were refused is still loaded
// from the bucket after the upgrade: the empty rule stays never open (as
// it always was), the partner's other venues, API token and NATS user keep
// working, and the partner can replace the rule through the API. Before
// the fix the whole bucket entry was ignored as invalid: the partner
// vanished (no offers, its API token refused, so it could not fix it).
func TestStoredEmptyWindowPartnerKept(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bus := svctest.Bus(t)
	roles := svctest.Roles(t, bus)                      // the registry on its own user
	mon := time.Date(2027, 3, 1, 11, 0, 0, 0, time.UTC) // Monday, 12:00 in Berlin
	old := partners.Partner{ID: "cafe", Name: "Cafe", APITokenSHA256: string(make64('a')),
		Venues: []partners.Venue{
			{ID: "v1", Name: "Cafe 1", RadiusM: 300, TimeZone: "Europe/Berlin", DailyCap: 1, Available: true,
				Hours: []partners.Hours{{Days: []string{"mon"}, Open: "08:00", Close: "18:00"}}, Offer: partners.Offer{Text: "Coffee", Code: "C1"}},
			{ID: "v2", Name: "Cafe 2", RadiusM: 300, TimeZone: "Europe/Berlin", DailyCap: 1, Available: true,
				Hours: []partners.Hours{{Days: []string{"mon"}, Open: "00:00", Close: "00:00"}}, Offer: partners.Offer{Text: "Tea", Code: "C2"}},
		}}
	// What the previous release's Put wrote (it accepted the empty window).
	if _, err := partners.Open(ctx, svctest.Role(t, roles, natsbus.RolePartners).JetStream(), 1, "", svctest.Logger()); err != nil { // creates the bucket
		t.Fatal(err)
	}
	raw, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := svctest.Ops(t, bus).JetStream().KeyValue(ctx, partners.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "p.cafe", raw); err != nil {
		t.Fatal(err)
	}

	r, err := partners.Open(ctx, svctest.Role(t, roles, natsbus.RolePartners).JetStream(), 1, "", svctest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	p, ok := r.Get("cafe")
	if !ok {
		t.Fatal("partner stored with an empty opening-hours window was dropped on load")
	}
	if p.APITokenSHA256 != old.APITokenSHA256 || len(p.Venues) != 2 {
		t.Fatalf("partner loaded as %+v", p)
	}
	if !p.Venues[0].OpenAt(mon) || p.Venues[1].OpenAt(mon) {
		t.Fatal("v1 must be open at Monday noon, the empty window v2 never")
	}
	// A new write is still checked strictly.
	if err := r.Put(ctx, old); err == nil {
		t.Fatal("Put accepted an empty window")
	}
	old.Venues[1].Hours[0].Close = "24:00"
	if err := r.Put(ctx, old); err != nil {
		t.Fatalf("fixed partner refused: %v", err)
	}
}

func make64(c byte) []byte {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return b
}
