package mqtt

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Patched by telegate (see README.md in this directory): client and server
// number their QoS 1/2 packets independently (MQTT 3.1.1 2.3.1, MQTT 5
// 2.2.1), but mochi keeps both in one Inflight map keyed by packet id. An
// inbound PUBLISH (or SUBSCRIBE, UNSUBSCRIBE, PUBREL) whose id equalled
// that of the server's publish still awaiting the client's PUBACK deleted
// or overwrote that publish: it was not resent on session resume and the
// client's PUBACK for it was ignored.

// pidServer serves every connection to a plain mochi server (allow-all
// auth) on a real socket.
func pidServer(t *testing.T) (*Server, string) {
	t.Helper()
	s := New(&Options{Logger: logger, InlineClient: true})
	_ = s.AddHook(new(AllowHook), nil)
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = s.EstablishConnection("t", c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.Close()
	})
	return s, ln.Addr().String()
}

// rawClient is one MQTT connection driven with raw bytes.
type rawClient struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawClient{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawClient) send(first byte, body ...byte) {
	rc.t.Helper()
	if _, err := rc.c.Write(append([]byte{first, byte(len(body))}, body...)); err != nil {
		rc.t.Fatal(err)
	}
}

// read returns the next packet's first byte and body.
func (rc *rawClient) read() (byte, []byte) {
	rc.t.Helper()
	first, err := rc.r.ReadByte()
	if err != nil {
		rc.t.Fatal(err)
	}
	n, shift := 0, 0
	for {
		b, err := rc.r.ReadByte()
		if err != nil {
			rc.t.Fatal(err)
		}
		n |= int(b&0x7f) << shift
		shift += 7
		if b&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(rc.r, body); err != nil {
		rc.t.Fatal(err)
	}
	return first, body
}

func (rc *rawClient) expect(first byte, body ...byte) {
	rc.t.Helper()
	f, b := rc.read()
	if f != first || !bytes.Equal(b, body) {
		rc.t.Fatalf("got %02x % x, want %02x % x", f, b, first, body)
	}
}

// sync waits for PINGRESP: every packet sent before has been processed.
func (rc *rawClient) sync() {
	rc.t.Helper()
	rc.send(0xc0)
	rc.expect(0xd0)
}

// readCommand reads the server's QoS 1 PUBLISH on "cmd/x" and returns its
// first byte and packet id.
func (rc *rawClient) readCommand() (byte, uint16) {
	rc.t.Helper()
	f, b := rc.read()
	if f&0xf0 != 0x30 || f&0x06 != 0x02 || len(b) < 9 || string(b[2:7]) != "cmd/x" {
		rc.t.Fatalf("want the QoS 1 publish on cmd/x, got %02x % x", f, b)
	}
	return f, uint16(b[7])<<8 | uint16(b[8])
}

var subscribeCmd = []byte{0, 5, 'c', 'm', 'd', '/', '#', 1}

// A 3.1.1 client's QoS 1 PUBLISH and SUBSCRIBE with the packet id of the
// server's unacknowledged publish to it leave that publish inflight: it is
// resent (DUP) when the session resumes, and the client's PUBACK ends it.
func TestTelegateInboundPacketIDsIndependentOfOutbound(t *testing.T) {
	s, addr := pidServer(t)
	connect := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x00, 0, 60, 0, 2, 'c', '1'} // clean session 0
	c := dialRaw(t, addr)
	c.send(0x10, connect...)
	c.expect(0x20, 0, 0)
	c.send(0x82, append([]byte{0, 1}, subscribeCmd...)...)
	c.expect(0x90, 0, 1, 1)

	if err := s.Publish("cmd/x", []byte("go"), false, 1); err != nil {
		t.Fatal(err)
	}
	_, id := c.readCommand()
	hi, lo := byte(id>>8), byte(id)
	// No PUBACK: the client publishes at QoS 1 with the same packet id.
	c.send(0x32, 0, 4, 'u', 'p', '/', 'x', hi, lo, 'v')
	c.expect(0x40, hi, lo)
	cl, ok := s.Clients.Get("c1")
	if !ok {
		t.Fatal("client c1 unknown")
	}
	if pki, ok := cl.State.Inflight.Get(id); !ok || pki.FixedHeader.Type != packets.Publish || pki.TopicName != "cmd/x" {
		t.Fatalf("inflight %d after the client's publish = %v %+v, want the server's publish on cmd/x", id, ok, pki.FixedHeader)
	}
	// And a SUBSCRIBE with that id is no "packet identifier in use".
	c.send(0x82, append([]byte{hi, lo}, 0, 5, 'c', 'm', 'd', '/', 'y', 1)...)
	c.expect(0x90, hi, lo, 1)
	if pki, ok := cl.State.Inflight.Get(id); !ok || pki.FixedHeader.Type != packets.Publish {
		t.Fatalf("inflight %d after the client's subscribe = %v %+v", id, ok, pki.FixedHeader)
	}

	// The session resumes: the publish comes again, with DUP.
	c.c.Close()
	c = dialRaw(t, addr)
	c.send(0x10, connect...)
	c.expect(0x20, 1, 0) // session present
	first, again := c.readCommand()
	if first != 0x3a || again != id {
		t.Fatalf("resent publish %02x id %d, want 3a (DUP, QoS 1) id %d", first, again, id)
	}
	c.send(0x40, hi, lo)
	c.sync()
	cl, _ = s.Clients.Get("c1")
	if n := cl.State.Inflight.Len(); n != 0 {
		t.Fatalf("%d inflight after the client's PUBACK, want 0", n)
	}
}

// An MQTT 5 client's QoS 2 PUBLISH cannot be tracked under the id of the
// server's unacknowledged publish to it: it gets PUBREC 0x91 Packet
// Identifier in use (as for an id its own QoS 2 flow holds), its PUBREL
// PUBCOMP 0x92, and the server's publish stays inflight. QoS 2 with
// another id completes.
func TestTelegateInboundQos2KeepsOutboundWithSameID(t *testing.T) {
	s, addr := pidServer(t)
	c := dialRaw(t, addr)
	c.send(0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0, 0, 2, 'c', '2')
	if f, _ := c.read(); f != 0x20 {
		t.Fatalf("CONNACK %02x", f)
	}
	c.send(0x82, append([]byte{0, 1, 0}, subscribeCmd...)...)
	c.expect(0x90, 0, 1, 0, 1)
	if err := s.Publish("cmd/x", []byte("go"), false, 1); err != nil {
		t.Fatal(err)
	}
	_, id := c.readCommand()
	hi, lo := byte(id>>8), byte(id)

	c.send(0x34, 0, 4, 'u', 'p', '/', 'x', hi, lo, 0, 'v')
	f, b := c.read()
	if f != 0x50 || len(b) < 3 || b[0] != hi || b[1] != lo || b[2] != packets.ErrPacketIdentifierInUse.Code {
		t.Fatalf("PUBREC %02x % x, want 50 with reason 91", f, b)
	}
	c.send(0x62, hi, lo)
	f, b = c.read()
	if f != 0x70 || len(b) < 3 || b[2] != packets.ErrPacketIdentifierNotFound.Code {
		t.Fatalf("PUBCOMP %02x % x, want 70 with reason 92", f, b)
	}
	cl, _ := s.Clients.Get("c2")
	if pki, ok := cl.State.Inflight.Get(id); !ok || pki.FixedHeader.Type != packets.Publish {
		t.Fatalf("inflight %d = %v %+v, want the server's publish", id, ok, pki.FixedHeader)
	}

	other := id + 1
	c.send(0x34, 0, 4, 'u', 'p', '/', 'x', byte(other>>8), byte(other), 0, 'w')
	c.expect(0x50, byte(other>>8), byte(other))
	c.send(0x62, byte(other>>8), byte(other))
	c.expect(0x70, byte(other>>8), byte(other))
	c.send(0x40, hi, lo)
	c.sync()
	if n := cl.State.Inflight.Len(); n != 0 {
		t.Fatalf("%d inflight at the end, want 0", n)
	}
}

// TestTelegateInboundQos2KeepsOutboundWithSameID311: the same collision
// from an MQTT 3.1.1 client, whose PUBREC has no reason code (it would read
// as "accepted" and the message would be lost): the connection is closed
// without a PUBREC, and the server's publish stays inflight for the resumed
// session.
func TestTelegateInboundQos2KeepsOutboundWithSameID311(t *testing.T) {
	s, addr := pidServer(t)
	c := dialRaw(t, addr)
	c.send(0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x00, 0, 60, 0, 2, 'c', '3') // clean session 0
	c.expect(0x20, 0, 0)
	c.send(0x82, append([]byte{0, 1}, subscribeCmd...)...)
	c.expect(0x90, 0, 1, 1)
	if err := s.Publish("cmd/x", []byte("go"), false, 1); err != nil {
		t.Fatal(err)
	}
	_, id := c.readCommand()
	c.send(0x34, 0, 4, 'u', 'p', '/', 'x', byte(id>>8), byte(id), 'v')
	if f, err := c.r.ReadByte(); err == nil {
		t.Fatalf("got a packet %02x, want the connection closed", f)
	}
	cl, ok := s.Clients.Get("c3")
	if !ok {
		t.Fatal("session gone")
	}
	if pki, ok := cl.State.Inflight.Get(id); !ok || pki.FixedHeader.Type != packets.Publish {
		t.Fatalf("inflight %d = %v %+v, want the server's publish", id, ok, pki.FixedHeader)
	}
}
