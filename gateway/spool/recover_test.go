package spool

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFixture creates a closed spool with n records and returns its
// directory and the positions of the records.
func writeFixture(t *testing.T, o Options, n int) (string, []Pos) {
	t.Helper()
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	ps := appendN(t, s, 0, n)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return o.Dir, ps
}

// reopenAndCheck opens dir and checks that it holds exactly records 0..n-1,
// that a new record can be appended after them, and returns the stats.
func reopenAndCheck(t *testing.T, dir string, n int) Stats {
	t.Helper()
	s, err := Open(opts(dir))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	st := s.Stats()
	if _, err := s.Append(payload(n)); err != nil {
		t.Fatalf("Append after recovery: %v", err)
	}
	got, _ := readN(t, mustConsumer(t, s, "influx"), n+1, 1000, 1<<20)
	checkPayloads(t, got, 0)
	nothingToRead(t, mustConsumer(t, s, "influx"))
	return st
}

func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	files := segFiles(t, dir)
	return files[len(files)-1]
}

// TestTornTailAtEveryOffset truncates the final record at every byte offset,
// and corrupts every byte of it, each on a copy of the directory.
func TestTornTailAtEveryOffset(t *testing.T) {
	o := opts(t.TempDir())
	o.SegmentBytes = 200 // several segments; only the last one is torn
	const n = 12
	src, ps := writeFixture(t, o, n)
	seg := filepath.Base(lastSegment(t, src))
	full, err := os.ReadFile(filepath.Join(src, seg))
	if err != nil {
		t.Fatal(err)
	}
	start := ps[n-1].Off
	if ps[n-1].Seg != ps[n-2].Seg {
		t.Fatal("fixture: the last two records should share a segment")
	}
	for cut := start; cut < int64(len(full)); cut++ {
		dir := copyDir(t, src)
		if err := os.Truncate(filepath.Join(dir, seg), cut); err != nil {
			t.Fatal(err)
		}
		if st := reopenAndCheck(t, dir, n-1); st.Truncated != cut-start {
			t.Fatalf("cut at %d: Truncated = %d, want %d", cut, st.Truncated, cut-start)
		}
	}
	for off := start; off < int64(len(full)); off++ {
		dir := copyDir(t, src)
		b := bytes.Clone(full)
		b[off] ^= 0x5a
		if err := os.WriteFile(filepath.Join(dir, seg), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if st := reopenAndCheck(t, dir, n-1); st.Truncated != int64(len(full))-start {
			t.Fatalf("byte %d flipped: Truncated = %d, want %d", off, st.Truncated, int64(len(full))-start)
		}
	}
}

func TestGarbageTail(t *testing.T) {
	o := opts(t.TempDir())
	src, _ := writeFixture(t, o, 20)
	rng := rand.New(rand.NewPCG(7, 7))
	for _, size := range []int{1, 7, 8, 9, 100, 4096} {
		dir := copyDir(t, src)
		garbage := make([]byte, size)
		for i := range garbage {
			garbage[i] = byte(rng.Uint32())
		}
		f, err := os.OpenFile(lastSegment(t, dir), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(garbage)
		f.Close()
		if st := reopenAndCheck(t, dir, 20); st.Truncated != int64(size) {
			t.Fatalf("%d bytes of garbage: Truncated = %d", size, st.Truncated)
		}
	}
	// Zeros, as left by a file extended without its data reaching disk.
	dir := copyDir(t, src)
	f, err := os.OpenFile(lastSegment(t, dir), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 512))
	f.Close()
	if st := reopenAndCheck(t, dir, 20); st.Truncated != 512 {
		t.Fatalf("zero tail: Truncated = %d", st.Truncated)
	}
}

func TestTruncationIsLogged(t *testing.T) {
	src, ps := writeFixture(t, opts(t.TempDir()), 5)
	if err := os.Truncate(lastSegment(t, src), ps[4].Off+3); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	o := opts(src)
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := mustOpen(t, o)
	s.Close()
	if !strings.Contains(logs.String(), "truncated torn tail") || !strings.Contains(logs.String(), "bytes=3") {
		t.Fatalf("log: %s", logs.String())
	}
}

func TestZeroLengthSegment(t *testing.T) {
	o := opts(t.TempDir())
	o.SegmentBytes = 200
	src, ps := writeFixture(t, o, 10)
	last := ps[9].Seg

	// A roll-over that crashed right after creating the file.
	dir := copyDir(t, src)
	if err := os.WriteFile(filepath.Join(dir, segName(last+1)), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if st := reopenAndCheck(t, dir, 10); st.Truncated != 0 {
		t.Fatalf("Truncated = %d", st.Truncated)
	}
	// And a few header bytes.
	dir = copyDir(t, src)
	if err := os.WriteFile(filepath.Join(dir, segName(last+1)), []byte(segMagic[:5]), 0o644); err != nil {
		t.Fatal(err)
	}
	if st := reopenAndCheck(t, dir, 10); st.Truncated != 5 {
		t.Fatalf("Truncated = %d", st.Truncated)
	}
	// The only segment, empty.
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, segName(1)), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	reopenAndCheck(t, dir, 0)
	// An empty segment between two complete ones (records continue).
	dir = copyDir(t, src)
	if err := os.WriteFile(filepath.Join(dir, segName(last+1)), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b := appendSegHeader(nil, last+2, 10)
	if err := os.WriteFile(filepath.Join(dir, segName(last+2)), b, 0o644); err != nil {
		t.Fatal(err)
	}
	reopenAndCheck(t, dir, 10)
	if _, err := os.Stat(filepath.Join(dir, segName(last+1))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty middle segment not deleted: %v", err)
	}
}

func TestCorruptOlderSegmentIsAnError(t *testing.T) {
	o := opts(t.TempDir())
	o.SegmentBytes = 200
	src, ps := writeFixture(t, o, 20)
	victim := ps[1] // second record of the first segment
	if victim.Seg == ps[19].Seg {
		t.Fatal("fixture: need several segments")
	}
	path := filepath.Join(src, segName(victim.Seg))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[victim.Off+frameHeaderSize+2] ^= 1
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Open(opts(src))
	var ce *CorruptError
	if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || ce.Pos != victim {
		t.Fatalf("Open = %v, want a CorruptError at %v", err, victim)
	}
	t.Log(err)
}

func TestMissingSegmentIsAnError(t *testing.T) {
	o := opts(t.TempDir())
	o.SegmentBytes = 200
	src, ps := writeFixture(t, o, 20)
	if ps[19].Seg-ps[0].Seg < 2 {
		t.Fatal("fixture: need three segments")
	}
	if err := os.Remove(filepath.Join(src, segName(ps[0].Seg+1))); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(opts(src)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open = %v, want ErrCorrupt", err)
	}
}

// TestDeletedSegmentComesBack: a consumed segment whose deletion was lost in
// a crash is deleted again at Open.
func TestDeletedSegmentComesBack(t *testing.T) {
	dir := t.TempDir()
	o := opts(dir)
	o.SegmentBytes = 200
	s := mustOpen(t, o)
	appendN(t, s, 0, 20)
	first := filepath.Join(dir, segName(1))
	saved, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	var next Pos
	for _, name := range []string{"influx", "nats"} {
		c := mustConsumer(t, s, name)
		_, next = readN(t, c, 15, 100, 1<<20)
		if err := c.Commit(next); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if _, err := os.Stat(first); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("consumed segment not deleted")
	}
	if err := os.WriteFile(first, saved, 0o644); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, o)
	if _, err := os.Stat(first); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("resurrected segment not deleted at Open")
	}
	got, _ := readN(t, mustConsumer(t, s, "nats"), 5, 100, 1<<20)
	checkPayloads(t, got, 15)
}

func writeCursorFile(t *testing.T, dir, name string, pos Pos, rec uint64) {
	t.Helper()
	var slot [cursorSlotSize]byte
	encodeCursorSlot(&slot, cursorState{gen: 1, pos: pos, rec: rec})
	b := make([]byte, cursorFileSize)
	copy(b[cursorSlotGap:], slot[:])
	if err := os.WriteFile(filepath.Join(dir, name+cursorSuffix), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCursorRepair: cursors that do not match the recovered data are moved
// to a safe place (never past an unread record) instead of failing Open.
func TestCursorRepair(t *testing.T) {
	o := opts(t.TempDir())
	src, ps := writeFixture(t, o, 10)
	fi, err := os.Stat(lastSegment(t, src))
	if err != nil {
		t.Fatal(err)
	}
	end := Pos{Seg: ps[9].Seg, Off: fi.Size()}
	for _, tc := range []struct {
		name   string
		cursor Pos
		want   Pos
		replay int // first record delivered again
	}{
		{"inside a record", Pos{Seg: ps[3].Seg, Off: ps[3].Off + 5}, ps[3], 3},
		{"past the data", Pos{Seg: end.Seg, Off: end.Off + 100}, end, 10},
		{"past the last segment", Pos{Seg: end.Seg + 5, Off: 100}, end, 10},
		{"before the first segment", Pos{Seg: 0, Off: 100}, ps[0], 0},
		{"exact", ps[6], ps[6], 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, src)
			writeCursorFile(t, dir, "influx", tc.cursor, 42)
			s := mustOpen(t, opts(dir))
			c := mustConsumer(t, s, "influx")
			if c.Committed() != tc.want {
				t.Fatalf("committed %v, want %v", c.Committed(), tc.want)
			}
			if n := 10 - tc.replay; n > 0 {
				got, _ := readN(t, c, n, 100, 1<<20)
				checkPayloads(t, got, tc.replay)
			}
			nothingToRead(t, c)
			for _, cs := range s.Stats().Consumers {
				if cs.Name == "influx" && cs.LagRecords != uint64(10-tc.replay) {
					t.Fatalf("lag %+v", cs)
				}
			}
			s.Close()
			// The repaired cursor was persisted.
			s = mustOpen(t, opts(dir))
			if got := mustConsumer(t, s, "influx").Committed(); got != tc.want {
				t.Fatalf("committed %v after second reopen", got)
			}
		})
	}
}

func TestReadReportsCorruption(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, opts(dir))
	ps := appendN(t, s, 0, 5)
	f, err := os.OpenFile(filepath.Join(dir, segName(ps[2].Seg)), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{'#'}, ps[2].Off+frameHeaderSize+1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c := mustConsumer(t, s, "influx")
	got, _ := readN(t, c, 2, 10, 1<<20) // the good records before it
	checkPayloads(t, got, 0)
	for i := 0; i < 2; i++ { // and it stays there
		_, err = c.Read(context.Background(), nil, 10, 1<<20)
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.Pos != ps[2] {
			t.Fatalf("Read = %v, want CorruptError at %v", err, ps[2])
		}
	}
}

// TestCorruptionBeforeCommittedRecordsIsNotTruncated: a bad frame in the last
// segment *before* records a consumer already committed cannot be a torn
// write (those records were durable): Open must report it, not silently drop
// acknowledged records.
func TestCorruptionBeforeCommittedRecordsIsNotTruncated(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, Consumers: []string{"only"}, NoSync: true, Logger: quiet}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := s.Append(bytes.Repeat([]byte{byte('a' + i)}, 100)); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := s.Consumer("only")
	recs, err := c.Read(context.Background(), nil, 5, 1<<20)
	if err != nil || len(recs) != 5 {
		t.Fatalf("read %d %v", len(recs), err)
	}
	if err := c.Commit(recs[4].Next); err != nil {
		t.Fatal(err)
	}
	firstPayload := recs[0].Pos
	s.Close()
	path := filepath.Join(dir, segName(firstPayload.Seg))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[firstPayload.Off+frameHeaderSize+10] ^= 0xFF // flip a byte inside record 0
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(o); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("want ErrCorrupt, got %v", err)
	}
}
