package mqtt

import (
	"fmt"
	"github.com/mochi-mqtt/server/v2/packets"
	"strconv"
	"testing"
)

// TestTelegateTakeoverChainUnderPublishes: a device reconnects several
// times in a row (MQTT 5 clean start 0, MQTT 3.1.1 clean session 0), each
// connection taking the session over from the previous one while that
// one may still be resending, and a publisher sends commands all along.
// The last connection receives every command, none acknowledged before,
// exactly once and in the order published ([MQTT-4.6.0-6]), each
// connection CONNACK first ([MQTT-3.2.0-1]).
func TestTelegateTakeoverChainUnderPublishes(t *testing.T) {
	for _, v := range []byte{4, 5} {
		for round := 0; round < 3; round++ {
			t.Run(fmt.Sprintf("v%d/%d", v, round), func(t *testing.T) {
				takeoverChain(t, v)
			})
		}
	}
}

// connectV is a CONNECT of client id "c5" for protocol level v (4 or 5;
// for 5 with Session Expiry 60 s and Receive Maximum 65535).
func connectV(v byte, clean bool) []byte {
	if v == 5 {
		return connect5(clean, 0x11, 0, 0, 0, 60, 0x21, 0xff, 0xff)
	}
	flags := byte(0)
	if clean {
		flags = 0x02
	}
	return []byte{0, 4, 'M', 'Q', 'T', 'T', 4, flags, 0, 60, 0, 2, 'c', '5'}
}

func takeoverChain(t *testing.T, v byte) {
	s, addr := pidServer(t)
	sub := []byte{0x82, 0, 1}
	if v == 5 {
		sub = append(sub, 0) // no properties
	}
	c := dialRaw(t, addr)
	c.send(0x10, connectV(v, v == 5)...) // 3.1.1: a clean session 1 would not be kept
	if f, _ := c.read(); f != 0x20 {
		t.Fatalf("CONNACK %02x", f)
	}
	c.send(sub[0], append(sub[1:], subscribeCmd...)...)
	if f, _ := c.read(); f != 0x90 {
		t.Fatalf("SUBACK %02x", f)
	}
	const n = 300
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < n; i++ {
			publishCmd(t, s, strconv.Itoa(i))
		}
	}()
	for k := 0; k < 8; k++ {
		c = dialRaw(t, addr)
		c.send(0x10, connectV(v, false)...)
		if fb, b := c.read(); fb != 0x20 || b[0] != 1 {
			t.Fatalf("takeover %d: first packet %02x % x, want CONNACK with session present", k, fb, b)
		}
	}
	<-done
	for i := 0; i < n; i++ {
		fb, b := c.read()
		var id uint16
		var p string
		if v == 5 {
			var ok bool
			if id, p, ok = parseCommand5(fb, b); !ok {
				t.Fatalf("got %02x % x, want a command", fb, b)
			}
		} else {
			if fb&0xf6 != 0x32 || len(b) < 9 || string(b[2:7]) != "cmd/x" {
				t.Fatalf("got %02x % x, want a command", fb, b)
			}
			id, p = uint16(b[7])<<8|uint16(b[8]), string(b[9:])
		}
		if p != strconv.Itoa(i) {
			t.Fatalf("command %d: got %q (dup %v)", i, p, fb&0x08 != 0)
		}
		c.send(0x40, byte(id>>8), byte(id))
	}
	c.sync()
	cl, _ := s.Clients.Get("c5")
	if l := cl.State.Inflight.Len(); l != 0 {
		t.Fatalf("%d inflight after all acknowledged", l)
	}
}

// TestTelegateTakeoverDuringResend: a session resuming on one connection
// is taken over by a newer connection while the first one resends its
// stored commands (after the first of them is written). The newer
// connection gets CONNACK first, then every command, once, in order.
func TestTelegateTakeoverDuringResend(t *testing.T) {
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
	for _, p := range []string{"A", "B", "C"} {
		publishCmd(t, s, p)
		if _, got := c.command5(); got != p {
			t.Fatalf("command %q, want %q", got, p)
		}
	}
	c.c.Close() // none acknowledged
	cl, _ := s.Clients.Get("c5")
	<-cl.State.open.Done()

	next := make(chan *rawClient, 1)
	f := func(cl *Client, pk packets.Packet) {
		if cl.ID != "c5" || pk.FixedHeader.Type != packets.Publish || !pk.FixedHeader.Dup {
			return
		}
		h.f.Store(nil)
		c3 := dialRaw(t, addr)
		c3.send(0x10, connect5(false, props...)...)
		if fb, b := c3.read(); fb != 0x20 || b[0] != 1 {
			t.Errorf("first packet %02x % x, want CONNACK with session present", fb, b)
		}
		publishCmd(t, s, "P")
		next <- c3
	}
	h.f.Store(&f)
	c2 := dialRaw(t, addr)
	c2.send(0x10, connect5(false, props...)...)
	if fb, b := c2.read(); fb != 0x20 || b[0] != 1 {
		t.Fatalf("first packet %02x % x, want CONNACK with session present", fb, b)
	}
	c3 := <-next
	var got []string
	for len(got) < 4 {
		fb, b := c3.read()
		id, p, ok := parseCommand5(fb, b)
		if !ok {
			t.Fatalf("got %02x % x, want a command", fb, b)
		}
		if fb&0x08 != 0 {
			p += "(dup)"
		}
		got = append(got, p)
		c3.send(0x40, byte(id>>8), byte(id))
	}
	if fmt.Sprint(got) != "[A(dup) B(dup) C(dup) P]" {
		t.Fatalf("got %v", got)
	}
	c3.sync()
	cl, _ = s.Clients.Get("c5")
	if n := cl.State.Inflight.Len(); n != 0 {
		t.Fatalf("%d inflight, want 0", n)
	}
}
