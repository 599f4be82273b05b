package customers

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/internal/svctest"
)

// TestScrubEscapedToken: an id with a byte natsbus.Token escapes ('_') is
// carried by subjects as its token ("cu_st1" as "cu_5Fst1"). Scrub removes
// a message of a scrub stream that names the customer only in that form
// (here a header holding the original subject), not just the raw id.
func TestScrubEscapedToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bus := svctest.Bus(t)
	roles := svctest.Roles(t, bus)        // the services on their own users
	js := svctest.Ops(t, bus).JetStream() // the test's own reads and writes
	const id = "cu_st1"
	tok := natsbus.Token(id)
	if tok == id {
		t.Fatalf("Token(%q) not escaped", id)
	}
	pub := func(subject, origin string) {
		m := nats.NewMsg(subject)
		m.Header.Set("Telegate-Origin", origin)
		m.Data = []byte(`{"reason":"rejected"}`)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	pub("deadletter.webhook.cafe", "vehicle.event."+tok)
	pub("deadletter.webhook.cafe", "vehicle.event.someone-else")
	if err := Scrub(ctx, svctest.Role(t, roles, natsbus.RoleCustomers).JetStream(), []string{id}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, natsbus.StreamDeadLetter)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("%d messages left in %s, want 1 (the other customer's)", info.State.Msgs, natsbus.StreamDeadLetter)
	}
	if _, err := s.GetMsg(ctx, 1); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("the escaped id's message: %v, want removed", err)
	}
	if _, err := s.GetMsg(ctx, 2); err != nil {
		t.Fatalf("the other customer's message: %v", err)
	}
}
