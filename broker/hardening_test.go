package broker

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Byte-level exchanges in the style of mochi's own packet tests.
func TestRawPacketsV311(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)

	t.Run("connect publish subscribe ping", func(t *testing.T) {
		c, r := rawConnect(t, addr, vin1)
		// QoS 1 to own telemetry: PUBACK with the packet id.
		c.Write(publishPacket("vehicles/"+vin1+"/telemetry", 1, 7, "frame"))
		if got := readN(t, r, 4); !bytes.Equal(got, []byte{0x40, 0x02, 0x00, 0x07}) {
			t.Fatalf("PUBACK = %x", got)
		}
		// SUBSCRIBE: own cmd/# granted QoS 1, '#' refused (0x80).
		c.Write(subscribePacket(9, "vehicles/"+vin1+"/cmd/#", "#"))
		if got := readN(t, r, 6); !bytes.Equal(got, []byte{0x90, 0x04, 0x00, 0x09, 0x01, 0x80}) {
			t.Fatalf("SUBACK = %x", got)
		}
		// PINGREQ / PINGRESP.
		c.Write([]byte{0xC0, 0x00})
		if got := readN(t, r, 2); !bytes.Equal(got, []byte{0xD0, 0x00}) {
			t.Fatalf("PINGRESP = %x", got)
		}
		// A command published server-side arrives as PUBLISH QoS 1.
		if err := b.Publish("vehicles/"+vin1+"/cmd/x", []byte("go"), 1); err != nil {
			t.Fatal(err)
		}
		hdr := readN(t, r, 2)
		if hdr[0] != 0x32 {
			t.Fatalf("expected PUBLISH QoS 1, got %x", hdr)
		}
		body := readN(t, r, int(hdr[1]))
		if !bytes.Contains(body, []byte("vehicles/"+vin1+"/cmd/x")) || !bytes.HasSuffix(body, []byte("go")) {
			t.Fatalf("PUBLISH body %q", body)
		}
		// DISCONNECT: the broker closes the socket.
		c.Write([]byte{0xE0, 0x00})
		waitEOF(t, c)
	})

	t.Run("bad password", func(t *testing.T) {
		c := dial(t, addr)
		c.Write(connectPacket(4, vin1, vin1, "wrong", 30))
		if got := waitEOF(t, c); !bytes.Equal(got, []byte{0x20, 0x02, 0x00, 0x05}) {
			t.Fatalf("CONNACK = %x, want 20020005", got)
		}
	})

	t.Run("v5 bad password", func(t *testing.T) {
		c := dial(t, addr)
		c.Write(connectPacket(5, vin1, vin1, "wrong", 30))
		got := waitEOF(t, c)
		if len(got) < 4 || got[0] != 0x20 || got[3] != 0x86 {
			t.Fatalf("CONNACK = %x, want reason 0x86", got)
		}
	})

	t.Run("MQTT 3.1 refused", func(t *testing.T) {
		c := dial(t, addr)
		body := append(encStr("MQIsdp"), 3, 0xC2, 0, 30)
		body = append(body, encStr(vin1)...)
		body = append(body, encStr(vin1)...)
		body = append(body, encStr(secrets[vin1])...)
		c.Write(packet(0x10, body))
		if got := waitEOF(t, c); !bytes.Equal(got, []byte{0x20, 0x02, 0x00, 0x01}) {
			t.Fatalf("CONNACK = %x, want 20020001", got)
		}
	})

	t.Run("publish to other VIN disconnects", func(t *testing.T) {
		c, r := rawConnect(t, addr, vin2)
		c.Write(publishPacket("vehicles/"+vin1+"/telemetry", 1, 1, "x"))
		rest := waitEOF(t, r2c{r, c})
		if bytes.HasPrefix(rest, []byte{0x40}) {
			t.Fatalf("denied publish was acknowledged: %x", rest)
		}
	})
}

// r2c reads from a buffered reader but closes/deadlines the conn.
type r2c struct {
	r *bufio.Reader
	net.Conn
}

func (x r2c) Read(p []byte) (int, error) { return x.r.Read(p) }

// TestConnectTimeout: sockets that do not complete a CONNECT in time are
// closed. The timeout is seconds, not a few hundred ms: the WebSocket
// upgrade below and the final CONNECT are legitimate and must fit in it on
// a loaded CI box under -race. The sockets are opened together and waited
// for together, so the test takes one timeout, not four.
func TestConnectTimeout(t *testing.T) {
	b := startBroker(t, nil, func(c *Config) { c.ConnectTimeout = 3 * time.Second })

	// A TCP socket that never sends CONNECT, one that sends a partial
	// CONNECT and stalls (slowloris), a WebSocket socket that never sends
	// the HTTP upgrade, and an upgraded connection that never sends CONNECT.
	silent := dial(t, b.Addr(ListenerTCP))
	partial := dial(t, b.Addr(ListenerTCP))
	partial.Write(connectPacket(4, vin1, vin1, secrets[vin1], 30)[:10])
	noUpgrade := dial(t, b.Addr(ListenerWS))
	ws := dialWS(t, b.Addr(ListenerWS))

	if got := waitEOF(t, silent); len(got) != 0 {
		t.Fatalf("got %x", got)
	}
	waitEOF(t, partial)
	waitEOF(t, noUpgrade)
	ws.SetReadDeadline(time.Now().Add(wait))
	if _, _, err := ws.NextReader(); err == nil {
		t.Fatal("websocket delivered a message")
	} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("websocket not closed by broker")
	}

	eventually(t, "connect timeouts counted", func() bool {
		return b.Stats().Listener.ConnectTimeouts.Load() == 3
	})
	// The broker still serves.
	mustV5(t, b.Addr(ListenerTCP), vin1)
}

func dialWS(t testing.TB, addr string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: wait}
	ws, resp, err := d.Dial("ws://"+addr+"/mqtt", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Cleanup(func() { ws.Close() })
	return ws
}

func TestOversizedPacketRefusedBeforeAllocation(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)

	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	// Largest encodable remaining length (256 MiB - 1): mochi would
	// allocate it before reading a byte of the body. Four of them would
	// allocate 1 GiB.
	for range 4 {
		c := dial(t, addr)
		c.Write([]byte{0x10, 0xFF, 0xFF, 0xFF, 0x7F})
		if got := waitEOF(t, c); len(got) != 0 {
			t.Fatalf("got %x", got)
		}
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Fatalf("allocated %d MiB while refusing oversized packets", grew>>20)
	}

	// Just over the limit (64 KiB including the fixed header byte).
	c := dial(t, addr)
	c.Write(append([]byte{0x10}, encLen(64<<10)...))
	waitEOF(t, c)

	// The same after authentication: a PUBLISH over the limit.
	c2, r := rawConnect(t, addr, vin1)
	big := publishPacket("vehicles/"+vin1+"/telemetry", 1, 1, strings.Repeat("x", 64<<10))
	go c2.Write(big)
	waitEOF(t, r2c{r, c2})

	// Just under the limit is fine.
	c3, r3 := rawConnect(t, addr, vin1)
	topic := "vehicles/" + vin1 + "/telemetry"
	payload := strings.Repeat("x", 64<<10-1-3-2-len(topic)-2) // header(1)+len(3)+topic(2+n)+id(2)
	ok := publishPacket(topic, 1, 3, payload)
	if len(ok) != 64<<10 {
		t.Fatalf("test packet is %d bytes", len(ok))
	}
	go c3.Write(ok)
	if got := readN(t, r3, 4); !bytes.Equal(got, []byte{0x40, 0x02, 0x00, 0x03}) {
		t.Fatalf("PUBACK = %x", got)
	}
	if b.Stats().Listener.Panics.Load() != 0 {
		t.Fatal("panic")
	}
}

func TestGarbageKeepsBrokerServing(t *testing.T) {
	b := startBroker(t, nil, func(c *Config) { c.ConnectTimeout = time.Second })
	addr := b.Addr(ListenerTCP)
	random := make([]byte, 4096)
	rand.Read(random)

	inputs := map[string][]byte{
		"random":                 random,
		"http":                   []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"tls hello":              {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03},
		"pingreq first":          {0xC0, 0x00},
		"publish first":          publishPacket("vehicles/"+vin1+"/telemetry", 0, 0, "x"),
		"subscribe first":        subscribePacket(1, "#"),
		"disconnect first":       {0xE0, 0x00},
		"reserved type 0":        {0x00, 0x00},
		"reserved type 15":       {0xF0, 0x00},
		"bad varint":             {0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01},
		"truncated connect":      connectPacket(4, vin1, vin1, secrets[vin1], 30)[:20],
		"connect bad flags":      {0x11, 0x00},
		"connect empty":          {0x10, 0x00},
		"connect bad protocol":   packet(0x10, append(encStr("MQTX"), 4, 0x02, 0, 30, 0, 1, 'a')),
		"connect reserved bit":   packet(0x10, append(encStr("MQTT"), 4, 0x03, 0, 30, 0, 1, 'a')),
		"connect string overrun": packet(0x10, append(encStr("MQTT"), 4, 0xC2, 0, 30, 0xFF, 0xFF, 'a')),
		"connect level 6":        packet(0x10, append(encStr("MQTT"), 6, 0x02, 0, 30, 0, 1, 'a')),
		"v5 bad properties":      packet(0x10, append(encStr("MQTT"), 5, 0x02, 0, 30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F)),
		"v5 unknown property":    packet(0x10, append(encStr("MQTT"), 5, 0x02, 0, 30, 2, 0x7E, 0, 0, 1, 'a')),
		"two connects":           append(connectPacket(4, vin1, vin1, secrets[vin1], 30), connectPacket(4, vin1, vin1, secrets[vin1], 30)...),
		"connect then garbage":   append(connectPacket(4, vin1, vin1, secrets[vin1], 30), random[:64]...),
		"connect then truncated": append(connectPacket(4, vin1, vin1, secrets[vin1], 30), 0x32, 0x7F, 0x00),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			c := dial(t, addr)
			c.Write(in)
			if strings.Contains(name, "truncated") || strings.Contains(name, "then garbage") {
				// After a valid CONNECT the broker may legitimately wait
				// for the rest of a packet (until the keepalive deadline);
				// the client gives up.
				c.(*net.TCPConn).CloseWrite()
			}
			waitEOF(t, c)
		})
	}
	if n := b.Stats().Listener.Panics.Load(); n != 0 {
		t.Fatalf("%d panics", n)
	}
	mustV5(t, addr, vin1)
	mustV3(t, tcpURL(b), vin2)
}

// FuzzAfterConnect feeds arbitrary bytes to an authenticated session. The
// seed corpus runs with go test; go test -fuzz explores further.
func FuzzAfterConnect(f *testing.F) {
	f.Add([]byte{0xC0, 0x00})
	f.Add(publishPacket("vehicles/"+vin1+"/telemetry", 1, 1, "x"))
	f.Add(subscribePacket(1, "vehicles/"+vin1+"/cmd/#", "#"))
	f.Add([]byte{0x82, 0x02, 0x00, 0x01})
	f.Add([]byte{0x62, 0x02, 0x00, 0x01})
	f.Add([]byte{0x30, 0x02, 0xFF, 0xFF})
	for _, s := range corpusSeedsAfterConnect() {
		f.Add(s)
	}
	b := startBroker(f, nil, nil)
	addr := b.Addr(ListenerTCP)
	f.Fuzz(func(t *testing.T, in []byte) {
		c, _ := rawConnect(t, addr, vin1)
		c.Write(in)
		c.Write([]byte{0xE0, 0x00}) // DISCONNECT, unless the input already ended the session
		c.(*net.TCPConn).CloseWrite()
		waitEOF(t, c)
		if n := b.Stats().Listener.Panics.Load(); n != 0 {
			t.Fatalf("%d panics", n)
		}
	})
}

func TestPanicInHookIsContained(t *testing.T) {
	rec := newRecorder()
	rec.panicOn = "vehicles/" + vin1 + "/diag"
	b := startBroker(t, nil, nil, rec)
	addr := b.Addr(ListenerTCP)

	c := mustV5(t, addr, vin1)
	if r := c.subscribe(t, "vehicles/"+vin1+"/cmd/#"); r[0] != 1 {
		t.Fatal(r)
	}
	_, _ = c.publish(t, "vehicles/"+vin1+"/diag", 0, "boom")
	c.waitClosed(t)
	eventually(t, "panic recovered", func() bool { return b.Stats().Listener.Panics.Load() == 1 })
	// The clean session of the panicked client is gone, as is its limiter.
	eventually(t, "session discarded", func() bool {
		_, ok := b.Server().Clients.Get(vin1)
		return !ok && b.rates.len() == 0 && b.Connected() == 0
	})
	// Others, and the same device, keep working.
	c2 := mustV5(t, addr, vin2)
	if pr, err := c2.publish(t, "vehicles/"+vin2+"/diag", 1, "ok"); err != nil || pr.ReasonCode != 0 {
		t.Fatal(err)
	}
	c3 := mustV5(t, addr, vin1)
	if pr, err := c3.publish(t, "vehicles/"+vin1+"/telemetry", 1, "ok"); err != nil || pr.ReasonCode != 0 {
		t.Fatal(err)
	}
}

func TestMaxConnections(t *testing.T) {
	b := startBroker(t, nil, func(c *Config) { c.MaxConnections = 2 })
	addr := b.Addr(ListenerTCP)
	c1 := dial(t, addr)
	c2 := dial(t, addr)
	eventually(t, "two sockets open", func() bool { return b.Stats().Listener.Open.Load() == 2 })
	c3 := dial(t, b.Addr(ListenerWS)) // the cap is shared by all listeners
	waitEOF(t, c3)
	if n := b.Stats().Listener.Refused.Load(); n != 1 {
		t.Fatalf("Refused = %d", n)
	}
	c1.Close()
	c2.Close()
	eventually(t, "sockets released", func() bool { return b.Stats().Listener.Open.Load() == 0 })
	mustV5(t, addr, vin1)
}

func TestIdleClientWithoutKeepaliveIsDropped(t *testing.T) {
	b := startBroker(t, nil, func(c *Config) { c.MaxKeepalive = time.Second })
	c := dial(t, b.Addr(ListenerTCP))
	c.Write(connectPacket(4, vin1, vin1, secrets[vin1], 0)) // keepalive 0 = never ping
	r := bufio.NewReader(c)
	if got := readN(t, r, 4); !bytes.Equal(got, []byte{0x20, 0x02, 0x00, 0x00}) {
		t.Fatalf("CONNACK = %x", got)
	}
	// Idle: dropped after 1.5 x MaxKeepalive rather than never.
	waitEOF(t, r2c{r, c})
	eventually(t, "client gone", func() bool { return b.Connected() == 0 })
}

func TestWebSocket(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, nil, nil, rec)
	addr := b.Addr(ListenerWS)
	c := mustV3(t, "ws://"+addr+"/mqtt", vin1)
	tok := c.Publish("vehicles/"+vin1+"/telemetry", 1, false, []byte("x"))
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	if got := rec.next(t); got != "vehicles/"+vin1+"/telemetry" {
		t.Fatal(got)
	}
	// Bad credentials over WebSocket are refused like over TCP.
	if _, code, err := v3Connect(t, v3Options("ws://"+addr+"/mqtt", vin2, vin2, "bad")); err == nil || code != 5 {
		t.Fatalf("code %d %v", code, err)
	}

	// MQTT split across WebSocket messages, several packets in one message.
	ws := dialWS(t, addr)
	conn := connectPacket(4, vin2, vin2, secrets[vin2], 30)
	ws.WriteMessage(websocket.BinaryMessage, conn[:5])
	ws.WriteMessage(websocket.BinaryMessage, append(conn[5:], 0xC0, 0x00))
	ws.SetReadDeadline(time.Now().Add(wait))
	var got []byte
	for len(got) < 6 {
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m...)
	}
	if !bytes.Equal(got, []byte{0x20, 0x02, 0x00, 0x00, 0xD0, 0x00}) {
		t.Fatalf("got %x", got)
	}

	// A text message ends the connection.
	ws2 := dialWS(t, addr)
	ws2.WriteMessage(websocket.TextMessage, []byte("hello"))
	ws2.SetReadDeadline(time.Now().Add(wait))
	if _, _, err := ws2.ReadMessage(); err == nil {
		t.Fatal("text message accepted")
	} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection not closed")
	}

	// Plain HTTP to the WebSocket port gets an HTTP error, not a hang.
	resp, err := (&http.Client{Timeout: wait}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if n := b.Stats().Listener.Panics.Load(); n != 0 {
		t.Fatalf("%d panics", n)
	}
}
