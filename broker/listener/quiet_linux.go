//go:build linux

package listener

import (
	"io"
	"net"
	"syscall"
)

// Quiet sockets (read batching, batch.go). While a connection waits for
// its batch tick nobody is parked on its socket, but Go's network poller
// still has it registered: every segment a device sends would wake the
// poller (epoll_wait returns, finds no waiter, sleeps again), one idle-CPU
// wake-up per frame, which is most of what batching is meant to save. So
// before the wait the reader raises the socket's SO_RCVLOWAT: TCP then
// signals readability only once quietLowat bytes are buffered (a device
// that sends more than that meanwhile just wakes the poller, as before),
// and the frames wait in the receive buffer without waking anything. The
// read after the tick is a non-blocking read(2), which returns whatever is
// there whatever the low-water mark; only when it finds nothing is the mark
// put back to 1, before the reader parks in the poller (the kernel
// re-checks readability when the mark changes), so a parked reader is
// never left waiting for bytes that will not wake it.

// quietLowat is the low-water mark of a quiet socket. At most half of the
// initial receive buffer (tcp_rmem[1], 128 KiB by default) with the
// default tcp_adv_win_scale, so that setting it neither grows the receive
// buffer nor clamps the advertised window (tcp_set_rcvlowat).
const quietLowat = 32 << 10

// quietLowatFor is the low-water mark for a socket whose receive buffer is
// rcvbuf bytes (0: unknown): quietLowat, or a quarter of a smaller buffer
// (a host with tcp_rmem tuned down), so that raising it never grows the
// buffer nor clamps the window.
func quietLowatFor(rcvbuf int) int {
	if rcvbuf <= 0 {
		return quietLowat
	}
	return max(1, min(quietLowat, rcvbuf/4))
}

// rcvbuf returns the socket's SO_RCVBUF, 0 if unknown.
func (q *quietState) rcvbuf() int {
	v := 0
	_ = q.rc.Control(func(fd uintptr) {
		if n, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF); err == nil {
			v = n
		}
	})
	return v
}

// quietState is a rawConn's quiet-socket state; used by the reader only.
type quietState struct {
	rc    syscall.RawConn // nil: not a TCP socket, or not yet looked up
	tried bool            // rc was looked up
	on    bool            // SO_RCVLOWAT is raised
	lowat int             // the mark raised to: quietLowatFor the socket's receive buffer

	// The non-blocking read's arguments and results; fn is bound once so
	// that a read allocates nothing.
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

// quiet raises the socket's low-water mark (see above). false: the socket
// cannot be quiet (not TCP, or the option failed); reads stay as they are.
// quiet, readQuiet and readNow need r.bs (read batching).
func (r *rawConn) quiet() bool {
	q := &r.bs.q
	if q.on {
		return true
	}
	if !q.tried {
		q.tried = true
		if tc, ok := r.Conn.(*net.TCPConn); ok {
			if rc, err := tc.SyscallConn(); err == nil {
				q.rc = rc
				q.fn = q.read
				q.lowat = quietLowatFor(q.rcvbuf())
			}
		}
	}
	if q.rc == nil || !q.setLowat(q.lowat) {
		return false
	}
	q.on = true
	return true
}

// readQuiet reads a quiet socket without waiting. done is false when the
// socket had nothing (or the read could not be made): the low-water mark
// is then back at 1 and the caller reads the usual way.
func (r *rawConn) readQuiet(p []byte) (n int, done bool, err error) {
	q := &r.bs.q
	if !q.on {
		return 0, false, nil
	}
	if n, ok, err := r.readNow(p); ok {
		return n, true, err
	}
	// Nothing there (EAGAIN), or an error the usual read reports better
	// (a closed socket, a deadline, a reset): park the usual way.
	r.unquiet()
	return 0, false, nil
}

// unquiet puts the low-water mark back to 1 before the reader parks in the
// poller (the kernel re-checks readability when the mark changes).
func (r *rawConn) unquiet() {
	if q := &r.bs.q; q.on {
		q.on = false
		q.setLowat(1)
	}
}

// readNow reads the socket once without waiting. ok is false when it had
// nothing, or the read failed (the usual read reports that better).
func (r *rawConn) readNow(p []byte) (n int, ok bool, err error) {
	q := &r.bs.q
	if q.rc == nil {
		return 0, false, nil
	}
	q.buf = p
	rerr := q.rc.Read(q.fn)
	q.buf = nil
	if rerr == nil && (q.n > 0 || q.err == nil) {
		if q.n == 0 { // end of stream
			return 0, true, io.EOF
		}
		return q.n, true, nil
	}
	return 0, false, nil
}

func (q *quietState) read(fd uintptr) bool {
	q.n, q.err = syscall.Read(int(fd), q.buf)
	if q.n < 0 {
		q.n = 0
	}
	if q.err == nil && q.n == 0 && len(q.buf) == 0 {
		q.err = syscall.EAGAIN // an empty read proves nothing
	}
	return true // never wait for readability
}

func (q *quietState) setLowat(v int) bool {
	var serr error
	if err := q.rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, v)
	}); err != nil {
		return false
	}
	return serr == nil
}

// discardUnread reads and drops, without waiting, what the socket holds
// (at most lingerMax bytes), before it is closed. Linux resets a
// connection closed with unread data (RST instead of FIN), and many device
// stacks then drop what they had received and not yet read: the
// DISCONNECT sent just before (drain, takeover, shutdown) with its reason
// and Server Reference. A reader that waits for the batch tick leaves the
// frames of the tick unread, so with read batching a server close would
// nearly always reset a publishing device. Safe from any goroutine: it
// uses its own view of the socket (Control takes no read lock, so a reader
// parked on the socket does not hold it up); a read(2) racing the reader's
// only takes bytes nobody will handle.
func (r *rawConn) discardUnread() {
	tc, ok := r.Conn.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	buf := batchBufs.Get().(*[]byte)
	defer batchBufs.Put(buf)
	_ = rc.Control(func(fd uintptr) {
		for total := 0; total < lingerMax; {
			n, _, err := syscall.Recvfrom(int(fd), *buf, syscall.MSG_DONTWAIT)
			if n <= 0 || err != nil {
				return
			}
			total += n
		}
	})
}
