package listener

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// TCP is a TCP or TLS listener for mochi. Create it with NewTCP.
type TCP struct {
	*core
	mu      sync.Mutex
	ln      net.Listener
	serving chan struct{} // closed when Serve returns; nil before Serve
}

var _ listeners.Listener = (*TCP)(nil)

// NewTCP returns a TCP listener, or a TLS listener when opts.TLSConfig is
// set. The socket is opened by Init (mochi's AddListener calls it).
func NewTCP(opts Options) (*TCP, error) {
	c, err := newCore(opts)
	if err != nil {
		return nil, err
	}
	return &TCP{core: c}, nil
}

// ID returns the listener id.
func (l *TCP) ID() string { return l.opts.ID }

// Protocol returns "tcp" or "tls".
func (l *TCP) Protocol() string {
	if l.opts.TLSConfig != nil {
		return "tls"
	}
	return "tcp"
}

// Address returns the bound address once Init succeeded (useful with port
// 0), else the configured address.
func (l *TCP) Address() string { return boundAddress(&l.mu, &l.ln, l.opts.Address) }

// Init opens the socket.
func (l *TCP) Init(log *slog.Logger) error { return l.core.open(log, &l.mu, &l.ln) }

// Serve accepts connections until Close and hands each to establish in
// its own goroutine.
func (l *TCP) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	ln := l.ln
	if ln == nil || l.serving != nil || l.isClosed() {
		l.mu.Unlock()
		return
	}
	done := make(chan struct{})
	l.serving = done
	l.mu.Unlock()
	defer close(done)

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if l.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Warn("accept failed", "listener", l.opts.ID, "error", err)
			backoff = acceptBackoff(backoff)
			continue
		}
		backoff = 0
		raw := l.admit(nc)
		if raw == nil {
			continue
		}
		var inner net.Conn = raw
		if l.opts.TLSConfig != nil {
			inner = tls.Server(raw, l.opts.TLSConfig)
		}
		conn := l.newConn(inner, raw)
		if !l.begin() {
			_ = conn.Close()
			continue
		}
		go l.serve(conn, establish)
	}
}

// Close stops accepting, lets mochi disconnect its clients via
// closeClients, closes every remaining socket and waits for all connection
// goroutines. It is safe to call more than once.
func (l *TCP) Close(closeClients listeners.CloseFn) {
	l.shutdown(func() {
		l.mu.Lock()
		ln, serving := l.ln, l.serving
		l.mu.Unlock()
		if ln != nil {
			_ = ln.Close()
		}
		if serving != nil {
			<-serving
		}
	}, closeClients)
}
