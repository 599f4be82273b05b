package eventsink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

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

// Save implements StateStore.
func (k KVStore) Save(ctx context.Context, vin string, s DTCState) error {
	st := kvState{Codes: make(map[string]uint8, len(s.Codes)), TimeMs: s.TimeMs, Seq: s.Seq}
	for c, v := range s.Codes {
		st.Codes[fmt.Sprintf("%04x", c)] = v
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if _, err := k.KV.Put(ctx, vin, b); err != nil {
		return fmt.Errorf("dtc state %s: %w", vin, err)
	}
	return nil
}
