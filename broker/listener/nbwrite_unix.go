//go:build unix

package listener

import (
	"net"
	"syscall"
)

// nbWriter makes single write(2) calls that never wait for the socket to
// become writable. Its fields are used under Conn.wmu; fn is bound once so
// that a write allocates nothing.
type nbWriter struct {
	rc  syscall.RawConn
	dl  *rawConn // the socket's deadline coalescing (nil: none): see write
	buf []byte
	n   int
	fn  func(fd uintptr) bool
}

// newNBWriter returns a writer for a plain TCP socket (as the TCP listener
// hands it to Conn: a *rawConn), or nil.
func newNBWriter(c net.Conn) *nbWriter {
	r, ok := c.(*rawConn)
	if ok {
		c = r.Conn
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &nbWriter{rc: rc, dl: r}
	w.fn = w.do
	return w
}

func (w *nbWriter) do(fd uintptr) bool {
	n, err := syscall.Write(int(fd), w.buf)
	switch err {
	case nil:
		w.n = n
	case syscall.EAGAIN, syscall.EINTR:
		w.n = 0
	default:
		w.n = -1
	}
	return true // never wait for writability
}

// write writes what the socket takes of b at once: the count, or -1 when
// the socket failed (closed, reset, or its write deadline really passed).
// The raw write bypasses rawConn.Write, so it re-arms a coalesced write
// deadline here the same way: a deadline that fired while a later one was
// wanted is moved to that one and the write goes on.
func (w *nbWriter) write(b []byte) int {
	w.buf = b
	for {
		err := w.rc.Write(w.fn)
		if err == nil {
			break
		}
		if w.dl == nil || !isDeadlineErr(err) || !w.dl.rearmWrite() {
			w.n = -1
			break
		}
	}
	w.buf = nil
	return w.n
}
