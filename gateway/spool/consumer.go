package spool

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"slices"
	"sync"
)

// readChunkMax bounds the bytes one Read pulls from disk (a single record
// larger than that is still read whole).
const readChunkMax = 16 << 20

// Record is one record handed to a consumer.
//
// Data is owned by the Consumer: it points into the consumer's read buffer
// and is valid only until the next call to Read on the same Consumer. Copy
// it to keep it longer. Data is capped (cap == len), so appending to it
// copies instead of overwriting the following record.
type Record struct {
	Pos  Pos    // where the record starts
	Next Pos    // where the next record starts; pass it to Commit
	Data []byte // the payload as appended
}

// Consumer is a named cursor over the spool. Read and Rewind must be called
// from one goroutine at a time (the consumer's reader); Commit and Committed
// may be called from any goroutine, also while a Read is blocked.
type Consumer struct {
	s    *Spool
	name string
	file *os.File // the cursor file

	// notify (capacity 1) gets a token whenever the durable position
	// advances; a Read with nothing to return waits for it.
	notify chan struct{}

	commitMu sync.Mutex // serializes Commit; guards slot
	slot     [cursorSlotSize]byte

	// Guarded by s.mu.
	gen       uint64 // generation of the last cursor write
	committed Pos
	commitRec uint64 // records before committed
	commitAbs int64  // committed as a spool-wide byte count (segment.abs)
	readPos   Pos
	marks     []Pos // Next of each record delivered since committed, ascending

	buf []byte // read buffer, owned by the reading goroutine
}

// Name returns the consumer's name.
func (c *Consumer) Name() string { return c.name }

// Read blocks until at least one record after the consumer's read position is
// durable (or ctx is done, or the spool is closed), then fills dst (reset to
// length 0) with up to max records and at most maxBytes of payload in total,
// always at least one record, and advances the in-memory read position. max
// below 1 counts as 1. A batch never spans two segments, so it may be shorter
// than the limits allow.
//
// The Data of the returned records points into a buffer owned by the
// Consumer and is valid until the next Read on this Consumer. In steady
// state (dst with enough capacity, records no larger than before) Read does
// not allocate.
//
// Errors: ctx.Err(), ErrClosed, a *CorruptError if a durable record fails its
// checksum (the read position stays before it), or an I/O error.
func (c *Consumer) Read(ctx context.Context, dst []Record, max int, maxBytes int) ([]Record, error) {
	dst = dst[:0]
	s := c.s
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return dst, ErrClosed
		}
		seg, end := s.readableLocked(&c.readPos)
		if seg != nil {
			start := c.readPos
			f := seg.f
			s.ops.Add(1)
			s.mu.Unlock()

			var err error
			dst, err = c.fill(f, start, end, dst, max, maxBytes)

			s.mu.Lock()
			if len(dst) > 0 && c.readPos == start {
				c.readPos = dst[len(dst)-1].Next
				for i := range dst {
					c.marks = append(c.marks, dst[i].Next)
				}
			}
			closed := s.closed
			s.mu.Unlock()
			s.ops.Done()
			if err != nil && closed {
				err = ErrClosed
			}
			return dst, err
		}
		s.mu.Unlock()
		select {
		case <-c.notify:
		case <-ctx.Done():
			return dst, ctx.Err()
		case <-s.closing:
			return dst, ErrClosed
		}
	}
}

// fill reads records of one segment from start up to end (exclusive, a
// durable record boundary) into dst.
func (c *Consumer) fill(f *os.File, start Pos, end int64, dst []Record, maxN, maxBytes int) ([]Record, error) {
	maxN = max(maxN, 1)
	mb := min(int64(max(maxBytes, 0)), readChunkMax)
	want := mb + frameHeaderSize*int64(min(maxN, 1<<16))
	want = min(max(want, frameHeaderSize), readChunkMax, end-start.Off)
	buf := c.grow(int(want))
	if _, err := f.ReadAt(buf, start.Off); err != nil {
		return dst, fmt.Errorf("spool: read %s at %v: %w", f.Name(), start, err)
	}
	off, total := 0, 0
	for len(dst) < maxN {
		pos := Pos{Seg: start.Seg, Off: start.Off + int64(off)}
		if len(buf)-off < frameHeaderSize {
			if len(dst) == 0 {
				return dst, &CorruptError{File: f.Name(), Pos: pos, Reason: "partial frame header before the durable end"}
			}
			break
		}
		n := int(binary.LittleEndian.Uint32(buf[off:]))
		if int64(n) > end-pos.Off-frameHeaderSize {
			if len(dst) == 0 {
				return dst, &CorruptError{File: f.Name(), Pos: pos, Reason: fmt.Sprintf("frame length %d runs past the durable end", n)}
			}
			break
		}
		if len(dst) > 0 && total+n > maxBytes {
			break
		}
		if off+frameHeaderSize+n > len(buf) {
			if len(dst) > 0 {
				break
			}
			// The first record is larger than the chunk: read it whole.
			buf = c.grow(frameHeaderSize + n)
			if _, err := f.ReadAt(buf, pos.Off); err != nil {
				return dst, fmt.Errorf("spool: read %s at %v: %w", f.Name(), pos, err)
			}
			off = 0
		}
		payload := buf[off+frameHeaderSize : off+frameHeaderSize+n : off+frameHeaderSize+n]
		crc := crc32.Update(crc32.Update(0, castagnoli, buf[off:off+4]), castagnoli, payload)
		if crc != binary.LittleEndian.Uint32(buf[off+4:]) {
			if len(dst) == 0 {
				return dst, &CorruptError{File: f.Name(), Pos: pos, Reason: "checksum mismatch"}
			}
			break // deliver the good records; the next Read reports it
		}
		dst = append(dst, Record{
			Pos:  pos,
			Next: Pos{Seg: start.Seg, Off: pos.Off + frameHeaderSize + int64(n)},
			Data: payload,
		})
		off += frameHeaderSize + n
		total += n
	}
	return dst, nil
}

// grow returns the read buffer with length n, reallocating only when it is
// too small.
func (c *Consumer) grow(n int) []byte {
	if cap(c.buf) < n {
		c.buf = make([]byte, n, max(n, 2*cap(c.buf)))
	}
	return c.buf[:n]
}

// Commit persists that every record before next (a Record.Next returned by
// Read since the last Commit or Rewind) has been processed: the cursor file
// is overwritten and fdatasynced before Commit returns. Segments that every
// consumer has committed past are deleted before Commit returns. Committing a
// position at or before the committed one is a no-op. Errors: ErrBadPos,
// ErrClosed, or an I/O error (the committed position is then unchanged).
func (c *Consumer) Commit(next Pos) error {
	s := c.s
	c.commitMu.Lock()
	defer c.commitMu.Unlock()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if !c.committed.Less(next) {
		s.mu.Unlock()
		return nil
	}
	i, found := slices.BinarySearchFunc(c.marks, next, comparePos)
	seg := s.segments(next.Seg)
	if !found || seg == nil {
		err := fmt.Errorf("%w: %v (consumer %s committed %v, read %v)", ErrBadPos, next, c.name, c.committed, c.readPos)
		s.mu.Unlock()
		return err
	}
	st := cursorState{gen: c.gen + 1, pos: next, rec: c.commitRec + uint64(i) + 1}
	abs := seg.abs(next.Off)
	s.ops.Add(1)
	s.mu.Unlock()
	defer s.ops.Done()

	if err := c.writeCursor(st); err != nil {
		return err
	}

	s.mu.Lock()
	c.gen, c.committed, c.commitRec, c.commitAbs = st.gen, st.pos, st.rec, abs
	if j, ok := slices.BinarySearchFunc(c.marks, next, comparePos); ok {
		c.marks = c.marks[:copy(c.marks, c.marks[j+1:])]
	} else if c.readPos.Less(next) {
		// A Rewind ran while the cursor was written.
		c.readPos = next
		c.marks = c.marks[:0]
	}
	s.recomputeMinLocked()
	removed := s.retainLocked()
	s.mu.Unlock()
	s.removeSegments(removed)
	return nil
}

// writeCursor overwrites the cursor slot of st.gen and fdatasyncs the file.
// Callers hold commitMu (or are Open).
func (c *Consumer) writeCursor(st cursorState) error {
	encodeCursorSlot(&c.slot, st)
	if _, err := c.file.WriteAt(c.slot[:], int64(st.gen%2)*cursorSlotGap); err != nil {
		return fmt.Errorf("spool: write cursor: %w", err)
	}
	if !c.s.opts.NoSync {
		if err := fdatasync(c.file); err != nil {
			return fmt.Errorf("spool: sync cursor: %w", err)
		}
	}
	return nil
}

// Rewind resets the in-memory read position to the committed position, so
// the next Read delivers again, in order, every record not committed (for a
// retry after a failed downstream write).
func (c *Consumer) Rewind() {
	c.s.mu.Lock()
	c.readPos = c.committed
	c.marks = c.marks[:0]
	c.s.mu.Unlock()
}

// Committed returns the position up to which the consumer has committed.
func (c *Consumer) Committed() Pos {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.committed
}

func comparePos(a, b Pos) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

// segments returns the segment with sequence number seq (nil if none).
func (s *Spool) segments(seq uint64) *segment {
	i := s.segIndex(seq)
	if i < len(s.segs) && s.segs[i].seq == seq {
		return s.segs[i]
	}
	return nil
}

// segIndex returns the index of the first segment whose seq is >= seq.
func (s *Spool) segIndex(seq uint64) int {
	i, _ := slices.BinarySearchFunc(s.segs, seq, func(seg *segment, seq uint64) int {
		switch {
		case seg.seq < seq:
			return -1
		case seg.seq > seq:
			return 1
		}
		return 0
	})
	return i
}

// readableLocked returns the segment holding the durable records at or after
// *p and the end of its durable part, or nil when there is nothing to read.
// It moves *p past the end of sealed segments (and out of deleted ones).
func (s *Spool) readableLocked(p *Pos) (*segment, int64) {
	for i := s.segIndex(p.Seg); i < len(s.segs); i++ {
		seg := s.segs[i]
		if seg.seq != p.Seg {
			*p = Pos{Seg: seg.seq, Off: segHeaderSize}
		}
		var end int64
		switch {
		case seg.seq < s.durable.Seg:
			end = seg.size // sealed, hence complete and durable
		case seg.seq == s.durable.Seg:
			end = s.durable.Off
		default:
			return nil, 0
		}
		if p.Off < end {
			return seg, end
		}
		if seg.seq == s.durable.Seg {
			return nil, 0
		}
	}
	return nil, 0
}
