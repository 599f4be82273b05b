package listener

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Read batching (Options.ReadBatch). A vehicle publishing QoS 1 telemetry
// at a steady rate wakes its connection's goroutine once per frame: a
// netpoll wake-up, a read(2), the EAGAIN read(2) that parks it again and,
// on the notifier's side, one PUBACK write(2) per frame. At 500 vehicles ×
// 10 Hz these per-frame costs are most of the gateway's CPU
// (docs/benchmarks.md). With read batching, a connection whose last read
// brought a PUBLISH waits for the listener's next batch tick before it reads
// again, so the frames that arrived in the meantime are read in one read(2),
// committed in one group and acknowledged in one write(2), and the
// connections of a whole fleet are woken together, once per tick.
//
// Nothing is read late that would be lost: the bytes wait in the socket's
// receive buffer, unacknowledged, and a PUBACK still follows the group
// commit that made its frame durable. What it costs is latency: a frame is
// read up to one tick after it arrived.
//
// A device that sends its next frame only after the PUBACK of the last one
// (one message in flight) would be held to one frame per tick. The reader
// therefore watches what a read after a tick brings: fewer than two PUBLISH
// packets batchStrikes times in a row, and the connection reads without
// waiting for the next batchBackoffMin reads, then tries again; each failed
// try doubles that, up to batchBackoffMax. A read that fills the buffer,
// or that brings batchMaxPublishes PUBLISH packets or more, shows a device
// sending a backlog as fast as its window allows, which a wait would
// throttle to one window per tick: the connection then reads without
// waiting for batchBurstTicks ticks' time, and each such read while that
// lasts extends it. A read that brings no PUBLISH (CONNECT, SUBSCRIBE,
// PINGREQ, a PUBACK of a command) is never followed by a wait, nor is one
// that brings a PUBACK with its frames: the device acknowledged a command,
// and a server that holds more for it (its Receive Maximum) sends the next
// one now; that one's PUBACK must not wait for a tick too. A device
// that keeps fewer than batchMaxPublishes frames in flight and sends more
// than that many per tick is still held back, to its window per tick:
// docs/operations.md tells operators when to turn batching on.

const (
	batchStrikes      = 3
	batchBackoffMin   = 64
	batchBackoffMax   = 4096
	batchMaxPublishes = 16
	batchBurstTicks   = 4
)

// batchClock is a listener's batch tick, shared by its connections. A tick
// is armed by the first connection that waits for it and fires ReadBatch
// later; an idle listener arms none.
type batchClock struct {
	interval time.Duration
	testTick func() <-chan struct{} // Options.batchTick
	now      func() time.Time       // time.Now, or Options.batchNow (tests)
	burstAt  int                    // PUBLISH packets in a read after a tick that start a burst: batchMaxPublishes, or Options.ReadBatchWindow if smaller

	mu   sync.Mutex
	next chan struct{} // closed when the armed tick fires; nil when none is armed; guarded by mu
}

func newBatchClock(interval time.Duration, window int, testTick func() <-chan struct{}, now func() time.Time) *batchClock {
	if interval <= 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	burstAt := batchMaxPublishes
	if window > 0 {
		burstAt = min(burstAt, window)
	}
	return &batchClock{interval: interval, testTick: testTick, now: now, burstAt: burstAt}
}

// tick returns a channel closed at the next tick.
func (b *batchClock) tick() <-chan struct{} {
	if b.testTick != nil {
		return b.testTick()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.next == nil {
		ch := make(chan struct{})
		b.next = ch
		time.AfterFunc(b.interval, func() {
			b.mu.Lock()
			b.next = nil
			b.mu.Unlock()
			close(ch)
		})
	}
	return b.next
}

// batchBufSize is the buffer a read after a tick reads into, so that
// everything a device sent during the tick comes in one read(2) (mochi's
// own read buffer is 1 KiB, to keep idle connections small). The buffer
// is pooled and held only until mochi has taken its bytes.
const batchBufSize = 16 << 10

var batchBufs = sync.Pool{New: func() any { b := make([]byte, batchBufSize); return &b }}

// batchBufGets counts the buffers taken from batchBufs, batchBufsOut those
// not put back yet (tests: a parked reader holds none).
var batchBufGets, batchBufsOut atomic.Int64

func getBatchBuf() *[]byte {
	batchBufGets.Add(1)
	batchBufsOut.Add(1)
	return batchBufs.Get().(*[]byte)
}

func putBatchBuf(b *[]byte) {
	batchBufsOut.Add(-1)
	batchBufs.Put(b)
}

// batchState is one connection's read batching. Used by the connection's
// reader only.
type batchState struct {
	clock *batchClock
	raw   *rawConn        // the socket, made quiet while the reader waits for the tick
	done  <-chan struct{} // closed when the socket is closed
	stats *Stats

	// buf holds what a read after a tick brought and mochi has not taken
	// yet: (*buf)[pos:end]; nil when empty (then back in batchBufs). err
	// is that read's error, returned once buf is drained.
	buf      *[]byte
	pos, end int
	err      error

	round   bool // a read round is open: set by the read that starts it, cleared by settle once its bytes are taken
	waited  bool // the round began with a wait for the tick
	filled  bool // the round's read after the tick filled the batch buffer: more may be waiting
	pubs    int  // the guard's PUBLISH count when the round began
	acks    int  // the guard's PUBACK count when the round began
	armed   bool // the next round waits for the tick
	strikes int  // rounds after a tick in a row that brought fewer than two PUBLISH packets
	// burstUntil: no wait before this time, set by a round that brought a
	// backlog (zero: none).
	burstUntil time.Time
	skip       int // rounds left that do not wait
	backoff    int // rounds without waiting after the last failed try
}

// read reads into p: from buf while it holds bytes, else a new round
// (after the tick when armed). pubs and acks are the guard's PUBLISH and
// PUBACK counts.
func (b *batchState) read(r io.Reader, p []byte, pubs, acks int) (int, error) {
	if b.buf != nil {
		n := copy(p, (*b.buf)[b.pos:b.end])
		b.pos += n
		if b.pos == b.end {
			putBatchBuf(b.buf)
			b.buf = nil
		}
		return n, nil
	}
	if err := b.err; err != nil {
		b.err = nil
		return 0, err
	}
	// Only a socket that can be made quiet can also be read without
	// waiting after the tick (gather); elsewhere nothing waits.
	b.round, b.waited, b.pubs, b.acks = true, b.armed && b.raw.quiet(), pubs, acks
	// filled is only said of a read into the batch buffer: mochi's own
	// reads are small (its 1 KiB buffer, or the rest of a packet's body)
	// and fill p all the time.
	b.filled = false
	if !b.waited {
		return r.Read(p)
	}
	select {
	case <-b.clock.tick():
	case <-b.done:
	}
	buf := getBatchBuf()
	n, err := b.gather(r, *buf)
	if n == 0 && err == nil {
		// Nothing arrived during the tick: park the usual way, reading
		// into p, so that a parked reader holds no pooled buffer. The
		// socket was just found empty: lower the mark now rather than
		// have the read try it once more.
		putBatchBuf(buf)
		b.raw.unquiet()
		return r.Read(p)
	}
	b.filled = n == len(*buf)
	m := copy(p, (*buf)[:n])
	if m == n {
		putBatchBuf(buf)
		return n, err
	}
	b.buf, b.pos, b.end, b.err = buf, m, n, err
	return m, nil
}

// gather reads into buf, without waiting, what the connection has now:
// the socket's bytes and, over TLS, the records tls.Conn already read from
// it (tls.Conn.Read returns one record at a time). 0 and no error: nothing.
func (b *batchState) gather(r io.Reader, buf []byte) (int, error) {
	b.raw.bs.probe = true
	defer func() { b.raw.bs.probe = false }()
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if errors.Is(err, errWouldBlock) {
			return n, nil
		}
		if err != nil || k == 0 || r == io.Reader(b.raw) {
			// On the socket itself one read(2) takes what is there.
			return n, err
		}
	}
	return n, nil
}

// buffered reports whether the next read is served from the batch buffer
// (it cannot block). b may be nil.
func (b *batchState) buffered() bool { return b != nil && b.buf != nil }

// settle runs after the bytes read were checked by the guard; pubs and
// acks are its PUBLISH and PUBACK counts now. Once a round's bytes are all
// taken it decides whether the next round waits for the tick.
func (b *batchState) settle(pubs, acks int) {
	if !b.round || b.buf != nil {
		return
	}
	b.round = false
	got := pubs - b.pubs
	if b.waited {
		b.stats.BatchedReads.Add(1)
		b.stats.BatchedPublishes.Add(uint64(max(got, 0)))
		if got >= 2 {
			b.strikes, b.backoff = 0, 0
		} else if b.strikes++; b.strikes >= batchStrikes {
			b.stats.BatchBackoffs.Add(1)
			b.strikes = 0
			b.backoff = min(max(b.backoff*2, batchBackoffMin), batchBackoffMax)
			b.skip, b.armed = b.backoff, false
			return
		}
	}
	if b.skip > 0 {
		b.skip--
		b.armed = false
		return
	}
	if got >= b.clock.burstAt || b.filled {
		b.burstUntil = b.clock.now().Add(batchBurstTicks * b.clock.interval)
		b.armed = false
		return
	}
	if got >= 1 && !b.burstUntil.IsZero() {
		if b.clock.now().Before(b.burstUntil) {
			b.armed = false
			return
		}
		b.burstUntil = time.Time{}
	}
	b.armed = got >= 1 && acks == b.acks
}

// errWouldBlock is what the socket returns to a read after the batch tick
// (rawConn.probe) when it has nothing more. It is a temporary net.Error
// because crypto/tls keeps a connection usable only after those (it
// type-asserts net.Error and checks Temporary); gather never lets it out.
var errWouldBlock net.Error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "listener: nothing to read now" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }
