package broker

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"sync/atomic"
	"testing"
)

// Device-facing conformance at the byte level: each case writes packets
// on a real TCP socket to a real broker and asserts the exact bytes the
// broker answers, then either that it closes the connection without
// another byte, or that the connection is still usable (PINGREQ answered).
// Packets are MQTT 3.1.1 (level 4) unless the case says level 5.

// v5Publish builds an MQTT 5 PUBLISH with an empty property block.
func v5Publish(topic string, qos byte, id uint16, payload string) []byte {
	body := encStr(topic)
	if qos > 0 {
		body = append(body, byte(id>>8), byte(id))
	}
	body = append(body, 0) // no properties
	body = append(body, payload...)
	return packet(0x30|qos<<1, body)
}

// v5ReasonString is the property block holding one Reason String.
func v5ReasonString(s string) []byte {
	p := append([]byte{0x1F}, encStr(s)...)
	return append(encLen(len(p)), p...)
}

// oversize is the start of a QoS 1 PUBLISH declaring a body one byte over
// what a 64 KiB Maximum Packet Size allows (1 + 3 + 65533 = 65537 bytes),
// followed by the first bytes of that body.
func oversize() []byte {
	b := append([]byte{0x32}, encLen(64<<10-3)...)
	return append(b, encStr("vehicles/"+vin1+"/telemetry")...)
}

type conformanceCase struct {
	name  string
	level byte   // 4 or 5
	id    string // device that connects (default vin1)
	send  []byte // after the CONNACK
	want  []byte // exact bytes answered
	// closed: after want the broker closes the connection. Otherwise the
	// connection must still answer a PINGREQ.
	closed bool
	// clientCloses: after reading want the client half-closes, as an MQTT 5
	// client does on receiving DISCONNECT (ends the broker's lingering
	// close).
	clientCloses bool
}

var (
	tele1 = "vehicles/" + vin1 + "/telemetry"
	tele2 = "vehicles/" + vin2 + "/telemetry"
)

var conformanceCases = []conformanceCase{
	// QoS 2 is not offered (Maximum QoS 1 in the v5 CONNACK).
	{name: "QoS 2 publish", level: 4, send: publishPacket(tele1, 2, 5, "x"), closed: true},
	{name: "QoS 2 publish", level: 5, send: v5Publish(tele1, 2, 5, "x"),
		want:   packet(0xE0, append([]byte{0x9B}, v5ReasonString("qos not supported")...)),
		closed: true},
	// Retain is not offered (Retain Available 0): MQTT 5 is told; the
	// retain flag of a 3.1.1 publish is ignored.
	{name: "retained publish", level: 5, send: append([]byte{0x33}, v5Publish(tele1, 1, 8, "x")[1:]...),
		want:   packet(0xE0, append([]byte{0x9A}, v5ReasonString("retain not supported")...)),
		closed: true},
	{name: "retained publish", level: 4, send: append([]byte{0x33}, publishPacket(tele1, 1, 8, "x")[1:]...),
		want: []byte{0x40, 0x02, 0x00, 0x08}},
	// QoS 1 and 0 still work.
	{name: "QoS 1 publish", level: 4, send: publishPacket(tele1, 1, 6, "x"), want: []byte{0x40, 0x02, 0x00, 0x06}},
	{name: "QoS 1 publish", level: 5, send: v5Publish(tele1, 1, 6, "x"), want: []byte{0x40, 0x02, 0x00, 0x06}},
	{name: "QoS 0 publish", level: 4, send: publishPacket(tele1, 0, 0, "x")},
	{name: "QoS 0 publish", level: 5, send: v5Publish(tele1, 0, 0, "x")},

	// ACL denial: 3.1.1 has no negative PUBACK and no server DISCONNECT.
	{name: "ACL-denied QoS 1 publish", level: 4, send: publishPacket(tele2, 1, 7, "x"), closed: true},
	{name: "ACL-denied QoS 1 publish", level: 5, send: v5Publish(tele2, 1, 7, "x"),
		want: packet(0x40, append([]byte{0x00, 0x07, 0x87}, v5ReasonString("not authorized")...))},
	{name: "ACL-denied QoS 0 publish", level: 4, send: publishPacket(tele2, 0, 0, "x")},
	{name: "ACL-denied QoS 0 publish", level: 5, send: v5Publish(tele2, 0, 0, "x")},
	{name: "ACL-denied subscription", level: 4, send: subscribePacket(3, "#"), want: []byte{0x90, 0x03, 0x00, 0x03, 0x80}},
	{name: "ACL-denied subscription", level: 5, send: packet(0x82, append([]byte{0x00, 0x03, 0x00}, append(encStr("#"), 1)...)),
		want: []byte{0x90, 0x04, 0x00, 0x03, 0x00, 0x87}},
	{name: "QoS 2 subscription granted QoS 1", level: 4,
		send: packet(0x82, append([]byte{0x00, 0x04}, append(encStr("vehicles/"+vin1+"/cmd/#"), 2)...)),
		want: []byte{0x90, 0x03, 0x00, 0x04, 0x01}},

	// Shared subscriptions are not offered (Shared Subscription Available
	// 0): MQTT 5 gets 0x9E for such a filter; in 3.1.1 "$share/..." is an
	// ordinary filter, outside the device's and refused by the ACL.
	{name: "shared subscription", level: 5,
		send: packet(0x82, append([]byte{0x00, 0x05, 0x00}, append(encStr("$share/g/vehicles/"+vin1+"/cmd/#"), 1)...)),
		want: []byte{0x90, 0x04, 0x00, 0x05, 0x00, 0x9E}},
	{name: "shared subscription", level: 4, send: subscribePacket(5, "$share/g/vehicles/"+vin1+"/cmd/#"),
		want: []byte{0x90, 0x03, 0x00, 0x05, 0x80}},
	{name: "shared and own subscription", level: 5,
		send: packet(0x82, append([]byte{0x00, 0x06, 0x00}, append(append(encStr("vehicles/"+vin1+"/cmd/#"), 1),
			append(encStr("$share/g/x"), 1)...)...)),
		want: []byte{0x90, 0x05, 0x00, 0x06, 0x00, 0x01, 0x9E}},
	// A publish to "$share/{group}/..." is a publish to a topic outside
	// the device's: refused by the ACL like any other.
	{name: "QoS 1 publish to $share", level: 5, send: v5Publish("$share/g/x", 1, 7, "x"),
		want: packet(0x40, append([]byte{0x00, 0x07, 0x87}, v5ReasonString("not authorized")...))},
	{name: "QoS 1 publish to $share", level: 4, send: publishPacket("$share/g/x", 1, 7, "x"), closed: true},
	// $SYS topics cannot be published to (mochi would drop the publish
	// silently, leaving a QoS 1 client waiting).
	{name: "QoS 1 publish to $SYS", level: 5, send: v5Publish("$SYS/x", 1, 7, "x"),
		want:   packet(0xE0, append([]byte{0x90}, v5ReasonString("topic name invalid")...)),
		closed: true, clientCloses: true},
	{name: "QoS 1 publish to $SYS", level: 4, send: publishPacket("$SYS/x", 1, 7, "x"), closed: true},

	// Over the Maximum Packet Size (64 KiB): identified from the fixed
	// header, before the body is read.
	{name: "packet too large", level: 4, send: oversize(), closed: true},
	{name: "packet too large", level: 5, send: oversize(), want: []byte{0xE0, 0x02, 0x95, 0x00},
		closed: true, clientCloses: true},
}

func TestConformanceRawBytes(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	for _, c := range conformanceCases {
		t.Run(c.name+"/"+map[byte]string{4: "v3.1.1", 5: "v5"}[c.level], func(t *testing.T) {
			id := c.id
			if id == "" {
				id = vin1
			}
			var conn net.Conn
			var r *bufio.Reader
			if c.level == 5 {
				conn, r = rawConnectV5(t, addr, id)
			} else {
				conn, r = rawConnect(t, addr, id)
			}
			if _, err := conn.Write(c.send); err != nil {
				t.Fatal(err)
			}
			if len(c.want) > 0 {
				if got := readN(t, r, len(c.want)); !bytes.Equal(got, c.want) {
					t.Fatalf("answer\n got %x\nwant %x", got, c.want)
				}
			}
			if !c.closed {
				conn.Write([]byte{0xC0, 0x00})
				if got := readN(t, r, 2); !bytes.Equal(got, []byte{0xD0, 0x00}) {
					t.Fatalf("after the exchange PINGREQ got %x, want PINGRESP", got)
				}
				return
			}
			if c.clientCloses {
				_ = conn.(*net.TCPConn).CloseWrite()
			}
			if rest := waitEOF(t, r2c{r, conn}); len(rest) != 0 {
				t.Fatalf("broker sent %x before closing, want nothing", rest)
			}
		})
	}
}

// TestConnackConformance checks the CONNACKs: refusals for bad credentials
// (3.1.1 return code 5; MQTT 5 reason 0x86) and, in a successful MQTT 5
// CONNACK, the limits the broker announces.
func TestConnackConformance(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)

	c := dial(t, addr)
	c.Write(connectPacket(4, vin1, vin1, "wrong", 30))
	if got := waitEOF(t, c); !bytes.Equal(got, []byte{0x20, 0x02, 0x00, 0x05}) {
		t.Fatalf("v3.1.1 bad password: %x, want 20020005", got)
	}

	c = dial(t, addr)
	c.Write(connectPacket(5, vin1, vin1, "wrong", 30))
	props := append([]byte{0x1F}, encStr("bad username or password")...) // Reason String
	props = append(props, 0x21, 0x00, 0x40)                              // Receive Maximum 64
	want := packet(0x20, append([]byte{0x00, 0x86}, append(encLen(len(props)), props...)...))
	if got := waitEOF(t, c); !bytes.Equal(got, want) {
		t.Fatalf("v5 bad password:\n got %x\nwant %x", got, want)
	}

	// A Will at QoS 2 (not offered): 0x9B for MQTT 5, 0x05 for 3.1.1.
	for _, w := range []struct {
		level byte
		want  []byte
	}{
		{4, []byte{0x20, 0x02, 0x00, 0x05}},
		{5, packet(0x20, append([]byte{0x00, 0x9B}, append(encLen(23), append(append([]byte{0x1F}, encStr("qos not supported")...), 0x21, 0x00, 0x40)...)...))},
	} {
		c = dial(t, addr)
		c.Write(willConnect(w.level, 0x10))
		if got := waitEOF(t, c); !bytes.Equal(got, w.want) {
			t.Errorf("level %d, Will QoS 2:\n got %x\nwant %x", w.level, got, w.want)
		}
	}

	c = dial(t, addr)
	c.Write(connectPacket(5, vin1, vin1, secrets[vin1], 30))
	r := bufio.NewReader(c)
	body := readPacketRaw(t, r, 0x20, 0)
	for _, p := range []struct {
		name string
		b    []byte
	}{
		{"Receive Maximum 64", []byte{0x21, 0x00, 0x40}},
		{"Maximum QoS 1", []byte{0x24, 0x01}},
		{"Retain Available 0", []byte{0x25, 0x00}},
		{"Maximum Packet Size 65536", []byte{0x27, 0x00, 0x01, 0x00, 0x00}},
		{"Topic Alias Maximum 16", []byte{0x22, 0x00, 0x10}},
		{"Shared Subscription Available 0", []byte{0x2A, 0x00}},
	} {
		if !bytes.Contains(body, p.b) {
			t.Errorf("CONNACK %x lacks %s (%x)", body, p.name, p.b)
		}
	}
}

// TestNoDisconnectPacketToV311 covers the other paths on which mochi sends
// a DISCONNECT: session takeover and an administrative disconnect. A 3.1.1
// client sees its connection closed, without a DISCONNECT packet.
func TestNoDisconnectPacketToV311(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)

	old, r := rawConnect(t, addr, vin1)
	rawConnect(t, addr, vin1) // takes the session over
	if rest := waitEOF(t, r2c{r, old}); len(rest) != 0 {
		t.Fatalf("session takeover: old 3.1.1 connection got %x, want nothing", rest)
	}

	c, r := rawConnect(t, addr, vin2)
	eventually(t, "vin2 connected", func() bool { _, ok := b.server.Clients.Get(vin2); return ok })
	b.Disconnect(vin2)
	if rest := waitEOF(t, r2c{r, c}); len(rest) != 0 {
		t.Fatalf("Broker.Disconnect: 3.1.1 connection got %x, want nothing", rest)
	}

	// MQTT 5 keeps its DISCONNECT (0x98 Administrative action).
	c5, r5 := rawConnectV5(t, addr, vin2)
	eventually(t, "vin2 connected", func() bool { cl, ok := b.server.Clients.Get(vin2); return ok && !cl.Closed() })
	b.Disconnect(vin2)
	body := readPacketRaw(t, r5, 0xE0, 0)
	if len(body) == 0 || body[0] != 0x98 {
		t.Fatalf("v5 DISCONNECT body %x, want reason 0x98", body)
	}
	waitEOF(t, r2c{r5, c5})
}

// TestOversizePacketV5Boundary: a packet of exactly the Maximum Packet Size
// (counting the fixed header and length bytes) is accepted; one byte more
// is answered with DISCONNECT 0x95.
func TestOversizePacketV5Boundary(t *testing.T) {
	b := startBroker(t, nil, func(c *Config) { c.MaxPacketSize = 1024 })
	addr := b.Addr(ListenerTCP)
	fill := func(total int) []byte {
		// header(1) + length(2) + topic(2+n) + id(2) + props(1) + payload
		return v5Publish(tele1, 1, 9, strings.Repeat("p", total-1-2-2-len(tele1)-2-1))
	}
	c, r := rawConnectV5(t, addr, vin1)
	if p := fill(1024); len(p) != 1024 {
		t.Fatalf("test packet is %d bytes", len(p))
	} else {
		c.Write(p)
	}
	if got := readN(t, r, 4); !bytes.Equal(got, []byte{0x40, 0x02, 0x00, 0x09}) {
		t.Fatalf("PUBACK = %x", got)
	}
	c.Write(fill(1025))
	if got := readN(t, r, 4); !bytes.Equal(got, []byte{0xE0, 0x02, 0x95, 0x00}) {
		t.Fatalf("got %x, want DISCONNECT 0x95", got)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if rest := waitEOF(t, r2c{r, c}); len(rest) != 0 {
		t.Fatalf("bytes after DISCONNECT: %x", rest)
	}
	if n := b.Stats().Snapshot()["packets_too_large"]; n != 1 {
		t.Fatalf("packets_too_large = %d", n)
	}
}

// willConnect builds a CONNECT of vin1 with a Will on its events topic and
// the given Will QoS / retain flag bits (0x08 QoS 1, 0x10 QoS 2, 0x20 retain).
func willConnect(level, willFlags byte) []byte {
	body := append(encStr("MQTT"), level, 0xC2|0x04|willFlags, 0, 30)
	if level == 5 {
		body = append(body, 0)
	}
	body = append(body, encStr(vin1)...)
	if level == 5 {
		body = append(body, 0) // will properties
	}
	body = append(body, encStr("vehicles/"+vin1+"/events")...)
	body = append(body, encStr("bye")...)
	body = append(body, encStr(vin1)...)
	body = append(body, encStr(secrets[vin1])...)
	return packet(0x10, body)
}

// connackV5 is a refusing MQTT 5 CONNACK as the broker writes it: the
// reason code, its Reason String and Receive Maximum 64.
func connackV5(code byte, reason string) []byte {
	props := append(append([]byte{0x1F}, encStr(reason)...), 0x21, 0x00, 0x40)
	return packet(0x20, append([]byte{0x00, code}, append(encLen(len(props)), props...)...))
}

// rawConnectFlags builds a CONNECT with the given flags byte (user name
// and password flags are added when user/pass are set).
func rawConnectFlags(level, flags byte, id, user, pass string) []byte {
	if user != "" {
		flags |= 0x80
	}
	if pass != "" {
		flags |= 0x40
	}
	body := append(encStr("MQTT"), level, flags, 0, 30)
	if level == 5 {
		body = append(body, 0)
	}
	body = append(body, encStr(id)...)
	if user != "" {
		body = append(body, encStr(user)...)
	}
	if pass != "" {
		body = append(body, encStr(pass)...)
	}
	return packet(0x10, body)
}

// TestConnackClientIDRejected: an empty client id is rejected as an
// invalid identifier: 3.1.1 return code 0x02 with or without CleanSession
// ([MQTT-3.1.3-8], [MQTT-3.1.3-9]; mochi answered 0x80, mapped to 0x05),
// MQTT 5 CONNACK 0x85.
func TestConnackClientIDRejected(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	for _, c := range []struct {
		name  string
		level byte
		flags byte
		want  []byte
	}{
		{"3.1.1 CleanSession 0", 4, 0x00, []byte{0x20, 0x02, 0x00, 0x02}},
		{"3.1.1 CleanSession 1", 4, 0x02, []byte{0x20, 0x02, 0x00, 0x02}},
		{"5 Clean Start 0", 5, 0x00, connackV5(0x85, "client identifier not valid")},
		{"5 Clean Start 1", 5, 0x02, connackV5(0x85, "client identifier not valid")},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := dial(t, addr)
			conn.Write(rawConnectFlags(c.level, c.flags, "", vin1, secrets[vin1]))
			if got := waitEOF(t, conn); !bytes.Equal(got, c.want) {
				t.Fatalf("got %x, want %x", got, c.want)
			}
		})
	}
}

// TestV3ConnackCodes: every reason code mochi or the broker may put in a
// CONNACK becomes one of the 3.1.1 return codes 0x00-0x05.
func TestV3ConnackCodes(t *testing.T) {
	for _, c := range []struct {
		in      byte
		emptyID bool
		want    byte
	}{
		{0x00, false, 0x00},
		{0x01, false, 0x01}, {0x02, false, 0x02}, {0x03, false, 0x03}, {0x04, false, 0x04}, {0x05, false, 0x05},
		{0x84, false, 0x01}, // unsupported protocol version
		{0x85, false, 0x02}, // client identifier not valid
		{0x80, true, 0x02},  // mochi: empty id without CleanSession
		{0x80, false, 0x05},
		{0x88, false, 0x03}, {0x89, false, 0x03}, // server unavailable / busy
		{0x8B, false, 0x03},                      // shutting down
		{0x9C, false, 0x03}, {0x9D, false, 0x03}, // drain: use another server / moved
		{0x86, false, 0x05},                      // bad user name or password
		{0x87, false, 0x05},                      // not authorized (a refused Will topic)
		{0x9A, false, 0x05}, {0x9B, false, 0x05}, // Will retain / QoS 2
	} {
		if got := v3ConnackCode(c.in, c.emptyID); got != c.want {
			t.Errorf("v3ConnackCode(%#x, emptyID %v) = %#x, want %#x", c.in, c.emptyID, got, c.want)
		}
	}
}

// TestConnackRefusalsRawBytes pins the remaining CONNACK refusals of
// protocol.md section 12: a Will with retain and a full broker.
func TestConnackRefusalsRawBytes(t *testing.T) {
	b := startBroker(t, nil, func(c *Config) { c.MaxClients = 1 })
	addr := b.Addr(ListenerTCP)

	// Will with retain (Retain Available 0).
	for _, w := range []struct {
		level byte
		want  []byte
	}{
		{4, []byte{0x20, 0x02, 0x00, 0x05}},
		{5, connackV5(0x9A, "retain not supported")},
	} {
		c := dial(t, addr)
		c.Write(willConnect(w.level, 0x20))
		if got := waitEOF(t, c); !bytes.Equal(got, w.want) {
			t.Errorf("level %d, Will with retain:\n got %x\nwant %x", w.level, got, w.want)
		}
	}

	// Broker full (max_clients 1, held by vin1).
	rawConnect(t, addr, vin1)
	eventually(t, "vin1 connected", func() bool { _, ok := b.server.Clients.Get(vin1); return ok })
	for _, w := range []struct {
		level byte
		want  []byte
	}{
		{4, []byte{0x20, 0x02, 0x00, 0x03}},
		{5, connackV5(0x89, "server busy")},
	} {
		c := dial(t, addr)
		c.Write(connectPacket(w.level, vin2, vin2, secrets[vin2], 30))
		if got := waitEOF(t, c); !bytes.Equal(got, w.want) {
			t.Errorf("level %d, broker full:\n got %x\nwant %x", w.level, got, w.want)
		}
	}
}

// TestDisconnectsRawBytes pins the DISCONNECTs of protocol.md section 12
// not covered elsewhere: session takeover (v5 0x8E; 3.1.1 in
// TestNoDisconnectPacketToV311) and server shutdown (v5 0x8B; 3.1.1 closed
// without a byte).
func TestDisconnectsRawBytes(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)

	old, r := rawConnectV5(t, addr, vin1)
	rawConnectV5(t, addr, vin1) // takes the session over
	want := packet(0xE0, append([]byte{0x8E}, v5ReasonString("session takeover")...))
	if got := readN(t, r, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("session takeover:\n got %x\nwant %x", got, want)
	}
	_ = old.(*net.TCPConn).CloseWrite()
	if rest := waitEOF(t, r2c{r, old}); len(rest) != 0 {
		t.Fatalf("bytes after DISCONNECT: %x", rest)
	}

	c5, r5 := rawConnectV5(t, addr, vin2)
	c3, r3 := rawConnect(t, addr, chABC)
	eventually(t, "both connected", func() bool {
		_, ok1 := b.server.Clients.Get(vin2)
		_, ok2 := b.server.Clients.Get(chABC)
		return ok1 && ok2
	})
	go b.Close()
	want = packet(0xE0, append([]byte{0x8B}, v5ReasonString("server shutting down")...))
	if got := readN(t, r5, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("shutdown, v5:\n got %x\nwant %x", got, want)
	}
	_ = c5.(*net.TCPConn).CloseWrite()
	waitEOF(t, r2c{r5, c5})
	if rest := waitEOF(t, r2c{r3, c3}); len(rest) != 0 {
		t.Fatalf("shutdown, 3.1.1: got %x, want the connection closed without a byte", rest)
	}
}

// TestReconnectAtMaxClients: at max_clients, a device whose old connection
// is still open (half-open after a network change, not yet timed out)
// reconnects and takes its own session over; another device is still
// refused (0x03 / 0x89).
func TestReconnectAtMaxClients(t *testing.T) {
	b := startBroker(t, nil, func(c *Config) { c.MaxClients = 1 })
	addr := b.Addr(ListenerTCP)
	for _, level := range []byte{4, 5} {
		var old net.Conn
		var r *bufio.Reader
		if level == 5 {
			old, r = rawConnectV5(t, addr, vin1)
		} else {
			old, r = rawConnect(t, addr, vin1)
		}
		eventually(t, "vin1 connected", func() bool { cl, ok := b.server.Clients.Get(vin1); return ok && !cl.Closed() })
		c := dial(t, addr)
		c.Write(connectPacket(level, vin1, vin1, secrets[vin1], 30))
		r2 := bufio.NewReader(c)
		readPacketRaw(t, r2, 0x20, 0x00) // accepted: takes the session over
		_ = old.(*net.TCPConn).CloseWrite()
		waitEOF(t, r2c{r, old})

		o := dial(t, addr)
		o.Write(connectPacket(level, vin2, vin2, secrets[vin2], 30))
		want := []byte{0x20, 0x02, 0x00, 0x03}
		if level == 5 {
			want = connackV5(0x89, "server busy")
		}
		if got := waitEOF(t, o); !bytes.Equal(got, want) {
			t.Fatalf("level %d: other device at the limit got %x, want %x", level, got, want)
		}
		c.Close()
		eventually(t, "vin1 gone", func() bool { return atomic.LoadInt64(&b.server.Info.ClientsConnected) == 0 })
	}
	if n := b.Stats().RefusedFull.Load(); n != 2 {
		t.Fatalf("connects_refused_full = %d, want 2", n)
	}
}
