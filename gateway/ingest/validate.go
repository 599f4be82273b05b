package ingest

import (
	"fmt"
	"math"
	"time"

	"github.com/telegate/telegate/decoders/reject"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/ingest/topics"
)

// Bounds on the free-text fields of a command ack (they travel on to NATS
// events and InfluxDB fields).
const (
	MaxCmdIDLen     = 128
	MaxAckReasonLen = 1024
)

// Validation errors: the gateway's own sentinels from decoders/reject (the
// rejection vocabulary), re-exported for callers of this package.
var (
	ErrIdentityMismatch = reject.ErrIdentityMismatch
	ErrTimestampFuture  = reject.ErrTimestampFuture
	ErrTimestampTooOld  = reject.ErrTimestampTooOld
	ErrTimestampSeconds = reject.ErrTimestampSeconds
	ErrInvalidValue     = wire.ErrInvalidValue
)

// Validator decodes and checks device payloads. It is safe for concurrent
// use; per-call scratch values come from a pool so validation allocates
// nothing in steady state.
type Validator struct {
	MinTime  time.Time
	MaxSkew  time.Duration
	now      func() time.Time
	freeList chan *scratch
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
	return &Validator{MinTime: minTime, MaxSkew: maxSkew, now: now, freeList: make(chan *scratch, 256)}
}

func (v *Validator) get() *scratch {
	select {
	case s := <-v.freeList:
		return s
	default:
		return &scratch{}
	}
}

func (v *Validator) put(s *scratch) {
	select {
	case v.freeList <- s:
	default:
	}
}

// Validate decodes payload for class c published by device id. It returns
// reject.None and nil, or the rejection label and an error whose text
// (reject.Detail) names the element and the rule, never payload bytes. The
// label comes from the error with errors.Is; nothing here allocates for a
// valid payload.
func (v *Validator) Validate(c topics.Class, id string, payload []byte) (reject.Label, error) {
	s := v.get()
	defer v.put(s)
	var (
		ident []byte
		ts    int64
		err   error
		name  = "vin"
		elem  = 1 // index of the identity element
	)
	switch c {
	case topics.ClassTelemetry:
		err = wire.DecodeTelemetry(payload, &s.tf)
		ident, ts = s.tf.VIN, s.tf.TimeMs
	case topics.ClassDiag:
		err = wire.DecodeDiag(payload, &s.dr)
		ident, ts = s.dr.VIN, s.dr.TimeMs
	case topics.ClassEvents:
		err = wire.DecodeVehicleEvent(payload, &s.ve)
		ident, ts = s.ve.VIN, s.ve.TimeMs
	case topics.ClassCmdAck:
		err = wire.DecodeCommandAck(payload, &s.ack)
		ident, ts, elem = s.ack.VIN, s.ack.TimeMs, 2
		if err == nil && len(s.ack.CmdID) > MaxCmdIDLen {
			err = fmt.Errorf("%w: element 1 (cmd_id): longer than %d bytes", wire.ErrInvalidValue, MaxCmdIDLen)
		} else if err == nil && len(s.ack.Reason) > MaxAckReasonLen {
			err = fmt.Errorf("%w: element 5 (reason): longer than %d bytes", wire.ErrInvalidValue, MaxAckReasonLen)
		}
	case topics.ClassSession:
		err = wire.DecodeChargingSession(payload, &s.cs)
		ident, ts, name = s.cs.Station, s.cs.TimeMs, "station"
		if err == nil && len(s.cs.SessionID) == 0 {
			err = fmt.Errorf("%w: element 5 (session_id): empty", wire.ErrInvalidValue)
		}
	case topics.ClassStatus:
		err = wire.DecodeChargerStatus(payload, &s.st)
		ident, ts, name = s.st.Station, s.st.TimeMs, "station"
	default:
		return reject.UnknownTopic, fmt.Errorf("%w: class %s", reject.ErrUnknownTopic, c)
	}
	if err != nil {
		return reject.FromError(err), err
	}
	if string(ident) != id {
		// The detail names the element, not the payload's value.
		return reject.IdentityMismatch, fmt.Errorf("%w: element %d (%s) differs from the topic's {%s}", reject.ErrIdentityMismatch, elem, name, name)
	}
	return v.checkTime(ts)
}

// checkTime applies the timestamp window: MinTime <= ts_ms <= now+MaxSkew.
// A value that is in the window once multiplied by 1000 was sent in seconds.
func (v *Validator) checkTime(ts int64) (reject.Label, error) {
	lo, now := v.MinTime.UnixMilli(), v.now()
	hi := now.Add(v.MaxSkew).UnixMilli()
	switch {
	case ts >= lo && ts <= hi:
		return reject.None, nil
	case ts > hi:
		hint := ""
		if us := ts / 1000; us >= lo && us <= hi {
			hint = "; it looks like microseconds"
		}
		return reject.TimestampFuture, fmt.Errorf("%w: element 3 (ts_ms) %d is %s ahead of the gateway clock, more than the allowed %s%s",
			reject.ErrTimestampFuture, ts, time.Duration(ts-now.UnixMilli())*time.Millisecond, v.MaxSkew, hint)
	case ts > math.MinInt64/1000 && ts*1000 >= lo && ts*1000 <= hi:
		return reject.TimestampSeconds, fmt.Errorf("%w: element 3 (ts_ms) %d is %s as Unix seconds; send %d",
			reject.ErrTimestampSeconds, ts, time.UnixMilli(ts*1000).UTC().Format(time.RFC3339), ts*1000)
	default:
		return reject.TimestampTooOld, fmt.Errorf("%w: element 3 (ts_ms) %d is before the minimum time %s",
			reject.ErrTimestampTooOld, ts, v.MinTime.UTC().Format(time.RFC3339))
	}
}
