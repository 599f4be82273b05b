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

// Bucket is the key-value bucket of the gateway's leases, tick records and
// schedule anchors, shared by every replica.
const Bucket = "cluster_leases"

// AnchorKeyPrefix prefixes the schedule anchors in the bucket.
const AnchorKeyPrefix = "sched."

// OpenBucket creates (or updates) and opens the lease bucket with the
// given number of stream replicas.
func OpenBucket(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket,
		Description: "Singleton leases, tick records and schedule anchors of the gateway replicas",
		Storage:     jetstream.FileStorage, Replicas: max(replicas, 1), History: 1})
	if err != nil {
		return nil, fmt.Errorf("lease: bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

// Cluster is what a periodic job needs to run on exactly one replica: the
// lease bucket, this replica's holder id and the lease ttl. The zero value
// (KV nil) means "not clustered": callers keep their in-process loop.
type Cluster struct {
	KV jetstream.KeyValue
	// Holder is this replica's id (unique per process start).
	Holder string
	// TTL is the lease ttl (default 15 s).
	TTL time.Duration
	// Clock drives the lease and the schedule (nil: SystemClock).
	Clock Clock
	Log   *slog.Logger
}

// DefaultTTL is the lease ttl when Cluster.TTL is zero.
const DefaultTTL = 15 * time.Second

// Enabled reports whether jobs run under a lease.
func (c Cluster) Enabled() bool { return c.KV != nil }

// anchor is the value of a schedule anchor key.
type anchor struct {
	Start time.Time `json:"start"`
}

// RunEvery runs work every period under the lease "<name>" until ctx is
// done: one replica at a time holds the lease and runs the ticks, recorded
// in "tick.<name>-<period in ms>" so a new leader resumes at the first tick
// not completed (see Ticker). Tick n is due at anchor + n*period; the
// anchor is the first replica's clock truncated to the period, stored once
// (Create) in "sched.<name>-<period in ms>", so every replica and every
// restart agrees on it. Changing the period starts a new schedule.
func (c Cluster) RunEvery(ctx context.Context, name string, period time.Duration, work func(context.Context, Tick) error) error {
	if !c.Enabled() || period <= 0 {
		return fmt.Errorf("%w: RunEvery needs a bucket and a positive period", ErrConfig)
	}
	clock := c.Clock
	if clock == nil {
		clock = SystemClock{}
	}
	log := c.Log
	if log == nil {
		log = slog.Default()
	}
	ttl := c.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	job := fmt.Sprintf("%s-%d", name, period.Milliseconds())
	start, err := c.anchor(ctx, job, clock.Now().Truncate(period))
	if err != nil {
		return err
	}
	l, err := New(c.KV, name, c.Holder, ttl, clock, WithLogger(log))
	if err != nil {
		return err
	}
	tk, err := NewTicker(c.KV, job, c.Holder, Schedule{Start: start, Every: period}, clock, WithTickerLogger(log))
	if err != nil {
		return err
	}
	return l.Run(ctx, func(ctx context.Context, token uint64) error {
		return tk.Run(ctx, token, work)
	})
}

// anchor returns the schedule start of job, storing start if none is.
func (c Cluster) anchor(ctx context.Context, job string, start time.Time) (time.Time, error) {
	key := AnchorKeyPrefix + job
	for range 3 {
		e, err := c.KV.Get(ctx, key)
		if err == nil {
			var a anchor
			if err := json.Unmarshal(e.Value(), &a); err != nil || a.Start.IsZero() {
				return time.Time{}, fmt.Errorf("%w: %s", ErrTickRecord, key)
			}
			return a.Start, nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return time.Time{}, fmt.Errorf("lease: read %s: %w", key, err)
		}
		b, err := json.Marshal(anchor{Start: start.UTC()})
		if err != nil {
			return time.Time{}, err
		}
		if _, err := c.KV.Create(ctx, key, b); err == nil {
			return start.UTC(), nil
		} else if !kvstate.IsConflict(err) {
			return time.Time{}, fmt.Errorf("lease: write %s: %w", key, err)
		}
		// Another replica anchored it first: read theirs.
	}
	return time.Time{}, fmt.Errorf("%w: %s keeps changing", ErrTickRecord, key)
}

// Behind reports whether tick's successor is already due on clock: a
// catch-up tick after an outage, which jobs whose work depends only on
// "now" may coalesce into the latest one.
func Behind(tk Tick, period time.Duration, clock Clock) bool {
	if clock == nil {
		clock = SystemClock{}
	}
	return !tk.At.Add(period).After(clock.Now())
}
