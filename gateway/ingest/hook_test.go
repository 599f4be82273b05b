package ingest_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/telegate/telegate/broker"
	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/reject"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/ingest"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/spool"
	"github.com/telegate/telegate/gateway/spool/record"
	"github.com/telegate/telegate/internal/logbuf"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/eclipse/paho%2emqtt%2egolang.(*router).matchAndDispatch"))
}

const vin = "TGSVS000000000001"

type fixture struct {
	hook  *ingest.Hook
	srv   *mqtt.Server
	sp    *spool.Spool
	cons  *spool.Consumer
	m     *metrics.Metrics
	addr  string
	close func()
}

// newFixture runs a real mochi server (allow-all auth: the product's auth and
// ACL are tested in broker/) with the ingest hook over a real spool.
func newFixture(t *testing.T, maxBytes int64, log ...*slog.Logger) *fixture {
	t.Helper()
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), Consumers: []string{"c"}, MaxBytes: maxBytes, SegmentBytes: 64 << 10, MaxRecord: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := sp.Consumer("c")
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(prometheus.NewRegistry())
	srv := mqtt.New(&mqtt.Options{InlineClient: true})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	h := ingest.New(ingest.FromSpool(sp, 5*time.Second), ingest.NewValidator(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Hour, nil), m, append(log, nil)[0])
	h.SetServer(srv)
	if err := srv.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "t", Address: addr})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	f := &fixture{hook: h, srv: srv, sp: sp, cons: cons, m: m, addr: addr}
	f.close = func() { _ = srv.Close(); _ = sp.Close() }
	t.Cleanup(f.close)
	return f
}

func frame(seq uint64) []byte {
	f := wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident(vin), Seq: seq, TimeMs: time.Now().UnixMilli(),
		Signals: []wire.Signal{{ID: catalog.Speed, Value: 42}}}
	b, _ := f.MarshalMsg(nil)
	return b
}

func v5(t *testing.T, addr string) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: vin, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

func publish5(t *testing.T, c *paho.Client, topic string, qos byte, payload []byte) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: payload})
	if resp == nil {
		if qos == 0 && err == nil {
			return 0
		}
		t.Fatalf("publish: %v", err)
	}
	return resp.ReasonCode
}

// readAll returns the records currently in the spool.
func readAll(t *testing.T, f *fixture, want int) []record.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []record.Record
	var buf []spool.Record
	for len(out) < want {
		var err error
		buf, err = f.cons.Read(ctx, buf, 100, 1<<20)
		if err != nil {
			t.Fatalf("read after %d records: %v", len(out), err)
		}
		for _, r := range buf {
			var rec record.Record
			if err := record.Parse(append([]byte(nil), r.Data...), &rec); err != nil {
				t.Fatal(err)
			}
			out = append(out, rec)
		}
	}
	return out
}

func TestQoS1IsSpooledBeforePuback(t *testing.T) {
	f := newFixture(t, 1<<20)
	c := v5(t, f.addr)
	if rc := publish5(t, c, "vehicles/"+vin+"/telemetry", 1, frame(1)); rc != 0 {
		t.Fatalf("reason code %#x", rc)
	}
	// The PUBACK came back, so the record must already be durable: no
	// waiting here.
	st := f.sp.Stats()
	if st.Appended < 2 { // connect + frame
		t.Fatalf("appended %d", st.Appended)
	}
	recs := readAll(t, f, 2)
	if recs[0].Kind != record.KindConnect || string(recs[0].Client) != vin {
		t.Fatalf("first record %+v", recs[0])
	}
	r := recs[1]
	if r.Kind != record.KindPublish || r.QoS != 1 || string(r.Topic) != "vehicles/"+vin+"/telemetry" {
		t.Fatalf("record %+v", r)
	}
	var fr wire.TelemetryFrame
	if err := wire.DecodeTelemetry(r.Payload, &fr); err != nil || fr.Seq != 1 {
		t.Fatalf("payload does not decode: %v", err)
	}
	if got := testutil.ToFloat64(f.m.Spooled.WithLabelValues("1")); got != 1 {
		t.Fatalf("spooled counter %v", got)
	}
}

func TestMalformedIsDeadLetteredWith0x99(t *testing.T) {
	f := newFixture(t, 1<<20)
	c := v5(t, f.addr)
	if rc := publish5(t, c, "vehicles/"+vin+"/telemetry", 1, []byte{0x93, 0x01}); rc != 0x99 {
		t.Fatalf("reason code %#x, want 0x99", rc)
	}
	recs := readAll(t, f, 2)
	if recs[1].Kind != record.KindDeadLetter {
		t.Fatalf("dead letter %+v", recs[1])
	}
	// The spool record carries the label and a detail in protocol terms.
	label, detail := reject.ParseReason(recs[1].Reason)
	if label != reject.Malformed || detail != "tuple of 5 elements expected, got 3" {
		t.Fatalf("dead letter reason %q: label %v detail %q", recs[1].Reason, label, detail)
	}
	if got := testutil.ToFloat64(f.m.DeadLettered.WithLabelValues("telemetry", "malformed")); got != 1 {
		t.Fatalf("dead letter counter %v", got)
	}
	if packets.ErrPayloadFormatInvalid.Code != reject.PubackCode {
		t.Fatalf("documented PUBACK code %#x, mochi's %#x", reject.PubackCode, packets.ErrPayloadFormatInvalid.Code)
	}
	// A publish on a non-ingest topic is not spooled.
	if rc := publish5(t, c, "vehicles/"+vin+"/other", 1, []byte("x")); rc != 0 {
		t.Fatalf("non-ingest topic: %#x", rc)
	}
}

func TestSpoolFullRefusesQoS1(t *testing.T) {
	f := newFixture(t, 1<<20)
	c := v5(t, f.addr)
	big := make([]byte, 0, 60<<10)
	fr := wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident(vin), TimeMs: time.Now().UnixMilli()}
	for i := range 400 {
		fr.Signals = append(fr.Signals, wire.Signal{ID: uint16(i%36 + 1), Value: 1})
	}
	big, _ = fr.MarshalMsg(big)
	// Nobody consumes: fill the 1 MiB spool until it refuses.
	var rc byte
	n := 0
	for ; n < 1000; n++ {
		if rc = publish5(t, c, "vehicles/"+vin+"/telemetry", 1, big); rc != 0 {
			break
		}
	}
	if rc != 0x97 {
		t.Fatalf("after %d publishes: reason code %#x, want 0x97 quota exceeded", n, rc)
	}
	if got := testutil.ToFloat64(f.m.Refused.WithLabelValues("spool_full")); got != 1 {
		t.Fatalf("refused counter %v", got)
	}
	// QoS 0 is dropped and counted.
	publish5(t, c, "vehicles/"+vin+"/telemetry", 0, big)
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(f.m.Dropped.WithLabelValues("spool_full")) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("QoS 0 drop not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// An MQTT 3.1.1 client cannot be told: it is disconnected without a PUBACK.
	o := paho3.NewClientOptions().AddBroker("tcp://" + f.addr).SetClientID("TGSVS000000000002").SetAutoReconnect(false)
	c3 := paho3.NewClient(o)
	if tok := c3.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c3.Disconnect(0)
	fr.VIN = wire.Ident("TGSVS000000000002")
	big, _ = fr.MarshalMsg(big[:0])
	tok := c3.Publish("vehicles/TGSVS000000000002/telemetry", 1, false, big)
	if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		t.Fatal("3.1.1 publish acknowledged while the spool is full")
	}
	for c3.IsConnectionOpen() {
		if time.Now().After(deadline) {
			t.Fatal("3.1.1 client not disconnected")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWillIsIngested: a device's Will (published by the broker when the
// connection drops without DISCONNECT) is validated and spooled like a
// publish.
func TestWillIsIngested(t *testing.T) {
	f := newFixture(t, 1<<20)
	ev := wire.VehicleEvent{Version: wire.Version, VIN: wire.Ident(vin), Seq: 9, TimeMs: time.Now().UnixMilli(), Kind: wire.EventOffline}
	will, _ := ev.MarshalMsg(nil)
	str := func(b []byte) []byte { return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...) }
	var body []byte
	body = append(body, str([]byte("MQTT"))...)
	body = append(body, 4, 0x06, 0, 30) // v3.1.1, clean session + Will (QoS 0), keepalive 30
	body = append(body, str([]byte(vin))...)
	body = append(body, str([]byte("vehicles/"+vin+"/events"))...)
	body = append(body, str(will)...)
	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, ack); err != nil || ack[3] != 0 {
		t.Fatalf("connack % x %v", ack, err)
	}
	conn.Close()             // no DISCONNECT: the broker sends the Will
	recs := readAll(t, f, 3) // connect, will, disconnect (order of the last two may vary)
	found := false
	for _, r := range recs {
		if r.Kind == record.KindPublish && string(r.Topic) == "vehicles/"+vin+"/events" {
			var got wire.VehicleEvent
			if err := wire.DecodeVehicleEvent(r.Payload, &got); err != nil || got.Kind != wire.EventOffline {
				t.Fatalf("will payload: %v %+v", err, got)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("Will not spooled: %+v", recs)
	}
}

// rawV5 connects an MQTT 5 client on a raw socket (clean start, no
// properties) and checks its CONNACK's reason code is 0.
func rawV5(t *testing.T, addr, id string) net.Conn {
	t.Helper()
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	body := append(str("MQTT"), 5, 0x02, 0, 30, 0)
	body = append(body, str(id)...)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(conn, hdr); err != nil || hdr[0] != 0x20 {
		t.Fatalf("connack header % x %v", hdr, err)
	}
	rest := make([]byte, hdr[1])
	if _, err := io.ReadFull(conn, rest); err != nil || rest[1] != 0 {
		t.Fatalf("connack % x %v", rest, err)
	}
	return conn
}

// TestSpoolClosedDisconnectsV5 pins the answer to a QoS 1 publish while
// the spool is closing (the gateway shuts down): MQTT 5 DISCONNECT 0x8B
// Server shutting down and no PUBACK (0x89 is not a PUBACK reason code, and
// a negative PUBACK would end the publish for good; unacknowledged, it is
// resent to the next server); MQTT 3.1.1 the connection closed without an
// ack.
func TestSpoolClosedDisconnectsV5(t *testing.T) {
	f := newFixture(t, 1<<20)
	_ = f.sp.Close()
	topic := "vehicles/" + vin + "/telemetry"
	pub := func(level byte) []byte {
		body := append([]byte{0, byte(len(topic))}, topic...)
		body = append(body, 0, 7) // packet id 7
		if level == 5 {
			body = append(body, 0) // no properties
		}
		body = append(body, frame(1)...)
		return append([]byte{0x32, byte(len(body))}, body...)
	}

	c := rawV5(t, f.addr, vin)
	if _, err := c.Write(pub(5)); err != nil {
		t.Fatal(err)
	}
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	props := append([]byte{0x1F}, str("server shutting down")...)
	want := append([]byte{0xE0, byte(2 + len(props)), 0x8B, byte(len(props))}, props...)
	got, _ := io.ReadAll(c)
	if string(got) != string(want) {
		t.Fatalf("v5 answer\n got % x\nwant % x", got, want)
	}

	// 3.1.1: closed, nothing written.
	str3 := append(str("MQTT"), 4, 0x02, 0, 30)
	str3 = append(str3, str("TGSVS000000000002")...)
	c3, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	_ = c3.SetDeadline(time.Now().Add(10 * time.Second))
	c3.Write(append([]byte{0x10, byte(len(str3))}, str3...))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c3, ack); err != nil || ack[3] != 0 {
		t.Fatalf("connack % x %v", ack, err)
	}
	c3.Write(pub(4))
	if rest, err := io.ReadAll(c3); err != nil || len(rest) != 0 {
		t.Fatalf("3.1.1 answer % x (%v), want the connection closed without a byte", rest, err)
	}
	if got := testutil.ToFloat64(f.m.Refused.WithLabelValues("shutting_down")); got != 2 {
		t.Fatalf("refused{shutting_down} = %v, want 2", got)
	}
}

// TestRejectedPayloadLoggedWithLabel: every rejected payload is logged as
// one line with client, topic, size and its rejection label, never the
// payload, and through the broker's log filter the lines are bounded per
// client (a burst of 10, then one per 10 s, on an injected clock) with the
// dropped ones counted and reported on the next line let through.
func TestRejectedPayloadLoggedWithLabel(t *testing.T) {
	var out logbuf.Buffer
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	suppressed := 0
	count := func() { mu.Lock(); suppressed++; mu.Unlock() }
	log := slog.New(broker.NewLogFilter(slog.NewTextHandler(&out, nil), clock, count))
	f := newFixture(t, 8<<20, log)
	c := v5(t, f.addr)
	payload := []byte("\x93SECRET-POSITION-52.5200,13.4050")
	const n = 50
	for range n {
		if rc := publish5(t, c, "vehicles/"+vin+"/telemetry", 1, payload); rc != 0x99 {
			t.Fatalf("reason code %#x, want 0x99", rc)
		}
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var rejected []string
	for _, l := range lines {
		if strings.Contains(l, `msg="payload rejected"`) {
			rejected = append(rejected, l)
		}
	}
	if len(rejected) != 10 {
		t.Fatalf("%d rejection lines for %d rejections, want the burst of 10:\n%s", len(rejected), n, out.String())
	}
	want := fmt.Sprintf("client=%s topic=vehicles/%s/telemetry size=%d label=version", vin, vin, len(payload))
	if !strings.Contains(rejected[0], want) {
		t.Fatalf("line %q lacks %q", rejected[0], want)
	}
	if strings.Contains(out.String(), "SECRET") {
		t.Fatalf("payload bytes in the log:\n%s", out.String())
	}
	mu.Lock()
	got := suppressed
	now = now.Add(10 * time.Second)
	mu.Unlock()
	if got != n-10 {
		t.Fatalf("suppressed %d lines, want %d", got, n-10)
	}
	publish5(t, c, "vehicles/"+vin+"/telemetry", 1, payload)
	if !strings.Contains(out.String(), fmt.Sprintf("suppressed=%d", n-10)) {
		t.Fatalf("next line does not report the %d suppressed ones:\n%s", n-10, out.String())
	}
}

// TestWillOfRevokedDeviceDropped: the device check is repeated when the
// Will is sent. A device revoked while connected (the broker then
// disconnects it, which sends its Will) gets no Will stored; the drop is
// counted.
func TestWillOfRevokedDeviceDropped(t *testing.T) {
	f := newFixture(t, 1<<20)
	var revoked sync.Map
	f.hook.SetDeviceCheck(func(id string) bool { _, r := revoked.Load(id); return !r })
	ev := wire.VehicleEvent{Version: wire.Version, VIN: wire.Ident(vin), Seq: 9, TimeMs: time.Now().UnixMilli(), Kind: wire.EventOffline}
	will, _ := ev.MarshalMsg(nil)
	str := func(b []byte) []byte { return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...) }
	body := append(str([]byte("MQTT")), 4, 0x06, 0, 30) // 3.1.1, clean session + Will (QoS 0)
	body = append(body, str([]byte(vin))...)
	body = append(body, str([]byte("vehicles/"+vin+"/events"))...)
	body = append(body, str(will)...)
	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, ack); err != nil || ack[3] != 0 {
		t.Fatalf("connack % x %v", ack, err)
	}
	revoked.Store(vin, true)
	conn.Close() // no DISCONNECT: the broker sends the Will
	recs := readAll(t, f, 2)
	for _, r := range recs {
		if r.Kind != record.KindConnect && r.Kind != record.KindDisconnect {
			t.Fatalf("record %v on %q spooled for a revoked device", r.Kind, r.Topic)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(f.m.Dropped.WithLabelValues("will_revoked")) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("dropped Will not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The hook's OnPacketRead acts on DISCONNECT only (held PUBACKs, see
// TestHeldPubacksBeforeDisconnect): through mqtt.PacketReadFilter mochi
// calls it for DISCONNECT and no other packet type, sparing the copies of
// the packet into and out of it on every PUBLISH.
func TestHookReadsDisconnectOnly(t *testing.T) {
	var h mqtt.Hook = &ingest.Hook{}
	f, ok := h.(mqtt.PacketReadFilter)
	if !ok {
		t.Fatal("ingest.Hook does not implement mqtt.PacketReadFilter")
	}
	for pt := byte(0); pt < 16; pt++ {
		if got := f.WantsPacketRead(pt); got != (pt == packets.Disconnect) {
			t.Fatalf("WantsPacketRead(%d) = %v", pt, got)
		}
	}
}
