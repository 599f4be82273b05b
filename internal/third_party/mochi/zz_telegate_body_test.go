package mqtt

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
	"unsafe"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Patched by telegate (see README.md in this directory): ReadPacket read a
// packet's body into one buffer and decoded it from a copy (two
// allocations per packet); with Options.ReuseIgnoredPublishBody the body
// of an ignored 3.1.1 publish serves a later packet.

// bodyHook ignores every publish (as the gateway's ingest hook does with a
// held one) and records each payload: a copy and where it was (copy
// false: the payload itself, which is only allowed when its body cannot
// be reused).
type bodyHook struct {
	HookBase
	copy      bool
	retain    bool // returns the publish with its retain flag
	published bool // provides OnPublished
	payloads  [][]byte
	addrs     []*byte
	seen      chan struct{}
}

func (h *bodyHook) ID() string { return "body" }
func (h *bodyHook) Provides(b byte) bool {
	return b == OnPublish || (h.published && b == OnPublished)
}
func (h *bodyHook) OnPublished(*Client, packets.Packet) {}
func (h *bodyHook) OnPublish(_ *Client, pk packets.Packet) (packets.Packet, error) {
	p := pk.Payload
	if h.copy {
		p = append([]byte(nil), p...)
	}
	h.payloads = append(h.payloads, p)
	h.addrs = append(h.addrs, unsafe.SliceData(pk.Payload))
	pk.FixedHeader.Qos, pk.FixedHeader.Retain, pk.Ignore = 0, h.retain, true
	h.seen <- struct{}{}
	return pk, nil
}

// runBodies serves one raw MQTT client (protocol level 4 or 5) on a real
// socket and sends n QoS 1 publishes with distinct payloads, one at a
// time, through h.
func runBodies(t *testing.T, reuse bool, level byte, h *bodyHook, n int) {
	t.Helper()
	s := New(&Options{Logger: logger, ReuseIgnoredPublishBody: reuse})
	_ = s.AddHook(new(AllowHook), nil)
	h.seen = make(chan struct{}, 1)
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		done <- s.EstablishConnection("t", c)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', level, 0x02, 0, 60, 0, 2, 'c', '1'}
	if level == 5 {
		body = []byte{0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0, 0, 2, 'c', '1'}
	}
	if _, err := c.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 {
		t.Fatalf("CONNACK % x: %v", ack, err)
	}
	for i := 1; i <= n; i++ {
		payload := bytes.Repeat([]byte{byte(i)}, 40)
		pub := []byte{0, 3, 'a', '/', 'b', 0, byte(i)}
		if level == 5 {
			pub = append(pub, 0) // no properties
		}
		pub = append(pub, payload...)
		if _, err := c.Write(append([]byte{0x32, byte(len(pub))}, pub...)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-h.seen:
		case err := <-done:
			t.Fatalf("connection ended at publish %d: %v", i, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("publish %d never reached the hook", i)
		}
	}
	c.Close()
	<-done
	s.Close()
}

func checkPayloads(t *testing.T, h *bodyHook) {
	t.Helper()
	for i, p := range h.payloads {
		if !bytes.Equal(p, bytes.Repeat([]byte{byte(i + 1)}, 40)) {
			t.Fatalf("payload %d overwritten: % x", i+1, p)
		}
	}
}

// The body of an ignored 3.1.1 publish serves the next ones.
func TestTelegateIgnoredPublishBodyReused(t *testing.T) {
	h := &bodyHook{copy: true}
	runBodies(t, true, 4, h, 20)
	checkPayloads(t, h)
	reused := 0
	for i := 1; i < len(h.addrs); i++ {
		if h.addrs[i] == h.addrs[i-1] {
			reused++
		}
	}
	// The pool drops a quarter of what it is given under the race
	// detector: one reuse in 19 is enough.
	if reused == 0 {
		t.Fatal("no publish body was reused")
	}
}

// Where something may keep the body, it is never reused: the payloads the
// hook kept stay intact.
func TestTelegatePublishBodyKeptWhereRetained(t *testing.T) {
	for _, c := range []struct {
		name  string
		reuse bool
		level byte
		h     *bodyHook
	}{
		{"option off", false, 4, &bodyHook{}},
		{"retained", true, 4, &bodyHook{retain: true}},
		{"OnPublished hook", true, 4, &bodyHook{published: true}},
		{"MQTT 5", true, 5, &bodyHook{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			runBodies(t, c.reuse, c.level, c.h, 20)
			checkPayloads(t, c.h)
			if len(c.h.payloads) != 20 {
				t.Fatalf("%d publishes seen", len(c.h.payloads))
			}
		})
	}
}
