// Package spool is the gateway's on-disk write-ahead spool.
//
// Every frame the gateway accepts is appended to the spool before it is
// acknowledged: Append returns once the record is written and fsynced, so an
// MQTT QoS 1 PUBACK sent after Append returns nil is backed by the disk.
// Consumers (the InfluxDB sink, the NATS event sink) tail the spool
// independently, each with its own persisted cursor, and a segment file is
// deleted once every consumer has committed past it.
//
// Appends from many goroutines are group-committed: a single syncer goroutine
// writes everything appended since its previous round and covers it with one
// fdatasync; an appender waits only for the round that covers its record.
// Appends never wait for space: when the bytes not yet committed by every
// consumer reach Options.MaxBytes, Append fails at once with ErrFull.
//
// Consumers only ever see records that are durable, in append order, and a
// consumer's read position starts at its committed position on Open, so
// everything not committed before a crash is delivered again (at least once).
//
// See README.md in this directory for the on-disk format and recovery rules.
package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Defaults for zero Options fields.
const (
	DefaultSegmentBytes = 64 << 20
	DefaultMaxBytes     = 1 << 30
	DefaultMaxRecord    = 1 << 20
)

// writeBufSize is the size at which an appender writes the pending buffer to
// the segment file itself instead of leaving it to the syncer.
const writeBufSize = 256 << 10

// Options configures a Spool. Zero fields take the documented defaults.
type Options struct {
	Dir          string        // created if missing
	Consumers    []string      // names of the cursors; retention waits for all of them
	SegmentBytes int64         // roll over size, default 64 MiB
	MaxBytes     int64         // max bytes on disk not yet committed by every consumer; default 1 GiB
	MaxRecord    int           // default 1 MiB; larger -> ErrTooLarge
	SyncDelay    time.Duration // optional extra wait to gather a bigger group before fsync; default 0 (syncer runs as soon as it is free, which already groups concurrent writers)
	// SyncRecords, with SyncDelay, makes the wait adaptive: the syncer
	// waits only while the group holds fewer than SyncRecords records, and
	// commits as soon as it reaches them (or SyncDelay passed). At high
	// rates groups are already that large and nobody waits; at moderate
	// rates one fdatasync covers more records. 0: always wait SyncDelay.
	SyncRecords int
	// SyncMinRate (records per second), with SyncDelay, skips the wait
	// while records arrive more slowly: waiting would then delay the
	// PUBACKs without gathering more records into the fdatasync. The rate
	// is estimated by the syncer from its recent group commits (no clock
	// read per append). 0: wait whatever the rate.
	SyncMinRate float64
	NoSync      bool // tests/benchmarks only: skip fsync
	Logger      *slog.Logger

	clock func() time.Time // tests only: the syncer's clock; nil = time.Now
}

func (o Options) normalize() (Options, error) {
	if o.Dir == "" {
		return o, fmt.Errorf("%w: Dir is empty", ErrInvalidOptions)
	}
	if o.SegmentBytes == 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxRecord == 0 {
		o.MaxRecord = DefaultMaxRecord
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.clock == nil {
		o.clock = time.Now
	}
	switch {
	case o.SegmentBytes <= segHeaderSize:
		return o, fmt.Errorf("%w: SegmentBytes %d must exceed %d", ErrInvalidOptions, o.SegmentBytes, segHeaderSize)
	case o.MaxRecord < 0 || o.MaxRecord > maxRecordLimit:
		return o, fmt.Errorf("%w: MaxRecord %d out of range [0, %d]", ErrInvalidOptions, o.MaxRecord, maxRecordLimit)
	case o.MaxBytes < int64(o.MaxRecord)+frameHeaderSize:
		return o, fmt.Errorf("%w: MaxBytes %d cannot hold one record of MaxRecord %d", ErrInvalidOptions, o.MaxBytes, o.MaxRecord)
	case o.SyncDelay < 0:
		return o, fmt.Errorf("%w: negative SyncDelay", ErrInvalidOptions)
	case o.SyncRecords < 0:
		return o, fmt.Errorf("%w: negative SyncRecords", ErrInvalidOptions)
	case o.SyncMinRate < 0 || o.SyncMinRate != o.SyncMinRate:
		return o, fmt.Errorf("%w: SyncMinRate must be ≥ 0", ErrInvalidOptions)
	case len(o.Consumers) == 0:
		return o, fmt.Errorf("%w: no consumers (nothing would ever read or retain the spool)", ErrInvalidOptions)
	}
	seen := make(map[string]bool, len(o.Consumers))
	for _, name := range o.Consumers {
		if !validConsumerName(name) {
			return o, fmt.Errorf("%w: consumer name %q (use 1-100 of [A-Za-z0-9_.-], not starting with '.')", ErrInvalidOptions, name)
		}
		if seen[name] {
			return o, fmt.Errorf("%w: duplicate consumer %q", ErrInvalidOptions, name)
		}
		seen[name] = true
	}
	o.Consumers = append([]string(nil), o.Consumers...)
	return o, nil
}

func validConsumerName(name string) bool {
	if name == "" || len(name) > 100 || name[0] == '.' {
		return false
	}
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}

// segment is one segment file. All fields are guarded by Spool.mu; f is
// used without the lock for ReadAt and fdatasync (both safe concurrently).
type segment struct {
	seq      uint64
	f        *os.File
	size     int64  // logical size: header + frames, including bytes still in Spool.wbuf
	alloc    int64  // length of the file: size plus the preallocated, not yet written tail (see prealloc.go)
	base     int64  // record bytes (frames) in all earlier segments since Open
	firstRec uint64 // number of the first record
	recs     uint64 // records in the segment
}

// abs converts an offset in s to a spool-wide byte count of frames.
func (s *segment) abs(off int64) int64 { return s.base + off - segHeaderSize }

// Spool is an on-disk write-ahead log with group commit and named consumers.
// All methods are safe for concurrent use.
type Spool struct {
	opts Options
	log  *slog.Logger
	dir  *os.File // the directory, fsynced after creating a segment
	lock *os.File // holds the flock for the directory

	mu       sync.Mutex
	closed   bool
	failErr  error // non-nil once a write or fsync failed (wraps ErrFailed)
	segs     []*segment
	wbuf     []byte // appended frames not yet written to the active segment
	wbufOff  int64  // file offset of wbuf[0] in the active segment
	writeAbs int64  // frame bytes appended (spool-wide count, see segment.base)
	nextRec  uint64 // number of the next record to append
	durable  Pos    // everything before durable is fsynced; readers stop here
	dirDirty bool   // a segment was created since the last directory fsync
	// spare is non-nil while the next segment file (spareName) is being
	// prepared or is ready; it receives the preparation's outcome once.
	spare chan error

	// Group commit. Records appended while curGen is collecting are made
	// durable by one fdatasync; waiters sleep on synced until doneGen
	// reaches their generation (okGen: the last one that succeeded).
	synced   sync.Cond
	curGen   uint64 // generation collecting appends (starts at 1)
	curDirty bool   // curGen holds records (or a Sync wants a round)
	curRecs  int    // records appended to curGen
	doneGen  uint64 // last generation whose round finished
	okGen    uint64 // last generation whose round succeeded
	cons     []*Consumer
	minAbs   int64 // smallest committed position of all consumers (abs)

	appended, syncs, full uint64
	truncated             int64

	wake  chan struct{} // cap 1: there is a group to commit
	force chan struct{} // cap 1: Sync wants the group now (cuts SyncDelay)
	grown chan struct{} // cap 1: the group reached SyncRecords (cuts SyncDelay)
	// rate (records per second, a moving average over group commits) and
	// lastCut (when the previous group was cut) are written by the syncer
	// goroutine with mu held (observeLocked) and read by it without; they
	// decide whether SyncMinRate allows a wait.
	rate    float64
	lastCut time.Time
	// spareErr and spareFailed (guarded by mu): the last failure for lack
	// of space of preparing the next segment at a roll-over, and when
	// (takeSpareLocked retries at most once a second).
	spareErr    error
	spareFailed time.Time
	closing     chan struct{} // closed by Close
	syncerDone  chan struct{}
	watchDone   chan struct{}
	// timedWaiters counts AppendTimeout calls waiting for a group commit.
	timedWaiters int
	// notes (guarded by mu) are the NotifyTicket registrations whose
	// commit has not finished; due (guarded by mu) the ones finished or
	// timed out and not yet delivered by notifyLoop, woken by notifyWake.
	notes      []note
	due        []note
	notifyWake chan struct{} // cap 1
	notifyDone chan struct{}
	ops        sync.WaitGroup // file I/O outside mu (reads, commits, deletions)

	// testHookBeforeSync, when set, runs in the syncer after a group has been
	// cut and before its fdatasync.
	testHookBeforeSync func()
}

// Stats is a snapshot of the spool's state.
type Stats struct {
	Bytes        int64  // data in the segment files: headers and frames, bytes buffered for the next write included
	DiskBytes    int64  // length of the segment files: Bytes plus the preallocated tail of the active segment and the next segment file being prepared
	PendingBytes int64  // record bytes not yet committed by the slowest consumer; limited by MaxBytes
	Segments     int    // segment files
	Appended     uint64 // records appended since Open
	Syncs        uint64 // group commits (one fdatasync each unless NoSync) since Open
	Full         uint64 // appends rejected with ErrFull since Open
	Truncated    int64  // bytes cut from a torn tail at Open
	Durable      Pos    // everything before Durable is fsynced and readable
	Consumers    []ConsumerStats
}

// ConsumerStats is one consumer's part of Stats. Lag is measured from the
// consumer's committed position to the end of the spool.
type ConsumerStats struct {
	Name       string
	Committed  Pos
	Read       Pos // in-memory read position
	LagRecords uint64
	LagBytes   int64
}

// Open opens (or creates) the spool in opts.Dir and recovers it: it verifies
// every record of every segment, truncates a torn or corrupt tail of the last
// segment (logging how many bytes), and loads the consumers' cursors. A bad
// record anywhere else is reported as a *CorruptError (ErrCorrupt).
func Open(opts Options) (*Spool, error) {
	o, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(o.Dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return nil, err
		}
		if !o.NoSync {
			// Make the new directory's entry durable too.
			if err := syncDir(filepath.Dir(filepath.Clean(o.Dir))); err != nil {
				return nil, err
			}
		}
	}
	lock, err := os.OpenFile(filepath.Join(o.Dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := lockFile(lock); err != nil {
		lock.Close()
		return nil, err
	}
	dir, err := os.Open(o.Dir)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s := &Spool{
		opts:       o,
		log:        o.Logger,
		dir:        dir,
		lock:       lock,
		wake:       make(chan struct{}, 1),
		force:      make(chan struct{}, 1),
		grown:      make(chan struct{}, 1),
		closing:    make(chan struct{}),
		syncerDone: make(chan struct{}),
		watchDone:  make(chan struct{}),
		notifyWake: make(chan struct{}, 1),
		notifyDone: make(chan struct{}),
		curGen:     1,
	}
	s.synced.L = &s.mu
	if err := s.recover(); err != nil {
		_ = s.closeFiles() // the recovery error is the one to report
		return nil, err
	}
	go s.syncLoop()
	go s.watchdog()
	go s.notifyLoop()
	return s, nil
}

// AppendTimeout is Append with a bound on the wait for the group commit.
// If the fsync covering rec has not completed within d (a stalled disk), it
// returns ErrTimeout: the caller must not acknowledge the record. The record
// may still become durable later and then be delivered to consumers, so a
// client that resends it creates a duplicate, which the sinks write
// idempotently. d <= 0 waits without bound, like Append.
func (s *Spool) AppendTimeout(rec []byte, d time.Duration) (Pos, error) {
	if d <= 0 {
		return s.Append(rec)
	}
	deadline := time.Now().Add(d)
	p, gen, err := s.write(rec)
	if err != nil {
		return Pos{}, err
	}
	if err := s.waitUntil(gen, deadline, d); err != nil {
		return Pos{}, err
	}
	return p, nil
}

// Ticket names the group commit that covers a record appended with
// AppendTicket.
type Ticket uint64

// AppendTicket writes rec like AppendAsync and returns the ticket of the
// group commit that will make it durable. The caller may wait for it with
// WaitTicket, and must not acknowledge rec before WaitTicket returned nil.
// It lets one goroutine append several records and wait once for all of
// them: a later ticket's commit covers every earlier record. Errors as for
// Append.
func (s *Spool) AppendTicket(rec []byte) (Ticket, error) {
	_, gen, err := s.write(rec)
	return Ticket(gen), err
}

// WaitTicket blocks until the group commit of t (and so of every record
// appended before t's) has finished, and returns its outcome. With a
// non-zero deadline it returns an error wrapping ErrTimeout once the
// deadline has passed; the records may still become durable later, as
// with AppendTimeout.
func (s *Spool) WaitTicket(t Ticket, deadline time.Time) error {
	if deadline.IsZero() {
		return s.wait(uint64(t))
	}
	return s.waitUntil(uint64(t), deadline, 0)
}

// waitUntil is wait with a deadline; d, when non-zero, is the bound
// reported in the timeout error.
func (s *Spool) waitUntil(gen uint64, deadline time.Time, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.doneGen >= gen {
		if gen > s.okGen {
			return s.failErr
		}
		return nil
	}
	s.timedWaiters++
	defer func() { s.timedWaiters-- }()
	for s.doneGen < gen {
		if !time.Now().Before(deadline) {
			if d == 0 {
				return fmt.Errorf("%w at deadline", ErrTimeout)
			}
			return fmt.Errorf("%w after %s", ErrTimeout, d)
		}
		s.synced.Wait()
	}
	if gen > s.okGen {
		return s.failErr
	}
	return nil
}

// Notifier is told by NotifyTicket that a group commit has finished.
type Notifier interface {
	// Durable reports the outcome of the commit of t (nil: every record
	// appended up to t is durable), or an error wrapping ErrTimeout when
	// the deadline given to NotifyTicket passed first. It runs on the
	// spool's notifier goroutine, one call at a time, and must neither
	// block nor call the spool's waiting methods (Append, WaitTicket,
	// Sync, Close): every later notification waits for it.
	Durable(t Ticket, err error)
}

// note is one NotifyTicket registration.
type note struct {
	gen      uint64
	deadline time.Time // zero: none
	n        Notifier
	err      error // set when due
}

// NotifyTicket arranges for n.Durable to be called once the group commit
// of t has finished, so that the caller need not wait for it (WaitTicket).
// With a non-zero deadline, n.Durable is called with an error wrapping
// ErrTimeout if the commit has not finished by then (checked by the
// watchdog, so up to 25 ms late). It reports false, and registers
// nothing, when the commit of t has already finished: WaitTicket then
// returns its outcome at once.
func (s *Spool) NotifyTicket(t Ticket, deadline time.Time, n Notifier) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.doneGen >= uint64(t) {
		return false
	}
	s.notes = append(s.notes, note{gen: uint64(t), deadline: deadline, n: n})
	return true
}

// expireNotesLocked hands the registrations whose deadline passed to
// notifyLoop with ErrTimeout.
func (s *Spool) expireNotesLocked(now time.Time) {
	kept := s.notes[:0]
	for _, n := range s.notes {
		if n.deadline.IsZero() || now.Before(n.deadline) {
			kept = append(kept, n)
			continue
		}
		n.err = fmt.Errorf("%w at deadline", ErrTimeout)
		s.due = append(s.due, n)
	}
	if len(kept) == len(s.notes) {
		return
	}
	clear(s.notes[len(kept):])
	s.notes = kept
	s.kickNotifyLocked()
}

// notifyLoop delivers due notifications outside the spool's lock, so that
// the syncer goes on with the next group commit meanwhile. It ends after
// the syncer, once the final commit's notifications are delivered.
func (s *Spool) notifyLoop() {
	defer close(s.notifyDone)
	var batch []note // owned by this goroutine
	for {
		stop := false
		select {
		case <-s.notifyWake:
		case <-s.syncerDone:
			stop = true
		}
		s.mu.Lock()
		batch, s.due = s.due, batch[:0]
		s.mu.Unlock()
		for _, n := range batch {
			n.n.Durable(Ticket(n.gen), n.err)
		}
		clear(batch)
		if stop {
			return
		}
	}
}

// watchdog wakes timed waiters periodically so that they can notice their
// deadline while the syncer is stuck in an fsync.
func (s *Spool) watchdog() {
	defer close(s.watchDone)
	t := time.NewTicker(watchdogPeriod)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
			s.mu.Lock()
			if s.timedWaiters > 0 {
				s.synced.Broadcast()
			}
			if len(s.notes) > 0 {
				s.expireNotesLocked(time.Now())
			}
			s.mu.Unlock()
		}
	}
}

// watchdogPeriod bounds how late AppendTimeout notices its deadline.
const watchdogPeriod = 25 * time.Millisecond

// Append writes rec and returns once it is durable (written and fsynced by a
// group commit). rec is copied; the caller may reuse it. Errors: ErrTooLarge,
// ErrFull (immediately, without waiting for space), ErrClosed, or an error
// wrapping ErrFailed.
//
// Append blocks only until the fsync covering its record. If Close is called
// meanwhile, the final fsync of Close covers the record and Append returns
// nil (or the fsync error).
func (s *Spool) Append(rec []byte) (Pos, error) {
	p, gen, err := s.write(rec)
	if err != nil {
		return Pos{}, err
	}
	if err := s.wait(gen); err != nil {
		return Pos{}, err
	}
	return p, nil
}

// wait blocks until the round of generation gen has finished and returns its
// outcome.
func (s *Spool) wait(gen uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.doneGen < gen {
		s.synced.Wait()
	}
	if gen > s.okGen {
		return s.failErr
	}
	return nil
}

// AppendAsync writes rec and returns without waiting for the fsync; the next
// group commit (or Sync, or Close) makes it durable. Consumers see it only
// once it is durable. For QoS 0 traffic. Errors as for Append.
func (s *Spool) AppendAsync(rec []byte) (Pos, error) {
	p, _, err := s.write(rec)
	return p, err
}

// write adds rec to the collecting group and returns its position and the
// group's generation.
func (s *Spool) write(rec []byte) (Pos, uint64, error) {
	if len(rec) > s.opts.MaxRecord {
		return Pos{}, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(rec), s.opts.MaxRecord)
	}
	crc := frameCRC(rec)
	frame := int64(frameHeaderSize + len(rec))

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Pos{}, 0, ErrClosed
	}
	if s.failErr != nil {
		err := s.failErr
		s.mu.Unlock()
		return Pos{}, 0, err
	}
	if s.writeAbs-s.minAbs+frame > s.opts.MaxBytes {
		s.full++
		s.mu.Unlock()
		return Pos{}, 0, ErrFull
	}
	var removed []*segment
	// A segment that could not be preallocated at Open rolls over too, so
	// that appends go to a preallocated file (or get ErrFull while the disk
	// is full).
	if a := s.active(); a.size > segHeaderSize && (a.size+frame > s.opts.SegmentBytes || a.alloc < s.opts.SegmentBytes) {
		if err := s.rollLocked(); err != nil {
			s.mu.Unlock()
			return Pos{}, 0, err
		}
		removed = s.retainLocked()
	}
	if len(s.wbuf) > 0 && len(s.wbuf)+int(frame) > writeBufSize {
		if err := s.flushLocked(); err != nil {
			s.mu.Unlock()
			return Pos{}, 0, err
		}
	}
	a := s.active()
	p := Pos{Seg: a.seq, Off: a.size}
	s.wbuf = appendFrameHeader(s.wbuf, len(rec), crc)
	s.wbuf = append(s.wbuf, rec...)
	a.size += frame
	a.alloc = max(a.alloc, a.size) // a record larger than SegmentBytes extends the file
	a.recs++
	if s.spare == nil && a.size > s.opts.SegmentBytes/2 {
		s.startSpareLocked()
	}
	s.writeAbs += frame
	s.nextRec++
	s.appended++
	gen, kick := s.curGen, !s.curDirty
	s.curDirty = true
	s.curRecs++
	grown := s.curRecs == s.opts.SyncRecords
	if removed != nil {
		s.ops.Add(1)
	}
	s.mu.Unlock()

	if kick {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	if grown {
		select {
		case s.grown <- struct{}{}:
		default:
		}
	}
	if removed != nil {
		s.removeSegments(removed)
		s.ops.Done()
	}
	return p, gen, nil
}

func appendFrameHeader(b []byte, n int, crc uint32) []byte {
	return append(b, byte(n), byte(n>>8), byte(n>>16), byte(n>>24),
		byte(crc), byte(crc>>8), byte(crc>>16), byte(crc>>24))
}

func (s *Spool) active() *segment { return s.segs[len(s.segs)-1] }

// flushLocked writes wbuf to the active segment.
func (s *Spool) flushLocked() error {
	if len(s.wbuf) == 0 {
		return nil
	}
	a := s.active()
	if _, err := a.f.WriteAt(s.wbuf, s.wbufOff); err != nil {
		return s.failLocked(fmt.Errorf("write %s: %w", a.f.Name(), err))
	}
	s.wbufOff += int64(len(s.wbuf))
	s.wbuf = s.wbuf[:0]
	return nil
}

// failLocked puts the spool in the failed state (first error wins).
func (s *Spool) failLocked(err error) error {
	if s.failErr == nil {
		s.failErr = fmt.Errorf("%w: %w", ErrFailed, err)
		s.log.Error("spool failed; appends are refused until it is reopened", "dir", s.opts.Dir, "err", err)
	}
	s.wbuf = s.wbuf[:0]
	return s.failErr
}

// rollLocked seals the active segment and starts the next one. The next
// file is made ready first (preallocated, see takeSpareLocked): if the disk
// is full, nothing changes. The sealed segment is truncated to its data end
// and fsynced before its successor exists, so every segment but the last is
// complete on disk and ends with its last frame: only the last one can have
// a torn tail or preallocated zeros.
func (s *Spool) rollLocked() error {
	old := s.active()
	if err := s.takeSpareLocked(); err != nil {
		// Nothing was lost: the old segment stays active and the next
		// append retries the roll-over.
		return err
	}
	if err := s.flushLocked(); err != nil {
		return err
	}
	if old.alloc > old.size {
		if err := old.f.Truncate(old.size); err != nil {
			return s.failLocked(fmt.Errorf("truncate %s: %w", old.f.Name(), err))
		}
		old.alloc = old.size
	}
	if !s.opts.NoSync {
		if err := fdatasync(old.f); err != nil {
			return s.failLocked(err)
		}
	}
	seq := old.seq + 1
	path := filepath.Join(s.opts.Dir, segName(seq))
	if err := os.Rename(filepath.Join(s.opts.Dir, spareName), path); err != nil {
		return fmt.Errorf("spool: create segment: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		// The renamed file has no header yet: the next roll-over
		// replaces it, and recovery deletes or reinitializes it.
		return fmt.Errorf("spool: create segment: %w", err)
	}
	s.segs = append(s.segs, &segment{
		seq:      seq,
		f:        f,
		size:     segHeaderSize,
		alloc:    s.opts.SegmentBytes,
		base:     old.abs(old.size),
		firstRec: s.nextRec,
	})
	s.wbuf = appendSegHeader(s.wbuf[:0], seq, s.nextRec)
	s.wbufOff = 0
	s.dirDirty = true
	return nil
}

// syncLoop is the syncer goroutine: one group commit per wake-up.
func (s *Spool) syncLoop() {
	defer close(s.syncerDone)
	var timer *time.Timer
	if s.opts.SyncDelay > 0 {
		timer = time.NewTimer(time.Hour)
		timer.Stop()
		defer timer.Stop()
	}
	for {
		closing := false
		select {
		case <-s.wake:
		case <-s.closing:
			closing = true
		}
		if timer != nil && !closing && s.rateWanted() && s.groupWanted() {
			timer.Reset(s.opts.SyncDelay)
			select {
			case <-timer.C:
			case <-s.force:
			case <-s.grown:
			case <-s.closing:
			}
			timer.Stop()
		}
		s.commitGroup()
		if closing {
			// Close has been called: no new group can start, and the
			// round above covered everything appended before.
			return
		}
	}
}

// rateWanted reports whether records arrive fast enough for a wait
// (Options.SyncMinRate). Syncer goroutine only.
func (s *Spool) rateWanted() bool {
	return s.opts.SyncMinRate <= 0 || s.rate >= s.opts.SyncMinRate
}

// rateWeight is the weight of the newest group in the rate average: the
// estimate follows a change of load within a few group commits.
const rateWeight = 0.25

// observeLocked updates the arrival rate with a group of n records cut now.
// Syncer goroutine only (commitGroup), with mu held so that tests can read
// the estimate.
func (s *Spool) observeLocked(n int) {
	if s.opts.SyncMinRate <= 0 || n == 0 {
		return
	}
	now := s.opts.clock()
	if !s.lastCut.IsZero() {
		if d := now.Sub(s.lastCut).Seconds(); d > 0 {
			s.rate += rateWeight * (float64(n)/d - s.rate)
		}
	}
	s.lastCut = now
}

// groupWanted reports whether the syncer should wait SyncDelay for the
// collecting group to grow: always without SyncRecords, else while the
// group holds fewer records (a signal of s.grown left from an earlier group
// is dropped first, so it cannot cut this wait short).
func (s *Spool) groupWanted() bool {
	if s.opts.SyncRecords <= 0 {
		return true
	}
	select {
	case <-s.grown:
	default:
	}
	s.mu.Lock()
	n := s.curRecs
	s.mu.Unlock()
	return n < s.opts.SyncRecords
}

// commitGroup cuts the collecting group, writes and fdatasyncs it, advances
// the durable position and releases the group's waiters.
func (s *Spool) commitGroup() {
	s.mu.Lock()
	if !s.curDirty {
		s.mu.Unlock()
		return
	}
	gen := s.curGen
	s.curGen++
	s.curDirty = false
	s.observeLocked(s.curRecs)
	s.curRecs = 0
	err := s.failErr
	if err == nil {
		err = s.flushLocked()
	}
	if err != nil {
		s.finishLocked(gen)
		s.mu.Unlock()
		return
	}
	a := s.active()
	target := Pos{Seg: a.seq, Off: a.size}
	f := a.f
	dirSync := s.dirDirty
	s.dirDirty = false
	s.mu.Unlock()

	if s.testHookBeforeSync != nil {
		s.testHookBeforeSync()
	}
	if !s.opts.NoSync {
		err = fdatasync(f)
		if err == nil && dirSync {
			err = s.dir.Sync()
		}
	}

	s.mu.Lock()
	if err != nil {
		_ = s.failLocked(fmt.Errorf("fsync: %w", err)) // kept in s.failErr, which waiters read
	} else {
		// Records of this generation were written before the fsync
		// started, so they are durable even if another write failed
		// meanwhile.
		if s.durable.Less(target) {
			s.durable = target
		}
		s.okGen = gen
		s.syncs++
		for _, c := range s.cons {
			select {
			case c.notify <- struct{}{}:
			default:
			}
		}
	}
	s.finishLocked(gen)
	s.mu.Unlock()
}

// finishLocked records that the round of gen finished (okGen and failErr
// already set), wakes its waiters and hands its notifications to
// notifyLoop.
func (s *Spool) finishLocked(gen uint64) {
	s.doneGen = gen
	s.synced.Broadcast()
	if len(s.notes) == 0 {
		return
	}
	kept := s.notes[:0]
	for _, n := range s.notes {
		if n.gen > gen {
			kept = append(kept, n)
			continue
		}
		if n.gen > s.okGen {
			n.err = s.failErr
		}
		s.due = append(s.due, n)
	}
	clear(s.notes[len(kept):])
	s.notes = kept
	s.kickNotifyLocked()
}

func (s *Spool) kickNotifyLocked() {
	select {
	case s.notifyWake <- struct{}{}:
	default:
	}
}

// Sync starts a group commit now (cutting SyncDelay short) and waits until
// everything appended before the call, AppendAsync records included, is
// durable.
func (s *Spool) Sync() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	gen, dirty := s.curGen, s.curDirty
	s.mu.Unlock()
	if !dirty {
		// Nothing collecting: wait for the round in flight, if any.
		return s.wait(gen - 1)
	}
	select {
	case s.force <- struct{}{}:
	default:
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return s.wait(gen)
}

// retainLocked detaches the segments every consumer has committed past (never
// the active one) and returns them for removeSegments.
func (s *Spool) retainLocked() []*segment {
	n := 0
	for n < len(s.segs)-1 {
		seg := s.segs[n]
		if s.minAbs < seg.abs(seg.size) {
			break
		}
		n++
	}
	if n == 0 {
		return nil
	}
	removed := make([]*segment, n)
	copy(removed, s.segs[:n])
	s.segs = append(s.segs[:0], s.segs[n:]...)
	first := s.segs[0]
	for _, c := range s.cons {
		// A position at the end of a removed segment is the start of
		// the first remaining one.
		if c.committed.Seg < first.seq {
			c.committed = Pos{Seg: first.seq, Off: segHeaderSize}
		}
		if c.readPos.Seg < first.seq {
			c.readPos = Pos{Seg: first.seq, Off: segHeaderSize}
		}
	}
	return removed
}

// removeSegments closes and deletes detached segments. The deletions are not
// fsynced: a segment that comes back after a crash is deleted again by Open,
// which finds every cursor past it.
func (s *Spool) removeSegments(segs []*segment) {
	for _, seg := range segs {
		seg.f.Close()
		if err := os.Remove(seg.f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("spool: delete consumed segment", "file", seg.f.Name(), "err", err)
			continue
		}
		s.log.Debug("spool: deleted consumed segment", "seg", seg.seq, "records", seg.recs)
	}
}

// recomputeMinLocked refreshes minAbs from the consumers' committed positions.
func (s *Spool) recomputeMinLocked() {
	m := s.writeAbs
	for _, c := range s.cons {
		m = min(m, c.commitAbs)
	}
	s.minAbs = m
}

// Consumer returns the consumer called name (the same *Consumer on every
// call), or ErrUnknownConsumer.
func (s *Spool) Consumer(name string) (*Consumer, error) {
	for _, c := range s.cons {
		if c.name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownConsumer, name)
}

// Stats returns a snapshot of the spool's counters and positions.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		PendingBytes: s.writeAbs - s.minAbs,
		Segments:     len(s.segs),
		Appended:     s.appended,
		Syncs:        s.syncs,
		Full:         s.full,
		Truncated:    s.truncated,
		Durable:      s.durable,
		Consumers:    make([]ConsumerStats, len(s.cons)),
	}
	for _, seg := range s.segs {
		st.Bytes += seg.size
		st.DiskBytes += max(seg.alloc, seg.size)
	}
	if s.spare != nil {
		st.DiskBytes += s.opts.SegmentBytes
	}
	for i, c := range s.cons {
		st.Consumers[i] = ConsumerStats{
			Name:       c.name,
			Committed:  c.committed,
			Read:       c.readPos,
			LagRecords: s.nextRec - c.commitRec,
			LagBytes:   s.writeAbs - c.commitAbs,
		}
	}
	return st
}

// Close makes everything appended so far durable (a final group commit),
// wakes blocked Reads with ErrClosed, waits for in-flight reads and commits,
// and closes the files. Appends waiting for a fsync are released by the
// final one. Later calls return nil.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()

	<-s.syncerDone
	<-s.watchDone
	<-s.notifyDone
	s.ops.Wait()

	s.mu.Lock()
	err := s.failErr
	s.removeSpare()
	if err == nil {
		s.trimActive()
	}
	s.mu.Unlock()
	if cerr := s.closeFiles(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// closeFiles closes every file the spool holds; the directory lock goes last.
func (s *Spool) closeFiles() error {
	var errs []error
	for _, seg := range s.segs {
		errs = append(errs, seg.f.Close())
	}
	for _, c := range s.cons {
		if c.file != nil {
			errs = append(errs, c.file.Close())
		}
	}
	errs = append(errs, s.dir.Close(), s.lock.Close())
	return errors.Join(errs...)
}
