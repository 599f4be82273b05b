package wire

import "errors"

// Errors returned by the decoders. Every error returned by a Decode function
// wraps exactly one of these values (test with errors.Is); the msgp error that
// caused it, when there is one, stays in the chain as well, so errors.Is also
// works on msgp's own values such as msgp.ErrShortBytes. Package
// decoders/reject maps them to the documented rejection labels. The text
// after the sentinel's own message names the element in protocol terms
// (docs/protocol.md) and never contains payload bytes.
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
	// ErrIntForFloat: an f64 element was sent as a MessagePack integer (the
	// usual mistake of encoders in dynamic languages, which write 80.0 as 80).
	ErrIntForFloat = errors.New("wire: f64 element sent as a MessagePack integer")
	// ErrMalformed: any other structural problem (truncated payload, wrong
	// element count, wrong element type, integer overflow, ...).
	ErrMalformed = errors.New("wire: malformed payload")
)

// MaxArrayLen is the largest element count accepted for any array inside a
// payload (signals, DTCs, freeze-frame signals, command parameters). It
// mirrors the `//msgp:limit arrays:512` directive in wire.go.
const MaxArrayLen = 512
