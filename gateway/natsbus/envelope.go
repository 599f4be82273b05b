package natsbus

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// EnvelopeVersion is the version of the event envelope. Consumers must
// ignore unknown fields and reject unknown major versions.
const EnvelopeVersion = 1

// ErrBadEnvelope is returned by DecodeEvent for a body that is not a
// version-1 envelope with an id.
var ErrBadEnvelope = errors.New("natsbus: bad event envelope")

// Envelope is the JSON body of every event published on the gateway's
// streams, by the gateway's event sink (T = any: typed data) and by the
// services. ID equals the Nats-Msg-Id header: deterministic from the source
// (frame, command, decision), so a replay is deduplicated by JetStream; it
// is also the consumers' idempotency key. docs/data-model.md describes it.
type Envelope[T any] struct {
	V      int       `json:"v"`
	ID     string    `json:"id"`
	Type   string    `json:"type"`
	Time   time.Time `json:"time"`   // device time of the source frame (or of the decision)
	Source string    `json:"source"` // device id (VIN or station id), or customer ref
	Data   T         `json:"data"`
}

// Event is an envelope as consumers receive it: data still encoded.
type Event = Envelope[json.RawMessage]

// NewEnvelope returns the version-1 envelope of data, with at in UTC.
func NewEnvelope[T any](id, typ, source string, at time.Time, data T) Envelope[T] {
	return Envelope[T]{V: EnvelopeVersion, ID: id, Type: typ, Time: at.UTC(), Source: source, Data: data}
}

// DecodeEvent unmarshals the envelope in b; an error wraps ErrBadEnvelope.
func DecodeEvent(b []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("%w: %w", ErrBadEnvelope, err)
	}
	if e.V != EnvelopeVersion || e.ID == "" {
		return e, fmt.Errorf("%w: version %d id %q", ErrBadEnvelope, e.V, e.ID)
	}
	return e, nil
}
