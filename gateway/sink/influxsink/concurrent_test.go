package influxsink

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/spool"
	"github.com/telegate/telegate/gateway/spool/record"
)

// Tests of WriteConcurrency against a real HTTP server (httptest) and the
// real InfluxDB writer. Frame i carries timestamp baseMs+i, so a request's
// first line tells which batch it is.

const (
	baseMs     = 1_767_225_600_000
	testToken  = "writer:secret" // the server refuses anything else
	perBatch   = 10              // records per batch (BatchLines)
	testFrames = 60
)

// writeServer is InfluxDB's /api/v2/write endpoint: it checks the
// credentials, calls hook (which may block or fail the request) with the
// batch number of the request, and records the stored timestamps.
type writeServer struct {
	*httptest.Server
	hook func(r *http.Request, batch int) int // HTTP status to answer
	// retryAfter, if set, gives the Retry-After header of the answer
	// with status for request number n (1 first; "" for none).
	retryAfter func(n, status int) string

	mu       sync.Mutex
	stored   map[int64]bool
	inflight int
	maxIn    int
	order    []int // batch numbers of the successful writes, in order
	requests int   // requests answered so far
}

func newWriteServer(t *testing.T, hook func(r *http.Request, batch int) int) *writeServer {
	s := &writeServer{hook: hook, stored: map[int64]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *writeServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v2/write" || r.Header.Get("Authorization") != "Token "+testToken {
		http.Error(w, `{"error":"authorization failed"}`, http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var ts []int64
	for _, line := range bytes.Split(bytes.TrimSpace(body), []byte("\n")) {
		f := bytes.Fields(line)
		n, _ := strconv.ParseInt(string(f[len(f)-1]), 10, 64)
		ts = append(ts, n/1e6)
	}
	batch := int(ts[0]-baseMs-1) / perBatch
	s.mu.Lock()
	s.inflight++
	s.maxIn = max(s.maxIn, s.inflight)
	s.requests++
	n := s.requests
	s.mu.Unlock()
	status := s.hook(r, batch)
	if s.retryAfter != nil {
		if v := s.retryAfter(n, status); v != "" {
			w.Header().Set("Retry-After", v)
		}
	}
	s.mu.Lock()
	s.inflight--
	if status == http.StatusNoContent && r.Context().Err() == nil {
		for _, t := range ts {
			s.stored[t] = true
		}
		s.order = append(s.order, batch)
	}
	s.mu.Unlock()
	w.WriteHeader(status)
}

func (s *writeServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.stored)
}

// countingWriter counts the writes in flight on the client side.
type countingWriter struct {
	w        Writer
	inflight atomic.Int32
}

func (c *countingWriter) Write(ctx context.Context, b []byte) error {
	c.inflight.Add(1)
	defer c.inflight.Add(-1)
	return c.w.Write(ctx, b)
}

// concurrentSink returns a spool holding testFrames telemetry frames and a
// sink writing them to srv with the given concurrency, plus the position
// at which each frame starts.
func concurrentSink(t *testing.T, srv *writeServer, conc int, cfgs ...Config) (*spool.Spool, *spool.Consumer, *Sink, *countingWriter, []spool.Pos) {
	t.Helper()
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), Consumers: []string{ConsumerName}, MaxRecord: 64 << 10, SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	var pos []spool.Pos
	for i := 1; i <= testFrames; i++ {
		f := wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident("V"), Seq: uint64(i), TimeMs: int64(baseMs + i),
			Signals: []wire.Signal{{ID: 1, Value: 1}}}
		b, _ := f.MarshalMsg(nil)
		p, err := sp.Append(record.Append(nil, record.KindPublish, 1, 1, "vehicles/V/telemetry", "V", "", b))
		if err != nil {
			t.Fatal(err)
		}
		pos = append(pos, p)
	}
	cons, _ := sp.Consumer(ConsumerName)
	iw, err := influx.NewWriter(influx.Config{URL: srv.URL, Token: testToken, Bucket: "telemetry/autogen"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cw := &countingWriter{w: iw}
	cfg := Config{Settings: Settings{BatchLines: perBatch}}
	if len(cfgs) > 0 {
		cfg = cfgs[0]
	}
	cfg.WriteConcurrency = conc
	s := New(cfg, cons, cw, metrics.New(prometheus.NewRegistry()), nil)
	return sp, cons, s, cw, pos
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestTwoWritesInFlight: with WriteConcurrency 2, a second batch is sent
// while the server still holds the first, and the cursor stays before the
// first batch until it is written: batches of BatchLines records, and one
// read split into batches at the body cap.
func TestTwoWritesInFlight(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"batch_lines", Config{Settings: Settings{BatchLines: perBatch}}},
		{"body_cap", Config{Settings: Settings{BatchLines: testFrames}, MaxBodyBytes: 512}},
	} {
		t.Run(c.name, func(t *testing.T) { testTwoWritesInFlight(t, c.cfg) })
	}
}

func testTwoWritesInFlight(t *testing.T, cfg Config) {
	second := make(chan struct{})
	var once sync.Once
	var requests atomic.Int32
	var cons *spool.Consumer
	var pos []spool.Pos
	var passed atomic.Bool
	srv := newWriteServer(t, func(r *http.Request, batch int) int {
		if requests.Add(1) == 1 {
			select { // held until a second write arrives
			case <-second:
			case <-time.After(20 * time.Second):
				return http.StatusServiceUnavailable // one write at a time: maxIn < 2 below
			}
			if pos[0].Less(cons.Committed()) {
				passed.Store(true)
			}
			return http.StatusNoContent
		}
		once.Do(func() { close(second) })
		return http.StatusNoContent
	})
	sp, c, s, _, p := concurrentSink(t, srv, 2, cfg)
	cons, pos = c, p
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil) }()
	waitFor(t, "every frame stored", func() bool { return srv.count() == testFrames && sp.Stats().Consumers[0].LagRecords == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.maxIn < 2 {
		t.Fatalf("at most %d writes in flight, want 2", srv.maxIn)
	}
	if srv.maxIn > 2 {
		t.Fatalf("%d writes in flight, want at most 2", srv.maxIn)
	}
	if passed.Load() {
		t.Fatal("the cursor moved while the first batch was held")
	}
	if len(srv.order) < 3 {
		t.Fatalf("%d writes, want several", len(srv.order))
	}
}

// TestFailedMiddleBatchRetriedInOrder: batch 1 of 6 fails twice while
// batch 2 is written; the cursor never passes batch 1's start until it is
// written, it is retried before anything newer than what was in flight,
// and nothing is lost.
func TestFailedMiddleBatchRetriedInOrder(t *testing.T) {
	var mu sync.Mutex
	attempts := 0
	arrived2 := make(chan struct{})
	var once sync.Once
	var ok1 atomic.Bool
	srv := newWriteServer(t, func(r *http.Request, batch int) int {
		switch batch {
		case 1:
			mu.Lock()
			attempts++
			a := attempts
			mu.Unlock()
			switch a {
			case 1: // fails once batch 2 is in flight too
				select {
				case <-arrived2:
				case <-time.After(20 * time.Second): // not concurrent: the order check fails
				}
				return http.StatusServiceUnavailable
			case 2:
				return http.StatusServiceUnavailable
			}
			ok1.Store(true)
		case 2:
			once.Do(func() { close(arrived2) })
		}
		return http.StatusNoContent
	})
	sp, cons, s, _, pos := concurrentSink(t, srv, 2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil) }()
	// Watch the cursor until batch 1 is written.
	watched := make(chan string, 1)
	go func() {
		for !ok1.Load() {
			if c := cons.Committed(); pos[perBatch].Less(c) {
				watched <- "the cursor passed the failed batch"
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
		watched <- ""
	}()
	waitFor(t, "every frame stored", func() bool { return srv.count() == testFrames && sp.Stats().Consumers[0].LagRecords == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if msg := <-watched; msg != "" {
		t.Fatal(msg)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	// Successful writes: 0, then 2 (in flight with the failed 1), then 1,
	// then 3, 4 and 5, each once (2 is not written again); two writes are
	// in flight at a time, so 3, 4 and 5 may complete in any order.
	got := srv.order
	if len(got) != 6 || !slices.Equal(got[:3], []int{0, 2, 1}) || !slices.Equal(slices.Sorted(slices.Values(got[3:])), []int{3, 4, 5}) {
		t.Fatalf("successful writes %v, want 0, 2, 1, then 3, 4, 5 in any order", got)
	}
}

// TestStopWaitsForWritesInFlight: Run stopped while two writes are held
// returns only after they ended (on the client side), without committing
// them; Drain then writes and commits everything.
func TestStopWaitsForWritesInFlight(t *testing.T) {
	release := make(chan struct{})
	var held atomic.Int32
	srv := newWriteServer(t, func(r *http.Request, batch int) int {
		held.Add(1)
		defer held.Add(-1)
		select {
		case <-release:
		case <-r.Context().Done(): // the client gave up: not stored
		}
		return http.StatusNoContent
	})
	sp, cons, s, cw, pos := concurrentSink(t, srv, 2)
	ctx, cancel := context.WithCancel(context.Background())
	drain, stopDrain := context.WithTimeout(context.Background(), 60*time.Second)
	defer stopDrain()
	stopped := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		err := s.Runner.Run(ctx)
		if n := cw.inflight.Load(); n != 0 {
			t.Errorf("Run returned with %d writes in flight", n)
		}
		if c := cons.Committed(); pos[0].Less(c) {
			t.Errorf("Run committed %v while nothing was written", c)
		}
		close(stopped)
		if err == nil {
			close(release) // InfluxDB answers again: Drain writes it all
			err = s.Drain(drain)
		}
		done <- err
	}()
	waitFor(t, "two writes held", func() bool { return held.Load() == 2 })
	cancel()
	<-stopped
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := srv.count(); n != testFrames {
		t.Fatalf("stored %d frames, want %d", n, testFrames)
	}
	if lag := sp.Stats().Consumers[0].LagRecords; lag != 0 {
		t.Fatalf("lag %d after Drain, want 0", lag)
	}
}
