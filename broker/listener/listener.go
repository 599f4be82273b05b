// Package listener provides hardened network listeners for the mochi MQTT
// server: plain TCP, TLS (optionally mutual) and WebSocket. They implement
// mochi's listeners.Listener interface and add what mochi's own listeners
// lack:
//
//   - a connect deadline on every accepted socket: a client must complete
//     the TLS handshake / WebSocket upgrade and send its CONNECT packet
//     within Options.ConnectTimeout, or the socket is closed (mochi sets no
//     deadline before CONNECT and replaces ours with the keepalive deadline
//     once CONNECT is read);
//   - an optional cap on concurrently open sockets, shared across
//     listeners (mochi only counts authenticated clients);
//   - recovery from panics while serving a connection: the panic is logged
//     with its stack, counted, and only that connection is closed;
//   - Close closes every socket it accepted, including ones that never sent
//     CONNECT, and waits for their goroutines, so shutdown is prompt and
//     leak-free;
//   - counters (Stats) for accepted, refused and timed-out connections and
//     recovered panics;
//   - cheap deadline refreshes: mochi moves the keepalive deadline before
//     every packet; the socket's timers are only touched when a deadline
//     moves earlier, and a socket still times out exactly when the last
//     deadline asked for expires (deadline.go).
package listener

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// Errors returned by listeners.
var (
	// ErrClosed is returned by Init after Close.
	ErrClosed = errors.New("listener: closed")
	// ErrConfig means the Options are unusable.
	ErrConfig = errors.New("listener: bad options")
)

// DefaultConnectTimeout is used when Options.ConnectTimeout is zero.
const DefaultConnectTimeout = 10 * time.Second

// Stats are counters shared by listeners. All fields are safe for
// concurrent use; read them with Load.
type Stats struct {
	Accepted        atomic.Uint64 // sockets accepted and handed to the broker
	Refused         atomic.Uint64 // sockets closed at accept: connection cap reached
	ConnectTimeouts atomic.Uint64 // sockets closed because no CONNECT arrived in time
	Panics          atomic.Uint64 // panics recovered while serving a connection
	// ProtocolViolations counts connections closed by the packet guard
	// (Options.ValidatePackets) for a malformed or forbidden packet.
	ProtocolViolations atomic.Uint64
	// TooLarge counts the protocol violations that were packets over
	// Options.MaxPacketSize (MQTT 5 clients get DISCONNECT 0x95 first).
	TooLarge atomic.Uint64
	Open     atomic.Int64 // sockets currently open
	// Read batching (Options.ReadBatch): BatchedReads counts the reads
	// made after a batch tick, BatchedPublishes the PUBLISH packets they
	// brought (their ratio is the frames gathered per wake-up), and
	// BatchBackoffs the times a connection stopped batching for a while
	// because its device sent fewer than two frames per tick.
	BatchedReads     atomic.Uint64
	BatchedPublishes atomic.Uint64
	BatchBackoffs    atomic.Uint64
}

// Limit caps the number of concurrently open sockets across the listeners
// that share it. A nil *Limit means no cap.
type Limit struct {
	max int64
	n   atomic.Int64
}

// NewLimit returns a Limit allowing at most max open sockets (max <= 0
// means no cap).
func NewLimit(max int64) *Limit { return &Limit{max: max} }

// Open returns the number of sockets currently counted against the limit.
func (l *Limit) Open() int64 {
	if l == nil {
		return 0
	}
	return l.n.Load()
}

func (l *Limit) acquire() bool {
	if l == nil || l.max <= 0 {
		return true
	}
	if l.n.Add(1) > l.max {
		l.n.Add(-1)
		return false
	}
	return true
}

func (l *Limit) release() {
	if l == nil || l.max <= 0 {
		return
	}
	l.n.Add(-1)
}

// Options configure a listener.
type Options struct {
	// ID is the mochi listener id (e.g. "tcp", "tls", "ws"). Required.
	ID string
	// Address to listen on, e.g. "127.0.0.1:1883" or "127.0.0.1:0".
	Address string
	// TLSConfig, if set, makes a TCP listener a TLS listener. For mutual
	// TLS set ClientAuth to tls.RequireAndVerifyClientCert and ClientCAs.
	// Not supported by the WebSocket listener (terminate wss in front).
	TLSConfig *tls.Config
	// ConnectTimeout bounds the time from accept to a complete CONNECT
	// packet (TLS handshake and WebSocket upgrade included).
	ConnectTimeout time.Duration
	// Limit, if set, caps concurrently open sockets.
	Limit *Limit
	// Stats, if set, receives the counters; otherwise a private Stats is used.
	Stats *Stats
	// OnPanic, if set, is called after a panic was recovered while serving
	// conn (after conn was closed), so the broker can clean up state tied
	// to it.
	OnPanic func(conn net.Conn, recovered any)
	// ValidatePackets enables the packet guard: every byte a client sends
	// is checked packet by packet before mochi decodes it, and a packet that
	// breaks the wire rules of the guard (see guard.go) (reserved
	// types and flags, non-minimal lengths, packets before CONNECT, packet
	// identifier 0, malformed MQTT 5 properties, ...) ends the connection
	// without being delivered.
	ValidatePackets bool
	// MaxPacketSize, if non-zero, is also enforced by the guard (mochi
	// enforces it too).
	MaxPacketSize uint32
	// CloseClients, if set, is called on Close instead of the CloseFn mochi
	// passes in, to disconnect this listener's clients. The broker sets it:
	// mochi v2.7.9's CloseFn (Server.closeListenerClients) calls
	// Clients.GetByListener, which takes the clients' read lock twice (it
	// calls Len under its own RLock); a client ending at that moment
	// (Clients.Delete waiting for the write lock) blocks the second RLock
	// and deadlocks the shutdown for good. Seen in CI as a broker test
	// hanging 17 minutes in Clients.Delete. (The copy of mochi the gateway
	// builds, internal/third_party/mochi, is patched too; the broker also
	// needs its own closer to close 3.1.1 clients without a DISCONNECT.)
	CloseClients func(listenerID string)
	// ReadBatch, if positive, turns read batching on (batch.go): a
	// connection whose last read brought a PUBLISH waits for the
	// listener's next tick, ReadBatch apart, before it reads again, so
	// that a steadily publishing device's frames are read, committed and
	// acknowledged several at a time. Needs ValidatePackets (the guard
	// counts the PUBLISH packets), and a socket that can be read without
	// waiting (Linux): TCP and TLS connections there; never WebSocket
	// ones (see newConn). 0: off.
	ReadBatch time.Duration
	// ReadBatchWindow, if positive, is the most QoS 1 frames a device may
	// have in flight (the broker's Receive Maximum): a read after a tick
	// that brings that many (or 16, if fewer) starts a burst without
	// waits (batch.go), since a device cannot send more per tick.
	ReadBatchWindow int

	// batchTick and batchNow, if set, replace the batch clock's tick and
	// time (tests).
	batchTick func() <-chan struct{}
	batchNow  func() time.Time
}

func (o *Options) normalise() error {
	if o.ID == "" {
		return fmt.Errorf("%w: empty id", ErrConfig)
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.Stats == nil {
		o.Stats = new(Stats)
	}
	return nil
}

// Conn is the net.Conn handed to mochi for every accepted socket. Hooks can
// type-assert mochi's Client.Net.Conn to *Conn to reach it.
type Conn struct {
	net.Conn // what mochi reads from: the socket, a *tls.Conn or a WebSocket adapter

	raw         *rawConn
	established atomic.Bool
	session     atomic.Bool // set by MarkSession
	guard       *guard      // nil unless Options.ValidatePackets; used by the reader only
	batch       *batchState // nil unless Options.ReadBatch (and the guard); used by the reader only

	// wmu serialises writes: mochi's (one goroutine at a time, under its
	// client lock) and the DISCONNECT the guard sends from the read side.
	wmu sync.Mutex
	// writesClosed is set, under wmu, once the server sent its DISCONNECT:
	// nothing may follow it on the wire.
	writesClosed bool
	// held is set once (SetHeld) by the goroutine that reads the
	// connection, under wmu; that goroutine reads it without the lock,
	// writers under wmu.
	held Held
	// wbuf (guarded by wmu) is where held writes are gathered with the
	// next write, so that they leave in one write(2).
	wbuf []byte
	// async is held again when another goroutine can release it
	// (AsyncHeld) and the socket allows writes that never block (nbw);
	// both set by SetHeld, then read-only.
	async AsyncHeld
	nbw   *nbWriter
	// pending (guarded by wmu) is the part of a ReleaseHeld write that
	// the socket did not take at once: it goes out before anything else.
	pending []byte
}

// Held holds writes back until they may go out: the PUBACKs of frames
// whose group commit is still running. Conn flushes it before every write
// (so the wire keeps the order of the packets) and before every read that
// may block (so nothing waits for the client's next packet).
type Held interface {
	// Flush waits until the held writes may go out and appends them to
	// dst. An error fails the read or write that asked; the held writes
	// are then dropped.
	Flush(dst []byte) ([]byte, error)
}

// AsyncHeld is a Held whose writes another goroutine can release, so that
// the connection's reader need not wait for them before it reads.
type AsyncHeld interface {
	Held
	// Later arranges for Conn.ReleaseHeld to be called once the held
	// writes may go out. false: it cannot (or they may go out now), and
	// the reader flushes them itself.
	Later() bool
	// Release appends to dst the held writes that may go out now,
	// without waiting. An error drops them, as for Flush.
	Release(dst []byte) ([]byte, error)
}

// SetHeld installs h. It must be called by the goroutine that reads the
// connection (mochi's read loop, in a hook), at most once. If h is an
// AsyncHeld and the connection is a plain TCP socket, the reader no
// longer waits for held writes before reading: they are written by
// ReleaseHeld.
func (c *Conn) SetHeld(h Held) {
	c.wmu.Lock()
	c.held = h
	if a, ok := h.(AsyncHeld); ok {
		if c.nbw = newNBWriter(c.Conn); c.nbw != nil {
			c.async = a
		}
	}
	c.wmu.Unlock()
}

// ReleaseHeld writes what the AsyncHeld releases (Release), from a
// goroutine other than the reader, without ever blocking on the socket or
// on another writer: if a write is in progress, or the socket does not
// take every byte at once, a goroutine finishes the job.
func (c *Conn) ReleaseHeld() {
	if c.async == nil {
		return
	}
	if !c.wmu.TryLock() {
		go c.releaseBlocking()
		return
	}
	defer c.wmu.Unlock()
	if c.writesClosed || len(c.pending) > 0 {
		// With pending bytes a releaseBlocking is on its way: it waits
		// for wmu and releases these too.
		return
	}
	buf, err := c.async.Release(c.wbuf[:0])
	if err != nil || len(buf) == 0 {
		return
	}
	n := c.nbw.write(buf)
	if n < 0 {
		// The acknowledgements are lost with this socket: close it, so
		// that the device reconnects and resends instead of waiting for
		// them (the reader ends on the closed socket).
		_ = c.Conn.Close()
	}
	if n < len(buf) && n >= 0 {
		c.pending = append(c.pending[:0], buf[n:]...)
		go c.releaseBlocking()
	}
	if cap(buf) <= maxHeldBuf {
		c.wbuf = buf[:0]
	}
}

// releaseBlocking is ReleaseHeld for when it may block: it waits for wmu
// and writes pending bytes and what the AsyncHeld releases.
func (c *Conn) releaseBlocking() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writesClosed {
		return
	}
	buf, err := c.async.Release(append(c.wbuf[:0], c.pending...))
	c.pending = c.pending[:0]
	if err != nil {
		return
	}
	if len(buf) > 0 {
		if _, err := c.Conn.Write(buf); err != nil {
			_ = c.Conn.Close() // as in ReleaseHeld: never acks lost on a live socket
		}
	}
	if cap(buf) <= maxHeldBuf {
		c.wbuf = buf[:0]
	}
}

// Held returns what SetHeld installed, or nil. Only the goroutine that
// reads the connection may call it.
func (c *Conn) Held() Held { return c.held }

// writeHeldLocked writes what c.held releases, in one write, followed by p.
// Called with wmu held.
func (c *Conn) writeHeldLocked(p []byte) (int, error) {
	buf, err := c.held.Flush(append(c.wbuf[:0], c.pending...))
	c.pending = c.pending[:0]
	if err != nil {
		return 0, err
	}
	if len(buf) == 0 {
		if len(p) == 0 {
			return 0, nil
		}
		return c.Conn.Write(p)
	}
	held := len(buf)
	buf = append(buf, p...)
	n, err := c.Conn.Write(buf)
	if cap(buf) <= maxHeldBuf {
		c.wbuf = buf[:0]
	}
	return max(n-held, 0), err
}

// maxHeldBuf bounds the buffer a Conn keeps for held writes.
const maxHeldBuf = 4 << 10

// disconnectTooLarge is the DISCONNECT sent to an MQTT 5 client whose
// packet exceeds the Maximum Packet Size: reason 0x95 Packet too large,
// no properties.
var disconnectTooLarge = []byte{0xE0, 0x02, 0x95, 0x00}

// Lingering close after a DISCONNECT 0x95: the rest of the oversize packet
// is read and discarded (at most lingerMax bytes, for at most
// lingerTimeout), so that closing the socket does not reset the connection
// with unread data before the DISCONNECT reached the client.
const (
	lingerMax     = 256 << 10
	lingerTimeout = 2 * time.Second
)

// ErrWritesClosed is returned by Conn.Write after the listener sent the
// client a DISCONNECT.
var ErrWritesClosed = errors.New("listener: connection closed for writing after DISCONNECT")

// Write writes to the connection; see ErrWritesClosed.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writesClosed {
		return 0, ErrWritesClosed
	}
	if c.held != nil {
		return c.writeHeldLocked(p)
	}
	return c.Conn.Write(p)
}

// releaseHeld writes the held writes before a read that may block.
func (c *Conn) releaseHeld() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writesClosed {
		return nil
	}
	_, err := c.writeHeldLocked(nil)
	return err
}

// disconnect sends an MQTT 5 DISCONNECT and refuses any later write.
func (c *Conn) disconnect(pkt []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.writesClosed {
		return
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(lingerTimeout))
	_, _ = c.Conn.Write(pkt)
	c.writesClosed = true
}

// linger discards what the client still sends, within lingerMax bytes and
// lingerTimeout, and returns at the client's close.
func (c *Conn) linger() {
	_ = c.Conn.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.CopyN(io.Discard, c.Conn, lingerMax)
}

// newConn wraps inner (the socket, a TLS or WebSocket adapter over raw)
// for mochi.
func (c *core) newConn(inner net.Conn, raw *rawConn) *Conn {
	conn := &Conn{Conn: inner, raw: raw}
	if c.opts.ValidatePackets {
		conn.guard = &guard{maxPacket: c.opts.MaxPacketSize}
		// Not over WebSocket: gorilla's reader holds the messages it read
		// from the socket and returns one per read, and a read error
		// (errWouldBlock: batchState.gather) ends its connection, so what
		// it holds cannot be gathered at the tick.
		if _, ws := inner.(*wsConn); c.batch != nil && !ws {
			conn.batch = &batchState{clock: c.batch, raw: raw, done: raw.bs.done, stats: c.opts.Stats}
		}
	}
	return conn
}

// Read reads from the connection. With the packet guard on, a protocol
// violation ends the stream with an error wrapping ErrProtocolViolation
// before the offending packet is complete.
func (c *Conn) Read(p []byte) (int, error) {
	// A read from the batch buffer cannot block: the held writes wait
	// for the read that may (one group-commit wait per batch).
	if c.held != nil && !c.batch.buffered() && (c.async == nil || !c.async.Later()) {
		if err := c.releaseHeld(); err != nil {
			return 0, err
		}
	}
	if c.guard == nil {
		return c.Conn.Read(p)
	}
	if c.guard.err != nil {
		c.afterViolation()
		return 0, c.guard.err
	}
	var n int
	var err error
	if c.batch != nil {
		n, err = c.batch.read(c.Conn, p, c.guard.publishes, c.guard.pubacks)
	} else {
		n, err = c.Conn.Read(p)
	}
	if n > 0 {
		ok, gerr := c.guard.feed(p[:n])
		if gerr != nil {
			st := c.raw.owner.opts.Stats
			st.ProtocolViolations.Add(1)
			if c.guard.tooLarge {
				st.TooLarge.Add(1)
			}
			c.raw.owner.log.Debug("connection closed: protocol violation", "listener", c.raw.owner.opts.ID,
				"remote", c.RemoteAddr().String(), "error", gerr.Error())
			if ok > 0 {
				// The bytes before the violation first (they may end a
				// CONNECT still to be answered); the error at the next
				// Read.
				return ok, nil
			}
			c.afterViolation()
			return 0, gerr
		}
	}
	if c.batch != nil {
		c.batch.settle(c.guard.publishes, c.guard.pubacks)
	}
	return n, err
}

// afterViolation runs when the guard's error is about to reach mochi. A
// packet over the maximum size from an MQTT 5 client whose session is
// established is answered with DISCONNECT 0x95 Packet too large
// [MQTT-3.1.2-24] [MQTT-4.13.2-1], followed by a lingering close. MQTT
// 3.1.1 has no server DISCONNECT, and before CONNACK none may be sent: those
// connections are closed without one.
func (c *Conn) afterViolation() {
	if !c.guard.tooLarge || c.guard.level != 5 || !c.session.Load() || c.guard.told {
		return
	}
	c.guard.told = true
	c.disconnect(disconnectTooLarge)
	c.linger()
}

// MarkSession records that the client's CONNECT was accepted and the
// CONNACK sent. The broker calls it from its OnSessionEstablished hook.
func (c *Conn) MarkSession() { c.session.Store(true) }

// MarkEstablished records that the CONNECT packet was read. The broker
// calls it from its OnConnect hook; a connection that ends in a timeout
// before that is counted as a connect timeout.
func (c *Conn) MarkEstablished() { c.established.Store(true) }

// Established reports whether MarkEstablished was called.
func (c *Conn) Established() bool { return c.established.Load() }

// TLSConnectionState returns the TLS state of a TLS connection. ok is false
// for plain TCP and WebSocket connections.
func (c *Conn) TLSConnectionState() (state tls.ConnectionState, ok bool) {
	if tc, isTLS := c.Conn.(*tls.Conn); isTLS {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

// Close closes the connection. It is safe to call more than once and from
// several goroutines.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.raw.Close()
	return err
}

// rawConn is an accepted socket, tracked by its listener and counted
// against the Limit until closed.
type rawConn struct {
	net.Conn
	owner *core
	once  sync.Once
	// bs is read batching's part of the socket; nil unless
	// Options.ReadBatch (so that a listener without batching spends no
	// memory on it: one pointer, within rawConn's size class).
	bs *batchSock

	// dmu guards rd and wd, the read and write deadlines (deadline.go);
	// taken by whoever sets a deadline and by a read or write whose
	// deadline fired.
	dmu    sync.Mutex
	rd, wd deadlines
	rearms int // fired deadlines that were re-armed (for tests); guarded by dmu
}

// batchSock is a rawConn's read batching state.
type batchSock struct {
	done chan struct{} // closed by Close
	q    quietState    // the quiet socket (quiet_linux.go); used by the reader only
	// probe makes Read return errWouldBlock instead of waiting (set by
	// the reader around a read after the batch tick: batchState.gather);
	// used by the reader only.
	probe bool
}

func (r *rawConn) Close() error {
	err := net.ErrClosed
	r.once.Do(func() {
		if r.bs != nil {
			// Read batching leaves a device's frames unread in the
			// socket until the tick: closing it with them would reset
			// the connection (discardUnread).
			r.discardUnread()
		}
		err = r.Conn.Close()
		if r.bs != nil {
			close(r.bs.done)
		}
		r.owner.forget(r)
	})
	return err
}

// core holds what TCP and WebSocket listeners share: option handling,
// socket tracking, the serve wrapper and shutdown.
type core struct {
	opts  Options
	log   *slog.Logger
	batch *batchClock // nil unless Options.ReadBatch

	mu     sync.Mutex
	closed bool
	conns  map[*rawConn]struct{}
	wg     sync.WaitGroup // one per connection being served

	closeOnce sync.Once
}

func newCore(opts Options) (*core, error) {
	if err := opts.normalise(); err != nil {
		return nil, err
	}
	return &core{opts: opts, log: slog.Default(), conns: make(map[*rawConn]struct{}), batch: newBatchClock(opts.ReadBatch, opts.ReadBatchWindow, opts.batchTick, opts.batchNow)}, nil
}

// admit registers a freshly accepted socket, or closes it and returns nil
// when the listener is closing or the cap is reached.
func (c *core) admit(nc net.Conn) *rawConn {
	if !c.opts.Limit.acquire() {
		c.opts.Stats.Refused.Add(1)
		c.log.Warn("connection refused: too many open connections", "listener", c.opts.ID, "remote", nc.RemoteAddr().String())
		_ = nc.Close()
		return nil
	}
	r := &rawConn{Conn: nc, owner: c}
	if c.batch != nil {
		r.bs = &batchSock{done: make(chan struct{})}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.opts.Limit.release()
		_ = nc.Close()
		return nil
	}
	c.conns[r] = struct{}{}
	c.mu.Unlock()
	c.opts.Stats.Accepted.Add(1)
	c.opts.Stats.Open.Add(1)
	_ = r.SetDeadline(time.Now().Add(c.opts.ConnectTimeout))
	return r
}

func (c *core) forget(r *rawConn) {
	c.mu.Lock()
	_, ok := c.conns[r]
	delete(c.conns, r)
	c.mu.Unlock()
	if ok {
		c.opts.Limit.release()
		c.opts.Stats.Open.Add(-1)
	}
}

// begin reserves a serving slot; false when the listener is closing.
func (c *core) begin() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Add(1)
	return true
}

// serve runs establish for conn, recovering any panic, and closes conn
// when done. The caller must have called begin.
func (c *core) serve(conn *Conn, establish listeners.EstablishFn) {
	defer c.wg.Done()
	defer func() {
		v := recover()
		_ = conn.Close()
		if v == nil {
			return
		}
		c.opts.Stats.Panics.Add(1)
		c.log.Error("recovered panic while serving connection",
			"listener", c.opts.ID, "remote", conn.RemoteAddr().String(),
			"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		if c.opts.OnPanic != nil {
			c.opts.OnPanic(conn, v)
		}
	}()
	err := establish(c.opts.ID, conn)
	if err == nil {
		return
	}
	if !conn.Established() && isTimeout(err) {
		c.opts.Stats.ConnectTimeouts.Add(1)
		c.log.Debug("connection closed: no CONNECT within timeout", "listener", c.opts.ID,
			"remote", conn.RemoteAddr().String(), "timeout", c.opts.ConnectTimeout)
		return
	}
	c.log.Debug("connection ended", "listener", c.opts.ID, "remote", conn.RemoteAddr().String(), "error", err)
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// shutdown marks the core closed, runs stop (which must stop accepting),
// disconnects its clients (Options.CloseClients, else mochi's CloseFn), closes every remaining socket and
// waits for the serving goroutines.
func (c *core) shutdown(stop func(), closeClients listeners.CloseFn) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		if stop != nil {
			stop()
		}
		switch {
		case c.opts.CloseClients != nil:
			c.opts.CloseClients(c.opts.ID)
		case closeClients != nil:
			closeClients(c.opts.ID)
		}
		c.mu.Lock()
		open := make([]*rawConn, 0, len(c.conns))
		for r := range c.conns {
			open = append(open, r)
		}
		c.mu.Unlock()
		for _, r := range open {
			_ = r.Close()
		}
		c.wg.Wait()
	})
}

func (c *core) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// acceptBackoff sleeps after a transient accept error (e.g. EMFILE).
func acceptBackoff(d time.Duration) time.Duration {
	if d == 0 {
		d = 5 * time.Millisecond
	} else {
		d *= 2
	}
	if d > time.Second {
		d = time.Second
	}
	time.Sleep(d)
	return d
}

// boundAddress is the listener's bound address once its socket is open
// (useful with port 0), else the configured address. mu guards ln.
func boundAddress(mu *sync.Mutex, ln *net.Listener, configured string) string {
	mu.Lock()
	defer mu.Unlock()
	if *ln != nil {
		return (*ln).Addr().String()
	}
	return configured
}

// open opens the listening socket for a listener whose fields are guarded by
// mu, adopting log when non-nil.
func (c *core) open(log *slog.Logger, mu *sync.Mutex, ln *net.Listener) error {
	if log != nil {
		c.log = log
	}
	if c.isClosed() {
		return ErrClosed
	}
	l, err := net.Listen("tcp", c.opts.Address)
	if err != nil {
		return err
	}
	mu.Lock()
	*ln = l
	mu.Unlock()
	return nil
}
