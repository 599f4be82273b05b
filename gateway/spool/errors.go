package spool

import (
	"errors"
	"fmt"
)

// Errors returned by the spool. Compare with errors.Is: most of them are
// wrapped with context (a file name, a position, the underlying OS error).
var (
	// ErrClosed is returned by every operation once Close has been called.
	// Append never returns ErrClosed for a record it accepted: a record
	// accepted before Close is covered by the final fsync of Close.
	ErrClosed = errors.New("spool: closed")

	// ErrFull is returned by Append and AppendAsync, without waiting, when
	// accepting the record would make the bytes not yet committed by every
	// consumer exceed Options.MaxBytes.
	ErrFull = errors.New("spool: full")
	// ErrTimeout is returned by AppendTimeout when the group commit covering
	// the record did not complete in time (see AppendTimeout).
	ErrTimeout = errors.New("spool: durable append timed out")

	// ErrTooLarge is returned by Append and AppendAsync for a record longer
	// than Options.MaxRecord.
	ErrTooLarge = errors.New("spool: record too large")

	// ErrUnknownConsumer is returned by Spool.Consumer for a name that is not
	// in Options.Consumers.
	ErrUnknownConsumer = errors.New("spool: unknown consumer")

	// ErrCorrupt reports a record or file that fails verification and cannot
	// be explained by an interrupted write (see CorruptError). The spool does
	// not skip it: an operator has to look at it.
	ErrCorrupt = errors.New("spool: corrupt data")

	// ErrBadPos is returned by Consumer.Commit for a position that is not the
	// Next of a record delivered by Read since the last Commit or Rewind.
	ErrBadPos = errors.New("spool: position is not a record boundary delivered by Read")

	// ErrFailed wraps the I/O error (write or fsync) that put the spool in the
	// failed state. After a failed write or fsync the kernel may have dropped
	// dirty pages, so the spool refuses further appends; reopen it (the
	// recovery at Open decides what is on disk).
	ErrFailed = errors.New("spool: failed after an I/O error")

	// ErrLocked is returned by Open when another Spool (in this or another
	// process) has the directory open.
	ErrLocked = errors.New("spool: directory in use")

	// ErrInvalidOptions is returned by Open for inconsistent Options.
	ErrInvalidOptions = errors.New("spool: invalid options")
)

// CorruptError describes data that failed verification. It matches
// ErrCorrupt with errors.Is; use errors.As to get the position.
type CorruptError struct {
	File   string // path of the file
	Pos    Pos    // segment and byte offset of the bad record or header
	Reason string // what failed, e.g. "checksum mismatch"
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("spool: corrupt data in %s at %v: %s", e.File, e.Pos, e.Reason)
}

// Unwrap returns ErrCorrupt.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }
