package broker

import (
	"bufio"
	"bytes"
	"net"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// v5SubscribeWithoutOptions is an MQTT 5 SUBSCRIBE (packet id 1, no
// properties) whose only topic filter "a" lacks the subscription options
// byte. mochi v2.7.9's SubscribeDecode indexes buf[offset] for the options
// without a bounds check and panics (index out of range) in the client's
// read loop.
var v5SubscribeWithoutOptions = []byte{0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, 'a'}

// TestMochiSubscribeDecodePanics documents the upstream defect at the
// decoder level. If a mochi upgrade fixes it, this test says so (it does
// not fail): update docs/broker.md section 7 then.
func TestMochiSubscribeDecodePanics(t *testing.T) {
	panicked := func() (p bool) {
		defer func() { p = recover() != nil }()
		pk := packets.Packet{ProtocolVersion: 5, FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}}
		_ = pk.SubscribeDecode(v5SubscribeWithoutOptions[2:])
		return false
	}()
	if !panicked {
		t.Log("mochi's SubscribeDecode no longer panics on a filter without options: update docs/broker.md")
	}
}

// TestMochiPanicContained sends the panicking packet over a real socket.
// With the packet guard (the default) it never reaches mochi; without it,
// mochi panics and the listener's per-connection recovery contains it:
// the connection is closed, the session discarded, and the broker keeps
// serving.
func TestMochiPanicContained(t *testing.T) {
	for _, guarded := range []bool{true, false} {
		name := "guard off"
		if guarded {
			name = "guard on"
		}
		t.Run(name, func(t *testing.T) {
			b := startBroker(t, nil, func(c *Config) { c.noPacketGuard = !guarded })
			addr := b.Addr(ListenerTCP)
			c, r := rawConnectV5(t, addr, vin1)
			if _, err := c.Write(v5SubscribeWithoutOptions); err != nil {
				t.Fatal(err)
			}
			waitEOF(t, r2c{r, c})
			st := b.Stats()
			if guarded {
				eventually(t, "violation counted", func() bool { return st.Listener.ProtocolViolations.Load() == 1 })
				if n := st.Listener.Panics.Load(); n != 0 {
					t.Fatalf("%d panics with the guard on", n)
				}
			} else {
				eventually(t, "panic recovered", func() bool { return st.Listener.Panics.Load() == 1 })
			}
			eventually(t, "session gone", func() bool {
				_, ok := b.Server().Clients.Get(vin1)
				return !ok && b.Connected() == 0
			})
			// The same device and others keep working.
			c1 := mustV5(t, addr, vin1)
			if pr, err := c1.publish(t, "vehicles/"+vin1+"/telemetry", 1, "ok"); err != nil || pr.ReasonCode != 0 {
				t.Fatalf("publish after the panic: %+v %v", pr, err)
			}
			mustV3(t, tcpURL(b), vin2)
		})
	}
}

// TestCommandSurvivesDevicePublishWithSameID: device and gateway number
// their QoS 1 packets independently (MQTT 3.1.1 2.3.1, MQTT 5 2.2.1), but
// mochi v2.7.9 keeps both in one inflight map keyed by packet id. A
// vehicle's telemetry PUBLISH with the packet id of a command still
// awaiting the vehicle's PUBACK deleted the command: it was not resent on
// session resume and the vehicle's PUBACK for it was ignored (patched in
// internal/third_party/mochi). Raw 3.1.1 bytes, persistent session.
func TestCommandSurvivesDevicePublishWithSameID(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	connect := rawConnectFlags(4, 0x00, vin1, vin1, secrets[vin1]) // clean session 0
	open := func(present byte) (net.Conn, *bufio.Reader) {
		t.Helper()
		c := dial(t, addr)
		if _, err := c.Write(connect); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		if got := readN(t, r, 4); !bytes.Equal(got, []byte{0x20, 0x02, present, 0x00}) {
			t.Fatalf("CONNACK % x, want session present %d", got, present)
		}
		return c, r
	}
	write := func(c net.Conn, p []byte) {
		t.Helper()
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	cmdTopic := "vehicles/" + vin1 + "/cmd/feature"
	// readCommand reads the command PUBLISH (first byte want) and returns
	// its packet id.
	readCommand := func(r *bufio.Reader, want byte) uint16 {
		t.Helper()
		body := readPacketRaw(t, r, want, 0)
		n := 2 + len(cmdTopic)
		if len(body) < n+2 || string(body[2:n]) != cmdTopic || string(body[n+2:]) != "heated-seats:on" {
			t.Fatalf("command % x", body)
		}
		return uint16(body[n])<<8 | uint16(body[n+1])
	}

	c, r := open(0)
	write(c, subscribePacket(1, "vehicles/"+vin1+"/cmd/#"))
	if got := readN(t, r, 5); !bytes.Equal(got, []byte{0x90, 0x03, 0x00, 0x01, 0x01}) {
		t.Fatalf("SUBACK % x", got)
	}
	if err := b.Publish(cmdTopic, []byte("heated-seats:on"), 1); err != nil {
		t.Fatal(err)
	}
	id := readCommand(r, 0x32)
	// No PUBACK yet: a telemetry publish with the same packet id.
	write(c, publishPacket("vehicles/"+vin1+"/telemetry", 1, id, "x"))
	if got := readN(t, r, 4); !bytes.Equal(got, []byte{0x40, 0x02, byte(id >> 8), byte(id)}) {
		t.Fatalf("PUBACK % x", got)
	}
	c.Close()

	// The session resumes: the command comes again, DUP set, same id.
	// (mochi resends before it reads: a PINGRESP first means no resend.)
	c, r = open(1)
	write(c, []byte{0xc0, 0x00}) // PINGREQ
	if again := readCommand(r, 0x3a); again != id {
		t.Fatalf("command resent with id %d, want %d", again, id)
	}
	readPacketRaw(t, r, 0xd0, 0)
	write(c, []byte{0x40, 0x02, byte(id >> 8), byte(id)})
	write(c, []byte{0xc0, 0x00}) // the PUBACK is processed before the PINGRESP
	readPacketRaw(t, r, 0xd0, 0)
	c.Close()

	// The PUBACK ended it: nothing is resent on the next resume.
	c, r = open(1)
	write(c, []byte{0xc0, 0x00}) // PINGREQ
	if got := readN(t, r, 2); !bytes.Equal(got, []byte{0xd0, 0x00}) {
		t.Fatalf("after the PUBACK, the resumed session sent % x, want PINGRESP", got)
	}
	c.Close()
}
