package sink_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/sink"
	"github.com/telegate/telegate/gateway/spool"
	"github.com/telegate/telegate/gateway/spool/record"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errDown = errors.New("downstream unreachable")

// proc is a scripted Processor: fn decides each call's outcome.
type proc struct {
	mu     sync.Mutex
	calls  int
	resets int
	seen   []string // payload client ids of every handled record, in order
	fn     func(call int, ctx context.Context, recs []spool.Record) (int, error)
}

func (p *proc) Process(ctx context.Context, recs []spool.Record) (int, error) {
	p.mu.Lock()
	p.calls++
	call := p.calls
	p.mu.Unlock()
	n, err := p.fn(call, ctx, recs)
	if err != nil {
		return n, err
	}
	if n == 0 {
		n = len(recs)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var rec record.Record
	for _, r := range recs[:n] {
		if record.Parse(r.Data, &rec) == nil {
			p.seen = append(p.seen, string(rec.Client))
		}
	}
	return n, nil
}

func (p *proc) Reset() {
	p.mu.Lock()
	p.resets++
	p.mu.Unlock()
}

func (p *proc) handled() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

func openSpool(t *testing.T, records int) (*spool.Spool, *spool.Consumer) {
	t.Helper()
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), Consumers: []string{"test"}, MaxRecord: 4 << 10, SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	for i := range records {
		id := "dev" + strconv.Itoa(i)
		if _, err := sp.Append(record.Append(nil, record.KindPublish, 1, int64(i+1), "vehicles/"+id+"/telemetry", id, "", []byte{1})); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := sp.Consumer("test")
	if err != nil {
		t.Fatal(err)
	}
	return sp, cons
}

func lag(sp *spool.Spool) uint64 { return sp.Stats().Consumers[0].LagRecords }

func wantAll(t *testing.T, p *proc, n int) {
	t.Helper()
	got := p.handled()
	if len(got) != n {
		t.Fatalf("handled %d records, want %d: %v", len(got), n, got)
	}
	for i, id := range got {
		if id != "dev"+strconv.Itoa(i) {
			t.Fatalf("record %d is %s: out of order or skipped (%v)", i, id, got)
		}
	}
}

// TestRunnerRetriesWithBackoffAndCommitsOnlyAfterSuccess: a batch that
// fails is not committed, is offered again (same records, in order) after
// the injected backoff, and health reports the failure until a commit.
func TestRunnerRetriesWithBackoffAndCommitsOnlyAfterSuccess(t *testing.T) {
	sp, cons := openSpool(t, 5)
	var r *sink.Runner
	initial := cons.Committed()
	p := &proc{}
	p.fn = func(call int, _ context.Context, recs []spool.Record) (int, error) {
		if cons.Committed() != initial {
			t.Errorf("call %d: cursor committed before the batch succeeded", call)
		}
		if call <= 3 {
			return 0, errDown
		}
		return 0, nil
	}
	var (
		mu     sync.Mutex
		sleeps []time.Duration
		health []error
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := metrics.New(prometheus.NewRegistry())
	// The injected Sleep records the backoffs and checks health meanwhile.
	r = sink.NewRunner(sink.Config{Name: "test",
		Backoff: func(attempt int) time.Duration { return time.Duration(attempt+1) * time.Second },
		Sleep: func(_ context.Context, d time.Duration) bool {
			if !errors.Is(r.Health(), errDown) {
				t.Errorf("health while retrying: %v, want %v", r.Health(), errDown)
			}
			mu.Lock()
			sleeps = append(sleeps, d)
			mu.Unlock()
			return true
		},
		OnHealth: func(err error) {
			mu.Lock()
			health = append(health, err)
			mu.Unlock()
			if err == nil {
				cancel() // first success: stop
			}
		},
	}, cons, p, m, nil)
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wantAll(t, p, 5)
	if lag(sp) != 0 {
		t.Fatalf("lag %d after success, want 0", lag(sp))
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}; !slices.Equal(sleeps, want) {
		t.Fatalf("backoffs %v, want %v", sleeps, want)
	}
	if len(health) != 2 || !errors.Is(health[0], errDown) || health[1] != nil || r.Health() != nil {
		t.Fatalf("health changes %v (now %v), want [%v <nil>]", health, r.Health(), errDown)
	}
	if p.resets < 3 {
		t.Fatalf("Reset called %d times after 3 failures", p.resets)
	}
}

// TestRunnerPartialBatch: records past the n a Processor reports are read
// again, none skipped or repeated.
func TestRunnerPartialBatch(t *testing.T) {
	sp, cons := openSpool(t, 7)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := &proc{}
	p.fn = func(_ int, _ context.Context, recs []spool.Record) (int, error) { return min(2, len(recs)), nil }
	r := sink.NewRunner(sink.Config{Name: "test"}, cons, p, nil, nil)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); lag(sp) != 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wantAll(t, p, 7)
}

// TestRunnerDrainFinishesInFlightWork: the batch in flight when Run is
// stopped is abandoned uncommitted, and Drain processes and commits it and
// the rest of the backlog.
func TestRunnerDrainFinishesInFlightWork(t *testing.T) {
	sp, cons := openSpool(t, 4)
	started := make(chan struct{})
	p := &proc{}
	p.fn = func(call int, ctx context.Context, _ []spool.Record) (int, error) {
		if call == 1 {
			close(started)
			<-ctx.Done() // a downstream write that hangs until shutdown
			return 0, ctx.Err()
		}
		return 0, nil
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	r := sink.NewRunner(sink.Config{Name: "test", BatchRecords: 3}, cons, p, m, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-started
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if lag(sp) != 4 {
		t.Fatalf("lag %d after an abandoned batch, want 4", lag(sp))
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer dcancel()
	if err := r.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	wantAll(t, p, 4)
	if lag(sp) != 0 {
		t.Fatalf("lag %d after drain, want 0", lag(sp))
	}
	if n := testutil.ToFloat64(m.SinkErrors.WithLabelValues("test", "commit")); n != 0 {
		t.Fatalf("%v commit errors", n)
	}
	if r.Health() != nil {
		t.Fatalf("health after drain: %v", r.Health())
	}
}

// TestRunnerDrainCut: a drain whose context ends leaves the work
// uncommitted and says so.
func TestRunnerDrainCut(t *testing.T) {
	sp, cons := openSpool(t, 2)
	p := &proc{}
	ctx, cancel := context.WithCancel(context.Background())
	p.fn = func(_ int, pctx context.Context, _ []spool.Record) (int, error) {
		cancel()
		<-pctx.Done()
		return 0, pctx.Err()
	}
	r := sink.NewRunner(sink.Config{Name: "test"}, cons, p, nil, nil)
	if err := r.Drain(ctx); !errors.Is(err, sink.ErrDrainCut) {
		t.Fatalf("Drain: %v, want ErrDrainCut", err)
	}
	if lag(sp) != 2 {
		t.Fatalf("lag %d, want 2 (nothing committed)", lag(sp))
	}
}

// TestRunnerStopsWhenSpoolCloses: Run returns nil once the spool closes.
func TestRunnerStopsWhenSpoolCloses(t *testing.T) {
	sp, cons := openSpool(t, 0)
	p := &proc{fn: func(int, context.Context, []spool.Record) (int, error) { return 0, nil }}
	r := sink.NewRunner(sink.Config{Name: "test"}, cons, p, nil, nil)
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	sp.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// countingSource counts the cursor commits of a spool consumer.
type countingSource struct {
	*spool.Consumer
	mu      sync.Mutex
	commits int
}

func (c *countingSource) Commit(next spool.Pos) error {
	c.mu.Lock()
	c.commits++
	c.mu.Unlock()
	return c.Consumer.Commit(next)
}

func (c *countingSource) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.commits
}

// frozen is a clock that never moves.
func frozen() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }

// TestRunnerCoalescesCommits: with a CommitInterval, batches processed
// within the interval are not committed one by one; what was processed is
// committed when Run stops, none of it skipped or repeated.
func TestRunnerCoalescesCommits(t *testing.T) {
	sp, cons := openSpool(t, 10)
	src := &countingSource{Consumer: cons}
	p := &proc{fn: func(int, context.Context, []spool.Record) (int, error) { return 0, nil }}
	r := sink.NewRunner(sink.Config{Name: "test", BatchRecords: 1, CommitInterval: time.Hour, Now: frozen}, src, p, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); len(p.handled()) < 10 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	wantAll(t, p, 10)
	if n := src.count(); n != 1 {
		t.Fatalf("%d commits for 10 batches within the interval, want 1 (the first)", n)
	}
	if lag(sp) != 9 {
		t.Fatalf("lag %d while 9 batches are pending, want 9", lag(sp))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if lag(sp) != 0 || src.count() != 2 {
		t.Fatalf("after Run: lag %d, %d commits; want 0 and 2 (the pending work committed at stop)", lag(sp), src.count())
	}
}

// TestRunnerCommitsPendingWhenIdle: a pending position is committed once
// no record arrives for the rest of the interval.
func TestRunnerCommitsPendingWhenIdle(t *testing.T) {
	sp, cons := openSpool(t, 5)
	p := &proc{fn: func(int, context.Context, []spool.Record) (int, error) { return 0, nil }}
	r := sink.NewRunner(sink.Config{Name: "test", BatchRecords: 1, CommitInterval: 20 * time.Millisecond}, cons, p, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); lag(sp) != 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if lag(sp) != 0 {
		t.Fatalf("lag %d with Run still going, want 0", lag(sp))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wantAll(t, p, 5)
}

// TestRunnerCommitsPendingBeforeRewind: a failed batch rewinds the
// consumer; the batches processed before it (pending, not yet committed)
// are committed first, so they are not replayed.
func TestRunnerCommitsPendingBeforeRewind(t *testing.T) {
	sp, cons := openSpool(t, 6)
	p := &proc{}
	p.fn = func(call int, _ context.Context, _ []spool.Record) (int, error) {
		if call == 4 {
			return 0, errDown
		}
		return 0, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := sink.NewRunner(sink.Config{Name: "test", BatchRecords: 1, CommitInterval: time.Hour, Now: frozen,
		Sleep: func(context.Context, time.Duration) bool { return true }}, cons, p, nil, nil)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); len(p.handled()) < 6 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wantAll(t, p, 6) // a replay of the three batches before the failure would repeat them
	if lag(sp) != 0 {
		t.Fatalf("lag %d, want 0", lag(sp))
	}
}

// TestRunnerLingersAfterSmallBatches: after a batch smaller than
// LingerRecords the runner waits Linger before reading again; after a
// full-sized batch it does not.
// TestRunnerDrainDoesNotLinger: a drain reads on at once after a small
// batch (Linger is for a running sink at moderate rates; a drain wants the
// spool empty, and a long linger would spend its idle-read time waiting).
func TestRunnerDrainDoesNotLinger(t *testing.T) {
	sp, cons := openSpool(t, 7)
	p := &proc{fn: func(int, context.Context, []spool.Record) (int, error) { return 0, nil }}
	var lingered []time.Duration // guarded by the drain's goroutine (Drain calls Sleep synchronously)
	r := sink.NewRunner(sink.Config{Name: "test", BatchRecords: 3, Linger: time.Hour, LingerRecords: 5,
		Sleep: func(ctx context.Context, d time.Duration) bool {
			if d == time.Hour {
				lingered = append(lingered, d)
			}
			return sink.Sleep(ctx, min(d, time.Millisecond))
		}}, cons, p, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	wantAll(t, p, 7)
	if lag(sp) != 0 {
		t.Fatalf("lag %d after drain, want 0", lag(sp))
	}
	if len(lingered) != 0 {
		t.Fatalf("the drain lingered %d times", len(lingered))
	}
}

func TestRunnerLingersAfterSmallBatches(t *testing.T) {
	sp, cons := openSpool(t, 5)
	p := &proc{fn: func(int, context.Context, []spool.Record) (int, error) { return 0, nil }}
	var (
		mu     sync.Mutex
		sleeps []time.Duration
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := sink.NewRunner(sink.Config{Name: "test", BatchRecords: 5, Linger: time.Hour, LingerRecords: 5,
		Sleep: func(_ context.Context, d time.Duration) bool {
			mu.Lock()
			sleeps = append(sleeps, d)
			mu.Unlock()
			return true
		}}, cons, p, nil, nil)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for deadline := time.Now().Add(10 * time.Second); lag(sp) != 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	n := len(sleeps)
	mu.Unlock()
	if n != 0 {
		t.Fatalf("lingered %d times after a full batch", n)
	}
	if _, err := sp.Append(record.Append(nil, record.KindPublish, 1, 6, "vehicles/dev5/telemetry", "dev5", "", []byte{1})); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		mu.Lock()
		n = len(sleeps)
		mu.Unlock()
		if n > 0 {
			break
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wantAll(t, p, 6)
	if !slices.Equal(sleeps, []time.Duration{time.Hour}) {
		t.Fatalf("waits %v, want one Linger after the batch of 1", sleeps)
	}
}
