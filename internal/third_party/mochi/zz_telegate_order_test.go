package mqtt

import (
	"bufio"
	"io"
	"sync"
	"sync/atomic"
	"testing"
)

// Patched by telegate (see README.md in this directory): the publisher
// goroutine (publishToClient) decides from the send quota whether a QoS 1
// publish to a client goes out now or is held, while the client's read
// goroutine gives quota back on a PUBACK and then sends held publishes
// (sendHeld). Upstream's check and action were not atomic, so
//   - a publish made just after a PUBACK freed a slot, before sendHeld ran,
//     went out ahead of the older held ones ([MQTT-4.6.0-6]);
//   - a publish held just as a PUBACK freed the slot, after sendHeld found
//     nothing held, waited for the client's next packet (a silent device:
//     its keepalive PINGREQ, or for good).
// The seams (telegate_seams.go) force each interleaving.

// setSeam stores f in seam for the rest of the test.
func setSeam[F any](t *testing.T, seam *atomic.Pointer[F], f F) {
	seam.Store(&f)
	t.Cleanup(func() { seam.Store(nil) })
}

// command5 reads the server's QoS 1 MQTT 5 PUBLISH on "cmd/x" and returns
// its packet id and payload.
func (rc *rawClient) command5() (uint16, string) {
	rc.t.Helper()
	f, b := rc.read()
	id, p, ok := parseCommand5(f, b)
	if !ok {
		rc.t.Fatalf("want the QoS 1 publish on cmd/x, got %02x % x", f, b)
	}
	return id, p
}

// parseCommand5 decodes an MQTT 5 QoS 1 PUBLISH on "cmd/x" (property
// block under 128 bytes).
func parseCommand5(f byte, b []byte) (uint16, string, bool) {
	if f&0xf6 != 0x32 || len(b) < 10 || string(b[2:7]) != "cmd/x" || b[9] > 127 || len(b) < 10+int(b[9]) {
		return 0, "", false
	}
	return uint16(b[7])<<8 | uint16(b[8]), string(b[10+int(b[9]):]), true
}

// readRawPacket reads one packet; for a goroutine other than the test's.
func readRawPacket(r *bufio.Reader) (byte, []byte, error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, shift := 0, 0
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n |= int(b&0x7f) << shift
		shift += 7
		if b&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return first, body, err
}

// rm1Client connects client "c5" with Receive Maximum 1, subscribed to
// cmd/#.
func rm1Client(t *testing.T, addr string) *rawClient {
	c := dialRaw(t, addr)
	c.send(0x10, connect5(true, 0x21, 0, 1)...) // Receive Maximum 1
	if f, _ := c.read(); f != 0x20 {
		t.Fatalf("CONNACK %02x", f)
	}
	c.send(0x82, append([]byte{0, 1, 0}, subscribeCmd...)...)
	c.expect(0x90, 0, 1, 0, 1)
	return c
}

func publishCmd(t *testing.T, s *Server, p string) {
	if err := s.Publish("cmd/x", []byte(p), false, 1); err != nil {
		t.Error(err)
	}
}

// TestTelegateFreedQuotaGoesToHeldFirst: a command published in the
// instant after the device's PUBACK freed the only slot, with "2" held,
// goes out after "2", not before it.
func TestTelegateFreedQuotaGoesToHeldFirst(t *testing.T) {
	s, addr := pidServer(t)
	c := rm1Client(t, addr)
	publishCmd(t, s, "1")
	publishCmd(t, s, "2") // held
	id1, p := c.command5()
	if p != "1" {
		t.Fatalf("first command %q", p)
	}
	c.sync()

	var once sync.Once
	setSeam(t, &seamQuotaFreed, func(*Client) { // the read goroutine, PUBACK of "1" processed
		once.Do(func() { publishCmd(t, s, "3") })
	})
	c.send(0x40, byte(id1>>8), byte(id1))
	for _, want := range []string{"2", "3"} {
		id, p := c.command5()
		if p != want {
			t.Fatalf("got command %q, want %q: published order lost ([MQTT-4.6.0-6])", p, want)
		}
		c.send(0x40, byte(id>>8), byte(id))
	}
	c.sync()
	cl, _ := s.Clients.Get("c5")
	if n := cl.State.Inflight.Len(); n != 0 {
		t.Fatalf("%d inflight, want 0", n)
	}
	if q := atomic.LoadInt32(&cl.State.Inflight.sendQuota); q != 1 {
		t.Fatalf("send quota %d, want 1", q)
	}
}

type rawPacket struct {
	first byte
	body  []byte
}

// TestTelegateHeldInFreeingInstantSentAtOnce: a command held (the quota
// read as used up) while the device's PUBACK frees the slot is sent at
// once, not when the device sends its next packet.
func TestTelegateHeldInFreeingInstantSentAtOnce(t *testing.T) {
	s, addr := pidServer(t)
	c := rm1Client(t, addr)
	publishCmd(t, s, "1")
	id1, _ := c.command5()

	pkts := make(chan rawPacket, 16)
	go func() {
		defer close(pkts)
		for {
			f, b, err := readRawPacket(c.r)
			if err != nil {
				return
			}
			pkts <- rawPacket{f, b}
		}
	}()
	lockWait := make(chan struct{}, 1)
	setSeam(t, &seamSendLockWait, func(*Client) {
		select {
		case lockWait <- struct{}{}:
		default:
		}
	})
	var early []rawPacket
	var once sync.Once
	setSeam(t, &seamHoldDecided, func(_ *Client, held bool) {
		if !held {
			return
		}
		once.Do(func() {
			// The device acknowledges "1", then pings: its last packet.
			// Wait until its read goroutine has handled the PUBACK
			// (PINGRESP) or waits for this publish to finish.
			c.send(0x40, byte(id1>>8), byte(id1))
			c.send(0xc0)
			select {
			case <-lockWait:
			case p, ok := <-pkts:
				if ok {
					early = append(early, p)
				}
			}
		})
	})
	publishCmd(t, s, "2")
	seamHoldDecided.Store(nil)

	got := early
	for {
		var sawCmd bool
		for _, p := range got {
			if _, pl, ok := parseCommand5(p.first, p.body); ok && pl == "2" {
				sawCmd = true
			}
		}
		if sawCmd {
			break
		}
		p, ok := <-pkts // the device sends nothing more
		if !ok {
			t.Fatalf("held command never sent after the PUBACK freed the quota; got %v", got)
		}
		got = append(got, p)
	}
}

// TestTelegateSentPublishNotExpired: the expiry sweep drops a held (never
// sent) publish whose Message Expiry passed, but keeps a sent one until
// its PUBACK (MQTT 5 3.3.2.3.3, 4.9), which gives the send quota back.
// Upstream deleted the sent one: its PUBACK freed nothing and with
// Receive Maximum 1 every later command stayed held.
func TestTelegateSentPublishNotExpired(t *testing.T) {
	s, addr := pidServer(t)
	c := rm1Client(t, addr)
	publishCmd(t, s, "1")
	publishCmd(t, s, "2") // held
	id1, _ := c.command5()
	c.sync()
	cl, _ := s.Clients.Get("c5")
	for _, pk := range cl.State.Inflight.GetAll(false) {
		pk.Created, pk.Expiry = 1, 1 // 1970: both past their expiry
		cl.State.Inflight.Set(pk)
	}
	// Past the server's Maximum Message Expiry Interval too (the rule that
	// applies to a message from a 3.1.1 or inline publisher).
	s.clearExpiredInflights(2 + s.Options.Capabilities.MaximumMessageExpiryInterval)
	all := cl.State.Inflight.GetAll(false)
	if len(all) != 1 || all[0].PacketID != id1 {
		t.Fatalf("%d inflight after the sweep, want only the sent publish %d", len(all), id1)
	}
	c.send(0x40, byte(id1>>8), byte(id1))
	c.sync()
	if q := atomic.LoadInt32(&cl.State.Inflight.sendQuota); q != 1 {
		t.Fatalf("send quota %d after the PUBACK, want 1", q)
	}
	publishCmd(t, s, "3")
	if _, p := c.command5(); p != "3" {
		t.Fatalf("got %q, want \"3\"", p)
	}
}
