package broker

import (
	"strconv"
	"sync/atomic"
	"testing"
)

// TestCommandsInPublishedOrderUnderReceiveMaximum: commands published
// while the vehicle acknowledges earlier ones (Receive Maximum 1, so most
// are held and released by PUBACKs) reach it in the order published, and
// none waits for a further packet from the vehicle: it sends only PUBACKs
// and reads until the last command. In the mochi copy a publish made in
// the instant a PUBACK freed the slot went out before older held ones, and
// one held in that instant waited for the vehicle's next packet (here: the
// read deadline). The exact interleavings are forced, without timing, in
// the mochi copy's TestTelegateFreedQuotaGoesToHeldFirst and
// TestTelegateHeldInFreeingInstantSentAtOnce; this one runs them over a
// real socket as they happen.
func TestCommandsInPublishedOrderUnderReceiveMaximum(t *testing.T) {
	b := startBroker(t, nil, nil)
	c, r, cmd := rm1Commands(t, b, vin1)
	// Rounds of 60 commands: at most 60 stored for the vehicle, under
	// Config.MaxInflight (64), beyond which commands are dropped.
	const rounds, n = 5, 60
	for round := 0; round < rounds; round++ {
		var pubErr atomic.Value
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < n; i++ {
				if err := b.Publish(cmd, []byte(strconv.Itoa(round*n+i)), 1); err != nil {
					pubErr.Store(err)
					return
				}
			}
		}()
		for i := 0; i < n; i++ {
			p := readCommand5(t, r, strconv.Itoa(round*n+i), false)
			puback(t, c, p.id)
		}
		<-done
		if err, _ := pubErr.Load().(error); err != nil {
			t.Fatal(err)
		}
	}
	pingPong(t, c, r)
	cl, _ := b.server.Clients.Get(vin1)
	if k := cl.State.Inflight.Len(); k != 0 {
		t.Fatalf("%d inflight, want 0", k)
	}
}

// TestSentCommandKeptPastExpiryUntilPuback: a command sent to the vehicle
// and not yet acknowledged stays inflight when its Message Expiry passes
// (MQTT 5 3.3.2.3.3, 4.9: expiry applies to messages not yet sent); a held
// one, never sent, is dropped. The vehicle's PUBACK then gives the send
// quota back and the next command goes out. mochi's expiry sweep deleted
// the sent command: its PUBACK freed nothing and, with Receive Maximum 1,
// every later command stayed held for the rest of the connection.
func TestSentCommandKeptPastExpiryUntilPuback(t *testing.T) {
	b := startBroker(t, nil, nil)
	c, r, cmd := rm1Commands(t, b, vin1)
	for _, p := range []string{"a", "held"} {
		if err := b.Publish(cmd, []byte(p), 1); err != nil {
			t.Fatal(err)
		}
	}
	a := readCommand5(t, r, "a", false)
	pingPong(t, c, r)
	cl, _ := b.server.Clients.Get(vin1)
	for _, pk := range cl.State.Inflight.GetAll(false) {
		pk.Created, pk.Expiry = 1, 1 // created and expired in 1970
		cl.State.Inflight.Set(pk)
	}
	// The sweep mochi's server loop runs each second, with an injected
	// "now" past both expiries and the server's maximum.
	now := 2 + b.server.Options.Capabilities.MaximumMessageExpiryInterval
	dropped := cl.ClearExpiredInflights(now, b.server.Options.Capabilities.MaximumMessageExpiryInterval)
	if len(dropped) != 1 || dropped[0] == a.id {
		t.Fatalf("dropped %v, want the held command only (sent: %d)", dropped, a.id)
	}
	if _, ok := cl.State.Inflight.Get(a.id); !ok {
		t.Fatal("sent, unacknowledged command deleted by the expiry sweep")
	}
	puback(t, c, a.id)
	if err := b.Publish(cmd, []byte("c"), 1); err != nil {
		t.Fatal(err)
	}
	puback(t, c, readCommand5(t, r, "c", false).id) // mochi: held for good
	pingPong(t, c, r)
	if k := cl.State.Inflight.Len(); k != 0 {
		t.Fatalf("%d inflight, want 0", k)
	}
}
