package broker

import (
	"bufio"
	"bytes"
	"net"
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
	if _, ok := b.server.Clients.Get(vin2); ok {
		t.Fatal("session of a client with Session Expiry 0 kept")
	}
}
