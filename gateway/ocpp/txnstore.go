package ocpp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/cluster/kvstate"
	"github.com/telegate/telegate/gateway/natsbus"
)

// Errors of the transaction table.
var (
	// ErrTxnStore: the transaction table could not be read or written; the
	// charge point gets CALLERROR InternalError and retries.
	ErrTxnStore = errors.New("ocpp: transaction table unavailable")
	// ErrTxnCorrupt: a key of the table holds something that is not a
	// transaction state.
	ErrTxnCorrupt = errors.New("ocpp: transaction state unreadable")
)

// TxnBucket is the JetStream KV bucket of the transaction table
// (natsbus.BucketOCPPTxn): key "tx.{station}.{transaction}" or
// "plug.{station}.{connector}" (each id escaped with natsbus.Token), value
// a JSON txn. Every change is a merge at the revision it read.
const TxnBucket = natsbus.BucketOCPPTxn

// StoreTimeout bounds one read or write of the transaction table.
const StoreTimeout = 5 * time.Second

// maxMergeAttempts bounds the compare-and-set attempts of one merge.
const maxMergeAttempts = 16

// MaxSeenReadings bounds the fingerprints of stored updates a transaction
// remembers to recognise replays (the newest are kept). A replay older
// than that is stored again, with the same seq and timestamp as the
// first time: the same InfluxDB point and Nats-Msg-Id.
const MaxSeenReadings = 128

// txn is the state of one transaction (or, under a plug key, what a 1.6
// connector reported before its transaction started). Merges only move
// forward: started and stopped never go back to false, lastSeq never
// decreases, seen only gains entries (bounded), the start register is kept
// once known.
type txn struct {
	Connector  uint8   `json:"connector"`
	IDTag      string  `json:"id_tag,omitempty"`
	MeterStart float64 `json:"meter_start_wh"` // Wh register at start
	HasStart   bool    `json:"has_meter_start,omitempty"`
	Started    bool    `json:"started,omitempty"`
	Stopped    bool    `json:"stopped,omitempty"`
	// LastSeq is the highest record seq stored for the transaction
	// (2.0.1 seqNo / 1.6 timestamp ms, shifted with the kind).
	LastSeq uint64 `json:"last_seq,omitempty"`
	// Seen holds the seqs (readingSeq fingerprints) of the updates stored
	// or dead-lettered for the transaction, oldest first, at most
	// MaxSeenReadings.
	Seen []uint64 `json:"seen,omitempty"`
	// Plugged SoC and power (plug keys only).
	SoC    float64 `json:"soc,omitempty"`
	PowerW float64 `json:"power_w,omitempty"`
	HasSoC bool    `json:"has_soc,omitempty"`
	HasPow bool    `json:"has_power,omitempty"`
}

// merge folds next into cur (monotonic: see txn).
func merge(cur, next txn) txn {
	out := next
	out.Started = cur.Started || next.Started
	out.Stopped = cur.Stopped || next.Stopped
	out.LastSeq = max(cur.LastSeq, next.LastSeq)
	out.Seen = mergeSeen(cur.Seen, next.Seen)
	if cur.HasStart {
		out.MeterStart, out.HasStart = cur.MeterStart, true
	}
	if out.IDTag == "" {
		out.IDTag = cur.IDTag
	}
	if out.Connector == 0 {
		out.Connector = cur.Connector
	}
	return out
}

// mergeSeen appends the seqs of next missing from cur, keeping the newest
// MaxSeenReadings. It never modifies cur (a memStore value is shared).
func mergeSeen(cur, next []uint64) []uint64 {
	out := make([]uint64, 0, len(cur)+len(next))
	out = append(out, cur...)
	for _, s := range next {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	if len(out) > MaxSeenReadings {
		out = out[len(out)-MaxSeenReadings:]
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// seen reports whether the update with this seq was already stored.
func (t txn) seen(seq uint64) bool { return slices.Contains(t.Seen, seq) }

func txnKey(station, tx string) string {
	return "tx." + natsbus.Token(station) + "." + natsbus.Token(tx)
}

func plugKey(station string, connector uint8) string {
	return "plug." + natsbus.Token(station) + "." + strconv.Itoa(int(connector))
}

// txnStore is the transaction table.
type txnStore interface {
	get(ctx context.Context, key string) (txn, bool, error)
	// update merges t into the state at key.
	update(ctx context.Context, key string, t txn) error
	// take returns and deletes the state at key.
	take(ctx context.Context, key string) (txn, bool, error)
}

// kvStore is the table in a JetStream KV bucket: shared by every replica
// and kept across restarts.
type kvStore struct{ kv jetstream.KeyValue }

func (s kvStore) read(ctx context.Context, key string) (txn, uint64, bool, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return txn{}, 0, false, nil
	}
	if err != nil {
		return txn{}, 0, false, fmt.Errorf("%w: read: %w", ErrTxnStore, err)
	}
	var t txn
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return txn{}, 0, false, fmt.Errorf("%w: %s", ErrTxnCorrupt, key)
	}
	return t, e.Revision(), true, nil
}

func (s kvStore) get(ctx context.Context, key string) (txn, bool, error) {
	t, _, ok, err := s.read(ctx, key)
	return t, ok, err
}

func (s kvStore) update(ctx context.Context, key string, t txn) error {
	for range maxMergeAttempts {
		cur, rev, ok, err := s.read(ctx, key)
		if err != nil {
			return err
		}
		b, err := json.Marshal(merge(cur, t))
		if err != nil {
			return fmt.Errorf("%w: %w", ErrTxnStore, err)
		}
		if ok {
			_, err = s.kv.Update(ctx, key, b, rev)
		} else {
			_, err = s.kv.Create(ctx, key, b)
		}
		if err == nil {
			return nil
		}
		if !kvstate.IsConflict(err) {
			return fmt.Errorf("%w: write: %w", ErrTxnStore, err)
		}
	}
	return fmt.Errorf("%w: %w", ErrTxnStore, kvstate.ErrContended)
}

func (s kvStore) take(ctx context.Context, key string) (txn, bool, error) {
	t, rev, ok, err := s.read(ctx, key)
	if err != nil || !ok {
		return t, ok, err
	}
	// Revision-checked: a newer report arriving meanwhile is not deleted
	// (this start still uses what it read).
	if err := s.kv.Delete(ctx, key, jetstream.LastRevision(rev)); err != nil && !kvstate.IsConflict(err) {
		return txn{}, false, fmt.Errorf("%w: delete: %w", ErrTxnStore, err)
	}
	return t, true, nil
}

// memStore is the table in memory: for a central system without NATS
// (internal/ocpptest, benchmarks). Bounded by MaxMemTxns entries (oldest
// first out).
type memStore struct {
	// mu guards m and order.
	mu    sync.Mutex
	m     map[string]txn
	order []string
}

// MaxMemTxns bounds the in-memory table.
const MaxMemTxns = 10000

func newMemStore() *memStore { return &memStore{m: map[string]txn{}} }

func (s *memStore) get(_ context.Context, key string) (txn, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.m[key]
	return t, ok, nil
}

func (s *memStore) update(_ context.Context, key string, t txn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.m[key]
	s.m[key] = merge(cur, t)
	if !ok {
		s.order = append(s.order, key)
		for len(s.order) > MaxMemTxns {
			delete(s.m, s.order[0])
			s.order = s.order[1:]
		}
	}
	return nil
}

func (s *memStore) take(_ context.Context, key string) (txn, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.m[key]
	delete(s.m, key)
	return t, ok, nil
}
