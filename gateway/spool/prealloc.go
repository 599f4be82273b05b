package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Preallocation.
//
// The active segment file is SegmentBytes long from the start: zeros
// really written to disk (not a hole, not an unwritten extent, whose first
// write would change the file's block map) and fdatasynced before a record
// goes into it. An append then overwrites allocated blocks without changing
// the file's length, so the fdatasync of a group commit flushes data only.
// With a growing file every fdatasync also had to write the inode (its new
// size) synchronously: ext4_sync_file → ext4_write_inode, a second I/O per
// group commit.
//
// On disk, the active segment is therefore: header, valid frames, then
// zeros up to SegmentBytes (after a crash also a torn frame or garbage
// before the zeros). A zero frame header never verifies (its CRC field is 0,
// the CRC of a zero length is not), so recovery finds the end of the data
// exactly as before. A sealed segment is truncated to its data end before its
// successor exists, and Close truncates the active one, so every segment but
// the active one, and every segment of a cleanly closed spool, ends with its
// last frame, as before.
//
// The next segment is prepared ahead: once the active segment is half full a
// goroutine creates spareName, fills it and fdatasyncs it; the roll-over
// renames it. A full disk is thus reported when that file is created
// (fallocate fails at once), as ErrFull from the append that needs the next
// segment, and never by a write into a segment.

// spareName is the next segment file while it is being prepared (it is not a
// segment name, so recovery deletes a leftover one).
const spareName = "next-segment.tmp"

// testHookPreallocate, when set (tests only, never concurrently with a
// spool), runs first in preallocate; an error it returns is preallocate's.
var testHookPreallocate func(f *os.File) error

// zeroBlock is what preallocate writes (read only).
var zeroBlock = make([]byte, 256<<10)

// preallocate extends f, whose length is from, to length to with zeros on
// disk and fdatasyncs it. With noSync (tests, benchmarks of the spool's own
// overhead) it only sets the length: a hole, no I/O.
func preallocate(f *os.File, from, to int64, noSync bool) error {
	if to <= from {
		return nil
	}
	if testHookPreallocate != nil {
		if err := testHookPreallocate(f); err != nil {
			return err
		}
	}
	if noSync {
		return f.Truncate(to)
	}
	if err := reserve(f, to); err != nil {
		return err
	}
	if err := writeZeros(f, from, to); err != nil {
		return err
	}
	return fdatasync(f)
}

// writeZeros overwrites f's bytes [from, to) with zeros.
func writeZeros(f *os.File, from, to int64) error {
	for off := from; off < to; {
		n := min(int64(len(zeroBlock)), to-off)
		if _, err := f.WriteAt(zeroBlock[:n], off); err != nil {
			return fmt.Errorf("spool: write zeros to %s: %w", f.Name(), err)
		}
		off += n
	}
	return nil
}

// dataEnd returns the offset just past the last non-zero byte of f in
// [from, to), or from if they are all zero.
func dataEnd(f *os.File, from, to int64) (int64, error) {
	buf := make([]byte, min(to-from, 1<<20))
	end := from
	for off := from; off < to; {
		b := buf[:min(int64(len(buf)), to-off)]
		if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("spool: read %s: %w", f.Name(), err)
		}
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] != 0 {
				end = off + int64(i) + 1
				break
			}
		}
		off += int64(len(b))
	}
	return end, nil
}

// tornBytes is the number of bytes after the valid data (at end) of a last
// segment file of length size that recovery reports as cut: all of them,
// except in a file of exactly SegmentBytes (preallocated), where the zeros
// after the last non-zero byte are space never written, not a torn write.
func (s *Spool) tornBytes(f *os.File, end, size int64) (int64, error) {
	if size != s.opts.SegmentBytes {
		return size - end, nil
	}
	g, err := dataEnd(f, end, size)
	return g - end, err
}

// prepareSpare creates spareName at its full length (preallocate). On error
// the file is removed, so that its space is given back.
func (s *Spool) prepareSpare() error {
	path := filepath.Join(s.opts.Dir, spareName)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	err = preallocate(f, 0, s.opts.SegmentBytes, s.opts.NoSync)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path) // the preallocation error is the one to report
		return err
	}
	return nil
}

// startSpareLocked prepares the next segment file in the background; the
// roll-over takes the outcome from s.spare.
func (s *Spool) startSpareLocked() {
	ch := make(chan error, 1)
	s.spare = ch
	s.ops.Add(1)
	go func() {
		defer s.ops.Done()
		ch <- s.prepareSpare()
	}()
}

// takeSpareLocked returns once the next segment file is ready at spareName:
// it waits for the background preparation (which does not take s.mu), or
// prepares the file itself if none was started. A full disk is reported as
// ErrFull (and counted in Stats().Full); nothing has changed then.
func (s *Spool) takeSpareLocked() error {
	ch := s.spare
	s.spare = nil
	var err error
	if ch != nil {
		err = <-ch
	}
	if ch == nil || err != nil {
		// None prepared, or the background preparation failed (perhaps
		// on a disk that consumers have freed since): prepare it now,
		// under s.mu. After a failure for lack of space, at most once a
		// second: on a filesystem without fallocate a failed attempt
		// writes zeros until the disk is full, and every append of a full
		// spool would repeat it.
		now := s.opts.clock()
		if s.spareErr != nil && now.Sub(s.spareFailed) < time.Second {
			err = s.spareErr
		} else {
			err = s.prepareSpare()
			s.spareErr, s.spareFailed = nil, time.Time{}
			if err != nil && isNoSpace(err) {
				s.spareErr, s.spareFailed = err, now
			}
		}
	}
	switch {
	case err == nil:
		return nil
	case isNoSpace(err):
		s.full++
		return fmt.Errorf("%w: no disk space for the next segment (%d bytes): %w", ErrFull, s.opts.SegmentBytes, err)
	}
	return fmt.Errorf("spool: create segment: %w", err)
}

// removeSpare deletes a spare segment file prepared but not used (Close).
func (s *Spool) removeSpare() {
	if s.spare == nil {
		return
	}
	if err := <-s.spare; err != nil { // Close has waited for the preparation (s.ops)
		s.log.Debug("spool: spare segment file was not prepared", "err", err) // a file it left is removed below
	}
	s.spare = nil
	if err := os.Remove(filepath.Join(s.opts.Dir, spareName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("spool: delete spare segment file", "err", err)
	}
}

// trimActive truncates the active segment to its data end (Close), so that
// a cleanly closed spool holds no preallocated space. A failure loses
// nothing (recovery takes the zeros for space never written); it is logged.
func (s *Spool) trimActive() {
	a := s.active()
	if a.alloc <= a.size {
		return
	}
	err := a.f.Truncate(a.size)
	if err == nil && !s.opts.NoSync {
		err = fdatasync(a.f)
	}
	if err != nil {
		s.log.Warn("spool: trim preallocated space of the active segment", "file", a.f.Name(), "err", err)
		return
	}
	a.alloc = a.size
}
