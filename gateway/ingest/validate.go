package ingest

import (
	"errors"
	"time"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/topics"
)

// Dead-letter reasons (also the `reason` label of telegate_dead_letters_total).
const (
	ReasonDecode           = "decode_error"
	ReasonVersion          = "unsupported_version"
	ReasonIdentity         = "identity_mismatch"
	ReasonTimestamp        = "timestamp_out_of_range"
	ReasonInvalidValue     = "invalid_value"
	ReasonUnknownClientTag = "unknown_topic"
)

// Bounds on the free-text fields of a command ack (they travel on to NATS
// events and InfluxDB fields).
const (
	MaxCmdIDLen     = 128
	MaxAckReasonLen = 1024
)

// Validation errors.
var (
	ErrIdentityMismatch = errors.New("ingest: payload identity does not match the topic")
	ErrTimestampRange   = errors.New("ingest: timestamp out of range")
	ErrInvalidValue     = errors.New("ingest: invalid value")
)

// Validator decodes and checks device payloads. It is safe for concurrent
// use; per-call scratch values come from a pool so validation allocates
// nothing in steady state.
type Validator struct {
	MinTime  time.Time
	MaxSkew  time.Duration
	now      func() time.Time
	scratchs chan *scratch
}

type scratch struct {
	tf  wire.TelemetryFrame
	dr  wire.DiagReport
	ve  wire.VehicleEvent
	cs  wire.ChargingSession
	st  wire.ChargerStatus
	ack wire.CommandAck
}

// NewValidator returns a validator; now may be nil (time.Now).
func NewValidator(minTime time.Time, maxSkew time.Duration, now func() time.Time) *Validator {
	if now == nil {
		now = time.Now
	}
	// A bounded free list instead of sync.Pool: pool entries are dropped at
	// every GC, which would reallocate the Signals slices under load.
	return &Validator{MinTime: minTime, MaxSkew: maxSkew, now: now, scratchs: make(chan *scratch, 256)}
}

func (v *Validator) get() *scratch {
	select {
	case s := <-v.scratchs:
		return s
	default:
		return &scratch{}
	}
}

func (v *Validator) put(s *scratch) {
	select {
	case v.scratchs <- s:
	default:
	}
}

// Validate decodes payload for class c published by device id. It returns
// nil or an error and the dead-letter reason label.
func (v *Validator) Validate(c topics.Class, id string, payload []byte) (reason string, err error) {
	s := v.get()
	defer v.put(s)
	var ident []byte
	var ts int64
	switch c {
	case topics.ClassTelemetry:
		err = wire.DecodeTelemetry(payload, &s.tf)
		ident, ts = s.tf.VIN, s.tf.TimeMs
	case topics.ClassDiag:
		err = wire.DecodeDiag(payload, &s.dr)
		ident, ts = s.dr.VIN, s.dr.TimeMs
		if err == nil {
			for _, d := range s.dr.DTCs {
				if d.Status < wire.DTCPending || d.Status > wire.DTCPermanent {
					return ReasonInvalidValue, ErrInvalidValue
				}
			}
		}
	case topics.ClassEvents:
		err = wire.DecodeVehicleEvent(payload, &s.ve)
		ident, ts = s.ve.VIN, s.ve.TimeMs
		if err == nil && (s.ve.Kind < wire.EventIgnitionOn || s.ve.Kind > wire.EventLocation) {
			return ReasonInvalidValue, ErrInvalidValue
		}
	case topics.ClassCmdAck:
		err = wire.DecodeCommandAck(payload, &s.ack)
		ident, ts = s.ack.VIN, s.ack.TimeMs
		if err == nil && (s.ack.CmdID == "" || len(s.ack.CmdID) > MaxCmdIDLen || len(s.ack.Reason) > MaxAckReasonLen ||
			s.ack.Status < wire.AckApplied || s.ack.Status > wire.AckFailed) {
			return ReasonInvalidValue, ErrInvalidValue
		}
	case topics.ClassSession:
		err = wire.DecodeChargingSession(payload, &s.cs)
		ident, ts = s.cs.Station, s.cs.TimeMs
		if err == nil && (s.cs.Kind < wire.SessionStarted || s.cs.Kind > wire.SessionStopped || len(s.cs.SessionID) == 0) {
			return ReasonInvalidValue, ErrInvalidValue
		}
	case topics.ClassStatus:
		err = wire.DecodeChargerStatus(payload, &s.st)
		ident, ts = s.st.Station, s.st.TimeMs
		if err == nil && (s.st.Status < wire.ConnectorAvailable || s.st.Status > wire.ConnectorUnavailable) {
			return ReasonInvalidValue, ErrInvalidValue
		}
	default:
		return ReasonUnknownClientTag, ErrInvalidValue
	}
	if err != nil {
		if errors.Is(err, wire.ErrUnsupportedVersion) {
			return ReasonVersion, err
		}
		return ReasonDecode, err
	}
	if string(ident) != id {
		return ReasonIdentity, ErrIdentityMismatch
	}
	if ts < v.MinTime.UnixMilli() || ts > v.now().Add(v.MaxSkew).UnixMilli() {
		return ReasonTimestamp, ErrTimestampRange
	}
	return "", nil
}
