package listener

import (
	"errors"
	"net"
	"os"
	"time"
)

// Deadline coalescing. mochi refreshes the keepalive deadline before every
// packet it reads (Client.refreshDeadline: SetDeadline(now + 1.5 ×
// keepalive)); on a socket each call modifies the runtime's read and write
// timers (≈0.9 µs per packet in the paced benchmark). rawConn keeps the
// deadlines asked for and touches the runtime only when a deadline moves
// EARLIER than the one armed (or is cleared): a later one is just
// recorded. When the armed deadline fires and the wanted one is later, the
// read (write) re-arms to the wanted deadline and carries on, so the
// socket times out exactly when the last deadline asked for expires, as if
// every call had been applied.
//
// The coalescing sits on the raw socket, below TLS and WebSocket: tls.Conn
// and gorilla's websocket.Conn never see a timeout that was not wanted
// (gorilla's read error is permanent, and tls.Conn's write error is), and
// every deadline they set reaches rawConn.

// deadlines is the state of one direction. Guarded by rawConn.dmu.
type deadlines struct {
	want  time.Time // the deadline last asked for (zero: none)
	armed time.Time // the deadline set on the socket (zero: none)
}

// set records t as wanted and reports whether it must be set on the
// socket now: it is earlier than the armed deadline, or clears it. A
// later one waits until the armed one fires (see retry).
func (d *deadlines) set(t time.Time) (arm bool) {
	d.want = t
	if t.Equal(d.armed) {
		return false
	}
	if t.IsZero() || d.armed.IsZero() || t.Before(d.armed) {
		d.armed = t
		return true
	}
	return false
}

// retry reports, after the armed deadline fired, whether the wanted one is
// a different, later one: then it is armed (the caller sets it on the
// socket) and the operation goes on.
func (d *deadlines) retry() (time.Time, bool) {
	if d.want.Equal(d.armed) && !d.want.IsZero() {
		return time.Time{}, false
	}
	d.armed = d.want
	return d.want, true
}

// SetDeadline records t for both directions and applies it to the socket
// when it is earlier than (or clears) an armed deadline.
func (r *rawConn) SetDeadline(t time.Time) error {
	r.dmu.Lock()
	defer r.dmu.Unlock()
	rd, wr := r.rd.set(t), r.wd.set(t)
	switch {
	case rd && wr:
		return r.Conn.SetDeadline(t)
	case rd:
		return r.Conn.SetReadDeadline(t)
	case wr:
		return r.Conn.SetWriteDeadline(t)
	}
	return nil
}

// SetReadDeadline is SetDeadline for reads.
func (r *rawConn) SetReadDeadline(t time.Time) error {
	r.dmu.Lock()
	defer r.dmu.Unlock()
	if r.rd.set(t) {
		return r.Conn.SetReadDeadline(t)
	}
	return nil
}

// SetWriteDeadline is SetDeadline for writes.
func (r *rawConn) SetWriteDeadline(t time.Time) error {
	r.dmu.Lock()
	defer r.dmu.Unlock()
	if r.wd.set(t) {
		return r.Conn.SetWriteDeadline(t)
	}
	return nil
}

// Read reads from the socket. A timeout of a deadline that was since moved
// later re-arms the socket and reads on.
func (r *rawConn) Read(p []byte) (int, error) {
	if r.bs != nil {
		if r.bs.probe {
			// A read after the batch tick (batchState.gather): never wait.
			if n, ok, err := r.readNow(p); ok {
				return n, err
			}
			return 0, errWouldBlock
		}
		if n, done, err := r.readQuiet(p); done {
			return n, err
		}
	}
	for {
		n, err := r.Conn.Read(p)
		if n > 0 || err == nil || !isDeadlineErr(err) {
			return n, err
		}
		if !r.rearm(&r.rd, r.Conn.SetReadDeadline) {
			return 0, err
		}
	}
}

// Write writes to the socket. A timeout of a deadline that was since moved
// later re-arms the socket and writes the rest.
func (r *rawConn) Write(p []byte) (int, error) {
	done := 0
	for {
		n, err := r.Conn.Write(p[done:])
		done += n
		if err == nil || !isDeadlineErr(err) {
			return done, err
		}
		if !r.rearm(&r.wd, r.Conn.SetWriteDeadline) {
			return done, err
		}
	}
}

// rearmWrite is Write's re-arm for writers that bypass it (nbWriter): after
// a write deadline error it arms the later deadline wanted meanwhile and
// reports whether the write may go on.
func (r *rawConn) rearmWrite() bool { return r.rearm(&r.wd, r.Conn.SetWriteDeadline) }

// rearm, after d's armed deadline fired, arms the later one wanted
// meanwhile with set and reports whether the operation may go on (false:
// the deadline really passed, or the socket is closed).
func (r *rawConn) rearm(d *deadlines, set func(time.Time) error) bool {
	r.dmu.Lock()
	defer r.dmu.Unlock()
	t, again := d.retry()
	if again && set(t) != nil {
		return false // closed
	}
	if again {
		r.rearms++
	}
	return again
}

// isDeadlineErr reports a timeout of the socket's deadline.
func isDeadlineErr(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
