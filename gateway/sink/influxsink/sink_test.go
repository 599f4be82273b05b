package influxsink

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/spool"
	"github.com/telegate/telegate/gateway/spool/record"
)

// limitWriter stands in for an InfluxDB whose body limit is max bytes: it
// answers like the real writer does for a 413, and records what it stored.
type limitWriter struct {
	mu     sync.Mutex
	max    int
	lines  int
	writes int
	too    int
}

func (w *limitWriter) Write(_ context.Context, b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(b) > w.max {
		w.too++
		return &influx.WriteError{Op: "write", Kind: influx.ErrPermanent, StatusCode: 413, Message: "request entity too large"}
	}
	w.writes++
	w.lines += bytes.Count(b, []byte("\n"))
	return nil
}

func (w *limitWriter) stored() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lines
}

// TestOversizedBatchesAreSplitNotDropped: every record of a batch whose line
// protocol exceeds the body cap, or which the server refuses with 413, is
// still written.
func TestOversizedBatchesAreSplitNotDropped(t *testing.T) {
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), Consumers: []string{ConsumerName}, MaxRecord: 64 << 10, SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	const frames = 400
	for i := 1; i <= frames; i++ {
		f := wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident("V"), Seq: uint64(i), TimeMs: int64(1_767_225_600_000 + i)}
		for id := uint16(1); id <= 30; id++ {
			f.Signals = append(f.Signals, wire.Signal{ID: id, Value: 1})
		}
		b, _ := f.MarshalMsg(nil)
		if _, err := sp.Append(record.Append(nil, record.KindPublish, 1, 1, "vehicles/V/telemetry", "V", "", b)); err != nil {
			t.Fatal(err)
		}
	}
	cons, _ := sp.Consumer(ConsumerName)
	// The server takes at most 50 KB per request; the sink caps bodies at
	// 200 KB, so every write first meets a 413 and is split.
	w := &limitWriter{max: 50 << 10}
	s := New(Config{MaxBodyBytes: 200 << 10}, cons, w, metrics.New(prometheus.NewRegistry()), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil) }()
	deadline := time.Now().Add(30 * time.Second)
	for w.stored() < frames && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w.stored() != frames {
		t.Fatalf("stored %d lines, want %d", w.stored(), frames)
	}
	if w.too == 0 || w.writes < 2 {
		t.Fatalf("expected 413 splits: %d refused, %d writes", w.too, w.writes)
	}
	if st := sp.Stats(); st.Consumers[0].LagRecords != 0 {
		t.Fatalf("cursor not committed: lag %d", st.Consumers[0].LagRecords)
	}
}

func TestSplitPoint(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{{"a\n", 0}, {"a\nb\n", 2}, {"aaaa\nb\n", 5}, {"a\nbbbbbbb\n", 2}, {"", 0}} {
		if got := splitPoint([]byte(c.in)); got != c.want {
			t.Errorf("splitPoint(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

// flakyWriter refuses the first fails writes as retryable (InfluxDB down).
type flakyWriter struct {
	limitWriter
	fails int
}

func (w *flakyWriter) Write(ctx context.Context, b []byte) error {
	w.mu.Lock()
	if w.fails > 0 {
		w.fails--
		w.mu.Unlock()
		return &influx.WriteError{Op: "write", Kind: influx.ErrRetryable, StatusCode: 503, Message: "unavailable"}
	}
	w.mu.Unlock()
	return w.limitWriter.Write(ctx, b)
}

// TestRetryDoesNotReencode: a batch retried after InfluxDB failures is
// written once, and its records are decoded (and counted) once.
func TestRetryDoesNotReencode(t *testing.T) {
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), Consumers: []string{ConsumerName}, MaxRecord: 64 << 10, SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if _, err := sp.Append([]byte("not a record")); err != nil {
		t.Fatal(err)
	}
	const frames = 10
	for i := 1; i <= frames; i++ {
		f := wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident("V"), Seq: uint64(i), TimeMs: int64(1_767_225_600_000 + i),
			Signals: []wire.Signal{{ID: 1, Value: 1}}}
		b, _ := f.MarshalMsg(nil)
		if _, err := sp.Append(record.Append(nil, record.KindPublish, 1, 1, "vehicles/V/telemetry", "V", "", b)); err != nil {
			t.Fatal(err)
		}
	}
	cons, _ := sp.Consumer(ConsumerName)
	w := &flakyWriter{limitWriter: limitWriter{max: 1 << 20}, fails: 2}
	m := metrics.New(prometheus.NewRegistry())
	s := New(Config{}, cons, w, m, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil) }()
	for deadline := time.Now().Add(30 * time.Second); sp.Stats().Consumers[0].LagRecords != 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if w.stored() != frames || w.writes != 1 {
		t.Fatalf("stored %d lines in %d writes, want %d in 1", w.stored(), w.writes, frames)
	}
	if n := testutil.ToFloat64(m.SinkErrors.WithLabelValues(ConsumerName, "corrupt_record")); n != 1 {
		t.Fatalf("corrupt record counted %v times, want 1", n)
	}
	if n := testutil.ToFloat64(m.InfluxWrites.WithLabelValues("retry")); n != 2 {
		t.Fatalf("%v retries counted, want 2", n)
	}
}
