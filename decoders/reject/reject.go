// Package reject is the one vocabulary for rejected device payloads: the
// label that appears in the metric telegate_dead_letters_total{reason}, in
// the dead-letter entries on NATS (deadletter.>) and in InfluxDB
// (measurement dead_letter), and in docs/protocol.md section 8, with a human
// message per label. The doc table and this package are checked against each
// other by TestProtocolDocTable.
//
// Errors from decoders/wire map to labels with errors.Is (FromError); the
// gateway's own checks (identity, timestamp window) use the sentinels below.
// Labels are small integers so that hot paths index arrays with them instead
// of looking strings up.
package reject

import (
	"errors"
	"strings"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/tinylib/msgp/msgp"
)

// Label classifies why a payload was rejected. The zero value is None (not
// rejected).
type Label uint8

// The rejection labels. Append new labels at the end (before numLabels):
// the numbers are not stored anywhere, the names are, and a name is never
// reused for another meaning.
const (
	None             Label = iota // not rejected
	NotTuple                      // not_tuple
	Version                       // version
	Malformed                     // malformed
	IntForFloat                   // int_for_float
	TooLarge                      // too_large
	IdentTooLong                  // ident_too_long
	NonFinite                     // non_finite
	InvalidValue                  // invalid_value
	TrailingBytes                 // trailing_bytes
	IdentityMismatch              // identity_mismatch
	TimestampFuture               // ts_future
	TimestampTooOld               // ts_too_old
	TimestampSeconds              // ts_seconds
	UnknownTopic                  // unknown_topic
	Unclassified                  // unclassified
	SessionStopped                // session_stopped
	numLabels
)

// PubackCode is the MQTT 5 PUBACK reason code a rejected QoS 1 publish gets,
// whatever its label: 0x99, payload format invalid.
const PubackCode = 0x99

// NumLabels is the number of labels including None, for arrays indexed by Label.
const NumLabels = int(numLabels)

// Sentinels for the gateway's checks that follow a successful decode. Wrap
// them with %w; FromError maps them to their labels.
var (
	ErrIdentityMismatch = errors.New("reject: payload identity does not match the topic")
	ErrTimestampFuture  = errors.New("reject: timestamp too far in the future")
	ErrTimestampTooOld  = errors.New("reject: timestamp before the minimum time")
	ErrTimestampSeconds = errors.New("reject: timestamp in seconds, not milliseconds")
	ErrUnknownTopic     = errors.New("reject: not an ingest topic")
	// ErrSessionStopped: an update for a charging session (OCPP
	// transaction) that already stopped (gateway/ocpp).
	ErrSessionStopped = errors.New("reject: charging session already stopped")
)

type info struct {
	name, message string
	sentinel      error
}

var labels = [numLabels]info{
	None:          {"", "", nil},
	NotTuple:      {"not_tuple", "the payload is empty or not a MessagePack array", wire.ErrNotTuple},
	Version:       {"version", "unknown or missing schema version (element 0); this gateway understands version 1", wire.ErrUnsupportedVersion},
	Malformed:     {"malformed", "not a valid tuple: truncated, wrong element count, wrong element type or integer out of range", wire.ErrMalformed},
	IntForFloat:   {"int_for_float", "an f64 element was sent as a MessagePack integer; encode it as float64 (80.0, not 80)", wire.ErrIntForFloat},
	TooLarge:      {"too_large", "an array declares more than 512 elements", wire.ErrTooLarge},
	IdentTooLong:  {"ident_too_long", "an identifier is longer than 64 bytes", wire.ErrIdentTooLong},
	NonFinite:     {"non_finite", "a float is NaN or ±Infinity; leave a signal without a valid value out", wire.ErrNonFinite},
	InvalidValue:  {"invalid_value", "a value outside its documented domain (enumeration, range, empty or too long text)", wire.ErrInvalidValue},
	TrailingBytes: {"trailing_bytes", "bytes follow the tuple; send exactly one MessagePack array per publish", wire.ErrTrailingBytes},
	IdentityMismatch: {"identity_mismatch", "the VIN or station id inside the payload differs from the one in the topic (the device's own id)",
		ErrIdentityMismatch},
	TimestampFuture: {"ts_future", "ts_ms is later than the gateway's clock plus the allowed clock skew", ErrTimestampFuture},
	TimestampTooOld: {"ts_too_old", "ts_ms is before the gateway's minimum time", ErrTimestampTooOld},
	TimestampSeconds: {"ts_seconds", "ts_ms looks like Unix seconds; send Unix milliseconds (seconds × 1000)",
		ErrTimestampSeconds},
	UnknownTopic: {"unknown_topic", "the topic is not one of the device's publish topics", ErrUnknownTopic},
	Unclassified: {"unclassified", "rejected for a reason this label set does not name (dead letters written by an older gateway release); see detail", nil},
	SessionStopped: {"session_stopped", "an update of a charging session (OCPP transaction) that has already stopped; kept here instead of reopening the session",
		ErrSessionStopped},
}

// All returns every label except None, in order.
func All() []Label {
	out := make([]Label, 0, NumLabels-1)
	for l := None + 1; l < numLabels; l++ {
		out = append(out, l)
	}
	return out
}

// String returns the label as it appears in metrics, dead letters and docs
// ("" for None).
func (l Label) String() string {
	if l >= numLabels {
		return Unclassified.String()
	}
	return labels[l].name
}

// Message is the human explanation of the label, the same for every
// rejection with that label.
func (l Label) Message() string {
	if l >= numLabels {
		return Unclassified.Message()
	}
	return labels[l].message
}

// Parse returns the label named s.
func Parse(s string) (Label, bool) {
	for l := None + 1; l < numLabels; l++ {
		if labels[l].name == s {
			return l, true
		}
	}
	return None, false
}

// FromError maps an error to its label: None for nil, Unclassified for an
// error that wraps none of the known sentinels. It does not allocate.
func FromError(err error) Label {
	if err == nil {
		return None
	}
	// Order matters where an error may wrap two sentinels' causes: the
	// specific classifications come before Malformed.
	for _, l := range [...]Label{Version, NotTuple, TrailingBytes, IdentTooLong, TooLarge, NonFinite, IntForFloat, InvalidValue,
		IdentityMismatch, TimestampFuture, TimestampTooOld, TimestampSeconds, UnknownTopic, SessionStopped, Malformed} {
		if errors.Is(err, labels[l].sentinel) {
			return l
		}
	}
	if errors.Is(err, msgp.ErrLimitExceeded) {
		return TooLarge
	}
	return Unclassified
}

// MaxDetail bounds the detail text kept with a dead letter.
const MaxDetail = 256

// Detail returns the part of err's text that is specific to this rejection
// (which element, what was wrong), without the sentinel's own text, bounded
// to MaxDetail bytes. Errors from decoders/wire and from the gateway's checks
// never put payload bytes in their text.
func Detail(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if l := FromError(err); l != Unclassified && labels[l].sentinel != nil {
		s = strings.TrimPrefix(s, labels[l].sentinel.Error())
		s = strings.TrimPrefix(s, ": ")
	}
	return truncate(s, MaxDetail)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a UTF-8 boundary.
	for n > 0 && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}

// Dead letters carry the reason in the spool record (gateway/spool/record) as
// "label" or "label: detail". Records written before this vocabulary existed
// carry a free-text Go error there; ParseReason reports them as Unclassified
// with the old text as the detail, or as the label whose sentinel text they
// start with.

// AppendReason appends the spool-record form of a rejection to dst.
func AppendReason(dst []byte, l Label, detail string) []byte {
	dst = append(dst, l.String()...)
	if detail != "" {
		dst = append(dst, ": "...)
		dst = append(dst, truncate(detail, MaxDetail)...)
	}
	return dst
}

// legacy maps the sentinel texts of older gateway releases to labels, for
// dead letters already in a spool when the gateway is upgraded.
var legacy = []struct {
	prefix string
	label  Label
}{
	{"wire: unsupported schema version", Version},
	{"wire: payload is not a MessagePack array", NotTuple},
	{"wire: trailing bytes after payload", TrailingBytes},
	{"wire: decode: wire: identifier too long", IdentTooLong},
	{"wire: decode: wire: non-finite float", NonFinite},
	{"wire: array longer than the limit", TooLarge},
	{"wire: invalid field value", InvalidValue},
	{"wire: malformed payload", Malformed},
	{"ingest: invalid value", InvalidValue},
	{"ingest: payload identity does not match the topic", IdentityMismatch},
}

// ParseReason splits a spool record's reason field into label and detail.
func ParseReason(b []byte) (Label, string) {
	s := string(b)
	name, detail, _ := strings.Cut(s, ": ")
	if l, ok := Parse(name); ok {
		return l, detail
	}
	for _, m := range legacy {
		if strings.HasPrefix(s, m.prefix) {
			return m.label, truncate(s, MaxDetail)
		}
	}
	return Unclassified, truncate(s, MaxDetail)
}
