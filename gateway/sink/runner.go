// Package sink holds the one loop every spool sink runs: read a batch from
// the sink's spool consumer, hand it to the sink's Processor, commit the
// cursor only after the Processor succeeded, and retry failures with
// backoff, in order, never skipping a record. The sinks themselves
// (influxsink, eventsink) only implement Processor.
//
// Lifecycle: Run(ctx) works until ctx is cancelled or the spool closes; the
// batch in flight when ctx is cancelled is abandoned uncommitted (the
// consumer is rewound, so it is read again). Drain(ctx), called after Run
// returned, processes the backlog, including that abandoned batch, until no
// record is available for IdleWait, and commits it; it stops early,
// uncommitted, when its ctx ends. Abandoned work is replayed at the next
// start, so Processors must be idempotent.
//
// A Processor that also implements Pipeline (the InfluxDB sink) keeps
// writes in flight after Process returned: the runner then commits the
// cursor only up to Pipeline.Done, waits for the writes in flight when the
// spool is idle (Wait), and before a rewind or Run's return (Reset).
package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/spool"
)

// ErrDrainCut is returned by Drain when its context ended before the spool
// had no more records available.
var ErrDrainCut = errors.New("sink: drain cut short")

// Processor is what a sink does with a batch.
//
// Process handles recs (in spool order, at least one) and returns how many
// of them it handled, n in [1, len(recs)]: the runner commits up to
// recs[n-1].Next and reads the rest again for the next batch. Process must
// be idempotent: a batch is processed again after a failure, after Run was
// stopped with it in flight, and after a crash.
//
// Errors are classified by the Processor. An item that no retry can fix
// (a permanent error: a corrupt record, a line the database refuses, an
// event over the server's payload limit) is counted and logged by Process,
// which skips it and goes on. A returned error is retryable: nothing is
// committed, the consumer is rewound, Reset is called, and the same records
// are offered again after a backoff. recs' Data is valid only during the
// call.
type Processor interface {
	Process(ctx context.Context, recs []spool.Record) (n int, err error)
	// Reset drops state a failed or abandoned batch may have left ahead of
	// what was committed (caches of downstream state).
	Reset()
}

// Pipeline is an optional Processor extension for processors that keep
// work in flight after Process returned. Process's n then counts the
// records it accepted, and the cursor is committed only up to Done: the end
// of the newest accepted batch that, with every earlier one, is done. A
// batch that failed is reported by a later Process (or by Wait) as a
// retryable error; the runner commits what is done, rewinds, and offers the
// records from the cursor again, in order. Reset waits for the work in
// flight. All methods are called from the runner's goroutine.
type Pipeline interface {
	// Done returns the end of the newest batch done with every earlier
	// one, and whether it advanced since the last call.
	Done() (next spool.Pos, ok bool)
	// Busy reports whether accepted work is not yet reported by Done.
	Busy() bool
	// Wait waits for the work in flight and returns the error of the
	// oldest failed batch (nil: everything accepted is done).
	Wait() error
}

// Source is what a Runner reads: a spool consumer (*spool.Consumer), or a
// shared JetStream consumer (JetStreamSource) in the "jetstream" durability
// mode. Read blocks until at least one record is available (or ctx ends:
// its error; or the source closed: spool.ErrClosed) and returns up to max
// records; Commit(next) makes every record before next done for good (the
// spool cursor; JetStream acks); Rewind offers the records read since the
// last Commit again at the next Read.
type Source interface {
	Read(ctx context.Context, dst []spool.Record, max, maxBytes int) ([]spool.Record, error)
	Commit(next spool.Pos) error
	Rewind()
}

// Config of a Runner. Zero values take the defaults.
type Config struct {
	// Name labels the sink in metrics (sink_errors_total{sink}).
	Name string
	// BatchRecords and BatchBytes bound one read from the spool.
	BatchRecords int // default 2000
	BatchBytes   int // default 4 MiB
	// Backoff returns the wait before retry number attempt (0 first);
	// default influx.Backoff (100 ms doubling to 10 s, jittered). A
	// failure carrying a server's Retry-After (influx.WriteError) waits
	// that long instead when it is longer, at most influx.RetryAfterMax
	// (influx.RetryWait).
	Backoff func(attempt int) time.Duration
	// Sleep waits d or until ctx ends (false then); tests inject a fake.
	Sleep func(ctx context.Context, d time.Duration) bool
	// IdleWait is how long Drain waits for a record before deciding the
	// spool is drained (default 200 ms).
	IdleWait time.Duration
	// OnHealth, if set, is called with every health change (nil: healthy).
	OnHealth func(error)
	// CommitInterval, if positive, coalesces cursor commits (see the
	// package comment): at most one commit per interval while batches keep
	// coming. Zero commits every batch.
	CommitInterval time.Duration
	// Now is the clock CommitInterval is measured with; default time.Now.
	Now func() time.Time
	// Linger, if positive, lets records accumulate: after a batch of fewer
	// than LingerRecords records, the runner waits Linger (with Sleep)
	// before the next read, so that at moderate rates one downstream
	// write carries more records instead of one write per group commit.
	// Under load batches are larger and nobody waits. It delays records by
	// at most Linger.
	Linger        time.Duration
	LingerRecords int
}

// DefaultCommitInterval is the CommitInterval the spool sinks use: at most
// ten cursor fdatasyncs per second and sink, and at most 100 ms of
// (idempotent) replay after a crash.
const DefaultCommitInterval = 100 * time.Millisecond

// DefaultLinger and DefaultLingerRecords are the Linger settings of the
// event sink: after a batch of fewer than 1 000 records, wait 10 ms before
// reading the next (an event reaches NATS at most 10 ms later). The
// InfluxDB sink has its own (influx.linger, influxsink.DefaultLinger).
const (
	DefaultLinger        = 10 * time.Millisecond
	DefaultLingerRecords = 1000
)

// Runner runs one Processor over one spool consumer. Run and Drain must
// not be called concurrently; Health may be called from any goroutine.
type Runner struct {
	cfg  Config
	cons Source
	p    Processor
	pipe Pipeline // p, if it pipelines (else nil)
	m    *metrics.Metrics
	log  *slog.Logger

	recs    []spool.Record // read buffer, owned by the Run/Drain goroutine
	attempt int            // consecutive failures, owned by the Run/Drain goroutine
	// Coalesced commits, owned by the Run/Drain goroutine: pending is the
	// position after the last processed batch when hasPending, not yet
	// committed; lastCommit is when the cursor was last committed.
	pending    spool.Pos
	hasPending bool
	lastCommit time.Time
	linger     bool // the last batch was small: wait Linger before the next read
	health     atomic.Pointer[error]
}

// NewRunner returns a runner of p over cons.
func NewRunner(cfg Config, cons Source, p Processor, m *metrics.Metrics, log *slog.Logger) *Runner {
	if cfg.BatchRecords <= 0 {
		cfg.BatchRecords = 2000
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 4 << 20
	}
	if cfg.Backoff == nil {
		cfg.Backoff = influx.Backoff
	}
	if cfg.Sleep == nil {
		cfg.Sleep = Sleep
	}
	if cfg.IdleWait <= 0 {
		cfg.IdleWait = 200 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	pipe, _ := p.(Pipeline)
	return &Runner{cfg: cfg, cons: cons, p: p, pipe: pipe, m: m, log: log}
}

// Health is nil while the sink makes progress, or the error it is
// currently retrying (spool read, processing or cursor commit), for /readyz.
func (r *Runner) Health() error {
	if e := r.health.Load(); e != nil {
		return *e
	}
	return nil
}

func (r *Runner) setHealth(err error) {
	var old *error
	if err == nil {
		old = r.health.Swap(nil)
	} else {
		old = r.health.Swap(&err)
	}
	if r.cfg.OnHealth != nil && (old == nil) != (err == nil) {
		r.cfg.OnHealth(err)
	}
}

// Run processes batches until ctx is cancelled (nil) or the spool closes
// (nil). Failures are retried with backoff; Run never skips a record. The
// batch in flight at cancellation is left uncommitted and the consumer
// rewound, for Drain or the next start.
func (r *Runner) Run(ctx context.Context) error {
	for {
		err := r.step(ctx, ctx)
		switch {
		case err == nil:
		case errors.Is(err, spool.ErrClosed):
			r.p.Reset() // waits for the writes in flight
			return nil
		case ctx.Err() != nil:
			r.abandon()
			return nil //nolint:nilerr // cancellation ends Run normally (see doc); step failed only because of it
		}
	}
}

// Drain processes the records still available (finishing the batch Run
// abandoned) until none arrives for IdleWait, and returns nil; or returns
// ErrDrainCut when ctx ends first (the batch in flight stays uncommitted).
// A closed spool ends Drain with nil.
func (r *Runner) Drain(ctx context.Context) error {
	for {
		// A drain wants the spool empty: no Linger (it would also spend
		// the idle read's IdleWait).
		r.linger = false
		if ctx.Err() != nil {
			r.abandon()
			return fmt.Errorf("%w: %w", ErrDrainCut, ctx.Err())
		}
		readCtx, cancel := context.WithTimeout(ctx, r.cfg.IdleWait)
		err := r.step(readCtx, ctx)
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, spool.ErrClosed):
			r.p.Reset() // waits for the writes in flight
			return nil
		case ctx.Err() != nil:
			r.abandon()
			return fmt.Errorf("%w: %w", ErrDrainCut, ctx.Err())
		case errors.Is(err, errIdle):
			if r.busy() {
				// Writes still in flight: wait for them, commit, and
				// look again (a failed one is read again).
				if err := r.settle(ctx); err != nil {
					if errors.Is(err, spool.ErrClosed) {
						r.p.Reset()
						return nil
					}
					r.abandon()
					return fmt.Errorf("%w: %w", ErrDrainCut, err)
				}
				continue
			}
			if r.hasPending {
				if err := r.commit(ctx, r.pending); err != nil {
					if errors.Is(err, spool.ErrClosed) {
						return nil
					}
					return fmt.Errorf("%w: %w", ErrDrainCut, err)
				}
			}
			return nil
		}
	}
}

// errIdle: the read found nothing within the read context.
var errIdle = errors.New("sink: idle")

// step reads one batch under readCtx and processes and commits it under
// ctx. nil: committed (or a retryable failure was backed off). Otherwise
// spool.ErrClosed, errIdle, or ctx's error.
func (r *Runner) step(readCtx, ctx context.Context) error {
	if r.linger {
		r.linger = false
		if !r.cfg.Sleep(readCtx, r.cfg.Linger) && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	rctx := readCtx
	busy := r.busy()
	if r.hasPending || busy {
		wait := r.cfg.CommitInterval - r.cfg.Now().Sub(r.lastCommit)
		if wait <= 0 && r.hasPending {
			return r.commit(ctx, r.pending)
		}
		if wait <= 0 {
			// Writes in flight and nothing to commit yet: look again
			// after a commit interval at most.
			wait = max(r.cfg.CommitInterval, DefaultLinger)
		}
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(readCtx, wait)
		defer cancel()
	}
	var err error
	r.recs, err = r.cons.Read(rctx, r.recs, r.cfg.BatchRecords, r.cfg.BatchBytes)
	if err != nil {
		switch {
		case errors.Is(err, spool.ErrClosed):
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		case (r.hasPending || busy) && readCtx.Err() == nil && rctx.Err() != nil:
			// No record for the rest of the commit interval.
			if busy {
				return r.settle(ctx)
			}
			return r.commit(ctx, r.pending)
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			return errIdle
		}
		// Corrupt spool or I/O error: the read position stays before it.
		r.count("spool_read")
		return r.retry(ctx, "spool read failed; retrying", err)
	}
	n, err := r.p.Process(ctx, r.recs)
	if err != nil {
		r.rewind()
		r.p.Reset()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return r.retry(ctx, "processing a batch failed; retrying it", err)
	}
	if n <= 0 || n > len(r.recs) {
		n = len(r.recs) // a Processor bug must not loop or panic
	}
	next, done := r.recs[n-1].Next, true
	if r.pipe != nil {
		// Commit only what is written (the rest is in flight).
		next, done = r.pipe.Done()
	}
	r.linger = r.cfg.Linger > 0 && len(r.recs) < r.cfg.LingerRecords
	switch {
	case !done: // nothing new is written yet: nothing to commit
	case n == len(r.recs) && r.cfg.CommitInterval > 0 && r.cfg.Now().Sub(r.lastCommit) < r.cfg.CommitInterval:
		r.pending, r.hasPending = next, true // committed later (see the package comment)
	default:
		if err := r.commit(ctx, next); err != nil {
			return err
		}
	}
	if n < len(r.recs) {
		r.cons.Rewind() // the rest is read again for the next batch
	}
	r.attempt = 0
	r.setHealth(nil)
	return nil
}

// busy reports whether a Pipeline has work not yet committed.
func (r *Runner) busy() bool { return r.pipe != nil && r.pipe.Busy() }

// settle waits for a Pipeline's writes in flight and commits what they
// finished. A failed write is handled like a failed Process: rewind, Reset
// and back off (nil then; the records are read again). Otherwise nil, or
// commit's error.
func (r *Runner) settle(ctx context.Context) error {
	if err := r.pipe.Wait(); err != nil {
		r.rewind()
		r.p.Reset()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return r.retry(ctx, "processing a batch failed; retrying it", err)
	}
	if next, ok := r.pipe.Done(); ok {
		return r.commit(ctx, next)
	}
	return nil
}

// commit commits the cursor up to next (and so any pending position before
// it), retrying failures with backoff. nil: committed; otherwise
// spool.ErrClosed or ctx's error (the work is abandoned).
func (r *Runner) commit(ctx context.Context, next spool.Pos) error {
	for {
		err := r.cons.Commit(next)
		if err == nil {
			r.hasPending = false
			r.lastCommit = r.cfg.Now()
			return nil
		}
		if errors.Is(err, spool.ErrClosed) {
			return err
		}
		// The cursor file is double-buffered: retrying is safe.
		r.count("commit")
		if rerr := r.retry(ctx, "spool cursor commit failed; retrying", err); rerr != nil {
			r.abandon()
			return rerr
		}
	}
}

// rewind offers the records read since the last commit again, after
// committing the processed ones still pending (one attempt: if it fails,
// they are offered again too, which replays are allowed to do).
func (r *Runner) rewind() {
	if r.pipe != nil {
		if next, ok := r.pipe.Done(); ok {
			r.pending, r.hasPending = next, true
		}
	}
	if r.hasPending {
		r.hasPending = false
		if err := r.cons.Commit(r.pending); err == nil {
			r.lastCommit = r.cfg.Now()
		} else if !errors.Is(err, spool.ErrClosed) {
			r.count("commit")
		}
	}
	r.cons.Rewind()
}

// retry records err as the health, logs it (first and every tenth
// consecutive failure) and backs off. nil: try again; ctx's error: stopping.
func (r *Runner) retry(ctx context.Context, msg string, err error) error {
	r.setHealth(err)
	// A server that said how long to wait (InfluxDB's 429/503
	// Retry-After) is honoured, within influx.RetryAfterMax.
	d := influx.RetryWait(r.cfg.Backoff(r.attempt), err)
	if r.attempt%10 == 0 {
		r.log.Warn(msg, "sink", r.cfg.Name, "attempt", r.attempt+1, "backoff", d, "err", err)
	}
	r.attempt++
	if !r.cfg.Sleep(ctx, d) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return context.Canceled
	}
	return nil
}

// abandon forgets uncommitted work so that it is read again.
func (r *Runner) abandon() {
	r.rewind()
	r.p.Reset()
}

func (r *Runner) count(kind string) {
	if r.m != nil {
		r.m.SinkErrors.WithLabelValues(r.cfg.Name, kind).Inc()
	}
}

// Sleep waits d, or until ctx ends (false).
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
