// Package kvstate holds cluster-safe state helpers over a JetStream
// key-value bucket: every change is a compare-and-set on the key's revision
// (optimistic concurrency), so replicas on different NATS nodes can share a
// counter without a lock and without losing or doubling an update.
package kvstate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Errors of the counter.
var (
	// ErrBadLimit: the limit is not positive.
	ErrBadLimit = errors.New("kvstate: limit must be positive")
	// ErrCorrupt: the key holds something that is not a count.
	ErrCorrupt = errors.New("kvstate: value is not a count")
	// ErrContended: MaxAttempts compare-and-set attempts all lost to
	// concurrent writers. Nothing was counted; the caller may retry.
	ErrContended = errors.New("kvstate: too many concurrent updates")
)

// MaxAttempts bounds the compare-and-set attempts of one Increment. Every
// lost attempt means another writer's succeeded, so it is only reached
// under more concurrent writers on one key than a cap ever sees.
const MaxAttempts = 64

// IsConflict reports whether err from KeyValue.Create or Update is a
// revision conflict (someone else wrote the key first), on single servers
// (error 10071) and replicated streams (10164) alike, including Create over
// a deleted key, whose conflict nats.go does not map to ErrKeyExists.
func IsConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Increment adds one to the count at key if the count is below limit.
// It returns the new count and ok = true when this call counted, or the
// current count (>= limit) and ok = false when the cap was already reached. Concurrent callers, on any NATS node, never exceed
// limit together: each increment is an Update at the revision it read (a
// Create for a new key), retried on conflict.
//
// Windows (a daily cap) are the caller's: put the window in the key
// ("offers.<partner>.<driver>.<date>") and give the bucket a TTL (MaxAge)
// longer than the window, so old counts expire. Per-key TTLs do not fit:
// KeyValue.Update drops a key's TTL.
//
// Increment is not idempotent: a caller that retries after an error of
// unknown outcome (a timeout) may count twice, which for a cap errs on the
// side of refusing. Deduplicate the event first (e.g. Create a marker key
// named after the session id) when a double count matters.
func Increment(ctx context.Context, kv jetstream.KeyValue, key string, limit int) (n int, ok bool, err error) {
	if limit <= 0 {
		return 0, false, ErrBadLimit
	}
	for attempt := range MaxAttempts {
		if attempt > 0 {
			// A conflict means another writer won, or this replica read a
			// revision a lagging direct-get replica served: back off a
			// little (jittered, growing to 50 ms) so both resolve instead of
			// spinning through the attempts in a few milliseconds.
			d := min(time.Millisecond<<min(attempt, 6), 50*time.Millisecond)
			select {
			case <-ctx.Done():
				return 0, false, ctx.Err()
			case <-time.After(d/2 + rand.N(d/2+1)):
			}
		}
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = kv.Create(ctx, key, []byte("1"))
			if err == nil {
				return 1, true, nil
			}
			if IsConflict(err) {
				continue
			}
			return 0, false, fmt.Errorf("kvstate: create %s: %w", key, err)
		case err != nil:
			return 0, false, fmt.Errorf("kvstate: read %s: %w", key, err)
		}
		cur, err := parse(e.Value())
		if err != nil {
			return 0, false, fmt.Errorf("%w: %s", err, key)
		}
		if cur >= limit {
			return cur, false, nil
		}
		_, err = kv.Update(ctx, key, []byte(strconv.Itoa(cur+1)), e.Revision())
		if err == nil {
			return cur + 1, true, nil
		}
		if !IsConflict(err) {
			return 0, false, fmt.Errorf("kvstate: update %s: %w", key, err)
		}
	}
	return 0, false, fmt.Errorf("%w: %s", ErrContended, key)
}

// Count is the count at key (0 when absent).
func Count(ctx context.Context, kv jetstream.KeyValue, key string) (int, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("kvstate: read %s: %w", key, err)
	}
	n, err := parse(e.Value())
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, key)
	}
	return n, nil
}

func parse(v []byte) (int, error) {
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 0 {
		return 0, ErrCorrupt
	}
	return n, nil
}
