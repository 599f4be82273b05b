package offers

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/commands"
	"github.com/telegate/telegate/gateway/services/customers"
)

// TestOfferCommandIDUnguessable: the head-unit command of an offer has an
// id the charger cannot compute from what it knows (station, session,
// partners' and venues' ids): it is an HMAC under the services' token key,
// not a hash of those. A redelivered session sends the same command id
// (JetStream deduplicates it).
func TestOfferCommandIDUnguessable(t *testing.T) {
	f := newFixture(t)
	if err := f.reg.Register(f.ctx, customers.Registration{ID: "c1", Vehicles: []customers.Vehicle{{VIN: "VINA", BatteryKWh: 60}},
		Consents: []string{customers.ConsentPartnerOffers}, IDTags: []string{"TAG-c1"}}, "test"); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 6, 2, 10, 0, 0, 0, time.UTC)
	ev := eventsinkSession("CS-0001", "s1", time.Time{})
	if n, err := f.handle(at, ev); err != nil || n != 2 {
		t.Fatalf("session: %d %v", n, err)
	}
	first := lastCommand(t, f.ctx, f.eng.js, "VINA")
	if n, err := f.handle(at, ev); err != nil || n != 2 {
		t.Fatalf("redelivery: %d %v", n, err)
	}
	if again := lastCommand(t, f.ctx, f.eng.js, "VINA"); again != first {
		t.Fatalf("redelivery sent command %s, first %s", again, first)
	}
	for _, pv := range [][2]string{{"cafe", "cafe-muc"}, {"bakery", "bakery-muc"}} {
		guess := "offer-" + strings.TrimPrefix(offerID("CS-0001", "s1", pv[0], pv[1]), "ofr-")
		if first == guess {
			t.Fatalf("command id %s computable from the session", first)
		}
	}
	if !strings.HasPrefix(first, "offer-") || len(first) < len("offer-")+32 {
		t.Fatalf("command id %q: want offer- and at least 128 bits", first)
	}
	other, err := NewTokens([]TokenKey{{ID: "k2", Secret: []byte("another key, 32 bytes long......")}})
	if err != nil {
		t.Fatal(err)
	}
	id := offerID("CS-0001", "s1", "bakery", "bakery-muc")
	first, again := f.eng.cfg.Tokens.CommandID(id), f.eng.cfg.Tokens.CommandID(id) // deterministic per key
	if first == other.CommandID(id) || first != again {
		t.Fatal("command id not keyed, or not stable")
	}
}

// lastCommand returns the id of the last command sent to vin.
func lastCommand(t *testing.T, ctx context.Context, js jetstream.JetStream, vin string) string {
	t.Helper()
	s, err := js.Stream(ctx, natsbus.StreamVehicle)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, commands.Subject(vin))
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Data commands.Request `json:"data"`
	}
	if err := json.Unmarshal(m.Data, &env); err != nil {
		t.Fatal(err)
	}
	return env.Data.CmdID
}
