package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/cluster/kvstate"
)

// Errors of Ticker.
var (
	// ErrFenced: the tick record was written by a holder with a newer
	// fencing token, or changed under this holder: it is no longer the
	// leader. It wraps ErrLost, so Lease.Run contends again.
	ErrFenced = fmt.Errorf("%w: fenced off by a newer holder", ErrLost)
	// ErrTickRecord: the tick record cannot be read.
	ErrTickRecord = errors.New("lease: unreadable tick record")
)

// TickKeyPrefix prefixes the tick record keys in the bucket.
const TickKeyPrefix = "tick."

// Schedule is a fixed-period schedule: tick n is due at Start + n*Every.
type Schedule struct {
	Start time.Time
	Every time.Duration
}

// At is the due time of tick n.
func (s Schedule) At(n uint64) time.Time { return s.Start.Add(time.Duration(n) * s.Every) }

// Tick is one run of a scheduled job.
type Tick struct {
	Index uint64    // 0, 1, 2, ... in schedule order
	At    time.Time // due time (Schedule.At(Index)), not the time it runs
	// Token is the fencing token of the tenure running the tick.
	Token uint64
	// Attempt counts the runs of this tick: 1, or more when an earlier run
	// failed or its holder died before recording completion.
	Attempt int
}

// tickRecord is the value of a tick record key. Next is the first tick not
// completed; Claimed says a holder started it (and may have died in it).
type tickRecord struct {
	Next     uint64 `json:"next"`
	Claimed  bool   `json:"claimed,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	Token    uint64 `json:"token"`
	Holder   string `json:"holder,omitempty"`
}

// Ticker runs a job's ticks in order under a lease, recording progress in
// the key "tick.<job>" of the lease bucket, so that a new leader resumes
// where the last one stopped: no tick is skipped, and no completed tick runs
// again.
//
// # Semantics
//
// Before running tick n the holder claims it (record: next=n, claimed,
// its token); after work returns nil it records completion (next=n+1).
// Both writes are compare-and-set on the record's revision, and a holder
// whose token is older than the record's stops with ErrFenced.
//
//   - A tick whose completion was recorded never runs again: exactly once.
//   - A tick whose work fails is retried (RetryEvery) by the same holder.
//   - A tick whose holder dies or loses the lease before the completion
//     write landed is run again by the next leader (Tick.Attempt > 1),
//     even if its work had finished: at least once. Tick work must
//     therefore be idempotent (e.g. command ids derived from the tick index
//     and decision, Nats-Msg-Id deduplication, upserts).
//   - Missed ticks (no leader for a while) are all run, in order, as soon
//     as a leader is back.
//
// Tick times come from the injected clock, so tests can run a year of
// daily ticks in a moment.
type Ticker struct {
	kv         jetstream.KeyValue
	key        string
	sched      Schedule
	clock      Clock
	holder     string
	retryEvery time.Duration
	log        *slog.Logger
}

// TickerOption tunes NewTicker.
type TickerOption func(*Ticker)

// WithRetryEvery sets the wait before re-running a failed tick (default
// Schedule.Every/10, at least one second).
func WithRetryEvery(d time.Duration) TickerOption { return func(t *Ticker) { t.retryEvery = d } }

// WithTickerLogger sets the logger (default slog.Default()).
func WithTickerLogger(log *slog.Logger) TickerOption { return func(t *Ticker) { t.log = log } }

// NewTicker makes the ticker of job in kv (normally the lease bucket).
// holder names the writer in the record, for operators.
func NewTicker(kv jetstream.KeyValue, job, holder string, sched Schedule, clock Clock, opts ...TickerOption) (*Ticker, error) {
	if kv == nil || job == "" || sched.Every <= 0 {
		return nil, fmt.Errorf("%w: kv, job and a positive period are required", ErrConfig)
	}
	if clock == nil {
		clock = SystemClock{}
	}
	t := &Ticker{kv: kv, key: TickKeyPrefix + job, sched: sched, clock: clock, holder: holder, log: slog.Default()}
	t.retryEvery = max(sched.Every/10, time.Second)
	for _, o := range opts {
		o(t)
	}
	if !validKey(t.key) || t.retryEvery <= 0 {
		return nil, fmt.Errorf("%w: job %q", ErrConfig, job)
	}
	t.log = t.log.With("job", job)
	return t, nil
}

// Next is the index of the first tick not completed (0 when none ran).
func (t *Ticker) Next(ctx context.Context) (uint64, error) {
	rec, _, err := t.load(ctx)
	return rec.Next, err
}

func (t *Ticker) load(ctx context.Context) (tickRecord, uint64, error) {
	e, err := t.kv.Get(ctx, t.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return tickRecord{}, 0, nil
	}
	if err != nil {
		return tickRecord{}, 0, fmt.Errorf("lease: read %s: %w", t.key, err)
	}
	var rec tickRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return tickRecord{}, 0, fmt.Errorf("%w: %s: %w", ErrTickRecord, t.key, err)
	}
	return rec, e.Revision(), nil
}

// store writes rec at revision rev (0: the record must not exist).
func (t *Ticker) store(ctx context.Context, rec tickRecord, rev uint64) (uint64, error) {
	val, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = t.kv.Create(ctx, t.key, val)
	} else {
		nrev, err = t.kv.Update(ctx, t.key, val, rev)
	}
	if kvstate.IsConflict(err) {
		return 0, fmt.Errorf("%w: %s changed under token %d", ErrFenced, t.key, rec.Token)
	}
	if err != nil {
		return 0, fmt.Errorf("lease: write %s: %w", t.key, err)
	}
	return nrev, nil
}

// Run runs the due ticks in order with work, under the tenure whose fencing
// token is token, until ctx is done (returns ctx.Err()) or the record shows
// a newer holder (returns ErrFenced). Call it from Lease.Run's work:
//
//	l.Run(ctx, func(ctx context.Context, token uint64) error {
//		return ticker.Run(ctx, token, work)
//	})
//
// work gets ctx, which is cancelled when the tenure ends.
func (t *Ticker) Run(ctx context.Context, token uint64, work func(context.Context, Tick) error) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, rev, err := t.load(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, ErrTickRecord) {
				return err // needs an operator; retrying will not help
			}
			t.log.Warn("tick record read failed, retrying", "err", err)
			if !t.sleep(ctx, t.retryEvery) {
				return ctx.Err()
			}
			continue
		}
		if rec.Token > token {
			return fmt.Errorf("%w: record token %d > %d", ErrFenced, rec.Token, token)
		}
		n := rec.Next
		at := t.sched.At(n)
		if !rec.Claimed {
			if wait := at.Sub(t.clock.Now()); wait > 0 {
				if !t.sleep(ctx, wait) {
					return ctx.Err()
				}
				continue // re-read: the record may have moved on
			}
		}
		attempt := 1
		if rec.Claimed {
			attempt = rec.Attempts + 1
		}
		rev, err = t.store(ctx, tickRecord{Next: n, Claimed: true, Attempts: attempt, Token: token, Holder: t.holder}, rev)
		if err != nil {
			if errors.Is(err, ErrFenced) || ctx.Err() != nil {
				return errors.Join(err, ctx.Err())
			}
			t.log.Warn("tick claim failed, retrying", "tick", n, "err", err)
			if !t.sleep(ctx, t.retryEvery) {
				return ctx.Err()
			}
			continue
		}
		if werr := work(ctx, Tick{Index: n, At: at, Token: token, Attempt: attempt}); werr != nil {
			if ctx.Err() != nil {
				return ctx.Err() // the tick stays claimed: the next leader re-runs it
			}
			t.log.Warn("tick failed, will retry", "tick", n, "attempt", attempt, "err", werr)
			if !t.sleep(ctx, t.retryEvery) {
				return ctx.Err()
			}
			continue
		}
		if err := t.complete(ctx, n, token, rev); err != nil {
			return err
		}
	}
}

// complete records that tick n is done (next = n+1) at revision rev of the
// claim. Work completed, so the write is made even if the tenure just ended
// (ctx done): the compare-and-set refuses it if a newer holder has claimed
// the tick meanwhile, which will then run it again. A write with an unknown
// outcome (timeout, no quorum) is retried while the tenure lasts; if it
// ends first the tick stays claimed and the next leader re-runs it.
func (t *Ticker) complete(ctx context.Context, n, token, rev uint64) error {
	for {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, err := t.store(cctx, tickRecord{Next: n + 1, Token: token, Holder: t.holder}, rev)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrFenced) {
			// Either another holder wrote, or an earlier attempt of
			// ours landed without us hearing back: the record decides.
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			rec, _, lerr := t.load(lctx)
			cancel()
			if lerr == nil && rec.Token == token && rec.Next > n {
				return nil
			}
			return err
		}
		t.log.Warn("tick completion write failed, retrying", "tick", n, "err", err)
		if !t.sleep(ctx, t.retryEvery) {
			return ctx.Err() // the tick stays claimed: the next leader re-runs it
		}
	}
}

// sleep waits d on the clock; false when ctx ended first.
func (t *Ticker) sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-t.clock.After(d):
		return true
	}
}
