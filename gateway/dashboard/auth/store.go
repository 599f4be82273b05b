package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/cluster/kvstate"
)

// SessionBucket is the key-value bucket of the dashboard sessions when
// they are shared by several gateway replicas (Config.Store).
const SessionBucket = "dashboard_sessions"

// ErrSessionStore: the session bucket could not be read or written; the
// request is refused (503), never let through.
var ErrSessionStore = errors.New("auth: session store unavailable")

// storeTimeout bounds one session-store operation.
const storeTimeout = 5 * time.Second

// storeAttempts bounds the compare-and-set attempts on a user's index.
const storeAttempts = kvstate.MaxAttempts

// OpenSessionStore creates (or updates) and opens the session bucket.
// Keys older than maxAge (the session ttl) since their last write expire on
// their own; a session is never valid longer than its ttl anyway.
func OpenSessionStore(ctx context.Context, js jetstream.JetStream, replicas int, maxAge time.Duration) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: SessionBucket,
		Description: "Dashboard login sessions (by hash of the cookie token) and each user's session list",
		Storage:     jetstream.FileStorage, Replicas: max(replicas, 1), History: 1, TTL: maxAge})
	if err != nil {
		return nil, fmt.Errorf("auth: bucket %s: %w", SessionBucket, err)
	}
	return kv, nil
}

// storedSession is the value of "s.<hex of the token's hash>". The cookie
// token itself is never stored.
type storedSession struct {
	User      string    `json:"user"`
	Role      Role      `json:"role"`
	CSRF      string    `json:"csrf_token"`
	Created   time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	LastUsed  time.Time `json:"last_used"`
}

// userIndex is the value of "u.<hex of the user name's hash>": the user's
// sessions, oldest first, for the per-user cap.
type userIndex struct {
	Sessions []indexEntry `json:"sessions"`
}

type indexEntry struct {
	Key     string    `json:"k"` // hex of the token's hash
	Created time.Time `json:"created"`
}

func sessionKey(k [sha256.Size]byte) string { return "s." + hex.EncodeToString(k[:]) }

func userKey(name string) string {
	h := sha256.Sum256([]byte(name))
	return "u." + hex.EncodeToString(h[:16])
}

func storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), storeTimeout)
}

// storeLogin writes the new session s and adds it to its user's index,
// evicting the user's oldest sessions beyond MaxSessionsPerUser. The index
// is updated by compare-and-set, so two replicas logging the same user in
// at once still keep the cap.
func (m *Manager) storeLogin(s *Session, now time.Time) error {
	ctx, cancel := storeCtx()
	defer cancel()
	kv := m.cfg.Store
	b, err := json.Marshal(storedSession{User: s.User, Role: s.Role, CSRF: s.CSRF, Created: s.Created,
		ExpiresAt: s.ExpiresAt, LastUsed: now})
	if err != nil {
		return err
	}
	sk := hex.EncodeToString(s.key[:])
	if _, err := kv.Create(ctx, "s."+sk, b); err != nil {
		return fmt.Errorf("%w: %w", ErrSessionStore, err)
	}
	uk := userKey(s.User)
	for range storeAttempts {
		var idx userIndex
		var rev uint64
		e, err := kv.Get(ctx, uk)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return m.undoLogin(ctx, sk, err)
		default:
			rev = e.Revision()
			_ = json.Unmarshal(e.Value(), &idx) // unreadable: start over
		}
		// Keep the live sessions, oldest first, and make room for one.
		live := idx.Sessions[:0:0]
		for _, ie := range idx.Sessions {
			if ie.Key != sk && m.storedLive(ctx, ie.Key, now) {
				live = append(live, ie)
			}
		}
		slices.SortStableFunc(live, func(a, b indexEntry) int { return a.Created.Compare(b.Created) })
		var evict []indexEntry
		if n := len(live) - (m.cfg.MaxSessionsPerUser - 1); n > 0 {
			evict, live = live[:n], live[n:]
		}
		nb, err := json.Marshal(userIndex{Sessions: append(live, indexEntry{Key: sk, Created: s.Created})})
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = kv.Create(ctx, uk, nb)
		} else {
			_, err = kv.Update(ctx, uk, nb, rev)
		}
		if kvstate.IsConflict(err) {
			continue
		}
		if err != nil {
			return m.undoLogin(ctx, sk, err)
		}
		for _, ie := range evict {
			if err := kv.Delete(ctx, "s."+ie.Key); err != nil {
				m.log.Warn("dashboard session eviction failed", "user", s.User, "err", err)
			}
			m.dropCached(ie.Key)
		}
		return nil
	}
	return m.undoLogin(ctx, sk, errors.New("user index contended"))
}

func (m *Manager) undoLogin(ctx context.Context, sk string, cause error) error {
	_ = m.cfg.Store.Delete(ctx, "s."+sk)
	return fmt.Errorf("%w: %w", ErrSessionStore, cause)
}

// storedLive reports whether session key sk is still in the store and not
// expired (read errors count as live: never evict on a guess).
func (m *Manager) storedLive(ctx context.Context, sk string, now time.Time) bool {
	e, err := m.cfg.Store.Get(ctx, "s."+sk)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false
	}
	if err != nil {
		return true
	}
	var st storedSession
	if json.Unmarshal(e.Value(), &st) != nil {
		return false
	}
	return !m.expired(&Session{ExpiresAt: st.ExpiresAt, lastUsed: st.LastUsed}, now)
}

func (m *Manager) dropCached(sk string) {
	b, err := hex.DecodeString(sk)
	if err != nil || len(b) != sha256.Size {
		return
	}
	m.mu.Lock()
	delete(m.sessions, [sha256.Size]byte(b))
	m.mu.Unlock()
}

// storeLookup reads the session of key k from the store, so a logout or
// eviction on any replica takes effect on the next request everywhere.
// The idle timer is shared: the last use is written back at most every
// Idle/10, and the later of the stored and the locally cached use counts.
func (m *Manager) storeLookup(k [sha256.Size]byte, now time.Time) (*Session, error) {
	ctx, cancel := storeCtx()
	defer cancel()
	key := sessionKey(k)
	e, err := m.cfg.Store.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		m.mu.Lock()
		delete(m.sessions, k)
		m.mu.Unlock()
		return nil, ErrNoSession
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSessionStore, err)
	}
	var st storedSession
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return nil, ErrNoSession
	}
	s := &Session{User: st.User, Role: st.Role, CSRF: st.CSRF, Created: st.Created, ExpiresAt: st.ExpiresAt,
		lastUsed: st.LastUsed, key: k}
	m.mu.Lock()
	if c := m.sessions[k]; c != nil && c.lastUsed.After(s.lastUsed) {
		s.lastUsed = c.lastUsed
	}
	if m.expired(s, now) {
		delete(m.sessions, k)
		m.mu.Unlock()
		_ = m.cfg.Store.Delete(ctx, key, jetstream.LastRevision(e.Revision()))
		return nil, ErrNoSession
	}
	s.lastUsed = now
	m.sessions[k] = s
	m.mu.Unlock()
	if now.Sub(st.LastUsed) >= m.cfg.Idle/10 {
		st.LastUsed = now
		if b, err := json.Marshal(st); err == nil {
			// A conflict means another replica wrote it: fine either way.
			_, _ = m.cfg.Store.Update(ctx, key, b, e.Revision())
		}
	}
	cp := *s
	return &cp, nil
}

// storeLogout deletes the session of key k from the store.
func (m *Manager) storeLogout(k [sha256.Size]byte) error {
	ctx, cancel := storeCtx()
	defer cancel()
	if err := m.cfg.Store.Delete(ctx, sessionKey(k)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: %w", ErrSessionStore, err)
	}
	return nil
}
