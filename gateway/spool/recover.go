package spool

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Recovery rules (Open):
//
//   - Every record of every segment is verified (length and CRC-32C).
//   - Only the last segment may end with a torn write: a roll-over fsyncs
//     the old segment before the next one is created. In the last segment,
//     everything from the first invalid frame on is cut (and logged): it was
//     never covered by a completed fsync, so never acknowledged.
//   - The last segment may be preallocated (prealloc.go): a file of exactly
//     SegmentBytes whose valid frames are followed by zeros. Those zeros are
//     space never written: not counted as cut, not logged. Non-zero bytes
//     before them (a torn frame, garbage) are overwritten with zeros and
//     fsynced, the file keeping its length, so that nothing of them can
//     reappear after the records appended next. A last segment of any other
//     length is truncated at its data end as before. Either way appends go
//     on at the data end, and the last segment is preallocated again.
//   - A last segment shorter than its header, or whose header is all zeros,
//     was created by a roll-over that did not reach its fsync: it is
//     reinitialized empty.
//   - An invalid frame or header in any other segment is an error
//     (*CorruptError with the position); the spool does not open.
//   - Record numbers must continue from one segment to the next; a missing
//     segment with records in it is an error. An empty middle segment (no
//     header) whose neighbours are continuous is deleted.
//   - Segments before every cursor are deleted.
//   - A cursor is the valid slot with the highest generation. A consumer with
//     no valid cursor starts at the oldest segment (everything retained is
//     replayed). A cursor inside a record falls back to the record's start,
//     one past the end of the data to the end (both logged).

// cursorLoad is a consumer's cursor during recovery.
type cursorLoad struct {
	c       *Consumer
	st      cursorState
	valid   bool
	created bool  // the cursor file did not exist
	bestOff int64 // last record boundary <= st.pos.Off found by the scan
	bestN   uint64
	found   bool
}

// scanned is a segment file during recovery.
type scanned struct {
	seg      *segment
	noHeader bool
	torn     int64 // noHeader: the bytes reinitSegment reports as cut (tornBytes)
}

func (s *Spool) recover() (err error) {
	o := s.opts
	loads := make([]*cursorLoad, len(o.Consumers))
	for i, name := range o.Consumers {
		c := &Consumer{s: s, name: name, notify: make(chan struct{}, 1)}
		s.cons = append(s.cons, c)
		ld, err := s.loadCursor(c)
		if err != nil {
			return err
		}
		loads[i] = ld
	}

	entries, err := os.ReadDir(o.Dir)
	if err != nil {
		return err
	}
	var seqs []uint64
	for _, e := range entries {
		if seq, ok := parseSegName(e.Name()); ok && e.Type().IsRegular() {
			seqs = append(seqs, seq)
		} else if name, ok := strings.CutSuffix(e.Name(), cursorSuffix); ok && !slices.Contains(o.Consumers, name) {
			s.log.Info("spool: ignoring cursor of a consumer not in Options.Consumers", "file", e.Name())
		}
	}
	slices.Sort(seqs)
	// A next segment file prepared but not renamed before a crash or Close.
	if err := os.Remove(filepath.Join(o.Dir, spareName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}

	// Segments before every cursor were consumed; their deletion did not
	// reach the disk before a crash.
	allValid, minSeg := true, uint64(0)
	for i, ld := range loads {
		allValid = allValid && ld.valid
		if i == 0 || ld.st.pos.Seg < minSeg {
			minSeg = ld.st.pos.Seg
		}
	}
	for allValid && len(seqs) > 1 && seqs[0] < minSeg {
		if err := os.Remove(filepath.Join(o.Dir, segName(seqs[0]))); err != nil {
			return err
		}
		s.log.Info("spool: deleted consumed segment", "seg", seqs[0])
		seqs = seqs[1:]
	}

	var list []scanned
	defer func() {
		if err != nil {
			for _, sc := range list {
				sc.seg.f.Close()
			}
		}
	}()
	br := bufio.NewReaderSize(nil, 1<<20)
	for i, seq := range seqs {
		sc, err := s.scanSegment(br, seq, i == len(seqs)-1, loads)
		if sc.seg != nil {
			list = append(list, sc)
		}
		if err != nil {
			return err
		}
	}

	// Continuity of record numbers; drop empty middle segments.
	var segs []*segment
	var drop []*segment
	for i, sc := range list {
		seg := sc.seg
		var prevEnd uint64
		if len(segs) > 0 {
			p := segs[len(segs)-1]
			prevEnd = p.firstRec + p.recs
		} else {
			for _, ld := range loads {
				if ld.valid {
					prevEnd = max(prevEnd, ld.st.rec)
				}
			}
		}
		if sc.noHeader {
			if i < len(list)-1 {
				drop = append(drop, seg)
				continue
			}
			if err := s.reinitSegment(seg, prevEnd, sc.torn); err != nil {
				return err
			}
		}
		if len(segs) > 0 && seg.firstRec != prevEnd {
			return &CorruptError{
				File: seg.f.Name(), Pos: Pos{Seg: seg.seq},
				Reason: fmt.Sprintf("segment starts at record %d, previous segment ends at record %d", seg.firstRec, prevEnd),
			}
		}
		segs = append(segs, seg)
	}
	for _, seg := range drop {
		seg.f.Close()
		if err := os.Remove(seg.f.Name()); err != nil {
			return err
		}
		s.log.Warn("spool: deleted empty segment without header", "file", seg.f.Name())
	}
	list = nil // from here on, files are in s.segs
	s.segs = segs

	if len(s.segs) == 0 {
		seq, first := uint64(1), uint64(0)
		for _, ld := range loads {
			if ld.valid {
				seq = max(seq, ld.st.pos.Seg+1)
				first = max(first, ld.st.rec)
			}
		}
		f, err := os.OpenFile(filepath.Join(o.Dir, segName(seq)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		seg := &segment{seq: seq, f: f}
		s.segs = append(s.segs, seg)
		if err := s.reinitSegment(seg, first, 0); err != nil {
			return err
		}
	}
	if err := s.preallocActive(); err != nil {
		return err
	}
	for i, seg := range s.segs {
		if i > 0 {
			p := s.segs[i-1]
			seg.base = p.abs(p.size)
		}
	}
	a := s.active()
	s.wbufOff = a.size
	s.writeAbs = a.abs(a.size)
	s.nextRec = a.firstRec + a.recs
	s.durable = Pos{Seg: a.seq, Off: a.size}

	created := false
	for _, ld := range loads {
		if err := s.placeCursor(ld); err != nil {
			return err
		}
		created = created || ld.created
	}
	if created && !o.NoSync {
		if err := s.dir.Sync(); err != nil {
			return err
		}
	}
	s.recomputeMinLocked()
	s.removeSegments(s.retainLocked())

	s.log.Info("spool: opened", "dir", o.Dir, "segments", len(s.segs),
		"first_record", s.segs[0].firstRec, "next_record", s.nextRec,
		"pending_bytes", s.writeAbs-s.minAbs, "truncated_bytes", s.truncated)
	return nil
}

// loadCursor opens (creating if needed) c's cursor file and reads the newest
// valid slot.
func (s *Spool) loadCursor(c *Consumer) (*cursorLoad, error) {
	path := filepath.Join(s.opts.Dir, c.name+cursorSuffix)
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	c.file = f
	ld := &cursorLoad{c: c, created: errors.Is(statErr, os.ErrNotExist)}
	buf := make([]byte, cursorFileSize)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("spool: read cursor: %w", err)
	}
	buf = buf[:n]
	for off := 0; off < len(buf); off += cursorSlotGap {
		if st, ok := decodeCursorSlot(buf[off:]); ok && (!ld.valid || st.gen > ld.st.gen) {
			ld.st, ld.valid = st, true
		}
	}
	if n > 0 && !ld.valid {
		s.log.Warn("spool: cursor file unreadable; the consumer replays every retained record", "file", path)
	}
	if n < cursorFileSize {
		// Fixed size, so that a commit's fdatasync never has a size
		// change to write.
		if err := f.Truncate(cursorFileSize); err != nil {
			return nil, err
		}
	}
	c.gen = ld.st.gen
	return ld, nil
}

// scanSegment opens and verifies one segment file. In the last segment an
// invalid frame and everything after it is truncated.
func (s *Spool) scanSegment(br *bufio.Reader, seq uint64, last bool, loads []*cursorLoad) (scanned, error) {
	path := filepath.Join(s.opts.Dir, segName(seq))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return scanned{}, err
	}
	seg := &segment{seq: seq, f: f}
	sc := scanned{seg: seg}
	fi, err := f.Stat()
	if err != nil {
		return sc, err
	}
	size := fi.Size()
	hdr := make([]byte, segHeaderSize)
	if size >= segHeaderSize {
		if _, err := f.ReadAt(hdr, 0); err != nil {
			return sc, err
		}
	}
	if size < segHeaderSize || allZero(hdr) {
		sc.noHeader = true
		seg.size, seg.alloc = size, size
		sc.torn, err = s.tornBytes(f, 0, size)
		return sc, err
	}
	hseq, first, reason := parseSegHeader(hdr)
	if reason == "" && hseq != seq {
		reason = fmt.Sprintf("header names segment %d", hseq)
	}
	if reason != "" {
		return sc, &CorruptError{File: path, Pos: Pos{Seg: seq}, Reason: reason}
	}
	seg.firstRec = first

	var mine []*cursorLoad
	for _, ld := range loads {
		if ld.valid && ld.st.pos.Seg == seq {
			mine = append(mine, ld)
		}
	}
	end, n, bad, err := scanFrames(br, f, size, func(off int64, n uint64) {
		for _, ld := range mine {
			if off <= ld.st.pos.Off {
				ld.bestOff, ld.bestN, ld.found = off, n, true
			}
		}
	})
	if err != nil {
		return sc, fmt.Errorf("spool: scan %s: %w", path, err)
	}
	seg.size, seg.alloc, seg.recs = end, size, n
	if bad != "" {
		if !last {
			return sc, &CorruptError{File: path, Pos: Pos{Seg: seq, Off: end}, Reason: bad}
		}
		// A torn tail holds only records whose fsync never completed. If a
		// consumer had already committed past the bad frame, the records
		// there were durable: that is corruption, not a torn write, and
		// truncating would silently drop acknowledged frames.
		for _, ld := range mine {
			if ld.st.pos.Off > end {
				return sc, &CorruptError{File: path, Pos: Pos{Seg: seq, Off: end},
					Reason: bad + " (a consumer committed past it: not a torn tail)"}
			}
		}
		torn, err := s.tornBytes(f, end, size)
		if err != nil {
			return sc, err
		}
		if size == s.opts.SegmentBytes {
			// Preallocated: zeros after the data are space never
			// written. Overwrite what a torn write left before them.
			if torn == 0 {
				return sc, nil
			}
			err = writeZeros(f, end, end+torn)
		} else {
			err = f.Truncate(end)
			seg.alloc = end
		}
		if err != nil {
			return sc, err
		}
		if err := fdatasync(f); err != nil {
			return sc, err
		}
		s.truncated += torn
		s.log.Warn("spool: truncated torn tail of the last segment",
			"file", path, "offset", end, "bytes", torn, "reason", bad, "records_kept", n)
	}
	return sc, nil
}

// preallocActive extends the active segment file to SegmentBytes
// (preallocate). Without the disk space it stays as long as its data, and
// the next append rolls over to a new segment, whose creation reports
// ErrFull while the disk is full: the spool still opens, so that the
// consumers can drain it (and free the space).
func (s *Spool) preallocActive() error {
	a := s.active()
	if a.alloc >= s.opts.SegmentBytes {
		return nil
	}
	err := preallocate(a.f, a.alloc, s.opts.SegmentBytes, s.opts.NoSync)
	if err == nil {
		a.alloc = s.opts.SegmentBytes
		return nil
	}
	if !isNoSpace(err) {
		return fmt.Errorf("spool: preallocate %s: %w", a.f.Name(), err)
	}
	if terr := a.f.Truncate(a.alloc); terr != nil {
		return fmt.Errorf("spool: preallocate %s: %w (and truncate back: %w)", a.f.Name(), err, terr)
	}
	s.log.Warn("spool: no disk space to preallocate the active segment; appends get ErrFull until a new segment fits",
		"file", a.f.Name(), "bytes", s.opts.SegmentBytes, "err", err)
	return nil
}

// scanFrames verifies the frames of a segment file of the given size. It
// calls at for every record boundary (the offset and the number of records
// before it), including the end of the valid data, and returns that end, the
// number of valid records, and why the scan stopped early ("" at the end of
// the file).
func scanFrames(br *bufio.Reader, f *os.File, size int64, at func(off int64, n uint64)) (end int64, n uint64, bad string, err error) {
	br.Reset(io.NewSectionReader(f, segHeaderSize, size-segHeaderSize))
	off := int64(segHeaderSize)
	var hdr [frameHeaderSize]byte
	for {
		at(off, n)
		left := size - off
		switch {
		case left == 0:
			return off, n, "", nil
		case left < frameHeaderSize:
			return off, n, fmt.Sprintf("partial frame header (%d bytes)", left), nil
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return off, n, "", err
		}
		ln := int64(binary.LittleEndian.Uint32(hdr[:]))
		if ln > left-frameHeaderSize {
			return off, n, fmt.Sprintf("frame length %d runs past the end of the file", ln), nil
		}
		crc := crc32.Update(0, castagnoli, hdr[:4])
		for rem := ln; rem > 0; {
			b, err := br.Peek(int(min(rem, int64(br.Size()))))
			if err != nil {
				return off, n, "", err
			}
			crc = crc32.Update(crc, castagnoli, b)
			if _, err := br.Discard(len(b)); err != nil {
				return off, n, "", err
			}
			rem -= int64(len(b))
		}
		if crc != binary.LittleEndian.Uint32(hdr[4:]) {
			return off, n, "checksum mismatch", nil
		}
		off += frameHeaderSize + ln
		n++
	}
}

// reinitSegment makes seg an empty segment whose first record is first;
// torn is the number of bytes it reports as cut (tornBytes of the file).
func (s *Spool) reinitSegment(seg *segment, first uint64, torn int64) error {
	if torn > 0 {
		s.truncated += torn
		s.log.Warn("spool: reinitialized last segment without a valid header", "file", seg.f.Name(), "bytes", torn)
	}
	if err := seg.f.Truncate(0); err != nil {
		return err
	}
	if _, err := seg.f.WriteAt(appendSegHeader(nil, seg.seq, first), 0); err != nil {
		return err
	}
	if !s.opts.NoSync {
		if err := fdatasync(seg.f); err != nil {
			return err
		}
		if err := s.dir.Sync(); err != nil {
			return err
		}
	}
	seg.size, seg.alloc, seg.firstRec, seg.recs = segHeaderSize, segHeaderSize, first, 0
	return nil
}

// placeCursor sets the consumer's committed and read positions from its
// loaded cursor and the recovered segments, persisting it if it changed.
func (s *Spool) placeCursor(ld *cursorLoad) error {
	c := ld.c
	first, last := s.segs[0], s.active()
	pos, rec := Pos{Seg: first.seq, Off: segHeaderSize}, first.firstRec
	if ld.valid {
		want := ld.st.pos
		i := s.segIndex(want.Seg)
		switch {
		case i == len(s.segs):
			pos, rec = Pos{Seg: last.seq, Off: last.size}, last.firstRec+last.recs
			s.log.Warn("spool: cursor beyond the last segment; moved to the end", "consumer", c.name, "cursor", want, "end", pos)
		case s.segs[i].seq != want.Seg:
			seg := s.segs[i]
			pos, rec = Pos{Seg: seg.seq, Off: segHeaderSize}, seg.firstRec
			if ld.st.rec < rec {
				s.log.Warn("spool: records were deleted before this consumer committed them",
					"consumer", c.name, "cursor", want, "records", rec-ld.st.rec)
			}
		default:
			seg := s.segs[i]
			switch {
			case want.Off >= seg.size:
				pos, rec = Pos{Seg: seg.seq, Off: seg.size}, seg.firstRec+seg.recs
				if want.Off > seg.size {
					s.log.Warn("spool: cursor beyond the recovered data; moved to the end",
						"consumer", c.name, "cursor", want, "end", pos)
				}
			case ld.found:
				pos, rec = Pos{Seg: seg.seq, Off: ld.bestOff}, seg.firstRec+ld.bestN
				if ld.bestOff != want.Off {
					s.log.Warn("spool: cursor inside a record; moved back to the record's start",
						"consumer", c.name, "cursor", want, "moved_to", pos)
				}
			default:
				pos, rec = Pos{Seg: seg.seq, Off: segHeaderSize}, seg.firstRec
			}
		}
	}
	c.committed, c.commitRec, c.readPos = pos, rec, pos
	c.commitAbs = s.segments(pos.Seg).abs(pos.Off)
	if ld.valid && ld.st.pos == pos && ld.st.rec == rec {
		return nil
	}
	st := cursorState{gen: c.gen + 1, pos: pos, rec: rec}
	if err := c.writeCursor(st); err != nil {
		return err
	}
	c.gen = st.gen
	return nil
}
