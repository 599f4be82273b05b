package ingest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/telegate/telegate/broker/listener"
	"github.com/telegate/telegate/gateway/ingest"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/spool"
	"github.com/telegate/telegate/gateway/spool/record"
)

// gatedSpool is the real spool adapter whose WaitTicket waits for gate
// first (or fails with fail), and counts its calls.
type gatedSpool struct {
	ingest.Spool
	p     ingest.Pipeliner
	gate  chan struct{}
	fail  error
	waits atomic.Int32
	since atomic.Int64 // appended of the last WaitTicket (Unix ns)
}

func (g *gatedSpool) AppendTicket(rec []byte) (uint64, error) { return g.p.AppendTicket(rec) }

func (g *gatedSpool) WaitTicket(t uint64, appended time.Time) error {
	g.waits.Add(1)
	g.since.Store(appended.UnixNano())
	<-g.gate
	if g.fail != nil {
		return g.fail
	}
	return g.p.WaitTicket(t, appended)
}

// asyncGatedSpool is gatedSpool for the path where the reader does not
// wait (ingest.AsyncPipeliner): the spool's notification of a finished
// commit waits for gate first (or reports fail).
type asyncGatedSpool struct {
	*gatedSpool
	a ingest.AsyncPipeliner
}

func (g asyncGatedSpool) NotifyTicket(t uint64, appended time.Time, n spool.Notifier) bool {
	g.waits.Add(1)
	select {
	case <-g.gate:
		if g.fail == nil { // the gate is open: the real notifier (no allocation)
			return g.a.NotifyTicket(t, appended, n)
		}
	default:
	}
	gn := gateNote{g.gatedSpool, n}
	if !g.a.NotifyTicket(t, appended, gn) {
		select {
		case <-g.gate:
			return false // finished, and so it is for the test too
		default:
			go gn.Durable(spool.Ticket(t), nil) // finished, but not until gate
		}
	}
	return true
}

type gateNote struct {
	g *gatedSpool
	n spool.Notifier
}

func (gn gateNote) Durable(t spool.Ticket, err error) {
	<-gn.g.gate
	if gn.g.fail != nil {
		err = gn.g.fail
	}
	gn.n.Durable(t, err)
}

// heldModes runs a held-PUBACK test with the reader waiting for the commit
// (sync: a spool without notifications, or a TLS or WebSocket connection)
// and with the spool's notifier writing the PUBACKs (async).
func heldModes(t *testing.T, test func(t *testing.T, async bool)) {
	for _, async := range []bool{false, true} {
		name := "sync"
		if async {
			name = "async"
		}
		t.Run(name, func(t *testing.T) { test(t, async) })
	}
}

type heldFixture struct {
	sp   *spool.Spool
	cons *spool.Consumer
	g    *gatedSpool
	m    *metrics.Metrics
	addr string
}

// newHeldFixture runs mochi with the product's listener (broker/listener)
// and the ingest hook over a real spool behind gatedSpool.
func newHeldFixture(t testing.TB, async bool) *heldFixture {
	t.Helper()
	return newHeldFixtureLog(t, nil, async)
}

// newHeldFixtureLog is newHeldFixture with log as mochi's logger (nil:
// mochi's default).
func newHeldFixtureLog(t testing.TB, log *slog.Logger, async bool) *heldFixture {
	t.Helper()
	return newHeldFixtureSpool(t, log, async, spool.Options{})
}

// newHeldFixtureSpool is newHeldFixtureLog with the spool's options (its
// directory and consumer are set here).
func newHeldFixtureSpool(t testing.TB, log *slog.Logger, async bool, so spool.Options) *heldFixture {
	t.Helper()
	so.Dir, so.Consumers = t.TempDir(), []string{"c"}
	sp, err := spool.Open(so)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := sp.Consumer("c")
	if err != nil {
		t.Fatal(err)
	}
	real := ingest.FromSpool(sp, 5*time.Second)
	g := &gatedSpool{Spool: real, p: real.(ingest.Pipeliner), gate: make(chan struct{})}
	var hs ingest.Spool = g
	if async {
		hs = asyncGatedSpool{g, real.(ingest.AsyncPipeliner)}
	}
	m := metrics.New(prometheus.NewRegistry())
	// As the broker runs mochi (broker.New): the body of a held publish
	// serves the next packet.
	opts := &mqtt.Options{InlineClient: true, ReuseIgnoredPublishBody: true}
	if log != nil {
		opts.Logger = log
	}
	srv := mqtt.New(opts)
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	h := ingest.New(hs, ingest.NewValidator(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Hour, nil), m, nil)
	h.SetServer(srv)
	if err := srv.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	l, err := listener.NewTCP(listener.Options{ID: "t", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-g.gate:
		default:
			close(g.gate)
		}
		_ = srv.Close()
		_ = sp.Close()
	})
	return &heldFixture{sp: sp, cons: cons, g: g, m: m, addr: l.Address()}
}

// connect311 opens a raw MQTT 3.1.1 connection as vin.
func connect311(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	body := append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30, 0, byte(len(vin))}, vin...)
	if _, err := c.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || !bytes.Equal(ack, []byte{0x20, 2, 0, 0}) {
		t.Fatalf("CONNACK % x: %v", ack, err)
	}
	return c
}

// publishes returns n QoS 1 telemetry PUBLISH packets, ids 1..n.
func publishes(n int) []byte {
	topic := "vehicles/" + vin + "/telemetry"
	var out []byte
	for i := 1; i <= n; i++ {
		payload := frame(uint64(i))
		rem := 2 + len(topic) + 2 + len(payload)
		out = append(out, 0x32)
		for { // remaining length varint
			b := byte(rem % 128)
			rem /= 128
			if rem > 0 {
				b |= 0x80
			}
			out = append(out, b)
			if rem == 0 {
				break
			}
		}
		out = append(out, byte(len(topic)>>8), byte(len(topic)))
		out = append(out, topic...)
		out = append(out, byte(i>>8), byte(i))
		out = append(out, payload...)
	}
	return out
}

func pubacks(n int) []byte {
	var out []byte
	for i := 1; i <= n; i++ {
		out = append(out, 0x40, 2, byte(i>>8), byte(i))
	}
	return out
}

// TestHeldPubacksWaitForCommitAndLeaveTogether: a 3.1.1 device's QoS 1
// publishes that arrive together are appended without waiting for each
// other; no PUBACK leaves before the commit wait returned, and then all of
// them leave, in order, after one wait for the newest ticket.
func TestHeldPubacksWaitForCommitAndLeaveTogether(t *testing.T) {
	heldModes(t, testHeldPubacksWaitForCommitAndLeaveTogether)
}

func testHeldPubacksWaitForCommitAndLeaveTogether(t *testing.T, async bool) {
	f := newHeldFixture(t, async)
	c := connect311(t, f.addr)
	const n = 16
	if _, err := c.Write(publishes(n)); err != nil {
		t.Fatal(err)
	}
	// The commit wait is blocked: nothing may be acknowledged.
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var one [1]byte
	if k, err := c.Read(one[:]); k != 0 || err == nil {
		t.Fatalf("PUBACK byte %#x before the commit wait returned", one[0])
	}
	close(f.g.gate)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 4*n)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pubacks(n)) {
		t.Fatalf("PUBACKs\n% x\nwant\n% x", got, pubacks(n))
	}
	if w := f.g.waits.Load(); w > 2 {
		t.Fatalf("%d commit waits for %d publishes sent together, want 1 (2 if TCP split them)", w, n)
	}
	// Consumers only see durable records: the connect and the 16 frames.
	if recs := readAllSpool(t, f.cons, n+1); len(recs) != n+1 {
		t.Fatalf("%d durable records", len(recs))
	}
	if got := testutil.ToFloat64(f.m.Spooled.WithLabelValues("1")); got != n {
		t.Fatalf("spooled counter %v", got)
	}
}

// TestHeldPubacksBeforeDisconnect: publishes followed at once by DISCONNECT
// still get their PUBACKs.
func TestHeldPubacksBeforeDisconnect(t *testing.T) { heldModes(t, testHeldPubacksBeforeDisconnect) }

func testHeldPubacksBeforeDisconnect(t *testing.T, async bool) {
	f := newHeldFixture(t, async)
	close(f.g.gate)
	c := connect311(t, f.addr)
	const n = 8
	if _, err := c.Write(append(publishes(n), 0xE0, 0)); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pubacks(n)) {
		t.Fatalf("got % x, want % x", got, pubacks(n))
	}
}

// TestHeldPubacksRefusedOnCommitFailure: when the commit wait fails (here a
// timeout), the 3.1.1 client is disconnected without any PUBACK and the
// refusals are counted.
func TestHeldPubacksRefusedOnCommitFailure(t *testing.T) {
	heldModes(t, testHeldPubacksRefusedOnCommitFailure)
}

func testHeldPubacksRefusedOnCommitFailure(t *testing.T, async bool) {
	f := newHeldFixture(t, async)
	f.g.fail = fmt.Errorf("%w: test", ingest.ErrSpoolTimeout)
	close(f.g.gate)
	c := connect311(t, f.addr)
	const n = 4
	if _, err := c.Write(publishes(n)); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection not closed")
	}
	if len(got) != 0 {
		t.Fatalf("got % x after a failed commit, want nothing", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(f.m.Refused.WithLabelValues("spool_timeout")) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("refusal not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readAllSpool(t *testing.T, cons *spool.Consumer, want int) []spool.Record {
	t.Helper()
	ctx, cancel := contextWithTimeout(10 * time.Second)
	defer cancel()
	var out []spool.Record
	var buf []spool.Record
	for len(out) < want {
		var err error
		buf, err = cons.Read(ctx, buf, 100, 1<<20)
		if err != nil {
			t.Fatalf("read after %d records: %v", len(out), err)
		}
		out = append(out, buf...)
	}
	return out
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// debugRecorder is a slog.Handler that keeps the message of every record,
// Debug level included.
type debugRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *debugRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *debugRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, rec.Message)
	r.mu.Unlock()
	return nil
}
func (r *debugRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *debugRecorder) WithGroup(string) slog.Handler      { return r }

func (r *debugRecorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// TestHeldPublishIsNotLoggedAsRejected: a publish whose PUBACK is held is
// not handed back to mochi as a rejected packet, whose Debug log line boxes
// the whole packet for every frame; it is still acknowledged exactly once,
// after the commit.
func TestHeldPublishIsNotLoggedAsRejected(t *testing.T) {
	heldModes(t, testHeldPublishIsNotLoggedAsRejected)
}

func testHeldPublishIsNotLoggedAsRejected(t *testing.T, async bool) {
	rec := &debugRecorder{}
	f := newHeldFixtureLog(t, slog.New(rec), async)
	close(f.g.gate)
	c := connect311(t, f.addr)
	const n = 8
	if _, err := c.Write(publishes(n)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4*n)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pubacks(n)) {
		t.Fatalf("PUBACKs\n% x\nwant\n% x", got, pubacks(n))
	}
	if k := rec.count("publish packet rejected"); k != 0 {
		t.Fatalf("%d held publishes logged by mochi as rejected", k)
	}
	if recs := readAllSpool(t, f.cons, n+1); len(recs) != n+1 {
		t.Fatalf("%d durable records", len(recs))
	}
}

// TestHeldPubacksReaderKeepsReading: with the spool's notifications, the
// connection's reader does not wait for a commit: publishes that arrive
// while the first ones' PUBACKs are held are appended at once, and every
// PUBACK still leaves only after its commit, in publish order.
func TestHeldPubacksReaderKeepsReading(t *testing.T) {
	f := newHeldFixture(t, true)
	c := connect311(t, f.addr)
	a0 := f.sp.Stats().Appended
	all := publishes(8)
	first := publishes(4)
	if _, err := c.Write(first); err != nil {
		t.Fatal(err)
	}
	waitAppended(t, f.sp, a0+4)
	if _, err := c.Write(all[len(first):]); err != nil {
		t.Fatal(err)
	}
	// The first four are still held (the notification waits for gate),
	// yet the reader appends the next four.
	waitAppended(t, f.sp, a0+8)
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var one [1]byte
	if k, err := c.Read(one[:]); k != 0 || err == nil {
		t.Fatalf("PUBACK byte %#x before the commit was notified", one[0])
	}
	close(f.g.gate)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 4*8)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pubacks(8)) {
		t.Fatalf("PUBACKs\n% x\nwant\n% x", got, pubacks(8))
	}
}

func waitAppended(t *testing.T, sp *spool.Spool, n uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for sp.Stats().Appended < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d records appended, want %d: the reader is waiting", sp.Stats().Appended, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHeldWaitCountsFromReceiveTime: a held publish reads the clock once:
// the wait for its commit (ack timeout, append duration) counts from the
// receive time in its spool record.
func TestHeldWaitCountsFromReceiveTime(t *testing.T) {
	f := newHeldFixture(t, false)
	close(f.g.gate)
	c := connect311(t, f.addr)
	if _, err := c.Write(publishes(1)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || !bytes.Equal(ack, pubacks(1)) {
		t.Fatalf("got % x (%v), want PUBACK", ack, err)
	}
	recs := readAllSpool(t, f.cons, 2) // the connect record and the frame
	var rec record.Record
	if err := record.Parse(append([]byte(nil), recs[1].Data...), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Kind != record.KindPublish {
		t.Fatalf("record kind %d", rec.Kind)
	}
	if got := f.g.since.Load(); got != rec.RecvNs {
		t.Fatalf("wait counted from %d, record received at %d", got, rec.RecvNs)
	}
}
