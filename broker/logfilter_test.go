package broker

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telegate/telegate/internal/logbuf"
)

// deadLetterHook refuses every device publish the way the gateway's ingest
// hook refuses a malformed payload: with a reason code (mochi answers MQTT 5
// QoS 1 with PUBACK 0x99 and logs the error).
type deadLetterHook struct{ mqtt.HookBase }

func (h *deadLetterHook) ID() string { return "test-dead-letter" }

func (h *deadLetterHook) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *deadLetterHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	return pk, packets.ErrPayloadFormatInvalid
}

// positionPayload is an 8 KiB payload full of positions: none of it may
// reach the log.
func positionPayload() string {
	var sb strings.Builder
	for i := 0; sb.Len() < 8<<10; i++ {
		fmt.Fprintf(&sb, "lat=48.%06d;lon=11.%06d;", 137154+i, 576124+i)
	}
	return sb.String()[:8<<10]
}

// TestRejectedPublishFloodLogBounded: a hostile device sends 300 rejected
// 8 KiB publishes three ways (MQTT 5 dead-lettered by a hook, 3.1.1
// dead-lettered by a hook, and 3.1.1 ACL-denied, which costs it a
// connection each time). With the log at debug level, the whole log stays
// under 20 KB and holds no payload byte sequence, raw or as decimal bytes
// (mochi's rendering). Before the log filter it grew by about 10 MB per 300.
func TestRejectedPublishFloodLogBounded(t *testing.T) {
	var out logbuf.Buffer
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := testConfig()
	b, err := New(cfg, mustRegistry(t), log)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddHook(&deadLetterHook{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	addr := b.Addr(ListenerTCP)
	payload := positionPayload()
	const n = 300

	// MQTT 5: PUBACK 0x99 for each, connection kept.
	c, r := rawConnectV5(t, addr, vin1)
	for i := 1; i <= n; i++ {
		if _, err := c.Write(v5Publish(tele1, 1, uint16(i), payload)); err != nil {
			t.Fatal(err)
		}
		if body := readPacketRaw(t, r, 0x40, 0); len(body) < 3 || body[2] != 0x99 {
			t.Fatalf("publish %d: PUBACK %x, want reason 0x99", i, body)
		}
	}
	// MQTT 3.1.1: mochi acknowledges (it ignores hook errors for 3.1.1),
	// but logs each.
	c3, r3 := rawConnect(t, addr, vin2)
	for i := 1; i <= n; i++ {
		if _, err := c3.Write(publishPacket(tele2, 1, uint16(i), payload)); err != nil {
			t.Fatal(err)
		}
		readPacketRaw(t, r3, 0x40, 0)
	}
	// MQTT 3.1.1, ACL-denied: connection closed each time.
	for range n {
		c, r := rawConnect(t, addr, vin1)
		go c.Write(publishPacket(tele2, 1, 1, payload))
		if rest := waitEOF(t, r2c{r, c}); len(rest) != 0 {
			t.Fatalf("ACL-denied 3.1.1 publish answered %x", rest)
		}
	}
	b.Close()

	logged := out.String()
	if len(logged) >= 20_000 {
		t.Errorf("log grew to %d bytes for %d rejected publishes; tail:\n%s", len(logged), 3*n, logged[max(0, len(logged)-2000):])
	}
	decimal := strings.Trim(fmt.Sprint([]byte(payload[:12])), "[]") //nolint:staticcheck // QF1010: the decimal byte list is the point
	for _, leak := range []string{payload[:12], "lat=48.1", decimal} {
		if strings.Contains(logged, leak) {
			t.Errorf("log holds payload bytes %q", leak)
		}
	}
	if b.Stats().LogSuppressed.Load() == 0 {
		t.Error("no suppressed lines counted")
	}
	if !strings.Contains(logged, "topic="+tele1) || !strings.Contains(logged, "size=8192") {
		t.Errorf("rejection lines lack topic and size:\n%s", logged)
	}
}

// testClock is a clock the test moves by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestLogFilter(t *testing.T) {
	var out bytes.Buffer
	clock := &testClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	var suppressed int
	f := newLogFilter(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}), clock.now, func() { suppressed++ })
	log := slog.New(f)
	secret := []byte("lat=48.137154;lon=11.576124")

	t.Run("packets summarised without payload", func(t *testing.T) {
		out.Reset()
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "vehicles/X/telemetry",
			PacketID: 7, Payload: secret, Origin: "dev-a"}
		log.Warn("error processing packet", "error", packets.ErrNotAuthorized, "pk", pk)
		log.Debug("packet rejected", "packet", &pk)
		got := out.String()
		for _, want := range []string{"pk.type=Publish", "pk.topic=vehicles/X/telemetry", "pk.size=27", "pk.qos=1", "pk.id=7",
			"client=dev-a", `error="not authorized"`, "packet.size=27"} {
			if !strings.Contains(got, want) {
				t.Errorf("missing %q in %s", want, got)
			}
		}
		if strings.Contains(got, "lat=") || strings.Contains(got, "108 97 116") {
			t.Fatalf("payload in log: %s", got)
		}
	})

	t.Run("bytes, unknown values and long strings", func(t *testing.T) {
		out.Reset()
		log.Info("x", "raw", secret, "conn", &net.TCPConn{}, "topic", strings.Repeat("é", 400),
			slog.Group("g", "payload", secret))
		got := out.String()
		for _, want := range []string{"raw=\"27 bytes omitted\"", "conn=\"<*net.TCPConn omitted>\"", "(800 bytes)", "g.payload=\"27 bytes omitted\""} {
			if !strings.Contains(got, want) {
				t.Errorf("missing %q in %s", want, got)
			}
		}
		if strings.Contains(got, "lat=") || len(got) > 1000 {
			t.Fatalf("log line: %s", got)
		}
	})

	t.Run("per-client rate limit", func(t *testing.T) {
		out.Reset()
		suppressed = 0
		for range 3 * logBurstPerClient {
			log.Info("rejected", "client", "dev-b")
		}
		if got := strings.Count(out.String(), "client=dev-b"); got != logBurstPerClient {
			t.Fatalf("%d lines for dev-b, want the burst of %d", got, logBurstPerClient)
		}
		if suppressed != 2*logBurstPerClient {
			t.Fatalf("suppressed %d", suppressed)
		}
		// Another client and client-less lines are not affected.
		log.Info("rejected", "client", "dev-c")
		for range 3 * logBurstPerClient {
			log.Info("registry reloaded")
		}
		// Bound with WithAttrs counts too.
		log.With("client", "dev-b").Info("rejected again")
		clock.add(logEveryPerClient)
		log.Info("rejected", "client", "dev-b")
		got := out.String()
		if strings.Count(got, "client=dev-c") != 1 || strings.Count(got, "registry reloaded") != 3*logBurstPerClient {
			t.Fatalf("other lines limited:\n%s", got)
		}
		if strings.Contains(got, "rejected again") {
			t.Fatal("WithAttrs client not limited")
		}
		if !strings.Contains(got, fmt.Sprintf("client=dev-b suppressed=%d", 2*logBurstPerClient+1)) {
			t.Fatalf("no suppressed count on the next line:\n%s", got)
		}
	})
}
