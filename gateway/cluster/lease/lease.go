// Package lease is a singleton lease in a JetStream key-value bucket: at
// most one holder at a time runs a job (the services scheduler, for one),
// a holder that dies is replaced after the lease's ttl, and a holder that
// loses the lease stops its work at once.
//
// # Protocol
//
// The lease is the key "lease.<name>" in a bucket shared by every replica.
// Every write is a compare-and-set on the key's revision (KeyValue.Create
// for a free key, KeyValue.Update with the revision last seen otherwise),
// so two contenders can never both win the same revision.
//
//   - Acquire: a free (absent or deleted) key is taken with Create. A held
//     key is taken over only after the contender has seen the same revision
//     unchanged for ttl, measured on the contender's own clock from the
//     moment it first read that revision, and then only by an Update at that
//     revision. The holder advertises its ttl in the value; a contender waits
//     for the longer of the two.
//   - Renew: the holder rewrites the key every RenewEvery (ttl/3) with an
//     Update at its last revision. A revision mismatch (the key was taken
//     over or deleted) loses the lease at once (ErrLost).
//   - Validity: the holder considers the lease valid until
//     sendTime + ttl - guard, where sendTime is its clock's reading just
//     before it sent the last successful write. A renew that cannot reach
//     the bucket (node down, no quorum) does not extend it: at the end of the
//     validity the work is cancelled, renewals or not.
//   - Release: a Delete at the holder's revision frees the key at once.
//
// # Fencing token
//
// The token of a tenure is the KV revision of its acquiring write. Revisions
// are the bucket stream's sequence numbers, so every later tenure of any
// holder has a larger token. Work that writes shared state compares its
// token with the largest one that state has seen and refuses smaller ones
// (Ticker does this for its tick record); this stops a stale holder that
// has not yet noticed its loss (a paused process, a delayed write).
//
// # Clocks
//
// No clock is compared with another machine's: the holder measures its
// validity from its own send time, the contender its wait from its own
// first observation, which comes after the holder's write was stored. The
// lease is therefore safe when clocks are skewed by any amount, as long as
// they run at about the same rate: guard (ttl/5 by default) absorbs rate
// drift and the holder's reaction time (cancelling work, a GC pause). With
// SystemClock the intervals use Go's monotonic clock, so wall-clock steps
// (NTP, manual changes) do not matter. Not used: the bucket's per-key TTL
// (nats-server measures it on the stream leader, it cannot be faked in tests,
// and KeyValue.Update drops a key's TTL).
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/cluster/kvstate"
)

// Errors of Lease.
var (
	// ErrHeld: another holder has the lease and it has not expired yet.
	ErrHeld = errors.New("lease: held by another holder")
	// ErrLost: the lease was taken over, deleted, or expired before a
	// renewal reached the bucket.
	ErrLost = errors.New("lease: lost")
	// ErrNotHeld: Renew without a tenure.
	ErrNotHeld = errors.New("lease: not held")
	// ErrConfig: New was given an invalid argument.
	ErrConfig = errors.New("lease: invalid configuration")
)

// KeyPrefix prefixes the lease keys in the bucket.
const KeyPrefix = "lease."

// record is the value of a lease key.
type record struct {
	Holder string `json:"holder"`
	TTLms  int64  `json:"ttl_ms"`
	// Token is the tenure's fencing token (0 in the acquiring write, which
	// cannot know its own revision).
	Token uint64 `json:"token,omitempty"`
}

// Option tunes New.
type Option func(*Lease)

// WithRenewEvery sets how often the holder renews (default ttl/3). It must
// be below ttl - guard.
func WithRenewEvery(d time.Duration) Option { return func(l *Lease) { l.renewEvery = d } }

// WithGuard sets how much earlier than ttl the holder gives up (default
// ttl/5): the margin for clock rate drift and for cancelling work.
func WithGuard(d time.Duration) Option { return func(l *Lease) { l.guard = d } }

// WithPollEvery sets how often a contender re-reads the lease (default
// ttl/3).
func WithPollEvery(d time.Duration) Option { return func(l *Lease) { l.pollEvery = d } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(log *slog.Logger) Option { return func(l *Lease) { l.log = log } }

// Lease is one contender for one named lease. Its methods are safe for
// concurrent use; KV operations are serialized.
type Lease struct {
	kv         jetstream.KeyValue
	name, key  string
	holder     string
	ttl        time.Duration
	guard      time.Duration
	renewEvery time.Duration
	pollEvery  time.Duration
	clock      Clock
	log        *slog.Logger

	op sync.Mutex // serializes KV operations (Acquire, Renew, Release)

	mu sync.Mutex // guards the fields below
	// token is the current tenure's fencing token, 0 when not held.
	token uint64
	// rev is the revision of this contender's latest successful write
	// (kept after a loss so that a late renewal can be recognised).
	rev uint64
	// unreleased is the token of a tenure whose Release failed to delete
	// the key at rev (0: none): the next Release retries it.
	unreleased uint64
	// validUntil ends the current tenure (this contender's clock).
	validUntil time.Time
	// seenRev, seenAt: the other holder's revision and when this
	// contender first read it.
	seenRev uint64
	seenAt  time.Time
}

// New makes a contender holderID for the lease name in kv. holderID must be
// unique per process incarnation (a restarted process must not reuse it:
// use host, pid and a random suffix). ttl is how long a silent holder keeps
// the lease.
func New(kv jetstream.KeyValue, name, holderID string, ttl time.Duration, clock Clock, opts ...Option) (*Lease, error) {
	if kv == nil || name == "" || holderID == "" || ttl <= 0 {
		return nil, fmt.Errorf("%w: kv, name, holder and a positive ttl are required", ErrConfig)
	}
	if clock == nil {
		clock = SystemClock{}
	}
	l := &Lease{
		kv: kv, name: name, key: KeyPrefix + name, holder: holderID, ttl: ttl, clock: clock,
		guard: ttl / 5, renewEvery: ttl / 3, pollEvery: ttl / 3, log: slog.Default(),
	}
	for _, o := range opts {
		o(l)
	}
	if l.guard < 0 || l.guard >= ttl || l.renewEvery <= 0 || l.renewEvery >= ttl-l.guard || l.pollEvery <= 0 {
		return nil, fmt.Errorf("%w: need 0 <= guard < ttl and 0 < renewEvery < ttl-guard", ErrConfig)
	}
	if !validKey(l.key) {
		return nil, fmt.Errorf("%w: name %q is not a KV key token", ErrConfig, name)
	}
	l.log = l.log.With("lease", name, "holder", holderID)
	return l, nil
}

// Name is the lease name.
func (l *Lease) Name() string { return l.name }

// Holder is this contender's holder id.
func (l *Lease) Holder() string { return l.holder }

// Token is the current tenure's fencing token and whether the lease is held
// and valid now (on this contender's clock).
func (l *Lease) Token() (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.token == 0 || !l.clock.Now().Before(l.validUntil) {
		return 0, false
	}
	return l.token, true
}

// remaining is how long the current tenure stays valid (<= 0: expired or
// not held).
func (l *Lease) remaining() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.token == 0 {
		return 0
	}
	return l.validUntil.Sub(l.clock.Now())
}

// TryAcquire makes one attempt to take the lease and returns the tenure's
// fencing token. It returns ErrHeld while another holder has it; calling it
// again later (Run polls every PollEvery) lets the contender notice that
// the holder went silent for ttl. When already held and valid it returns
// the current token.
func (l *Lease) TryAcquire(ctx context.Context) (uint64, error) {
	l.op.Lock()
	defer l.op.Unlock()
	now := l.clock.Now() // before any read: the tenure is measured from here
	l.mu.Lock()
	if l.token != 0 {
		if now.Before(l.validUntil) {
			t := l.token
			l.mu.Unlock()
			return t, nil
		}
		l.token = 0
	}
	ownRev := l.rev
	l.mu.Unlock()

	val, err := json.Marshal(record{Holder: l.holder, TTLms: l.ttl.Milliseconds()})
	if err != nil {
		return 0, err
	}
	e, err := l.kv.Get(ctx, l.key)
	var rev uint64
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err = l.kv.Create(ctx, l.key, val)
		if kvstate.IsConflict(err) {
			return 0, ErrHeld
		}
		if err != nil {
			return 0, fmt.Errorf("lease: create %s: %w", l.key, err)
		}
	case err != nil:
		return 0, fmt.Errorf("lease: read %s: %w", l.key, err)
	default:
		cur := e.Revision()
		if cur != ownRev {
			wait := l.ttl
			var r record
			if json.Unmarshal(e.Value(), &r) == nil && time.Duration(r.TTLms)*time.Millisecond > wait {
				wait = time.Duration(r.TTLms) * time.Millisecond
			}
			// An unreadable value counts as a holder with our ttl: it is
			// taken over once it stays unchanged that long.
			l.mu.Lock()
			if cur != l.seenRev {
				l.seenRev, l.seenAt = cur, now
			}
			silent := now.Sub(l.seenAt)
			l.mu.Unlock()
			if silent < wait {
				return 0, ErrHeld
			}
		}
		// Either the holder has been silent for its ttl, or the latest
		// revision is our own (a renewal that landed after we gave up).
		rev, err = l.kv.Update(ctx, l.key, val, cur)
		if kvstate.IsConflict(err) {
			return 0, ErrHeld
		}
		if err != nil {
			return 0, fmt.Errorf("lease: take over %s: %w", l.key, err)
		}
	}
	l.mu.Lock()
	l.token, l.rev, l.unreleased = rev, rev, 0
	l.validUntil = now.Add(l.ttl - l.guard)
	l.mu.Unlock()
	l.log.Info("lease acquired", "token", rev)
	return rev, nil
}

// Renew extends the current tenure. It returns ErrLost (wrapped) when the
// lease was taken over or deleted, or when it expired before this call;
// any other error is transient: the tenure stays valid until it expires.
func (l *Lease) Renew(ctx context.Context) error {
	l.op.Lock()
	defer l.op.Unlock()
	now := l.clock.Now()
	l.mu.Lock()
	token, rev := l.token, l.rev
	if token == 0 {
		l.mu.Unlock()
		return ErrNotHeld
	}
	if !now.Before(l.validUntil) {
		l.token = 0
		l.mu.Unlock()
		return fmt.Errorf("%w: expired before renewal", ErrLost)
	}
	l.mu.Unlock()
	val, err := json.Marshal(record{Holder: l.holder, TTLms: l.ttl.Milliseconds(), Token: token})
	if err != nil {
		return err
	}
	nrev, err := l.kv.Update(ctx, l.key, val, rev)
	if kvstate.IsConflict(err) {
		nrev, err = l.recheck(ctx, val, rev, token, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		if kvstate.IsConflict(err) || errors.Is(err, jetstream.ErrKeyNotFound) {
			if l.token == token {
				l.token = 0
			}
			return fmt.Errorf("%w: %w", ErrLost, err)
		}
		return fmt.Errorf("lease: renew %s: %w", l.key, err)
	}
	l.rev = nrev
	if l.token != token {
		// The tenure was given up (expired) while this write was in
		// flight; the key still names us at nrev, which TryAcquire may
		// reclaim at once, but this tenure stays over.
		return fmt.Errorf("%w: expired during renewal", ErrLost)
	}
	l.validUntil = now.Add(l.ttl - l.guard)
	return nil
}

// recheck runs after a renewal was refused as a conflict (cause). A
// clustered stream also refuses a write with "wrong last sequence" while
// another write to the same key is still being committed, even when the
// expected revision is right; and a renewal whose answer was lost may have
// landed. So the key is read again: still at rev and ours, the renewal is
// tried once more; ours at a newer revision with this tenure's token, that
// write landed and is adopted; anything else is a lost lease (cause).
func (l *Lease) recheck(ctx context.Context, val []byte, rev, token uint64, cause error) (uint64, error) {
	e, err := l.kv.Get(ctx, l.key)
	if err != nil {
		return 0, cause
	}
	var r record
	if json.Unmarshal(e.Value(), &r) != nil || r.Holder != l.holder {
		return 0, cause
	}
	switch {
	case e.Revision() == rev:
		select {
		case <-ctx.Done():
			return 0, cause
		case <-time.After(20 * time.Millisecond): // let the other write commit
		}
		return l.kv.Update(ctx, l.key, val, rev)
	case e.Revision() > rev && r.Token == token:
		return e.Revision(), nil
	default:
		return 0, cause
	}
}

// Release gives the lease up: it deletes the key at the holder's revision,
// so a contender can take it at once. Releasing a lease not held is a no-op.
// The tenure ends either way (no work may run under it any more); when the
// delete failed (a timeout, a lost connection), the error is returned and
// calling Release again retries the delete of the same revision, until it
// succeeds or a contender takes the lease over after its ttl.
func (l *Lease) Release(ctx context.Context) error {
	l.op.Lock()
	defer l.op.Unlock()
	l.mu.Lock()
	token, rev := l.token, l.rev
	if token == 0 {
		token, rev = l.unreleased, l.rev
	}
	l.token, l.unreleased = 0, 0
	l.mu.Unlock()
	if token == 0 {
		return nil
	}
	err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(rev))
	if kvstate.IsConflict(err) {
		return nil // already taken over: nothing of ours to release
	}
	if err != nil {
		l.mu.Lock()
		if l.token == 0 && l.rev == rev {
			l.unreleased = token
		}
		l.mu.Unlock()
		return fmt.Errorf("lease: release %s: %w", l.key, err)
	}
	l.log.Info("lease released", "token", token)
	return nil
}

// expire ends tenure token locally (its validity ran out).
func (l *Lease) expire(token uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.token == token {
		l.token = 0
	}
}

// Run contends for the lease until ctx is done and runs work while it holds
// it. work gets a context that is cancelled the moment the tenure ends (a
// renewal found the lease taken over, or the validity ran out without a
// successful renewal) and the tenure's fencing token; it must return
// promptly once its context is done. After a loss Run contends again, and a
// new tenure calls work again with a new token.
//
// Run returns ctx.Err() when ctx is done (after work returned and the lease
// was released), or what work returned if work returns on its own (the
// lease is released first). A work error that wraps ErrLost (Ticker's
// ErrFenced does) counts as a loss: Run contends again.
func (l *Lease) Run(ctx context.Context, work func(ctx context.Context, token uint64) error) error {
	for {
		token, err := l.TryAcquire(ctx)
		if err == nil {
			if done, err := l.hold(ctx, token, work); done {
				return err
			}
			continue // lost: contend again after the poll interval
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, ErrHeld) {
			l.log.Warn("lease acquire failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.clock.After(l.pollEvery):
		}
	}
}

// hold runs work during tenure token. done reports that Run must return err;
// !done means the tenure was lost.
func (l *Lease) hold(ctx context.Context, token uint64, work func(context.Context, uint64) error) (done bool, err error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Timers first: a test clock advanced as soon as work starts must
	// find them.
	renewT := l.clock.After(l.renewEvery)
	expiry := l.clock.After(l.remaining())
	workDone := make(chan error, 1)
	go func() { workDone <- work(wctx, token) }()
	stop := func() error {
		cancel()
		return <-workDone
	}
	release := func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		if err := l.Release(rctx); err != nil {
			l.log.Warn("lease release failed", "err", err)
		}
	}

	var renewRes chan error // non-nil while a renewal is in flight
	for {
		select {
		case <-ctx.Done():
			_ = stop() // work was cancelled: its error is that cancellation
			release()
			return true, ctx.Err()
		case werr := <-workDone:
			if errors.Is(werr, ErrLost) {
				// work found itself fenced off (e.g. Ticker saw a newer
				// token): the tenure is over, whatever our clock says.
				l.log.Warn("lease lost (reported by work)", "token", token, "err", werr)
				l.expire(token)
				return false, nil
			}
			release()
			return true, werr
		case <-renewT:
			renewT = nil
			ch := make(chan error, 1)
			renewRes = ch
			go func() { ch <- l.Renew(wctx) }()
		case rerr := <-renewRes:
			renewRes = nil
			switch {
			case errors.Is(rerr, ErrLost):
				l.log.Warn("lease lost", "token", token, "err", rerr)
				_ = stop() // tenure over: work's error is its cancellation
				return false, nil
			case rerr != nil:
				l.log.Warn("lease renewal failed, retrying", "token", token, "err", rerr)
				renewT = l.clock.After(l.renewEvery / 4)
			default:
				renewT = l.clock.After(l.renewEvery)
				expiry = l.clock.After(l.remaining())
			}
		case <-expiry:
			if r := l.remaining(); r > 0 {
				expiry = l.clock.After(r)
				continue
			}
			l.expire(token)
			l.log.Warn("lease expired without renewal", "token", token)
			_ = stop() // tenure over: work's error is its cancellation
			return false, nil
		}
	}
}

// validKey reports whether k is a KV key made of the characters nats.go
// accepts, without empty tokens.
func validKey(k string) bool {
	if k == "" || k[0] == '.' || k[len(k)-1] == '.' {
		return false
	}
	prevDot := false
	for _, c := range k {
		switch {
		case c == '.':
			if prevDot {
				return false
			}
			prevDot = true
			continue
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '=', c == '/':
		default:
			return false
		}
		prevDot = false
	}
	return true
}
