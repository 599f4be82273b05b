package listener

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Read batching (batch.go, quiet_linux.go) over real sockets. The batch
// tick is the test's (Options.batchTick), so no test depends on timing:
// a read that waits for the tick blocks until the test fires it.

var (
	connect311 = []byte{0x10, 0x0d, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, 'a'}
	pingreq    = []byte{0xc0, 0x00}
)

// publish1 is a QoS 1 PUBLISH to "t" with packet identifier id and a
// one-byte payload: 8 bytes.
func publish1(id byte) []byte { return []byte{0x32, 0x06, 0x00, 0x01, 't', 0x00, id, 'x'} }

// testTicker is a batch clock the test fires by hand.
type testTicker struct {
	mu      sync.Mutex
	cur     chan struct{}
	waiting chan struct{} // one value each time a reader starts waiting
}

func newTestTicker() *testTicker {
	return &testTicker{cur: make(chan struct{}), waiting: make(chan struct{}, 64)}
}

func (tt *testTicker) tick() <-chan struct{} {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	tt.waiting <- struct{}{}
	return tt.cur
}

func (tt *testTicker) fire() {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	close(tt.cur)
	tt.cur = make(chan struct{})
}

// batchRig is a TCP listener with read batching whose one connection's
// reads are reported on reads (their sizes).
type batchRig struct {
	st    *Stats
	tt    *testTicker
	reads chan int
	c     net.Conn // the device's side

	mu  sync.Mutex
	now time.Time // the batch clock's time (burst mode), moved by advance
}

func (r *batchRig) clock() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now
}

func (r *batchRig) advance(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now = r.now.Add(d)
}

func startBatchRig(t *testing.T) *batchRig {
	t.Helper()
	r := &batchRig{st: new(Stats), tt: newTestTicker(), reads: make(chan int, 256), now: time.Unix(1e9, 0)}
	l := startTCP(t, Options{Stats: r.st, ValidatePackets: true, ReadBatch: time.Hour, batchTick: r.tt.tick, batchNow: r.clock},
		func(_ string, c net.Conn) error {
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					r.reads <- n
				}
				if err != nil {
					return err
				}
			}
		})
	r.c = dial(t, l.Address())
	r.send(t, connect311)
	r.read(t, len(connect311))
	return r
}

func (r *batchRig) send(t *testing.T, b ...[]byte) {
	t.Helper()
	for _, p := range b {
		// Each in its own write(2): on loopback the bytes are in the
		// gateway's receive queue when Write returns.
		if _, err := r.c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
}

// read expects the connection's next read to return n bytes.
func (r *batchRig) read(t *testing.T, n int) {
	t.Helper()
	select {
	case got := <-r.reads:
		if got != n {
			t.Fatalf("read %d bytes, want %d", got, n)
		}
	case <-time.After(wait):
		t.Fatalf("no read (want %d bytes)", n)
	}
}

// waiting expects the reader to be waiting for the tick.
func (r *batchRig) waiting(t *testing.T) {
	t.Helper()
	select {
	case <-r.tt.waiting:
	case <-time.After(wait):
		t.Fatal("the reader does not wait for the tick")
	}
}

// notWaiting expects no wait for the tick so far, and no read.
func (r *batchRig) notWaiting(t *testing.T) {
	t.Helper()
	select {
	case <-r.tt.waiting:
		t.Fatal("the reader waits for the tick")
	case n := <-r.reads:
		t.Fatalf("unexpected read of %d bytes", n)
	default:
	}
}

func TestReadBatchGathersFramesUntilTheTick(t *testing.T) {
	r := startBatchRig(t)
	r.notWaiting(t) // CONNECT brings no PUBLISH: no wait
	r.send(t, publish1(1))
	r.read(t, 8)
	r.waiting(t)
	r.send(t, publish1(2), publish1(3), publish1(4))
	r.notWaiting(t)
	r.tt.fire()
	r.read(t, 24) // all three in one read
	r.waiting(t)
	if got, pubs := r.st.BatchedReads.Load(), r.st.BatchedPublishes.Load(); got != 1 || pubs != 3 {
		t.Fatalf("batched reads %d, publishes %d; want 1, 3", got, pubs)
	}
}

// A tick that finds the socket empty parks the reader in the poller; the
// socket's low-water mark must be back at 1 by then, or the next frame
// would never wake it.
func TestReadBatchEmptyTickParksAndWakesOnData(t *testing.T) {
	r := startBatchRig(t)
	r.send(t, publish1(1))
	r.read(t, 8)
	r.waiting(t)
	r.tt.fire()
	r.notWaiting(t)
	r.send(t, publish1(2))
	r.read(t, 8)
	// Same after bytes that do not complete a packet.
	r.waiting(t)
	r.tt.fire()
	r.send(t, publish1(3)[:3])
	r.read(t, 3)
	r.send(t, publish1(3)[3:])
	r.read(t, 5)
}

// A device with one frame in flight sends its next frame only after the
// PUBACK: it must not be held to one frame per tick for long.
func TestReadBatchBacksOffForOneFrameInFlight(t *testing.T) {
	r := startBatchRig(t)
	r.send(t, publish1(1))
	r.read(t, 8)
	for i := range batchStrikes {
		r.waiting(t)
		r.send(t, publish1(byte(2+i)))
		r.tt.fire()
		r.read(t, 8)
	}
	if b := r.st.BatchBackoffs.Load(); b != 1 {
		t.Fatalf("backoffs %d, want 1", b)
	}
	for i := range batchBackoffMin {
		r.send(t, publish1(byte(10+i)))
		r.read(t, 8)
		r.notWaiting(t)
	}
	// Then it tries again.
	r.send(t, publish1(100))
	r.read(t, 8)
	r.waiting(t)
}

// A read that brings a backlog (batchMaxPublishes frames or more) starts a
// burst: no wait for batchBurstTicks ticks' time, extended by every
// backlog read, so that a device sending as fast as its window allows is
// not throttled to one window per tick.
func TestReadBatchNoWaitDuringABurst(t *testing.T) {
	r := startBatchRig(t)
	r.send(t, publish1(1))
	r.read(t, 8)
	r.waiting(t)
	var backlog []byte
	for i := range batchMaxPublishes {
		backlog = append(backlog, publish1(byte(2+i))...)
	}
	r.send(t, backlog)
	r.tt.fire()
	r.read(t, len(backlog))
	// Small reads during the burst do not wait.
	burst := batchBurstTicks * time.Hour
	r.advance(burst - time.Minute)
	r.send(t, publish1(50))
	r.read(t, 8)
	r.notWaiting(t)
	// Another backlog extends it.
	r.send(t, backlog)
	r.read(t, len(backlog))
	r.advance(burst - time.Minute)
	r.send(t, publish1(51))
	r.read(t, 8)
	r.notWaiting(t)
	// Once it is over, the wait is back.
	r.advance(2 * time.Minute)
	r.send(t, publish1(52))
	r.read(t, 8)
	r.waiting(t)
}

// A read that fills the batch buffer starts a burst too.
func TestReadBatchFullBufferStartsABurst(t *testing.T) {
	r := startBatchRig(t)
	r.send(t, publish1(1))
	r.read(t, 8)
	r.waiting(t)
	// One large PUBLISH (QoS 0, no packet id) over the 16 KiB buffer.
	body := append([]byte{0x00, 0x01, 't'}, make([]byte, batchBufSize)...)
	big := append([]byte{0x30, 0x83 | 0x80, 0x80 | byte(len(body)>>7&0x7f), byte(len(body) >> 14)}, body...)
	big[1] = 0x80 | byte(len(body)&0x7f)
	r.send(t, big)
	r.tt.fire()
	total := 0
	for total < len(big) {
		select {
		case n := <-r.reads:
			total += n
		case <-time.After(wait):
			t.Fatalf("read %d of %d bytes", total, len(big))
		}
	}
	r.send(t, publish1(2))
	r.read(t, 8)
	r.notWaiting(t)
}

// A read that brings no PUBLISH (PINGREQ) is not followed by a wait: a
// PINGRESP must not wait for a tick.
func TestReadBatchNoWaitWithoutPublish(t *testing.T) {
	r := startBatchRig(t)
	r.send(t, pingreq)
	r.read(t, 2)
	r.send(t, pingreq)
	r.read(t, 2)
	r.notWaiting(t)
}

// Closing a connection that waits for the tick ends its read at once.
func TestReadBatchCloseWhileWaiting(t *testing.T) {
	st, tt := new(Stats), newTestTicker()
	done := make(chan error, 1)
	var conn net.Conn
	got := make(chan struct{})
	l := startTCP(t, Options{Stats: st, ValidatePackets: true, ReadBatch: time.Hour, batchTick: tt.tick},
		func(_ string, c net.Conn) error {
			conn = c
			close(got)
			buf := make([]byte, 64)
			for {
				if _, err := c.Read(buf); err != nil {
					done <- err
					return err
				}
			}
		})
	c := dial(t, l.Address())
	if _, err := c.Write(append(append([]byte{}, connect311...), publish1(1)...)); err != nil {
		t.Fatal(err)
	}
	<-got
	select {
	case <-tt.waiting:
	case <-time.After(wait):
		t.Fatal("the reader does not wait for the tick")
	}
	_ = conn.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read without error on a closed connection")
		}
	case <-time.After(wait):
		t.Fatal("the read goes on waiting for the tick after Close")
	}
}

// Without the packet guard there is no batching (it counts the PUBLISH
// packets), and with ReadBatch 0 neither.
func TestReadBatchOff(t *testing.T) {
	for _, o := range []Options{{ReadBatch: time.Hour}, {ValidatePackets: true}} {
		tt := newTestTicker()
		o.batchTick = tt.tick
		reads := make(chan int, 16)
		l := startTCP(t, o, func(_ string, c net.Conn) error {
			buf := make([]byte, 64)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					reads <- n
				}
				if err != nil {
					return err
				}
			}
		})
		c := dial(t, l.Address())
		for _, p := range [][]byte{connect311, publish1(1), publish1(2)} {
			if _, err := c.Write(p); err != nil {
				t.Fatal(err)
			}
			select {
			case <-reads:
			case <-time.After(wait):
				t.Fatalf("%+v: a read waits", o)
			}
		}
		if len(tt.waiting) != 0 {
			t.Fatalf("%+v: waited for a tick", o)
		}
	}
}

// The real clock: a tick is armed by the first waiter and fires once.
func TestBatchClockTicks(t *testing.T) {
	b := newBatchClock(time.Millisecond, nil, nil)
	c1 := b.tick()
	if c2 := b.tick(); c1 != c2 {
		t.Fatal("two waiters, two ticks")
	}
	select {
	case <-c1:
	case <-time.After(wait):
		t.Fatal("the tick never fires")
	}
	if c3 := b.tick(); c3 == c1 {
		t.Fatal("a fired tick is reused")
	}
	if newBatchClock(0, nil, nil) != nil {
		t.Fatal("a clock without an interval")
	}
}
