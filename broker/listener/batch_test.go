package listener

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/gorilla/websocket"
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
	c     io.Writer // the device's side

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

// newBatchRig returns a rig with its stats, hand-fired tick and clock.
func newBatchRig() *batchRig {
	return &batchRig{st: new(Stats), tt: newTestTicker(), reads: make(chan int, 256), now: time.Unix(1e9, 0)}
}

// options returns o with the packet guard and batching on the rig's
// stats, tick and clock.
func (r *batchRig) options(o Options) Options {
	o.Stats, o.ValidatePackets, o.ReadBatch, o.batchTick, o.batchNow = r.st, true, time.Hour, r.tt.tick, r.clock
	return o
}

// readLoop reads c with a buffer of size bytes, reporting each read's size
// on reads, until an error.
func readLoop(c net.Conn, size int, reads chan<- int) error {
	buf := make([]byte, size)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			reads <- n
		}
		if err != nil {
			return err
		}
	}
}

func startBatchRig(t *testing.T) *batchRig {
	t.Helper()
	return startBatchRigWith(t, Options{})
}

// startBatchRigWith is startBatchRig with extra listener options.
func startBatchRigWith(t *testing.T, o Options) *batchRig {
	t.Helper()
	r := newBatchRig()
	l := startTCP(t, r.options(o), func(_ string, c net.Conn) error { return readLoop(c, 4096, r.reads) })
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
		l := startTCP(t, o, func(_ string, c net.Conn) error { return readLoop(c, 64, reads) })
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
	b := newBatchClock(time.Millisecond, 0, nil, nil)
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
	if newBatchClock(0, 0, nil, nil) != nil {
		t.Fatal("a clock without an interval")
	}
}

// --- Review: defects found in read batching (each test failed before its fix).

// startBatchRigOn is startBatchRig over a transport: "tcp", "tls" or
// "ws". readSize is the reader's buffer; held, if set, is installed by the
// reader (as the ingest hook does).
func startBatchRigOn(t *testing.T, transport string, readSize int, held Held) *batchRig {
	t.Helper()
	r := newBatchRig()
	o := r.options(Options{})
	serve := func(_ string, c net.Conn) error {
		_ = c.SetDeadline(time.Time{}) // no connect timeout: a parked read stays parked
		if held != nil {
			c.(*Conn).SetHeld(held)
		}
		return readLoop(c, readSize, r.reads)
	}
	switch transport {
	case "tcp":
		r.c = dial(t, startTCP(t, o, serve).Address())
	case "tls":
		srv, cli := selfSigned(t)
		o.TLSConfig = srv
		l := startTCP(t, o, serve)
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", l.Address(), cli)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		r.c = c
	case "ws":
		o.ID, o.Address = "ws", "127.0.0.1:0"
		w, err := NewWebSocket(o)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Init(quiet); err != nil {
			t.Fatal(err)
		}
		go w.Serve(serve)
		t.Cleanup(func() { w.Close(nil) })
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}}
		ws, resp, err := d.Dial("ws://"+w.Address()+"/mqtt", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		t.Cleanup(func() { ws.Close() })
		r.c = wsWriter{ws}
	}
	r.send(t, connect311)
	r.read(t, len(connect311))
	return r
}

// wsWriter sends each Write as one binary WebSocket message.
type wsWriter struct{ *websocket.Conn }

func (w wsWriter) Write(p []byte) (int, error) {
	return len(p), w.WriteMessage(websocket.BinaryMessage, p)
}

// readTotal expects reads adding up to n bytes with no wait for the tick
// before they are all read.
func (r *batchRig) readTotal(t *testing.T, n int) {
	t.Helper()
	got := 0
	for got < n {
		select {
		case k := <-r.reads:
			got += k
		case <-r.tt.waiting:
			t.Fatalf("the reader waits for the tick after %d of %d bytes sent before it", got, n)
		case <-time.After(wait):
			t.Fatalf("read %d bytes, want %d", got, n)
		}
	}
	if got != n {
		t.Fatalf("read %d bytes, want %d", got, n)
	}
}

// Over TLS each frame is its own record, and tls.Conn.Read returns one
// record at a time while it has already read the others from the socket:
// the reader must not wait for a tick per record it holds in memory (it
// did: one frame per tick, then a back-off, so batching never gathered
// anything over TLS).
func TestReadBatchTLSReadsEveryBufferedRecordAtTheTick(t *testing.T) {
	r := startBatchRigOn(t, "tls", 4096, nil)
	r.send(t, publish1(1))
	r.read(t, 8)
	r.waiting(t)
	r.send(t, publish1(2), publish1(3), publish1(4))
	r.tt.fire()
	r.readTotal(t, 24)
	r.waiting(t)
	if got, pubs, bo := r.st.BatchedReads.Load(), r.st.BatchedPublishes.Load(), r.st.BatchBackoffs.Load(); got != 1 || pubs != 3 || bo != 0 {
		t.Fatalf("batched reads %d, publishes %d, backoffs %d; want 1, 3, 0", got, pubs, bo)
	}
}

// Over WebSocket each frame is its own message and gorilla's reader holds
// the ones already read from the socket; a read returns one message. Such
// frames must not wait for a tick each.
func TestReadBatchWebSocketNeverHoldsBufferedMessages(t *testing.T) {
	r := startBatchRigOn(t, "ws", 4096, nil)
	r.send(t, publish1(1))
	r.read(t, 8)
	r.send(t, publish1(2), publish1(3), publish1(4))
	r.tt.fire() // harmless if nobody waits
	r.readTotal(t, 24)
}

// A tick that finds nothing parks the reader the usual way; it must not
// hold a pooled 16 KiB buffer while parked (an idle fleet would hold one
// per device).
func TestReadBatchParkedReaderHoldsNoBuffer(t *testing.T) {
	r := startBatchRigOn(t, "tcp", 4096, nil)
	gets, out := batchBufGets.Load(), batchBufsOut.Load()
	r.send(t, publish1(1))
	r.read(t, 8)
	r.waiting(t)
	r.tt.fire()
	eventually(t, "a read after the tick", func() bool { return batchBufGets.Load() > gets })
	eventually(t, "the buffer back in the pool while the reader is parked", func() bool { return batchBufsOut.Load() == out })
	r.send(t, publish1(2))
	r.read(t, 8)
}

// countingHeld is a Held that counts its flushes (each one waits for a
// group commit in the gateway).
type countingHeld struct{ n atomic.Int32 }

func (h *countingHeld) Flush(dst []byte) ([]byte, error) { h.n.Add(1); return dst, nil }

// Reads served from the batch buffer never block: they must not flush
// the held PUBACKs (a group-commit wait per mochi read of the batch,
// instead of one per batch).
func TestReadBatchDrainDoesNotFlushHeld(t *testing.T) {
	h := new(countingHeld)
	r := startBatchRigOn(t, "tcp", 16, h)
	r.send(t, publish1(1))
	r.read(t, 8)
	r.waiting(t)
	before := h.n.Load() // the reads of CONNECT, the PUBLISH and the one now waiting
	r.send(t, publish1(2), publish1(3), publish1(4))
	r.tt.fire()
	r.read(t, 16)
	r.read(t, 8) // from the batch buffer
	r.waiting(t)
	if got := h.n.Load() - before; got != 1 {
		t.Fatalf("%d flushes after the tick, want 1 (before the next wait)", got)
	}
}

// What a device sent before it closed its socket during the tick is all
// read, then the end of the stream; over TLS too (close_notify and FIN
// arrive with the last records).
func TestReadBatchEOFAfterBufferedFrames(t *testing.T) {
	for _, transport := range []string{"tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			r := startBatchRigOn(t, transport, 4096, nil)
			r.send(t, publish1(1))
			r.read(t, 8)
			r.waiting(t)
			r.send(t, publish1(2), publish1(3))
			if err := r.c.(io.Closer).Close(); err != nil {
				t.Fatal(err)
			}
			r.tt.fire()
			r.readTotal(t, 16)
			if transport == "tcp" {
				// One read(2) took the frames; the end of the stream
				// is read at the next tick (TLS read its close_notify
				// with the records).
				r.waiting(t)
				r.tt.fire()
			}
			// The end of the stream shows as the listener forgetting
			// the socket.
			eventually(t, "socket closed after EOF", func() bool { return r.st.Open.Load() == 0 })
		})
	}
}

// A keepalive deadline that was moved later while the socket's armed one
// fired during the wait (deadline coalescing): the frames are read, not
// lost to the stale deadline, and the later deadline still ends an idle
// connection.
func TestReadBatchCoalescedDeadlineDuringWait(t *testing.T) {
	r := &batchRig{st: new(Stats), tt: newTestTicker(), reads: make(chan int, 256)}
	ended := make(chan error, 1)
	armedGone := make(chan struct{})
	o := Options{Stats: r.st, ValidatePackets: true, ReadBatch: time.Hour, batchTick: r.tt.tick}
	l := startTCP(t, o, func(_ string, c net.Conn) error {
		buf := make([]byte, 4096)
		_ = c.SetDeadline(time.Now().Add(50 * time.Millisecond)) // armed on the socket
		for i := 0; ; i++ {
			if i == 2 {
				// Before the read that waits for the tick: a later
				// deadline (only recorded), then the armed one passes.
				_ = c.SetDeadline(time.Now().Add(time.Hour))
				time.Sleep(100 * time.Millisecond)
				close(armedGone)
			}
			if i == 3 {
				_ = c.SetDeadline(time.Now().Add(50 * time.Millisecond)) // earlier: armed at once
			}
			n, err := c.Read(buf)
			if n > 0 {
				r.reads <- n
			}
			if err != nil {
				ended <- err
				return err
			}
		}
	})
	r.c = dial(t, l.Address())
	r.send(t, connect311)
	r.read(t, len(connect311))
	r.send(t, publish1(1))
	r.read(t, 8)
	<-armedGone
	r.waiting(t)
	r.send(t, publish1(2), publish1(3))
	r.tt.fire()
	r.readTotal(t, 16)
	r.waiting(t) // read 3: waits, then its deadline ends the idle connection
	r.tt.fire()
	select {
	case err := <-ended:
		if !isTimeout(err) {
			t.Fatalf("ended with %v, want a timeout", err)
		}
	case <-time.After(wait):
		t.Fatal("the deadline never ends the idle connection")
	}
}

// A read that fills the reader's own (small) buffer says nothing about a
// backlog: mochi reads into a 1 KiB buffer, or exactly the rest of a
// packet's body, and fills it all the time. Only a read after the tick that
// fills the batch buffer starts a burst. (It did for any read: after an
// empty tick, or between ticks, most connections of the paced benchmark
// went into bursts and read frame by frame.)
func TestReadBatchSmallReaderBufferStartsNoBurst(t *testing.T) {
	r := startBatchRigOn(t, "tcp", 16, nil)
	two := func(id byte) []byte { return append(publish1(id), publish1(id+1)...) }
	r.send(t, two(1))
	r.read(t, 16) // fills the reader's 16-byte buffer
	r.waiting(t)
	r.tt.fire() // an empty tick: the reader parks
	r.send(t, two(3))
	r.read(t, 16)
	r.waiting(t)
}

// --- Second review.

// startBatchRigConn is startBatchRigOn over TCP that also hands back the
// server's side of the connection (what mochi holds: Stop closes it).
func startBatchRigConn(t *testing.T) (*batchRig, net.Conn, net.Conn) {
	t.Helper()
	r := newBatchRig()
	srv := make(chan net.Conn, 1)
	l := startTCP(t, r.options(Options{}), func(_ string, c net.Conn) error {
		_ = c.SetDeadline(time.Time{})
		srv <- c
		return readLoop(c, 4096, r.reads)
	})
	c := dial(t, l.Address())
	r.c = c
	r.send(t, connect311)
	r.read(t, len(connect311))
	return r, <-srv, c
}

// A connection closed by the server (drain, takeover, shutdown: mochi's
// Stop, after a DISCONNECT to an MQTT 5 device) while its reader waits for
// the tick has the frames the device sent meanwhile unread in its socket;
// closing a socket with unread data resets the connection (RST) instead of
// ending it (FIN). The device must read the DISCONNECT and then the end of
// the stream, not a reset: many device stacks drop what they had received
// on a reset, the DISCONNECT (and its Server Reference) with it. Without
// batching the reader has taken those bytes already.
func TestReadBatchServerCloseWhileWaitingEndsWithFIN(t *testing.T) {
	r, srv, dev := startBatchRigConn(t)
	r.send(t, publish1(1))
	r.read(t, 8)
	r.waiting(t)
	r.send(t, publish1(2), publish1(3)) // unread: the reader waits for the tick
	disconnect := []byte{0xE0, 0x01, 0x9C}
	if _, err := srv.Write(disconnect); err != nil {
		t.Fatal(err)
	}
	_ = srv.Close()
	_ = dev.SetReadDeadline(time.Now().Add(wait))
	got, err := io.ReadAll(dev)
	if string(got) != string(disconnect) {
		t.Fatalf("device read %x, want the DISCONNECT %x", got, disconnect)
	}
	if err != nil {
		t.Fatalf("the connection ended with %v after the DISCONNECT, want the end of the stream (FIN)", err)
	}
}

// A device that publishes steadily and receives commands sends the PUBACK
// of each command with its frames. A server that holds further commands
// for it (its Receive Maximum, often 1 to 10 on a car's modem) sends the
// next one once that PUBACK is read, and its PUBACK must not wait for
// another tick in turn: the read after a round that brought a PUBACK waits
// for nothing. (It waited whenever the round also brought a PUBLISH: a
// command queue drained at Receive Maximum commands per tick, 4 a second
// with Receive Maximum 1 and a 250 ms tick.)
func TestReadBatchNoWaitAfterCommandPuback(t *testing.T) {
	r := startBatchRig(t)
	r.send(t, publish1(1))
	r.read(t, 8)
	r.waiting(t)
	puback := []byte{0x40, 0x02, 0x00, 0x01} // of the server's command 1
	r.send(t, puback, publish1(2))
	r.tt.fire()
	r.read(t, 12)
	// The server wrote command 2; its PUBACK, with a frame, is read at once.
	r.send(t, append([]byte{0x40, 0x02, 0x00, 0x02}, publish1(3)...))
	r.read(t, 12)
	r.notWaiting(t)
	// Without a command in flight the next frame waits as before.
	r.send(t, publish1(4))
	r.read(t, 8)
	r.waiting(t)
}

// Every accepted socket is a rawConn, with or without read batching, and
// an idle fleet is mostly these: batching must not make the ones of a
// listener without it larger. Before batching a rawConn was 152 bytes (the
// 160-byte size class); batching's quiet-socket state, probe flag and
// close channel in it made it 248 (the 256-byte class: +96 bytes per
// connection with batching off). They now hang off one pointer.
func TestReadBatchOffAddsNoMemoryPerConnection(t *testing.T) {
	if n := unsafe.Sizeof(rawConn{}); n > 160 {
		t.Fatalf("rawConn is %d bytes, over the 160-byte size class it had before read batching", n)
	}
}

// With a window under 16 (the broker's Receive Maximum), a read after a
// tick that brings a full window starts a burst: an MQTT 5 device cannot
// send more, and would otherwise stay at its window per tick.
func TestReadBatchBurstAtTheWindow(t *testing.T) {
	r := startBatchRigWith(t, Options{ReadBatchWindow: 4})
	r.send(t, publish1(1))
	r.read(t, 8)
	r.waiting(t)
	var window []byte
	for i := range 4 {
		window = append(window, publish1(byte(2+i))...)
	}
	r.send(t, window)
	r.tt.fire()
	r.read(t, len(window))
	r.send(t, publish1(9))
	r.read(t, 8)
	r.notWaiting(t)
}
