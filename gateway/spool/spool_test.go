package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, opts(dir))
	ps := appendN(t, s, 0, 100)
	for i := 1; i < len(ps); i++ {
		if !ps[i-1].Less(ps[i]) {
			t.Fatalf("positions not increasing: %v then %v", ps[i-1], ps[i])
		}
	}
	c := mustConsumer(t, s, "influx")
	got, next := readN(t, c, 100, 7, 1<<20)
	checkPayloads(t, got, 0)
	nothingToRead(t, c)
	if err := c.Commit(next); err != nil {
		t.Fatal(err)
	}
	if c.Committed() != next {
		t.Fatalf("Committed = %v, want %v", c.Committed(), next)
	}
	st := s.Stats()
	if st.Appended != 100 || st.Segments != 1 {
		t.Fatalf("stats %+v", st)
	}
	lag := map[string]ConsumerStats{}
	for _, cs := range st.Consumers {
		lag[cs.Name] = cs
	}
	if lag["influx"].LagRecords != 0 || lag["influx"].LagBytes != 0 {
		t.Fatalf("influx lag %+v", lag["influx"])
	}
	if lag["nats"].LagRecords != 100 || lag["nats"].LagBytes != st.PendingBytes || st.PendingBytes != st.Bytes-segHeaderSize {
		t.Fatalf("nats lag %+v, stats %+v", lag["nats"], st)
	}
}

func TestRollOverKeepsOrder(t *testing.T) {
	o := opts(t.TempDir())
	o.SegmentBytes = 300
	s := mustOpen(t, o)
	const n = 500
	appendN(t, s, 0, n)
	if segs := s.Stats().Segments; segs < 20 {
		t.Fatalf("only %d segments", segs)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	c := mustConsumer(t, s, "influx")
	var got [][]byte
	var buf []Record
	for len(got) < n {
		var err error
		buf, err = c.Read(context.Background(), buf, 1+rng.IntN(20), rng.IntN(400))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range buf {
			got = append(got, bytes.Clone(r.Data))
		}
	}
	if len(got) != n {
		t.Fatalf("read %d records, want %d", len(got), n)
	}
	checkPayloads(t, got, 0)
}

func TestReadLimits(t *testing.T) {
	s := mustOpen(t, opts(t.TempDir()))
	big := bytes.Repeat([]byte("x"), 5000)
	for _, r := range [][]byte{big, []byte("a"), []byte("bb"), []byte("ccc"), {}, []byte("dddd")} {
		if _, err := s.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	c := mustConsumer(t, s, "influx")
	ctx := context.Background()
	// One record even though it exceeds maxBytes (and the read chunk).
	recs, err := c.Read(ctx, nil, 10, 10)
	if err != nil || len(recs) != 1 || !bytes.Equal(recs[0].Data, big) {
		t.Fatalf("got %d records, %v", len(recs), err)
	}
	// maxBytes 3: "a" + "bb".
	recs, err = c.Read(ctx, recs, 10, 3)
	if err != nil || len(recs) != 2 || string(recs[0].Data) != "a" || string(recs[1].Data) != "bb" {
		t.Fatalf("got %v, %v", recs, err)
	}
	if cap(recs[0].Data) != len(recs[0].Data) {
		t.Fatal("Data not capped")
	}
	// max 0 counts as 1.
	recs, err = c.Read(ctx, recs, 0, 1<<20)
	if err != nil || len(recs) != 1 || string(recs[0].Data) != "ccc" {
		t.Fatalf("got %v, %v", recs, err)
	}
	recs, err = c.Read(ctx, recs, 10, 1<<20)
	if err != nil || len(recs) != 2 || len(recs[0].Data) != 0 || string(recs[1].Data) != "dddd" {
		t.Fatalf("got %v, %v", recs, err)
	}
}

func TestRetentionWaitsForAllConsumers(t *testing.T) {
	dir := t.TempDir()
	o := opts(dir)
	o.SegmentBytes = 256
	s := mustOpen(t, o)
	appendN(t, s, 0, 60)
	total := len(segFiles(t, dir))
	if total < 5 || s.Stats().Segments != total {
		t.Fatalf("%d segment files, stats %d", total, s.Stats().Segments)
	}
	influx, nats := mustConsumer(t, s, "influx"), mustConsumer(t, s, "nats")

	_, next := readN(t, influx, 60, 13, 1<<20)
	if err := influx.Commit(next); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, dir)); n != total {
		t.Fatalf("%d segments after one consumer committed, want %d", n, total)
	}

	_, half := readN(t, nats, 30, 13, 1<<20)
	fi, err := os.Stat(filepath.Join(dir, segName(half.Seg)))
	if err != nil {
		t.Fatal(err)
	}
	if err := nats.Commit(half); err != nil {
		t.Fatal(err)
	}
	files := segFiles(t, dir)
	if len(files) >= total || len(files) != s.Stats().Segments {
		t.Fatalf("%d segments after both committed half, had %d (stats %d)", len(files), total, s.Stats().Segments)
	}
	first, _ := parseSegName(filepath.Base(files[0]))
	if want := half.Seg + map[bool]uint64{true: 1}[half.Off == fi.Size()]; first != want {
		t.Fatalf("first segment %d, want %d (nats committed %v)", first, want, half)
	}
	if first > half.Seg && half.Off != fi.Size() {
		t.Fatalf("segment %d deleted but nats committed only %v", half.Seg, half)
	}
	pending := s.Stats().PendingBytes

	rest, end := readN(t, nats, 30, 100, 1<<20)
	checkPayloads(t, rest, 30)
	if err := nats.Commit(end); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if n := len(segFiles(t, dir)); n != 1 || st.Segments != 1 || st.PendingBytes != 0 || pending == 0 {
		t.Fatalf("%d files, stats %+v, pending before %d", n, st, pending)
	}
	// The cursors survive the deletion of the segment they pointed into.
	appendN(t, s, 60, 3)
	got, _ := readN(t, nats, 3, 10, 1<<20)
	checkPayloads(t, got, 60)
}

func TestReopenReplaysUncommitted(t *testing.T) {
	dir := t.TempDir()
	o := opts(dir)
	o.SegmentBytes = 400
	s := mustOpen(t, o)
	appendN(t, s, 0, 20)
	influx := mustConsumer(t, s, "influx")
	var buf []Record
	var commitAt Pos
	for n := 0; n < 20; {
		var err error
		buf, err = influx.Read(context.Background(), buf, 3, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range buf {
			n++
			if n == 10 {
				commitAt = r.Next
			}
		}
	}
	if err := influx.Commit(commitAt); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, o)
	appendN(t, s, 20, 5)
	influx = mustConsumer(t, s, "influx")
	if influx.Committed() != commitAt {
		t.Fatalf("committed %v after reopen, want %v", influx.Committed(), commitAt)
	}
	got, _ := readN(t, influx, 15, 4, 1<<20)
	checkPayloads(t, got, 10)
	nothingToRead(t, influx)
	got, _ = readN(t, mustConsumer(t, s, "nats"), 25, 6, 1<<20)
	checkPayloads(t, got, 0)
	for _, cs := range s.Stats().Consumers {
		if cs.Name == "influx" && cs.LagRecords != 15 {
			t.Fatalf("influx lag %+v after reopen", cs)
		}
	}
}

func TestRewindRedelivers(t *testing.T) {
	o := opts(t.TempDir())
	o.SegmentBytes = 200
	s := mustOpen(t, o)
	appendN(t, s, 0, 30)
	c := mustConsumer(t, s, "nats")
	got, next := readN(t, c, 10, 10, 1<<20)
	checkPayloads(t, got, 0)
	if err := c.Commit(next); err != nil {
		t.Fatal(err)
	}
	got, _ = readN(t, c, 12, 5, 1<<20)
	checkPayloads(t, got, 10)
	c.Rewind()
	got, _ = readN(t, c, 20, 20, 1<<20)
	checkPayloads(t, got, 10)
	c.Rewind()
	c.Rewind()
	got, _ = readN(t, c, 20, 3, 1<<20)
	checkPayloads(t, got, 10)
}

func TestCommitValidation(t *testing.T) {
	s := mustOpen(t, opts(t.TempDir()))
	ps := appendN(t, s, 0, 10)
	c := mustConsumer(t, s, "influx")
	// Not delivered yet.
	if err := c.Commit(ps[3]); !errors.Is(err, ErrBadPos) {
		t.Fatalf("Commit before Read: %v", err)
	}
	recs, err := c.Read(context.Background(), nil, 5, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	mid := recs[2].Next
	if err := c.Commit(Pos{Seg: mid.Seg, Off: mid.Off + 1}); !errors.Is(err, ErrBadPos) {
		t.Fatalf("Commit inside a record: %v", err)
	}
	if err := c.Commit(ps[7]); !errors.Is(err, ErrBadPos) {
		t.Fatalf("Commit past the read position: %v", err)
	}
	if err := c.Commit(mid); err != nil {
		t.Fatal(err)
	}
	// Earlier positions are already covered.
	if err := c.Commit(recs[0].Next); err != nil || c.Committed() != mid {
		t.Fatalf("Commit of an older position: %v, committed %v", err, c.Committed())
	}
	if err := c.Commit(recs[4].Next); err != nil || c.Committed() != recs[4].Next {
		t.Fatalf("Commit: %v, committed %v", err, c.Committed())
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	o := opts(dir)
	o.MaxRecord = 100
	s := mustOpen(t, o)
	if _, err := s.Append(make([]byte, 101)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append too large: %v", err)
	}
	if _, err := s.AppendAsync(make([]byte, 101)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("AppendAsync too large: %v", err)
	}
	if _, err := s.Append(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Consumer("kafka"); !errors.Is(err, ErrUnknownConsumer) {
		t.Fatalf("Consumer: %v", err)
	}
	if _, err := Open(o); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open of the same directory: %v", err)
	}
	for _, bad := range []Options{
		{Consumers: []string{"a"}},
		{Dir: dir},
		{Dir: dir, Consumers: []string{"a", "a"}},
		{Dir: dir, Consumers: []string{"../x"}},
		{Dir: dir, Consumers: []string{"a"}, MaxBytes: 100, MaxRecord: 200},
		{Dir: dir, Consumers: []string{"a"}, SegmentBytes: 10},
	} {
		if _, err := Open(bad); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Open(%+v) = %v, want ErrInvalidOptions", bad, err)
		}
	}
}

func TestFullThenDrained(t *testing.T) {
	dir := t.TempDir()
	o := opts(dir)
	o.SegmentBytes = 300
	o.MaxBytes = 1000
	o.MaxRecord = 92
	s := mustOpen(t, o)
	rec := bytes.Repeat([]byte("r"), 92) // 100-byte frames
	for i := 0; i < 10; i++ {
		if _, err := s.Append(rec); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	if _, err := s.Append(rec); !errors.Is(err, ErrFull) {
		t.Fatalf("Append at MaxBytes: %v", err)
	}
	if _, err := s.AppendAsync(rec); !errors.Is(err, ErrFull) {
		t.Fatalf("AppendAsync at MaxBytes: %v", err)
	}
	// A small record that still fits is accepted? No: nothing fits at
	// exactly MaxBytes, not even an empty record (8 bytes of frame).
	if _, err := s.Append(nil); !errors.Is(err, ErrFull) {
		t.Fatalf("empty Append at MaxBytes: %v", err)
	}
	st := s.Stats()
	if st.Full != 3 || st.PendingBytes != 1000 {
		t.Fatalf("stats %+v", st)
	}
	segsBefore := len(segFiles(t, dir))

	// One consumer alone frees nothing.
	influx, nats := mustConsumer(t, s, "influx"), mustConsumer(t, s, "nats")
	_, next := readN(t, influx, 10, 10, 1<<20)
	if err := influx.Commit(next); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(rec); !errors.Is(err, ErrFull) {
		t.Fatalf("Append with nats behind: %v", err)
	}
	_, next = readN(t, nats, 5, 10, 1<<20)
	if err := nats.Commit(next); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, dir)); n >= segsBefore {
		t.Fatalf("%d segments after commit, had %d", n, segsBefore)
	}
	for i := 0; i < 5; i++ {
		if _, err := s.Append(rec); err != nil {
			t.Fatalf("Append %d after drain: %v", i, err)
		}
	}
	if _, err := s.Append(rec); !errors.Is(err, ErrFull) {
		t.Fatalf("Append at MaxBytes again: %v", err)
	}
}

func TestConcurrentAppendersGroupCommit(t *testing.T) {
	o := opts(t.TempDir())
	o.NoSync = false // real fdatasync, so that groups form
	o.SegmentBytes = 8 << 10
	s := mustOpen(t, o)
	const writers, per = 32, 100
	c := mustConsumer(t, s, "influx")

	type result struct {
		seen [writers]int
		err  error
	}
	done := make(chan result)
	go func() {
		var r result
		var buf []Record
		for n := 0; n < writers*per; {
			var err error
			buf, err = c.Read(context.Background(), buf, 64, 64<<10)
			if err != nil {
				r.err = err
				break
			}
			for _, rec := range buf {
				var w, i int
				if _, err := fmt.Sscanf(string(rec.Data), "w%d-%d", &w, &i); err != nil {
					r.err = fmt.Errorf("record %q: %w", rec.Data, err)
					done <- r
					return
				}
				if r.seen[w] != i {
					r.err = fmt.Errorf("writer %d: got record %d, want %d", w, i, r.seen[w])
					done <- r
					return
				}
				r.seen[w]++
				n++
			}
			if err := c.Commit(buf[len(buf)-1].Next); err != nil {
				r.err = err
				break
			}
		}
		done <- r
	}()

	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if _, err := s.Append(fmt.Appendf(nil, "w%d-%d", w, i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	for w, n := range r.seen {
		if n != per {
			t.Fatalf("writer %d: %d records seen", w, n)
		}
	}
	nothingToRead(t, c)
	st := s.Stats()
	t.Logf("appended %d records in %d group commits (%.1f records per fsync), %d segments",
		st.Appended, st.Syncs, float64(st.Appended)/float64(st.Syncs), st.Segments)
	if st.Appended != writers*per || st.Syncs >= st.Appended {
		t.Fatalf("stats %+v: group commit did not group", st)
	}
}

// TestGroupCommitIsOneFsync holds the syncer in its first round until all
// writers have appended: the records written meanwhile must all be covered by
// the next round.
func TestGroupCommitIsOneFsync(t *testing.T) {
	s := mustOpen(t, opts(t.TempDir()))
	const writers = 32
	release := make(chan struct{})
	first := true
	s.testHookBeforeSync = func() {
		if first {
			first = false
			<-release
		}
	}
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Append([]byte("x")); err != nil {
				t.Error(err)
			}
		}()
	}
	for s.Stats().Appended < writers {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if st := s.Stats(); st.Syncs > 2 {
		t.Fatalf("%d appends took %d group commits, want at most 2", st.Appended, st.Syncs)
	}
}

func TestAppendAsyncAndSync(t *testing.T) {
	o := opts(t.TempDir())
	o.SyncDelay = time.Hour // only Sync (or Close) commits
	s := mustOpen(t, o)
	c := mustConsumer(t, s, "influx")
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync with nothing pending: %v", err)
	}
	for i := 0; i < 5; i++ {
		if _, err := s.AppendAsync(payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	nothingToRead(t, c) // written, not durable: invisible to consumers
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	got, _ := readN(t, c, 5, 10, 1<<20)
	checkPayloads(t, got, 0)
	if st := s.Stats(); st.Syncs != 1 || st.Durable != (Pos{Seg: 1, Off: st.Bytes}) {
		t.Fatalf("stats %+v", st)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	s, err := Open(opts(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	c := mustConsumer(t, s, "nats")
	errc := make(chan error)
	go func() {
		_, err := c.Read(context.Background(), nil, 10, 1<<20)
		errc <- err
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked Read returned %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Append([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if _, err := c.Read(context.Background(), nil, 1, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if err := c.Commit(Pos{Seg: 9}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close: %v", err)
	}
	if err := s.Sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close: %v", err)
	}
}

func TestReadContextCancel(t *testing.T) {
	s := mustOpen(t, opts(t.TempDir()))
	c := mustConsumer(t, s, "nats")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := c.Read(ctx, nil, 10, 1<<20)
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Read returned %v", err)
	}
}

// TestCloseReleasesPendingAppend: an Append waiting for its group commit is
// released by Close, whose final fsync covers the record.
func TestCloseReleasesPendingAppend(t *testing.T) {
	o := opts(t.TempDir())
	o.NoSync = false
	o.SyncDelay = time.Hour
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error)
	go func() {
		_, err := s.Append([]byte("last words"))
		errc <- err
	}()
	for s.Stats().Appended == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("pending Append: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, o)
	recs, err := mustConsumer(t, s, "influx").Read(context.Background(), nil, 10, 1<<20)
	if err != nil || len(recs) != 1 || string(recs[0].Data) != "last words" {
		t.Fatalf("after reopen: %v, %v", recs, err)
	}
}

func TestReadDoesNotAllocate(t *testing.T) {
	s := mustOpen(t, opts(t.TempDir()))
	appendN(t, s, 0, 200)
	c := mustConsumer(t, s, "influx")
	buf := make([]Record, 0, 64)
	ctx := context.Background()
	read := func() {
		var err error
		buf, err = c.Read(ctx, buf, 64, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if buf[len(buf)-1].Next == s.Stats().Durable {
			c.Rewind()
		}
	}
	for i := 0; i < 20; i++ { // warm up buffers
		read()
	}
	c.Rewind()
	if a := testing.AllocsPerRun(100, func() {
		var err error
		buf, err = c.Read(ctx, buf, 64, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if buf[len(buf)-1].Next == s.durablePos() {
			c.Rewind()
		}
	}); a != 0 {
		t.Fatalf("Read allocates %.1f times per call", a)
	}
}

func (s *Spool) durablePos() Pos {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durable
}

func TestCursorFileSurvivesTornSlot(t *testing.T) {
	dir := t.TempDir()
	o := opts(dir)
	s := mustOpen(t, o)
	appendN(t, s, 0, 10)
	c := mustConsumer(t, s, "influx")
	recs, err := c.Read(context.Background(), nil, 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(recs[3].Next); err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(recs[6].Next); err != nil {
		t.Fatal(err)
	}
	gen := c.gen
	s.Close()

	// Tear the slot of the last commit: the previous commit is used.
	path := filepath.Join(dir, "influx"+cursorSuffix)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff, 0xff}, int64(gen%2)*cursorSlotGap+20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s = mustOpen(t, o)
	c = mustConsumer(t, s, "influx")
	if c.Committed() != recs[3].Next {
		t.Fatalf("committed %v, want %v", c.Committed(), recs[3].Next)
	}
	got, _ := readN(t, c, 6, 10, 1<<20)
	checkPayloads(t, got, 4)
	s.Close()

	// An unreadable cursor replays everything retained.
	if err := os.WriteFile(path, bytes.Repeat([]byte{1}, cursorFileSize), 0o644); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, o)
	got, _ = readN(t, mustConsumer(t, s, "influx"), 10, 10, 1<<20)
	checkPayloads(t, got, 0)
}

func TestLengthCRC(t *testing.T) {
	for _, n := range []uint32{0, 1, 400, 1 << 20, 0xdeadbeef} {
		b := []byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)}
		if got, want := lengthCRC(n), crc32.Checksum(b, castagnoli); got != want {
			t.Fatalf("lengthCRC(%d) = %x, want %x", n, got, want)
		}
	}
}

func TestAppendDoesNotAllocate(t *testing.T) {
	o := opts(t.TempDir())
	o.MaxBytes = 1 << 40
	s := mustOpen(t, o)
	rec := make([]byte, 400)
	for i := 0; i < 10; i++ {
		s.Append(rec)
	}
	if a := testing.AllocsPerRun(200, func() {
		if _, err := s.Append(rec); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Fatalf("Append allocates %.1f times per call", a)
	}
}

// TestIOErrorFailsSpool: after a failed write the spool refuses appends
// (the kernel may have dropped the data), keeps serving what is durable, and
// a reopen recovers.
func TestIOErrorFailsSpool(t *testing.T) {
	dir := t.TempDir()
	o := opts(dir)
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 0, 5)
	s.mu.Lock()
	s.active().f.Close() // the next write fails
	s.mu.Unlock()
	if _, err := s.Append([]byte("lost")); !errors.Is(err, ErrFailed) {
		t.Fatalf("Append after write error: %v", err)
	}
	if _, err := s.Append([]byte("refused")); !errors.Is(err, ErrFailed) {
		t.Fatalf("Append in failed state: %v", err)
	}
	if err := s.Close(); !errors.Is(err, ErrFailed) {
		t.Fatalf("Close = %v, want the failure", err)
	}
	s = mustOpen(t, o)
	got, _ := readN(t, mustConsumer(t, s, "influx"), 5, 10, 1<<20)
	checkPayloads(t, got, 0)
	nothingToRead(t, mustConsumer(t, s, "influx"))
}

func TestOpenCreatesNestedDir(t *testing.T) {
	o := opts(filepath.Join(t.TempDir(), "a", "b"))
	o.NoSync = false
	s := mustOpen(t, o)
	appendN(t, s, 0, 3)
}

// TestStress mixes everything at once: writers with Append and AppendAsync
// hitting ErrFull, small segments (roll-over and retention all the time), one
// consumer that rewinds at random, Stats polling. Every consumer must see
// every record exactly once in commit order, per writer in append order.
func TestStress(t *testing.T) {
	o := opts(t.TempDir())
	o.SegmentBytes = 512
	o.MaxBytes = 2 << 10
	o.MaxRecord = 64
	s := mustOpen(t, o)
	const writers, per = 8, 400

	consume := func(name string, rewind bool) error {
		c, err := s.Consumer(name)
		if err != nil {
			return err
		}
		rng := rand.New(rand.NewPCG(uint64(len(name)), 1))
		var seen [writers]int
		var buf []Record
		for n := 0; n < writers*per; {
			buf, err = c.Read(context.Background(), buf, 1+rng.IntN(50), 1+rng.IntN(2000))
			if err != nil {
				return err
			}
			if rewind && rng.IntN(4) == 0 {
				c.Rewind() // pretend the downstream write failed
				continue
			}
			for _, r := range buf {
				var w, i int
				if _, err := fmt.Sscanf(string(r.Data), "w%d-%d", &w, &i); err != nil {
					return fmt.Errorf("record %q at %v: %w", r.Data, r.Pos, err)
				}
				if seen[w] != i {
					return fmt.Errorf("%s: writer %d: record %d, want %d", name, w, i, seen[w])
				}
				seen[w]++
				n++
			}
			if err := c.Commit(buf[len(buf)-1].Next); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make(chan error, writers+2)
	var wg sync.WaitGroup
	for _, name := range []string{"influx", "nats"} {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- consume(name, name == "nats") }()
	}
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				s.Stats()
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; {
				rec := fmt.Appendf(nil, "w%d-%d", w, i)
				var err error
				if i%3 == 0 {
					_, err = s.AppendAsync(rec)
				} else {
					_, err = s.Append(rec)
				}
				switch {
				case errors.Is(err, ErrFull):
					if err := s.Sync(); err != nil {
						errs <- err
						return
					}
					time.Sleep(50 * time.Microsecond)
				case err != nil:
					errs <- err
					return
				default:
					i++
				}
			}
			errs <- s.Sync()
		}()
	}
	wg.Wait()
	close(stop)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	t.Logf("stats: %+v", st)
	if st.Appended != writers*per || st.PendingBytes != 0 || st.Segments != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestAppendTimeoutStalledFsync: with the syncer stuck in its fsync, a
// timed append gives up with ErrTimeout instead of blocking the caller (an
// MQTT client's read loop) without bound.
func TestAppendTimeoutStalledFsync(t *testing.T) {
	s := mustOpen(t, opts(t.TempDir()))
	release := make(chan struct{})
	var once sync.Once
	s.testHookBeforeSync = func() { once.Do(func() { <-release }) }
	_, err := s.AppendTimeout([]byte("stuck"), 100*time.Millisecond)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("want ErrTimeout, got %v", err)
	}
	close(release)
	// Once the disk recovers, timed appends succeed again.
	if _, err := s.AppendTimeout([]byte("ok"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendTimeout([]byte("unbounded"), 0); err != nil {
		t.Fatal(err)
	}
}

// TestSyncRecordsEndsTheDelay: with SyncRecords, a group commit waits for
// SyncDelay only while the group is smaller; the append that completes the
// group starts the commit, and an already complete group is not delayed.
func TestSyncRecordsEndsTheDelay(t *testing.T) {
	o := opts(t.TempDir())
	o.SyncDelay = time.Hour // a group below SyncRecords is committed only by Sync or Close
	o.SyncRecords = 3
	s := mustOpen(t, o)
	c := mustConsumer(t, s, "influx")
	var last Ticket
	for i := range 2 {
		tk, err := s.AppendTicket(payload(i))
		if err != nil {
			t.Fatal(err)
		}
		last = tk
	}
	if err := s.WaitTicket(last, time.Now().Add(50*time.Millisecond)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("2 of 3 records: WaitTicket %v, want the delay still running (ErrTimeout)", err)
	}
	nothingToRead(t, c)
	tk, err := s.AppendTicket(payload(2))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WaitTicket(tk, time.Time{}); err != nil { // would block for the hour without SyncRecords
		t.Fatal(err)
	}
	got, _ := readN(t, c, 3, 10, 1<<20)
	checkPayloads(t, got, 0)
	// Three more at once: the group is complete before or when the syncer
	// looks at it.
	for i := 3; i < 6; i++ {
		if last, err = s.AppendTicket(payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WaitTicket(last, time.Time{}); err != nil {
		t.Fatal(err)
	}
	got, _ = readN(t, c, 3, 10, 1<<20)
	checkPayloads(t, got, 3)
}

// noteRecorder is a Notifier that forwards each call on a channel.
type noteRecorder chan noteCall

type noteCall struct {
	t   Ticket
	err error
}

func (r noteRecorder) Durable(t Ticket, err error) { r <- noteCall{t, err} }

// TestNotifyTicketAfterCommit: a registered ticket is notified only once
// its group commit has finished, with nil; a finished ticket is not
// registered (false).
func TestNotifyTicketAfterCommit(t *testing.T) {
	s := mustOpen(t, opts(t.TempDir()))
	release := make(chan struct{})
	var once sync.Once
	s.testHookBeforeSync = func() { once.Do(func() { <-release }) }
	tk, err := s.AppendTicket([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	rec := make(noteRecorder, 4)
	if !s.NotifyTicket(tk, time.Time{}, rec) {
		t.Fatal("ticket of a running commit not registered")
	}
	select {
	case c := <-rec:
		t.Fatalf("notified %+v before the fdatasync", c)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if c := <-rec; c.t != tk || c.err != nil {
		t.Fatalf("notified %+v, want ticket %d, nil", c, tk)
	}
	if s.Stats().Durable.Less(Pos{Seg: 1, Off: segHeaderSize + frameHeaderSize + 1}) {
		t.Fatal("notified before the record was durable")
	}
	if s.NotifyTicket(tk, time.Time{}, rec) {
		t.Fatal("finished ticket registered")
	}
}

// TestNotifyTicketTimesOut: a commit that does not finish by the deadline
// is notified with ErrTimeout (by the watchdog), once.
func TestNotifyTicketTimesOut(t *testing.T) {
	s := mustOpen(t, opts(t.TempDir()))
	release := make(chan struct{})
	var once sync.Once
	s.testHookBeforeSync = func() { once.Do(func() { <-release }) }
	defer close(release)
	tk, err := s.AppendTicket([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	rec := make(noteRecorder, 4)
	if !s.NotifyTicket(tk, time.Now().Add(-time.Millisecond), rec) {
		t.Fatal("not registered")
	}
	if c := <-rec; c.t != tk || !errors.Is(c.err, ErrTimeout) {
		t.Fatalf("notified %+v, want ticket %d, ErrTimeout", c, tk)
	}
}

// TestNotifyTicketAtClose: registrations pending at Close are notified by
// its final commit.
func TestNotifyTicketAtClose(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir(), Consumers: []string{"c"}, SyncDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := s.AppendTicket([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	rec := make(noteRecorder, 4)
	if !s.NotifyTicket(tk, time.Time{}, rec) {
		t.Fatal("not registered")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-rec:
		if c.err != nil {
			t.Fatal(c.err)
		}
	default:
		t.Fatal("not notified by Close")
	}
}

// TestSyncMinRateSkipsTheWaitWhenSlow: with SyncMinRate, the syncer waits
// SyncDelay only once its estimate of the arrival rate (from the group
// commits, on the syncer's clock) reaches the minimum. Slow records are
// committed at once despite an hour's SyncDelay; after a fast run the next
// small group waits.
func TestSyncMinRateSkipsTheWaitWhenSlow(t *testing.T) {
	var now atomic.Int64 // the syncer's clock, in ns
	o := opts(t.TempDir())
	o.SyncDelay = time.Hour // a wait ends only by Sync or Close
	o.SyncRecords = 1000
	o.SyncMinRate = 100
	o.clock = func() time.Time { return time.Unix(0, now.Load()) }
	s := mustOpen(t, o)
	mustConsumer(t, s, "influx")
	appendAt := func(i int, step time.Duration) Ticket {
		t.Helper()
		now.Add(int64(step))
		tk, err := s.AppendTicket(payload(i))
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	// One record a second: below the minimum, never a wait (each commit
	// would otherwise take the hour).
	for i := range 3 {
		if err := s.WaitTicket(appendAt(i, time.Second), time.Now().Add(time.Minute)); err != nil {
			t.Fatalf("slow record %d: %v, want it committed without the delay", i, err)
		}
	}
	// One record per millisecond: the estimate climbs past 100/s (the
	// average weighs each new group by 1/4).
	i := 3
	for s.rateFromTest() < o.SyncMinRate {
		if i > 40 {
			t.Fatalf("rate estimate %.1f/s after %d records at 1000/s", s.rateFromTest(), i-3)
		}
		if err := s.WaitTicket(appendAt(i, time.Millisecond), time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		i++
	}
	// Now a group smaller than SyncRecords waits for the delay.
	tk := appendAt(i, time.Millisecond)
	if err := s.WaitTicket(tk, time.Now().Add(50*time.Millisecond)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("fast: WaitTicket %v, want the delay running (ErrTimeout)", err)
	}
	if err := s.Sync(); err != nil { // cuts the delay
		t.Fatal(err)
	}
	if err := s.WaitTicket(tk, time.Time{}); err != nil {
		t.Fatal(err)
	}
}
