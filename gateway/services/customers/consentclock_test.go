package customers

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/internal/svctest"
)

// TestConsentChangesAtOneInstantAllPublished: a grant and a withdrawal
// (and a grant again) that the registry's clock stamps with the same
// instant are three profile events. The event id was derived from the
// clock reading (consent-{ref}-{consent}-{unix ns}), so the withdrawal got
// the grant's Nats-Msg-Id and JetStream dropped it as a duplicate: the
// profile kept showing the consent granted. The clock is frozen (injected),
// as a coarse or stepped clock can make it.
func TestConsentChangesAtOneInstantAllPublished(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bus := svctest.Bus(t)
	roles := svctest.Roles(t, bus)        // the services on their own users
	js := svctest.Ops(t, bus).JetStream() // the test's own reads and writes
	at := time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC)
	r, err := Open(ctx, svctest.Role(t, roles, natsbus.RoleCustomers).JetStream(), 1, func() time.Time { return at }, svctest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Register(ctx, Registration{ID: "c-instant", Vehicles: []Vehicle{{VIN: "TGSVSINSTANT00001"}}}, "test"); err != nil {
		t.Fatal(err)
	}
	for _, granted := range []bool{true, false, true} {
		if _, err := r.SetConsent(ctx, "c-instant", ConsentPartnerOffers, granted, "app"); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.OrderedConsumer(ctx, natsbus.StreamProfile, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{ProfileSubject(r.Ref("c-instant"))}})
	if err != nil {
		t.Fatal(err)
	}
	var got []bool
	ids := map[string]bool{}
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(500 * time.Millisecond))
		if err != nil {
			break
		}
		var ev natsbus.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Type != "consent.changed" {
			continue
		}
		var d ConsentChanged
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatal(err)
		}
		if ids[ev.ID] {
			t.Fatalf("event id %s used twice", ev.ID)
		}
		ids[ev.ID] = true
		got = append(got, d.Granted)
	}
	if want := []bool{true, false, true}; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("consent events granted=%v, want %v", got, want)
	}
}
