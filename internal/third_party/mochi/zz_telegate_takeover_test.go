package mqtt

import (
	"testing"
)

// Patched by telegate (see README.md in this directory): a device that
// reconnects with its client id and a session to resume (clean start 0)
// takes the session over from the old client: inheritClientSession copies
// the old client's stored publishes for the new one, and publishers find
// the new client once it is added to Clients. A QoS 1 publish to the old
// client in between (after the copy, before the switch) was stored in the
// old client's Inflight only, which is then cleared: the command was lost,
// neither sent to the new connection nor kept.

// TestTelegatePublishDuringTakeoverReachesNewConnection: a command
// published while the session is taken over, just after the old client's
// stored commands were copied, reaches the new connection after the
// resent one.
func TestTelegatePublishDuringTakeoverReachesNewConnection(t *testing.T) {
	s, addr := pidServer(t)
	props := []byte{0x11, 0, 0, 0, 60, 0x21, 0, 5} // Session Expiry 60 s, Receive Maximum 5
	old := dialRaw(t, addr)
	old.send(0x10, connect5(true, props...)...)
	if f, _ := old.read(); f != 0x20 {
		t.Fatalf("CONNACK %02x", f)
	}
	old.send(0x82, append([]byte{0, 1, 0}, subscribeCmd...)...)
	old.expect(0x90, 0, 1, 0, 1)
	publishCmd(t, s, "A")
	if _, p := old.command5(); p != "A" {
		t.Fatalf("first command %q", p)
	}
	// The old connection stays open and does not acknowledge "A".

	// Once the old client's stored commands are copied, "P" is published
	// from another goroutine; the takeover goes on once that publish is
	// done or waits for the old client's send lock.
	pubDone := make(chan struct{})
	setSeam(t, &seamSessionCopied, func(oldCl, cl *Client) {
		seamSessionCopied.Store(nil)
		step := make(chan struct{}, 2)
		setSeam(t, &seamSendLockWait, func(w *Client) {
			if w == oldCl {
				step <- struct{}{}
			}
		})
		go func() {
			defer close(pubDone)
			publishCmd(t, s, "P")
			step <- struct{}{}
		}()
		<-step
	})

	c := dialRaw(t, addr)
	c.send(0x10, connect5(false, props...)...)
	if fb, b := c.read(); fb != 0x20 || b[0] != 1 {
		t.Fatalf("first packet %02x % x, want CONNACK with session present", fb, b)
	}
	<-pubDone
	cl, _ := s.Clients.Get("c5")
	if n := cl.State.Inflight.Len(); n != 2 {
		t.Fatalf("%d commands stored for the new connection, want 2 (A and P): the command published during the takeover was lost", n)
	}
	var got []string
	for len(got) < 2 {
		fb, b := c.read()
		id, p, ok := parseCommand5(fb, b)
		if !ok {
			t.Fatalf("got %02x % x, want a command", fb, b)
		}
		if fb&0x08 != 0 {
			p += "(dup)"
		}
		got = append(got, p)
		c.send(0x40, byte(id>>8), byte(id))
	}
	if got[0] != "A(dup)" || got[1] != "P" {
		t.Fatalf("got %v, want [A(dup) P]", got)
	}
	c.sync()
	if n := cl.State.Inflight.Len(); n != 0 {
		t.Fatalf("%d inflight after the acknowledgements, want 0", n)
	}
}
