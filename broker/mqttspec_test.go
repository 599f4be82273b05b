package broker

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"testing"
)

// MQTT 5 / 3.1.1 conformance of session state across connections, on raw
// sockets: Session Expiry Interval at DISCONNECT, packets larger than the
// Maximum Packet Size a client announced, and topic aliases towards a
// client whose session resumes on a new connection.

// connectProps builds a CONNECT of device id at protocol level 4 or 5
// with the given connect flags (user name and password flags are added)
// and, for level 5, the given property bytes.
func connectProps(level, flags byte, id string, props []byte) []byte {
	body := append(encStr("MQTT"), level, flags|0xC0, 0, 30)
	if level == 5 {
		body = append(body, encLen(len(props))...)
		body = append(body, props...)
	}
	body = append(body, encStr(id)...)
	body = append(body, encStr(id)...)
	body = append(body, encStr(secrets[id])...)
	return packet(0x10, body)
}

// Property bytes used below.
var (
	propSEI60  = []byte{0x11, 0, 0, 0, 60}  // Session Expiry Interval 60 s
	propTAM10  = []byte{0x22, 0, 10}        // Topic Alias Maximum 10
	propMPS200 = []byte{0x27, 0, 0, 0, 200} // Maximum Packet Size 200
)

func joinProps(ps ...[]byte) []byte { return bytes.Join(ps, nil) }

// dialConnect writes CONNECT and reads the CONNACK, returning its body.
func dialConnect(t *testing.T, addr string, connect []byte) (net.Conn, *bufio.Reader, []byte) {
	t.Helper()
	c := dial(t, addr)
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	return c, r, readPacketRaw(t, r, 0x20, 0)
}

// subscribeV5 subscribes to filter at QoS 1 (MQTT 5, no properties) and
// checks SUBACK granted QoS 1.
func subscribeV5(t *testing.T, c net.Conn, r *bufio.Reader, filter string) {
	t.Helper()
	body := append([]byte{0, 1, 0}, encStr(filter)...)
	if _, err := c.Write(packet(0x82, append(body, 1))); err != nil {
		t.Fatal(err)
	}
	if got := readPacketRaw(t, r, 0x90, 0); !bytes.Equal(got, []byte{0, 1, 0, 1}) {
		t.Fatalf("SUBACK %x", got)
	}
}

// pingPong checks the connection is open and that nothing arrived before
// the PINGRESP.
func pingPong(t *testing.T, c net.Conn, r *bufio.Reader) {
	t.Helper()
	if _, err := c.Write([]byte{0xC0, 0}); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, r, 2); !bytes.Equal(got, []byte{0xD0, 0}) {
		t.Fatalf("want PINGRESP, got %x", got)
	}
}

// TestDisconnectSessionExpiryClamped: MQTT 5 3.14.2.2.2 lets a client set
// the Session Expiry Interval again in its DISCONNECT. The broker keeps a
// disconnected session at most Config.SessionExpiry (24 h), as it does at
// CONNECT; mochi took the DISCONNECT's value as sent, so 0xFFFFFFFF kept
// the session (and its queued commands) for 136 years. A value 0 at
// CONNECT made non-zero at DISCONNECT is a Protocol Error: DISCONNECT 0x82.
func TestDisconnectSessionExpiryClamped(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)

	c, r, _ := dialConnect(t, addr, connectProps(5, 0x02, vin1, propSEI60))
	if _, err := c.Write([]byte{0xE0, 7, 0x00, 5, 0x11, 0xFF, 0xFF, 0xFF, 0xFF}); err != nil {
		t.Fatal(err)
	}
	if got := waitEOF(t, r2c{r, c}); len(got) != 0 {
		t.Fatalf("answer to DISCONNECT: %x", got)
	}
	var sei uint32
	eventually(t, "session kept after DISCONNECT", func() bool {
		cl, ok := b.server.Clients.Get(vin1)
		if !ok || !cl.Closed() {
			return false
		}
		sei = cl.Properties.Props.SessionExpiryInterval
		return true
	})
	if want := uint32(DefaultConfig().SessionExpiry.Seconds()); sei != want {
		t.Fatalf("Session Expiry Interval after DISCONNECT = %d, want %d", sei, want)
	}

	// 0 at CONNECT, 10 at DISCONNECT.
	c, r, _ = dialConnect(t, addr, connectProps(5, 0x02, vin2, nil))
	if _, err := c.Write([]byte{0xE0, 7, 0x00, 5, 0x11, 0, 0, 0, 10}); err != nil {
		t.Fatal(err)
	}
	got := waitEOF(t, r2c{r, c})
	if len(got) < 3 || got[0] != 0xE0 || got[2] != 0x82 {
		t.Fatalf("want DISCONNECT 0x82 Protocol Error, got %x", got)
	}
	eventually(t, "session of a client with Session Expiry 0 discarded", func() bool {
		_, ok := b.server.Clients.Get(vin2)
		return !ok
	})
}

// pub5 is an MQTT 5 PUBLISH as read from the wire.
type pub5 struct {
	first   byte
	topic   string
	id      uint16
	props   []byte
	payload string
}

// readPublish5 reads one packet, which must be a QoS 1 MQTT 5 PUBLISH.
func readPublish5(t *testing.T, r *bufio.Reader) pub5 {
	t.Helper()
	first := readN(t, r, 1)[0]
	if first&0xF6 != 0x32 {
		t.Fatalf("want a QoS 1 PUBLISH, got first byte %02x", first)
	}
	n, mul := 0, 1
	for {
		b := readN(t, r, 1)[0]
		n += int(b&0x7F) * mul
		mul *= 128
		if b&0x80 == 0 {
			break
		}
	}
	body := readN(t, r, n)
	tl := int(body[0])<<8 | int(body[1])
	p := pub5{first: first, topic: string(body[2 : 2+tl]), id: uint16(body[2+tl])<<8 | uint16(body[3+tl])}
	rest := body[4+tl:]
	pl := int(rest[0]) // property lengths below 128 in these tests
	p.props, p.payload = rest[1:1+pl], string(rest[1+pl:])
	return p
}

// hasTopicAlias reports whether a property block holds a Topic Alias. It
// knows the properties a command PUBLISH can carry.
func hasTopicAlias(props []byte) bool {
	for i := 0; i < len(props); {
		switch props[i] {
		case 0x02: // Message Expiry Interval
			i += 5
		case 0x23:
			return true
		case 0x0B: // Subscription Identifier (one byte in these tests)
			i += 2
		default:
			return false
		}
	}
	return false
}

// TestClientMaximumPacketSizeDiscards: a PUBLISH larger than the Maximum
// Packet Size the client announced is discarded, as if it had been sent
// ([MQTT-3.1.2-25]). mochi kept it in the session's inflight messages,
// and every resume of the session tried to resend it, failed, and closed
// the connection right after CONNACK: the device could not reconnect
// with its session. A message queued for a session whose new connection
// announces a smaller maximum is discarded the same way.
func TestClientMaximumPacketSizeDiscards(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	cmd := "vehicles/" + vin1 + "/cmd/"
	big, medium := strings.Repeat("b", 400), strings.Repeat("m", 100) // 145-byte PUBLISH

	c, r, _ := dialConnect(t, addr, connectProps(5, 0x02, vin1, joinProps(propSEI60, propMPS200)))
	subscribeV5(t, c, r, cmd+"#")
	for _, p := range []string{big, medium, "s"} {
		if err := b.Publish(cmd+"x", []byte(p), 1); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{medium, "s"} { // not acknowledged
		if got := readPublish5(t, r); got.payload != want || got.first != 0x32 {
			t.Fatalf("got %02x %q, want %q", got.first, got.payload, want)
		}
	}
	pingPong(t, c, r)
	c.Close()

	// Resumed with Maximum Packet Size 120: the medium one is discarded.
	mps120 := []byte{0x27, 0, 0, 0, 120}
	var connack []byte
	eventually(t, "session resumed", func() bool {
		c, r, connack = dialConnect(t, addr, connectProps(5, 0x00, vin1, joinProps(propSEI60, mps120)))
		return connack[0] == 1
	})
	if got := readPublish5(t, r); got.payload != "s" || got.first != 0x3A {
		t.Fatalf("resent %02x %q, want DUP %q", got.first, got.payload, "s")
	}
	pingPong(t, c, r) // upstream closed the connection here
	c.Close()

	// And not resent to a later connection that would take it.
	c, r, connack = dialConnect(t, addr, connectProps(5, 0x00, vin1, joinProps(propSEI60, propMPS200)))
	if connack[0] != 1 {
		t.Fatalf("CONNACK %x: session not present", connack)
	}
	got := readPublish5(t, r)
	if got.payload != "s" {
		t.Fatalf("resent %q, want only %q", got.payload, "s")
	}
	if _, err := c.Write([]byte{0x40, 2, byte(got.id >> 8), byte(got.id)}); err != nil {
		t.Fatal(err)
	}
	pingPong(t, c, r)
}

// TestTopicAliasNotResentOnNewConnection: topic aliases hold for one
// network connection only (MQTT 5 section 3.3.2.3.4). A command sent with
// a topic alias and not acknowledged before the connection ended is sent
// again on the resumed session's new connection with its topic name and
// without that alias; mochi resent it as stored, with an empty topic and
// the old connection's alias, to a client that had set no alias (here:
// that allows none).
func TestTopicAliasNotResentOnNewConnection(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	topic := "vehicles/" + vin2 + "/cmd/ping"

	c, r, _ := dialConnect(t, addr, connectProps(5, 0x02, vin2, joinProps(propSEI60, propTAM10)))
	subscribeV5(t, c, r, "vehicles/"+vin2+"/cmd/#")
	for _, p := range []string{"1", "2"} {
		if err := b.Publish(topic, []byte(p), 1); err != nil {
			t.Fatal(err)
		}
	}
	first, second := readPublish5(t, r), readPublish5(t, r)
	if first.topic != topic || !hasTopicAlias(first.props) || second.topic != "" || !hasTopicAlias(second.props) {
		t.Fatalf("first connection: %+v %+v, want the topic with an alias, then the alias alone", first, second)
	}
	c.Close()

	var connack []byte
	eventually(t, "session resumed", func() bool {
		c, r, connack = dialConnect(t, addr, connectProps(5, 0x00, vin2, propSEI60))
		return connack[0] == 1
	})
	seen := map[string]bool{}
	for range 2 {
		p := readPublish5(t, r)
		if p.first != 0x3A || p.topic != topic || hasTopicAlias(p.props) {
			t.Fatalf("resent %+v: want DUP, topic %q, no Topic Alias", p, topic)
		}
		seen[p.payload] = true
		if _, err := c.Write([]byte{0x40, 2, byte(p.id >> 8), byte(p.id)}); err != nil {
			t.Fatal(err)
		}
	}
	if !seen["1"] || !seen["2"] {
		t.Fatalf("resent %v", seen)
	}
	pingPong(t, c, r)
}

// TestResumeResendsInOrder: the commands a session had not acknowledged
// are sent again on its next connection in the order they were first
// sent ([MQTT-4.6.0-6], ordered topics). mochi sorted them on their
// creation second cut to 16 bits with an unstable sort: those of one
// second came back in map order.
func TestResumeResendsInOrder(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	cmd := "vehicles/" + vin1 + "/cmd/ping"
	const n = 12

	c, r, _ := dialConnect(t, addr, connectProps(5, 0x02, vin1, propSEI60))
	subscribeV5(t, c, r, "vehicles/"+vin1+"/cmd/#")
	for i := range n {
		if err := b.Publish(cmd, []byte{'a' + byte(i)}, 1); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n { // not acknowledged
		if got := readPublish5(t, r); got.payload != string(rune('a'+i)) {
			t.Fatalf("publish %d: %q", i, got.payload)
		}
	}
	c.Close()

	var connack []byte
	eventually(t, "session resumed", func() bool {
		c, r, connack = dialConnect(t, addr, connectProps(5, 0x00, vin1, propSEI60))
		return connack[0] == 1
	})
	var got []byte
	for range n {
		p := readPublish5(t, r)
		got = append(got, p.payload...)
		if _, err := c.Write([]byte{0x40, 2, byte(p.id >> 8), byte(p.id)}); err != nil {
			t.Fatal(err)
		}
	}
	if want := "abcdefghijkl"; string(got) != want {
		t.Fatalf("resent in order %q, want %q", got, want)
	}
	pingPong(t, c, r)
}

// TestWillQoSWithoutWillFlag: a CONNECT whose Will flag is 0 must have
// Will QoS 0 (MQTT 3.1.1 [MQTT-3.1.2-13], MQTT 5 [MQTT-3.1.2-11]); such a
// malformed CONNECT is closed without CONNACK ([MQTT-3.1.4-1]). mochi
// accepted it (CONNACK 0x00).
func TestWillQoSWithoutWillFlag(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	before := b.stats.Listener.ProtocolViolations.Load()
	for _, level := range []byte{4, 5} {
		for _, flags := range []byte{0x02 | 0x08, 0x02 | 0x10} { // Will QoS 1, 2
			c := dial(t, addr)
			if _, err := c.Write(connectProps(level, flags, vin1, nil)); err != nil {
				t.Fatal(err)
			}
			if got := waitEOF(t, c); len(got) != 0 {
				t.Fatalf("level %d flags %02x: got %x, want the connection closed without CONNACK", level, flags, got)
			}
		}
	}
	if got := b.stats.Listener.ProtocolViolations.Load() - before; got != 4 {
		t.Fatalf("protocol violations counted: %d, want 4", got)
	}
	rawConnect(t, addr, vin1) // a well-formed CONNECT is still accepted
}
