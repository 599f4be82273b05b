package wire

import "errors"

// Errors returned by the decoders. Decode functions wrap msgp errors with %w,
// so errors.Is works on these values and on msgp's own error types.
var (
	ErrUnsupportedVersion = errors.New("wire: unsupported schema version")
	ErrIdentTooLong       = errors.New("wire: identifier too long")
	ErrTrailingBytes      = errors.New("wire: trailing bytes after payload")
	ErrNotTuple           = errors.New("wire: payload is not a MessagePack array")
)
