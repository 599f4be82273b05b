package broker

import (
	"bufio"
	"bytes"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// More MQTT 5 / 3.1.1 conformance on raw sockets: the Message Expiry of
// commands held back by a client's Receive Maximum, empty Will payloads,
// the reserved CONNECT flag, and User Properties under Request Problem
// Information 0.

var propRM1 = []byte{0x21, 0, 1} // Receive Maximum 1

// messageExpiry returns the Message Expiry Interval in a PUBLISH property
// block (the properties a command carries), and whether there is one.
func messageExpiry(props []byte) (uint32, bool) {
	for i := 0; i+1 < len(props); {
		switch props[i] {
		case 0x02:
			p := props[i+1:]
			return uint32(p[0])<<24 | uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3]), true
		case 0x23: // Topic Alias
			i += 3
		case 0x0B: // Subscription Identifier (one byte in these tests)
			i += 2
		default:
			return 0, false
		}
	}
	return 0, false
}

// readCommand5 reads a QoS 1 command PUBLISH with the given payload and
// DUP flag that carries a Message Expiry Interval (the broker gives each
// command its session expiry, 24 h, as the message's maximum life).
func readCommand5(t *testing.T, r *bufio.Reader, payload string, dup bool) pub5 {
	t.Helper()
	p := readPublish5(t, r)
	if p.payload != payload || (p.first&0x08 != 0) != dup {
		t.Fatalf("got %02x %q, want %q DUP=%v", p.first, p.payload, payload, dup)
	}
	if mei, ok := messageExpiry(p.props); !ok || mei == 0 || mei > uint32(DefaultConfig().SessionExpiry.Seconds()) {
		t.Fatalf("%q: Message Expiry Interval %d (present %v), want the remaining expiry ([MQTT-3.3.2-6])", p.payload, mei, ok)
	}
	return p
}

func puback(t *testing.T, c net.Conn, id uint16) {
	t.Helper()
	if _, err := c.Write([]byte{0x40, 2, byte(id >> 8), byte(id)}); err != nil {
		t.Fatal(err)
	}
}

// TestHeldCommandKeepsMessageExpiry: a command held back because the
// client's Receive Maximum is used up is sent later, when a PUBACK frees
// the quota, with its remaining Message Expiry Interval ([MQTT-3.3.2-6]);
// mochi marked it with Expiry -1 and sent it without one. It stays
// inflight until its own PUBACK: mochi dropped it from the session once
// written (not resent on resume) and its PUBACK, found nowhere, never gave
// the quota back, so every later command to the client stalled.
func TestHeldCommandKeepsMessageExpiry(t *testing.T) {
	b := startBroker(t, nil, nil)
	c, r, cmd := rm1Commands(t, b, vin1)
	for _, p := range []string{"a", "b"} {
		if err := b.Publish(cmd, []byte(p), 1); err != nil {
			t.Fatal(err)
		}
	}
	a := readCommand5(t, r, "a", false)
	pingPong(t, c, r) // "b" is held: Receive Maximum 1
	puback(t, c, a.id)
	bp := readCommand5(t, r, "b", false)
	pingPong(t, c, r)
	cl, _ := b.server.Clients.Get(vin1)
	if _, ok := cl.State.Inflight.Get(bp.id); !ok {
		t.Fatal("released command not inflight: it would not be resent on resume")
	}
	puback(t, c, bp.id)
	if err := b.Publish(cmd, []byte("c"), 1); err != nil {
		t.Fatal(err)
	}
	puback(t, c, readCommand5(t, r, "c", false).id) // mochi: held for good
	pingPong(t, c, r)
}

// TestResumeSendsHeldCommandsWithinQuota: on a resumed session the
// command sent but not acknowledged is sent again (DUP) and the commands
// that were held back are sent, never sent before (no DUP), one per free
// slot of the new connection's Receive Maximum, each with its remaining
// Message Expiry Interval. mochi sent them all at once, without expiry.
func TestResumeSendsHeldCommandsWithinQuota(t *testing.T) {
	b := startBroker(t, nil, nil)
	c, r, cmd := rm1Commands(t, b, vin2)
	for _, p := range []string{"a", "b", "c"} {
		if err := b.Publish(cmd, []byte(p), 1); err != nil {
			t.Fatal(err)
		}
	}
	readCommand5(t, r, "a", false) // not acknowledged
	pingPong(t, c, r)
	c.Close()

	var connack []byte
	eventually(t, "session resumed", func() bool {
		c, r, connack = dialConnect(t, b.Addr(ListenerTCP), connectProps(5, 0x00, vin2, joinProps(propSEI60, propRM1)))
		return connack[0] == 1
	})
	a := readCommand5(t, r, "a", true)
	pingPong(t, c, r) // nothing more: Receive Maximum 1
	puback(t, c, a.id)
	bp := readCommand5(t, r, "b", false)
	pingPong(t, c, r)
	puback(t, c, bp.id)
	puback(t, c, readCommand5(t, r, "c", false).id)
	pingPong(t, c, r)
}

// TestExpiredHeldCommandNotSent: a held command whose Message Expiry has
// passed is not sent at all ([MQTT-3.3.2-5]), neither when the quota
// frees nor on a resumed session, and the next one goes instead.
func TestExpiredHeldCommandNotSent(t *testing.T) {
	b := startBroker(t, nil, nil)
	c, r, cmd := rm1Commands(t, b, vin1)
	for _, p := range []string{"a", "old1", "b", "old2", "c"} {
		if err := b.Publish(cmd, []byte(p), 1); err != nil {
			t.Fatal(err)
		}
	}
	a := readCommand5(t, r, "a", false)
	pingPong(t, c, r)
	// Age "old1" and "old2" past their expiry (as if their life had run
	// out while held): an Expiry in 1970.
	cl, _ := b.server.Clients.Get(vin1)
	for _, pk := range cl.State.Inflight.GetAll(false) {
		if p := string(pk.Payload); p == "old1" || p == "old2" {
			pk.Expiry = 1
			cl.State.Inflight.Set(pk)
		}
	}
	puback(t, c, a.id)
	bp := readCommand5(t, r, "b", false) // "old1" skipped
	pingPong(t, c, r)
	c.Close()

	var connack []byte
	eventually(t, "session resumed", func() bool {
		c, r, connack = dialConnect(t, b.Addr(ListenerTCP), connectProps(5, 0x00, vin1, joinProps(propSEI60, propRM1)))
		return connack[0] == 1
	})
	if got := readCommand5(t, r, "b", true); got.id != bp.id {
		t.Fatalf("resent id %d, want %d", got.id, bp.id)
	}
	puback(t, c, bp.id)
	puback(t, c, readCommand5(t, r, "c", false).id) // "old2" skipped
	pingPong(t, c, r)
	cl, _ = b.server.Clients.Get(vin1)
	if n := cl.State.Inflight.Len(); n != 0 {
		t.Fatalf("%d inflight, want 0", n)
	}
}

// willConnectTo builds a CONNECT of vin1 (clean start) with a Will QoS 1
// on topic with the given payload.
func willConnectTo(level byte, topic, payload string) []byte {
	body := append(encStr("MQTT"), level, 0xC2|0x04|0x08, 0, 30)
	if level == 5 {
		body = append(body, 0)
	}
	body = append(body, encStr(vin1)...)
	if level == 5 {
		body = append(body, 0) // will properties
	}
	body = append(body, encStr(topic)...)
	body = append(body, encStr(payload)...)
	body = append(body, encStr(vin1)...)
	body = append(body, encStr(secrets[vin1])...)
	return packet(0x10, body)
}

// TestEmptyWillPayload: a zero-length Will Message is valid in MQTT 3.1.1
// (3.1.3.3) and MQTT 5 (3.1.3.4); mochi refused it as a protocol error
// (CONNACK 0x82, 0x05 for 3.1.1). Now the usual Will rules apply: on the
// device's own topic it is accepted and published when the connection
// drops (the ingest hook then judges the payload like any Will); on a
// topic the device may not publish to it is refused as not authorized.
func TestEmptyWillPayload(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	got := make(chan string, 4)
	if err := b.Server().Subscribe("vehicles/+/events", 1, func(_ *mqttClient, _ subscription, pk mqttPacket) {
		got <- pk.TopicName + " " + string(pk.Payload) + "|"
	}); err != nil {
		t.Fatal(err)
	}
	own, other := "vehicles/"+vin1+"/events", "vehicles/"+vin2+"/events"
	for _, level := range []byte{4, 5} {
		c, _, connack := dialConnect(t, addr, willConnectTo(level, own, ""))
		if len(connack) < 2 || connack[1] != 0 {
			t.Fatalf("level %d: CONNACK %x, want 0x00", level, connack)
		}
		c.Close() // no DISCONNECT: the Will goes out
		select {
		case p := <-got:
			if p != own+" |" {
				t.Fatalf("level %d: Will %q, want an empty one on %s", level, p, own)
			}
		case <-time.After(wait):
			t.Fatalf("level %d: Will not published", level)
		}

		c = dial(t, addr)
		if _, err := c.Write(willConnectTo(level, other, "")); err != nil {
			t.Fatal(err)
		}
		readPacketRaw(t, bufio.NewReader(c), 0x20, map[byte]byte{4: 0x05, 5: 0x87}[level])
	}
}

// TestConnectReservedFlag: the reserved bit 0 of the CONNECT flags must be
// 0. MQTT 3.1.1 [MQTT-3.1.2-3]: the server disconnects the client, no
// CONNACK; MQTT 5 [MQTT-3.1.2-3]: a Malformed Packet, the connection is
// closed ([MQTT-3.1.4-1]; a CONNACK 0x81 before closing would be allowed,
// the gateway closes at once as for every malformed CONNECT). mochi
// answered CONNACK 0x82 Protocol Error (0x05 for 3.1.1).
func TestConnectReservedFlag(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	before := b.stats.Listener.ProtocolViolations.Load()
	for _, level := range []byte{4, 5} {
		c := dial(t, addr)
		if _, err := c.Write(connectProps(level, 0x02|0x01, vin1, nil)); err != nil {
			t.Fatal(err)
		}
		if got := waitEOF(t, c); len(got) != 0 {
			t.Fatalf("level %d: got %x, want the connection closed without CONNACK", level, got)
		}
	}
	if got := b.stats.Listener.ProtocolViolations.Load() - before; got != 2 {
		t.Fatalf("protocol violations counted: %d, want 2", got)
	}
	dialConnect(t, addr, connectProps(5, 0x02, vin1, nil)) // reserved bit 0: accepted
}

// TestUserPropertiesKeptWithoutProblemInfo: a client that sets Request
// Problem Information 0 still receives the User Properties of a PUBLISH:
// the flag only keeps Reason Strings and User Properties off packets other
// than PUBLISH, CONNACK and DISCONNECT ([MQTT-3.1.2-29]), and a server
// forwards a message's User Properties unaltered ([MQTT-3.3.2-17]). mochi
// dropped them from every packet.
func TestUserPropertiesKeptWithoutProblemInfo(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	topic := "vehicles/" + vin1 + "/cmd/x"
	userKV := []byte{0x26, 0, 1, 'k', 0, 1, 'v'}

	for _, rpi := range []byte{1, 0} {
		c, r, _ := dialConnect(t, addr, connectProps(5, 0x02, vin1, []byte{0x17, rpi}))
		subscribeV5(t, c, r, "vehicles/"+vin1+"/cmd/#")
		inline := b.server.NewClient(nil, mqtt.LocalListener, mqtt.InlineClientId, true)
		pk := mqttPacket{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			TopicName:   topic,
			Payload:     []byte("p"),
			PacketID:    1,
			Properties:  packets.Properties{User: []packets.UserProperty{{Key: "k", Val: "v"}}},
		}
		if err := b.server.InjectPacket(inline, pk); err != nil {
			t.Fatal(err)
		}
		p := readPublish5(t, r)
		if !bytes.Contains(p.props, userKV) {
			t.Fatalf("Request Problem Information %d: PUBLISH properties %x lack the User Property k=v", rpi, p.props)
		}
		puback(t, c, p.id)
		pingPong(t, c, r)
		c.Close()
	}
}

// rm1Commands connects vehicle id (MQTT 5, clean start, Session Expiry
// 60 s, Receive Maximum 1) to b's TCP listener, subscribes it to its
// commands and returns the connection and the topic to publish them on.
func rm1Commands(t *testing.T, b *Broker, id string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	c, r, _ := dialConnect(t, b.Addr(ListenerTCP), connectProps(5, 0x02, id, joinProps(propSEI60, propRM1)))
	subscribeV5(t, c, r, "vehicles/"+id+"/cmd/#")
	return c, r, "vehicles/" + id + "/cmd/x"
}
