package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// preallocSegment is the SegmentBytes of the preallocation tests: small, so
// that a crash image is cheap to copy, and large enough for the fixtures'
// records to share one segment.
const preallocSegment = 4096

func preallocOpts(dir string) Options {
	o := opts(dir)
	o.SegmentBytes = preallocSegment
	return o
}

func fileLen(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// crashImage appends n records to a new spool and copies its directory while
// the spool is still open: the files as a crash would leave them (the active
// segment preallocated, zeros after its last record). It returns the copy,
// the last segment's file name in it, and the records' positions.
func crashImage(t *testing.T, n int) (string, string, []Pos) {
	t.Helper()
	o := preallocOpts(t.TempDir())
	s := mustOpen(t, o)
	ps := appendN(t, s, 0, n)
	dir := copyDir(t, o.Dir)
	s.Close()
	seg := filepath.Join(dir, segName(ps[n-1].Seg))
	if got := fileLen(t, seg); got != preallocSegment {
		t.Fatalf("active segment is %d bytes long, want it preallocated to %d", got, preallocSegment)
	}
	return dir, seg, ps
}

// reopenAppendReopen opens dir and checks that it holds records 0..n-1 and
// that Truncated is wantTorn; appends record n; opens a copy of the
// directory taken then (a crash) and checks that it holds records 0..n and
// nothing more; closes; opens dir again and checks records 0..n. It returns
// the logs of the first Open.
func reopenAppendReopen(t *testing.T, dir string, n int, wantTorn int64) string {
	t.Helper()
	var logs logBuffer
	o := preallocOpts(dir)
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if st := s.Stats(); st.Truncated != wantTorn {
		s.Close()
		t.Fatalf("Truncated = %d, want %d", st.Truncated, wantTorn)
	}
	last := lastSegment(t, dir)
	if got := fileLen(t, last); got != preallocSegment {
		t.Errorf("after Open the last segment is %d bytes long, want %d (preallocated)", got, preallocSegment)
	}
	if _, err := s.Append(payload(n)); err != nil {
		t.Fatalf("Append after recovery: %v", err)
	}
	// A crash now: nothing of the cut tail may come back after the record
	// just appended over it.
	crashed := copyDir(t, dir)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, preallocOpts(crashed))
	if st := s.Stats(); st.Truncated != 0 {
		t.Fatalf("Open after a crash: Truncated = %d (the cut tail came back)", st.Truncated)
	}
	got, _ := readN(t, mustConsumer(t, s, "influx"), n+1, 1000, 1<<20)
	checkPayloads(t, got, 0)
	nothingToRead(t, mustConsumer(t, s, "influx"))
	s.Close()
	// A clean Close leaves no preallocated space and no spare file.
	if _, err := os.Stat(filepath.Join(dir, spareName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("spare segment file left after Close: %v", err)
	}
	s = mustOpen(t, preallocOpts(dir))
	if st := s.Stats(); st.Truncated != 0 {
		t.Fatalf("second Open: Truncated = %d", st.Truncated)
	}
	got, _ = readN(t, mustConsumer(t, s, "influx"), n+1, 1000, 1<<20)
	checkPayloads(t, got, 0)
	nothingToRead(t, mustConsumer(t, s, "influx"))
	s.Close()
	return logs.String()
}

func patch(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestPreallocatedLayout: the active segment is SegmentBytes long from its
// creation; a sealed segment and the active one after Close end with their
// last frame; the spare file is used by the roll-over and gone after Close.
func TestPreallocatedLayout(t *testing.T) {
	for _, noSync := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoSync=%v", noSync), func(t *testing.T) {
			o := preallocOpts(t.TempDir())
			o.NoSync = noSync
			s := mustOpen(t, o)
			if got := fileLen(t, filepath.Join(o.Dir, segName(1))); got != preallocSegment {
				t.Fatalf("new segment is %d bytes long", got)
			}
			ps := appendN(t, s, 0, 300) // several roll-overs
			last := ps[len(ps)-1].Seg
			if last < 3 {
				t.Fatalf("fixture: want several segments, last is %d", last)
			}
			st := s.Stats()
			s.mu.Lock()
			for _, seg := range s.segs {
				want := seg.size
				if seg.seq == last {
					want = preallocSegment
				}
				if got := fileLen(t, seg.f.Name()); got != want || seg.alloc != want {
					t.Errorf("segment %d: file %d bytes, alloc %d, data %d; want %d", seg.seq, got, seg.alloc, seg.size, want)
				}
			}
			a := s.active()
			wantDisk := st.Bytes + preallocSegment - a.size
			if s.spare != nil {
				wantDisk += preallocSegment
			}
			s.mu.Unlock()
			if st.DiskBytes != wantDisk {
				t.Errorf("DiskBytes %d, want %d (Bytes %d)", st.DiskBytes, wantDisk, st.Bytes)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			got := fileLen(t, filepath.Join(o.Dir, segName(last)))
			want := ps[len(ps)-1].Off + frameHeaderSize + int64(len(payload(len(ps)-1)))
			if got != want {
				t.Fatalf("after Close the active segment is %d bytes long, want its data end %d", got, want)
			}
			if _, err := os.Stat(filepath.Join(o.Dir, spareName)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("spare file after Close: %v", err)
			}
		})
	}
}

// TestPreallocZerosAfterLastRecord: a crash leaves zeros after the last
// record of the preallocated segment. That is space never written: nothing is
// cut or logged, and appends go on after the last record.
func TestPreallocZerosAfterLastRecord(t *testing.T) {
	dir, _, _ := crashImage(t, 20)
	logs := reopenAppendReopen(t, dir, 20, 0)
	if strings.Contains(logs, "torn") {
		t.Fatalf("zeros after the data were logged as a torn tail:\n%s", logs)
	}
}

// TestPreallocTornTailAtEveryOffset: the last record of a preallocated
// segment lost from every byte offset on (zeros, as when its sectors never
// reached the disk), and each of its bytes flipped.
func TestPreallocTornTailAtEveryOffset(t *testing.T) {
	const n = 12
	src, seg, ps := crashImage(t, n)
	if ps[n-1].Seg != ps[n-2].Seg {
		t.Fatal("fixture: the last two records should share a segment")
	}
	full, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	start := ps[n-1].Off
	end := start + frameHeaderSize + int64(len(payload(n-1)))
	if !allZero(full[end:]) {
		t.Fatal("fixture: bytes after the last record are not zeros")
	}
	name := filepath.Base(seg)
	for cut := start; cut < end; cut++ {
		dir := copyDir(t, src)
		patch(t, filepath.Join(dir, name), cut, make([]byte, end-cut))
		// Cut: the record's non-zero bytes before the lost part.
		reopenAppendReopen(t, dir, n-1, lastNonZero(full[start:cut]))
	}
	for off := start; off < end; off++ {
		dir := copyDir(t, src)
		patch(t, filepath.Join(dir, name), off, []byte{full[off] ^ 0x5a})
		reopenAppendReopen(t, dir, n-1, end-start)
	}
}

// lastNonZero is the length of b up to its last non-zero byte.
func lastNonZero(b []byte) int64 {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] != 0 {
			return int64(i) + 1
		}
	}
	return 0
}

// TestPreallocGarbageAfterLastRecord: bytes of a torn write after the last
// record, followed by the preallocated zeros. They are cut (overwritten) and
// do not come back after the next appends.
func TestPreallocGarbageAfterLastRecord(t *testing.T) {
	src, seg, ps := crashImage(t, 20)
	end := ps[19].Off + frameHeaderSize + int64(len(payload(19)))
	rng := rand.New(rand.NewPCG(11, 11))
	for _, size := range []int{1, 7, 8, 9, 100, 1000} {
		dir := copyDir(t, src)
		garbage := make([]byte, size)
		for i := range garbage {
			garbage[i] = byte(rng.Uint32())
		}
		garbage[size-1] |= 1
		patch(t, filepath.Join(dir, filepath.Base(seg)), end, garbage)
		logs := reopenAppendReopen(t, dir, 20, int64(size))
		if !strings.Contains(logs, "truncated torn tail") || !strings.Contains(logs, fmt.Sprintf("bytes=%d", size)) {
			t.Fatalf("%d bytes of garbage: log %s", size, logs)
		}
	}
}

// TestPreallocBadFrameInZeros: a frame header with a non-zero length whose
// CRC fails, with zeros around it (its payload never reached the disk), right
// after the last record or further into the zeros.
func TestPreallocBadFrameInZeros(t *testing.T) {
	src, seg, ps := crashImage(t, 20)
	end := ps[19].Off + frameHeaderSize + int64(len(payload(19)))
	for _, gap := range []int64{0, 100} {
		dir := copyDir(t, src)
		var hdr [frameHeaderSize]byte
		binary.LittleEndian.PutUint32(hdr[:], 50)
		binary.LittleEndian.PutUint32(hdr[4:], 0xdeadbeef)
		patch(t, filepath.Join(dir, filepath.Base(seg)), end+gap, hdr[:])
		reopenAppendReopen(t, dir, 20, gap+frameHeaderSize)
	}
}

// TestPreallocTornTailDoesNotComeBack: a torn frame followed by a complete
// frame of the same unacknowledged write. Recovery cuts both; a record of
// the torn frame's length appended after the restart must not make the
// complete one readable again after the next restart (a file that was only
// truncated logically would still hold it on disk).
func TestPreallocTornTailDoesNotComeBack(t *testing.T) {
	dir, seg, ps := crashImage(t, 20)
	end := ps[19].Off + frameHeaderSize + int64(len(payload(19)))
	torn := payload(20) // the length of the record appended after the restart
	var tail []byte
	tail = appendFrameHeader(tail, len(torn), frameCRC(torn))
	tail = append(tail, torn...)
	tail[len(tail)-1] ^= 0xff // torn
	ghost := []byte("never acknowledged")
	tail = appendFrameHeader(tail, len(ghost), frameCRC(ghost))
	tail = append(tail, ghost...)
	patch(t, seg, end, tail)
	reopenAppendReopen(t, dir, 20, int64(len(tail)))
}

// TestPreallocNoSpace: without disk space for the next segment, the append
// that needs it gets ErrFull (counted) and nothing is lost; appends succeed
// once space is back. Without space at Open, the spool opens anyway (its
// consumers can drain it) and appends get ErrFull until a segment fits.
func TestPreallocNoSpace(t *testing.T) {
	noSpace := false
	testHookPreallocate = func(f *os.File) error {
		if noSpace {
			return &os.PathError{Op: "fallocate", Path: f.Name(), Err: syscall.ENOSPC}
		}
		return nil
	}
	t.Cleanup(func() { testHookPreallocate = nil })

	dir := t.TempDir()
	o := preallocOpts(dir)
	var now atomic.Int64 // the spool's clock (ns): it spaces the retries of a full disk
	o.clock = func() time.Time { return time.Unix(0, now.Load()) }
	s := mustOpen(t, o)
	noSpace = true
	var ps []Pos
	i := 0
	for ; ; i++ {
		p, err := s.Append(payload(i))
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		ps = append(ps, p)
	}
	if ps[len(ps)-1].Seg != 1 {
		t.Fatalf("a segment was created without space: %v", ps[len(ps)-1])
	}
	if _, err := s.Append(payload(i)); !errors.Is(err, ErrFull) {
		t.Fatalf("second Append without space: %v", err)
	}
	if st := s.Stats(); st.Full != 2 || st.Segments != 1 {
		t.Fatalf("stats %+v", st)
	}
	noSpace = false
	// Within a second of the failure the roll-over does not try again
	// (on a filesystem without fallocate each try writes zeros until the
	// disk is full); after it, it does.
	if _, err := s.Append(payload(i)); !errors.Is(err, ErrFull) {
		t.Fatalf("Append within a second of the failure: %v, want ErrFull without a new attempt", err)
	}
	now.Add(int64(time.Second))
	appendN(t, s, i, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	noSpace = true
	s = mustOpen(t, o)
	if _, err := s.Append(payload(i + 5)); !errors.Is(err, ErrFull) {
		t.Fatalf("Append after an Open without space: %v", err)
	}
	got, _ := readN(t, mustConsumer(t, s, "influx"), i+5, 1000, 1<<20)
	checkPayloads(t, got, 0)
	noSpace = false
	now.Add(int64(time.Second))
	appendN(t, s, i+5, 1)
	s.Close()
	reopenAndCheckOpts(t, o, i+6)
}

// reopenAndCheckOpts is reopenAndCheck with options.
func reopenAndCheckOpts(t *testing.T, o Options, n int) {
	t.Helper()
	s := mustOpen(t, o)
	got, _ := readN(t, mustConsumer(t, s, "influx"), n, 1000, 1<<20)
	checkPayloads(t, got, 0)
	nothingToRead(t, mustConsumer(t, s, "influx"))
	s.Close()
}

// TestPreallocHeaderlessLastSegment: a crash right after a roll-over renamed
// the preallocated next file: a last segment of zeros only. It is
// reinitialized without counting its zeros as cut.
func TestPreallocHeaderlessLastSegment(t *testing.T) {
	dir, seg, ps := crashImage(t, 20)
	// The roll-over truncated the old segment to its data end first.
	if err := os.Truncate(seg, ps[19].Off+frameHeaderSize+int64(len(payload(19)))); err != nil {
		t.Fatal(err)
	}
	zeros := filepath.Join(dir, segName(ps[19].Seg+1))
	if err := os.WriteFile(zeros, make([]byte, preallocSegment), 0o644); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, preallocOpts(dir))
	if st := s.Stats(); st.Truncated != 0 {
		t.Fatalf("Truncated = %d", st.Truncated)
	}
	s.Close()
	reopenAppendReopen(t, dir, 20, 0)
}

// TestNoSpaceOnRealDevice runs the spool with real fsync on a small file
// system given by SPOOL_FULL_DIR (skipped without it), e.g. as root:
//
//	mount -t tmpfs -o size=1m tmpfs /mnt/full
//	SPOOL_FULL_DIR=/mnt/full go test -run NoSpaceOnRealDevice -v ./gateway/spool/
//
// The disk fills at a segment creation: ErrFull, nothing lost, and appends
// resume once the consumers' commits have deleted segments.
func TestNoSpaceOnRealDevice(t *testing.T) {
	root := os.Getenv("SPOOL_FULL_DIR")
	if root == "" {
		t.Skip("SPOOL_FULL_DIR (a small file system) not set")
	}
	dir, err := os.MkdirTemp(root, "spool")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var now atomic.Int64 // the spool's clock (ns): it spaces the retries of a full disk
	o := Options{Dir: dir, Consumers: []string{"influx"}, SegmentBytes: 256 << 10, MaxBytes: 1 << 30, Logger: quiet,
		clock: func() time.Time { return time.Unix(0, now.Load()) }}
	s := mustOpen(t, o)
	i := 0
	for ; ; i++ {
		if _, err := s.Append(payload(i)); err != nil {
			if !errors.Is(err, ErrFull) {
				t.Fatalf("Append %d: %v, want ErrFull", i, err)
			}
			t.Logf("after %d records: %v", i, err)
			break
		}
	}
	st := s.Stats()
	t.Logf("stats: segments %d, bytes %d, disk bytes %d, full %d", st.Segments, st.Bytes, st.DiskBytes, st.Full)
	c := mustConsumer(t, s, "influx")
	got, next := readN(t, c, i, 1000, 1<<20)
	checkPayloads(t, got, 0)
	if err := c.Commit(next); err != nil {
		t.Fatal(err)
	}
	now.Add(int64(time.Second)) // the next roll-over tries again
	appendN(t, s, i, 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, o)
	got, _ = readN(t, mustConsumer(t, s, "influx"), 10, 1000, 1<<20)
	checkPayloads(t, got, i)
}

// TestPreallocSpareRetriedAfterSpaceFreed: the next segment is prepared in
// the background at half the active one; if that failed for lack of space
// and space was freed before the roll-over, the roll-over prepares it again
// instead of reporting the old failure (one publish refused with space
// available).
func TestPreallocSpareRetriedAfterSpaceFreed(t *testing.T) {
	var noSpace atomic.Bool
	failed := make(chan struct{}, 1)
	testHookPreallocate = func(f *os.File) error {
		if noSpace.Load() {
			select {
			case failed <- struct{}{}:
			default:
			}
			return &os.PathError{Op: "fallocate", Path: f.Name(), Err: syscall.ENOSPC}
		}
		return nil
	}
	t.Cleanup(func() { testHookPreallocate = nil })

	s := mustOpen(t, preallocOpts(t.TempDir()))
	noSpace.Store(true)
	i := 0
	for ; ; i++ { // up to the start of the background preparation
		if _, err := s.Append(payload(i)); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		s.mu.Lock()
		started := s.spare != nil
		s.mu.Unlock()
		if started {
			break
		}
	}
	select { // which fails
	case <-failed:
	case <-time.After(time.Minute):
		t.Fatal("the background preparation did not run")
	}
	noSpace.Store(false) // consumers freed space meanwhile
	for i++; ; i++ {
		p, err := s.Append(payload(i))
		if err != nil {
			t.Fatalf("Append %d after space was freed: %v", i, err)
		}
		if p.Seg > 1 {
			break
		}
	}
	if st := s.Stats(); st.Full != 0 {
		t.Fatalf("Full = %d, want 0", st.Full)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
