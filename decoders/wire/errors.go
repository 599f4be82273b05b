package wire

import (
	"errors"

	"github.com/tinylib/msgp/msgp"
)

// Errors returned by the decoders. Every error returned by a Decode function
// wraps exactly one of these values (test with errors.Is); the msgp error that
// caused it, when there is one, stays in the chain as well, so errors.Is also
// works on msgp's own values such as msgp.ErrShortBytes.
var (
	// ErrUnsupportedVersion: the first tuple element is not Version.
	ErrUnsupportedVersion = errors.New("wire: unsupported schema version")
	// ErrIdentTooLong: an identifier is longer than MaxIdentLen bytes.
	ErrIdentTooLong = errors.New("wire: identifier too long")
	// ErrTrailingBytes: the payload continues after the tuple.
	ErrTrailingBytes = errors.New("wire: trailing bytes after payload")
	// ErrNotTuple: the payload is not a MessagePack array.
	ErrNotTuple = errors.New("wire: payload is not a MessagePack array")
	// ErrTooLarge: an array declares more than MaxArrayLen elements.
	ErrTooLarge = errors.New("wire: array longer than the limit")
	// ErrNonFinite: a float is NaN or ±Inf.
	ErrNonFinite = errors.New("wire: non-finite float")
	// ErrInvalidValue: a field is well-formed MessagePack but outside its
	// documented domain (unknown enum value, latitude out of range, ...).
	ErrInvalidValue = errors.New("wire: invalid field value")
	// ErrMalformed: any other structural problem (truncated payload, wrong
	// element count, wrong element type, integer overflow, ...).
	ErrMalformed = errors.New("wire: malformed payload")
)

// MaxArrayLen is the largest element count accepted for any array inside a
// payload (signals, DTCs, freeze-frame signals, command parameters). It
// mirrors the `//msgp:limit arrays:512` directive in wire.go.
const MaxArrayLen = 512

// Reason maps an error returned by a Decode function to a short, stable
// label suitable for a metric label or a dead-letter record: "version",
// "not_tuple", "trailing_bytes", "ident_too_long", "too_large",
// "non_finite", "invalid_value", "malformed". It returns "" for a nil error
// and "other" for an error that did not come from this package.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrUnsupportedVersion):
		return "version"
	case errors.Is(err, ErrNotTuple):
		return "not_tuple"
	case errors.Is(err, ErrTrailingBytes):
		return "trailing_bytes"
	case errors.Is(err, ErrIdentTooLong):
		return "ident_too_long"
	case errors.Is(err, ErrTooLarge), errors.Is(err, msgp.ErrLimitExceeded):
		return "too_large"
	case errors.Is(err, ErrNonFinite):
		return "non_finite"
	case errors.Is(err, ErrInvalidValue):
		return "invalid_value"
	case errors.Is(err, ErrMalformed):
		return "malformed"
	default:
		return "other"
	}
}
