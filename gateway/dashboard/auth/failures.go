package auth

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/cluster/kvstate"
)

// Login throttling across replicas. With Config.Store the failure counts
// of every throttle key (per user and client, per client, per user) are
// also kept in the session bucket under "f.<hash of the throttle key>", so
// an attacker spreading guesses over N replicas gets one allowance, not N.
// Each replica still reserves its in-flight slots locally (concurrent
// attempts on different replicas can each run one password check before
// either failure is stored: at most one extra check per replica).
//
// The stored record never carries the user name or the address: the key is
// a hash, the value counts and times. Keys expire with the bucket's TTL
// (the session ttl, longer than any failure window).

// storedFailures is the value of "f.<hex>".
type storedFailures struct {
	Fails int       `json:"fails"`
	Last  time.Time `json:"last"`
	Until time.Time `json:"until,omitzero"`
}

func failureKey(throttleKey string) string {
	h := sha256.Sum256([]byte("login-throttle:" + throttleKey))
	return "f." + hex.EncodeToString(h[:16])
}

// pullFailures merges the stored failure records of k's three keys into
// this replica's entries (the larger count, the later times), before
// reserve decides. A store error refuses the login (ErrSessionStore):
// throttling is never skipped because the bucket is unreachable.
func (m *Manager) pullFailures(now time.Time, k attemptKeys) error {
	ctx, cancel := storeCtx()
	defer cancel()
	var got [3]storedFailures
	for i, key := range []string{k.pair, k.source, k.account} {
		e, err := m.cfg.Store.Get(ctx, failureKey(key))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrSessionStore, err)
		}
		_ = json.Unmarshal(e.Value(), &got[i]) // unreadable: nothing to merge
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, key := range []string{k.pair, k.source, k.account} {
		if got[i].Fails == 0 {
			continue
		}
		e := m.entryLocked(now, key)
		mergeFailures(e, got[i])
	}
	return nil
}

func mergeFailures(e *attempts, s storedFailures) {
	e.fails = max(e.fails, s.Fails)
	if s.Last.After(e.last) {
		e.last = s.Last
	}
	if s.Until.After(e.until) {
		e.until = s.Until
	}
}

// pushFailure records one failed attempt in the stored records of k's
// keys (compare-and-set, so failures on two replicas at once both count)
// and merges the results back. On success only the (user, client) record
// is cleared, as finish does locally. Errors are logged: the local count
// already holds the failure.
func (m *Manager) pushFailure(now time.Time, k attemptKeys, success bool) {
	ctx, cancel := storeCtx()
	defer cancel()
	kv := m.cfg.Store
	if success {
		if err := kv.Purge(ctx, failureKey(k.pair)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			m.log.Warn("dashboard login: shared failure record not cleared", "err", err)
		}
		return
	}
	for _, c := range []struct {
		key   string
		limit int
	}{{k.pair, m.cfg.MaxFailures}, {k.source, m.cfg.MaxSourceFailures}, {k.account, m.cfg.MaxAccountFailures}} {
		fk := failureKey(c.key)
		var rec storedFailures
		stored := false
		for range storeAttempts {
			rec = storedFailures{}
			var rev uint64
			e, err := kv.Get(ctx, fk)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
			case err != nil:
				m.log.Warn("dashboard login: shared failure record not read", "err", err)
				return
			default:
				rev = e.Revision()
				_ = json.Unmarshal(e.Value(), &rec)
			}
			// The same forgetting rule as entryLocked.
			if rec.Fails > 0 && now.Sub(rec.Last) >= m.cfg.FailureWindow && !now.Before(rec.Until) {
				rec = storedFailures{}
			}
			rec.Fails++
			rec.Last = now
			if over := rec.Fails - c.limit; over >= 0 && c.key != k.account {
				rec.Until = maxTime(rec.Until, now.Add(backoff(m.cfg.BaseBackoff, m.cfg.MaxBackoff, over)))
			}
			b, err := json.Marshal(rec)
			if err != nil {
				return
			}
			if rev == 0 {
				_, err = kv.Create(ctx, fk, b)
			} else {
				_, err = kv.Update(ctx, fk, b, rev)
			}
			if kvstate.IsConflict(err) {
				continue
			}
			if err != nil {
				m.log.Warn("dashboard login: shared failure record not written", "err", err)
				return
			}
			stored = true
			break
		}
		if !stored {
			continue
		}
		m.mu.Lock()
		if e := m.attempts[c.key]; e != nil {
			mergeFailures(e, rec)
		}
		m.mu.Unlock()
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
