package eventsink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/cluster/kvstate"
)

// Errors of KVStore.Save.
var (
	// ErrDTCStateStale: the stored state reflects a newer report (device
	// time, then sequence number) than the one being saved: another
	// replica's sink got there first. Nothing was written; the sink retries
	// its batch, which reloads the state and skips the older reports.
	ErrDTCStateStale = errors.New("eventsink: stored DTC state is newer")
	// ErrDTCStateContended: every compare-and-set attempt lost to
	// concurrent writers of the same vehicle.
	ErrDTCStateContended = errors.New("eventsink: DTC state: too many concurrent updates")
)

// saveAttempts bounds the compare-and-set attempts of one Save.
const saveAttempts = kvstate.MaxAttempts

// DTCState is the set of stored DTCs of one vehicle (code -> status) and the
// position (device time, sequence number) of the report it reflects.
type DTCState struct {
	Codes  map[uint16]uint8
	TimeMs int64
	Seq    uint64
}

// StateStore persists per-vehicle DTC state so that raised/cleared events
// survive a gateway restart without being re-raised.
type StateStore interface {
	Load(ctx context.Context, vin string) (DTCState, error)
	Save(ctx context.Context, vin string, s DTCState) error
}

// KVStore keeps DTC state in a JetStream key-value bucket (key = VIN).
// It is safe with several gateway replicas writing the bucket: Save is a
// compare-and-set on the key's revision that never replaces a state with
// one from an older report, so no replica's update is lost to another's
// late write.
type KVStore struct{ KV jetstream.KeyValue }

type kvState struct {
	Codes  map[string]uint8 `json:"codes"`
	TimeMs int64            `json:"time_ms,omitempty"`
	Seq    uint64           `json:"seq,omitempty"`
}

// Load implements StateStore. A missing key is an empty state.
func (k KVStore) Load(ctx context.Context, vin string) (DTCState, error) {
	e, err := k.KV.Get(ctx, vin)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return DTCState{Codes: map[uint16]uint8{}}, nil
	}
	if err != nil {
		return DTCState{}, fmt.Errorf("dtc state %s: %w", vin, err)
	}
	var st kvState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return DTCState{}, fmt.Errorf("dtc state %s: %w", vin, err)
	}
	out := DTCState{Codes: make(map[uint16]uint8, len(st.Codes)), TimeMs: st.TimeMs, Seq: st.Seq}
	for c, s := range st.Codes {
		var code uint16
		if _, err := fmt.Sscanf(c, "%04x", &code); err == nil {
			out.Codes[code] = s
		}
	}
	return out, nil
}

// Save implements StateStore. It reads the stored state and writes s at
// the revision it read (Create for a new vehicle), retrying on conflict.
// A stored state from a newer report than s is kept and Save returns
// ErrDTCStateStale; one from the same report is rewritten (a replay).
func (k KVStore) Save(ctx context.Context, vin string, s DTCState) error {
	st := kvState{Codes: make(map[string]uint8, len(s.Codes)), TimeMs: s.TimeMs, Seq: s.Seq}
	for c, v := range s.Codes {
		st.Codes[fmt.Sprintf("%04x", c)] = v
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	for range saveAttempts {
		e, err := k.KV.Get(ctx, vin)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = k.KV.Create(ctx, vin, b)
		case err != nil:
			return fmt.Errorf("dtc state %s: %w", vin, err)
		default:
			var cur kvState
			if json.Unmarshal(e.Value(), &cur) == nil && newer(cur.TimeMs, cur.Seq, s.TimeMs, s.Seq) {
				return fmt.Errorf("%w: %s: stored report %d/%d, saving %d/%d", ErrDTCStateStale, vin,
					cur.TimeMs, cur.Seq, s.TimeMs, s.Seq)
			}
			// An unreadable stored value is replaced.
			_, err = k.KV.Update(ctx, vin, b, e.Revision())
		}
		if err == nil {
			return nil
		}
		if !kvstate.IsConflict(err) {
			return fmt.Errorf("dtc state %s: %w", vin, err)
		}
	}
	return fmt.Errorf("%w: %s", ErrDTCStateContended, vin)
}

// newer reports whether report position (t1, s1) is after (t2, s2): device
// time first, then sequence number (the order the sink applies reports in).
func newer(t1 int64, s1 uint64, t2 int64, s2 uint64) bool {
	return t1 > t2 || t1 == t2 && s1 > s2
}
