package broker

import (
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
