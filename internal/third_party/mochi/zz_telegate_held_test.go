package mqtt

import (
	"sync/atomic"
	"testing"
)

// Patched by telegate (see README.md in this directory): a publish held
// back by the client's Receive Maximum keeps its Expiry (upstream set it
// to -1, the held marker), is sent with its remaining Message Expiry
// Interval or not at all once expired, and stays inflight until the
// client's PUBACK, which gives the send quota back.

// commandExpiry reads the server's QoS 1 MQTT 5 PUBLISH on "cmd/x" and
// returns its packet id and its Message Expiry Interval (0: none).
func (rc *rawClient) commandExpiry() (uint16, uint32) {
	rc.t.Helper()
	f, b := rc.read()
	if f&0xf6 != 0x32 || len(b) < 10 || string(b[2:7]) != "cmd/x" {
		rc.t.Fatalf("want the QoS 1 publish on cmd/x, got %02x % x", f, b)
	}
	id := uint16(b[7])<<8 | uint16(b[8])
	props := b[10 : 10+int(b[9])]
	if len(props) >= 5 && props[0] == 0x02 {
		return id, uint32(props[1])<<24 | uint32(props[2])<<16 | uint32(props[3])<<8 | uint32(props[4])
	}
	return id, 0
}

func TestTelegateHeldPublishKeepsExpiry(t *testing.T) {
	s, addr := pidServer(t)
	c := dialRaw(t, addr)
	c.send(0x10, connect5(true, 0x21, 0, 1)...) // Receive Maximum 1
	if f, _ := c.read(); f != 0x20 {
		t.Fatalf("CONNACK %02x", f)
	}
	c.send(0x82, append([]byte{0, 1, 0}, subscribeCmd...)...)
	c.expect(0x90, 0, 1, 0, 1)
	for _, p := range []string{"1", "2", "3"} {
		if err := s.Publish("cmd/x", []byte(p), false, 1); err != nil {
			t.Fatal(err)
		}
	}
	id1, mei := c.commandExpiry()
	if mei == 0 {
		t.Fatal("first publish without Message Expiry Interval")
	}
	c.sync()
	cl, _ := s.Clients.Get("c5")
	held := cl.State.Inflight.GetAll(true)
	if len(held) != 2 || held[0].Expiry <= 0 || !cl.State.Inflight.IsHeld(held[0].PacketID) {
		t.Fatalf("held %+v, want 2 with their Expiry", held)
	}
	// "3" expires while held.
	held[1].Expiry = 1
	cl.State.Inflight.Set(held[1])

	c.send(0x40, byte(id1>>8), byte(id1))
	id2, mei := c.commandExpiry()
	if id2 != held[0].PacketID || mei == 0 {
		t.Fatalf("released id %d Message Expiry Interval %d, want id %d with one", id2, mei, held[0].PacketID)
	}
	c.sync()
	if _, ok := cl.State.Inflight.Get(id2); !ok || cl.State.Inflight.IsHeld(id2) {
		t.Fatal("released publish not inflight until its PUBACK")
	}
	c.send(0x40, byte(id2>>8), byte(id2))
	c.sync() // "3" is not sent
	if n := cl.State.Inflight.Len(); n != 0 {
		t.Fatalf("%d inflight, want 0", n)
	}
	if q := atomic.LoadInt32(&cl.State.Inflight.sendQuota); q != 1 {
		t.Fatalf("send quota %d, want 1", q)
	}
}
