package mqtt

import (
	"sync/atomic"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Patched by telegate (see README.md in this directory): a resumed session
// is visible to publishers (Clients.Add) before CONNACK is written and the
// stored publishes are resent (ResendInflightMessages). A QoS 1 publish in
// that window was stored and queued on outbound, then resent with DUP by
// ResendInflightMessages as if from the previous connection: the device
// got it twice, the first copy possibly before the older resent ones
// ([MQTT-4.6.0-6]) or before CONNACK ([MQTT-3.2.0-1]), and it took send
// quota twice.

// connackHook runs f when the server encodes a CONNACK.
type connackHook struct {
	HookBase
	f atomic.Pointer[func(cl *Client)]
}

func (h *connackHook) ID() string           { return "connack" }
func (h *connackHook) Provides(b byte) bool { return b == OnPacketEncode }
func (h *connackHook) OnPacketEncode(cl *Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack {
		if f := h.f.Load(); f != nil {
			(*f)(cl)
		}
	}
	return pk
}

// TestTelegatePublishDuringResumeSentOnceAfterResent: a command published
// while the session resumes (after the client is registered, before
// CONNACK) reaches the device once, without DUP, after CONNACK and the
// resent command.
func TestTelegatePublishDuringResumeSentOnceAfterResent(t *testing.T) {
	s, addr := pidServer(t)
	h := new(connackHook)
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	props := []byte{0x11, 0, 0, 0, 60, 0x21, 0, 5} // Session Expiry 60 s, Receive Maximum 5
	c := dialRaw(t, addr)
	c.send(0x10, connect5(true, props...)...)
	if f, _ := c.read(); f != 0x20 {
		t.Fatalf("CONNACK %02x", f)
	}
	c.send(0x82, append([]byte{0, 1, 0}, subscribeCmd...)...)
	c.expect(0x90, 0, 1, 0, 1)
	publishCmd(t, s, "A")
	if _, p := c.command5(); p != "A" {
		t.Fatalf("first command %q", p)
	}
	c.c.Close() // not acknowledged

	// While the second connection's CONNACK is encoded (the client is
	// registered), "P" is published from another goroutine: the hook
	// waits until that publish is done or waits for the client's send
	// lock.
	f := func(cl *Client) {
		if cl.ID != "c5" {
			return
		}
		h.f.Store(nil)
		step := make(chan struct{}, 2)
		setSeam(t, &seamSendLockWait, func(w *Client) {
			if w == cl {
				step <- struct{}{}
			}
		})
		go func() {
			publishCmd(t, s, "P")
			step <- struct{}{}
		}()
		<-step
	}
	h.f.Store(&f)

	c = dialRaw(t, addr)
	c.send(0x10, connect5(false, props...)...)
	if fb, b := c.read(); fb != 0x20 || b[0] != 1 {
		t.Fatalf("first packet %02x % x, want CONNACK with session present", fb, b)
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
		t.Fatalf("got %v, want [A(dup) P]: the command published during the resume was resent or sent out of order", got)
	}
	c.sync()
	publishCmd(t, s, "Q")
	if _, p := c.command5(); p != "Q" {
		t.Fatalf("got %q, want Q: the command published during the resume was sent twice", p)
	}
	c.sync()
	cl, _ := s.Clients.Get("c5")
	if n := cl.State.Inflight.Len(); n != 1 {
		t.Fatalf("%d inflight, want 1 (Q)", n)
	}
	if q := atomic.LoadInt32(&cl.State.Inflight.sendQuota); q != 4 {
		t.Fatalf("send quota %d, want 4 (Q unacknowledged)", q)
	}
}

// TestTelegateBogusAckGivesNoQuota: with Receive Maximum 1, "1" sent and
// "2" held, a PUBACK for the held command's id (never sent), a PUBCOMP for
// no flow and a duplicate PUBACK give no send quota back: the device never
// has more than one command unacknowledged, and "2" is still sent, after
// "1" is acknowledged. Upstream deleted the held "2" on the bogus PUBACK
// and gave quota back for it and for the PUBCOMP, so "3" went out with
// "1" still unacknowledged.
func TestTelegateBogusAckGivesNoQuota(t *testing.T) {
	s, addr := pidServer(t)
	c := rm1Client(t, addr)
	publishCmd(t, s, "1")
	publishCmd(t, s, "2") // held
	id1, p := c.command5()
	if p != "1" {
		t.Fatalf("first command %q", p)
	}
	cl, _ := s.Clients.Get("c5")
	var held uint16
	for _, pk := range cl.State.Inflight.GetAll(true) {
		held = pk.PacketID
	}
	c.send(0x40, byte(held>>8), byte(held))   // PUBACK for the held, unsent "2"
	c.send(0x70, byte(held>>8)+1, byte(held)) // PUBCOMP for no flow
	c.sync()
	if q := atomic.LoadInt32(&cl.State.Inflight.sendQuota); q != 0 {
		t.Fatalf("send quota %d after bogus acknowledgements, want 0 (\"1\" unacknowledged)", q)
	}
	publishCmd(t, s, "3") // held behind "2"
	c.send(0x40, byte(id1>>8), byte(id1))
	c.send(0x40, byte(id1>>8), byte(id1)) // duplicate
	for _, want := range []string{"2", "3"} {
		id, p := c.command5()
		if p != want {
			t.Fatalf("got command %q, want %q", p, want)
		}
		c.sync()
		if q := atomic.LoadInt32(&cl.State.Inflight.sendQuota); q != 0 {
			t.Fatalf("send quota %d with %q unacknowledged, want 0", q, want)
		}
		c.send(0x40, byte(id>>8), byte(id))
	}
	c.sync()
	if n := cl.State.Inflight.Len(); n != 0 {
		t.Fatalf("%d inflight, want 0", n)
	}
	if q := atomic.LoadInt32(&cl.State.Inflight.sendQuota); q != 1 {
		t.Fatalf("send quota %d, want 1", q)
	}
}

// sentHook runs f after the server wrote a packet.
type sentHook struct {
	HookBase
	f atomic.Pointer[func(cl *Client, pk packets.Packet)]
}

func (h *sentHook) ID() string           { return "sent" }
func (h *sentHook) Provides(b byte) bool { return b == OnPacketSent }
func (h *sentHook) OnPacketSent(cl *Client, pk packets.Packet, b []byte) {
	if f := h.f.Load(); f != nil {
		(*f)(cl, pk)
	}
}

// TestTelegatePublishDuringResendGoesAfterResent: a command published
// while a resumed session's unacknowledged commands are resent (after
// CONNACK is written, or after the first of them) reaches the device
// after all of them, once and without DUP ([MQTT-4.6.0-6]). The send lock
// held from registration until the resend is done already ordered it
// (TestTelegatePublishDuringResumeSentOnceAfterResent covers the window
// before CONNACK); this test keeps the guarantee for the rest of the
// window.
func TestTelegatePublishDuringResendGoesAfterResent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after func(pk packets.Packet) bool
	}{
		{"after CONNACK", func(pk packets.Packet) bool { return pk.FixedHeader.Type == packets.Connack }},
		{"after the first resent", func(pk packets.Packet) bool {
			return pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Dup
		}},
	} {
		after := tc.after
		t.Run(tc.name, func(t *testing.T) {
			s, addr := pidServer(t)
			h := new(sentHook)
			if err := s.AddHook(h, nil); err != nil {
				t.Fatal(err)
			}
			props := []byte{0x11, 0, 0, 0, 60, 0x21, 0, 5} // Session Expiry 60 s, Receive Maximum 5
			c := dialRaw(t, addr)
			c.send(0x10, connect5(true, props...)...)
			if f, _ := c.read(); f != 0x20 {
				t.Fatalf("CONNACK %02x", f)
			}
			c.send(0x82, append([]byte{0, 1, 0}, subscribeCmd...)...)
			c.expect(0x90, 0, 1, 0, 1)
			publishCmd(t, s, "A")
			publishCmd(t, s, "B")
			for _, want := range []string{"A", "B"} {
				if _, p := c.command5(); p != want {
					t.Fatalf("command %q, want %q", p, want)
				}
			}
			c.c.Close() // neither acknowledged

			// The publish of "P" runs in another goroutine; the
			// resume goes on once it is done or waits for the
			// client's send lock.
			f := func(cl *Client, pk packets.Packet) {
				if cl.ID != "c5" || !after(pk) {
					return
				}
				h.f.Store(nil)
				step := make(chan struct{}, 2)
				setSeam(t, &seamSendLockWait, func(w *Client) {
					if w == cl {
						step <- struct{}{}
					}
				})
				go func() {
					publishCmd(t, s, "P")
					step <- struct{}{}
				}()
				<-step
			}
			h.f.Store(&f)

			c = dialRaw(t, addr)
			c.send(0x10, connect5(false, props...)...)
			if fb, b := c.read(); fb != 0x20 || b[0] != 1 {
				t.Fatalf("first packet %02x % x, want CONNACK with session present", fb, b)
			}
			var got []string
			for len(got) < 3 {
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
			if got[0] != "A(dup)" || got[1] != "B(dup)" || got[2] != "P" {
				t.Fatalf("got %v, want [A(dup) B(dup) P]", got)
			}
			c.sync()
			cl, _ := s.Clients.Get("c5")
			if n := cl.State.Inflight.Len(); n != 0 {
				t.Fatalf("%d inflight, want 0: the command published during the resend was resent or sent twice", n)
			}
			if q := atomic.LoadInt32(&cl.State.Inflight.sendQuota); q != 5 {
				t.Fatalf("send quota %d, want 5", q)
			}
		})
	}
}
