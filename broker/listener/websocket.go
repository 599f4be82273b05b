package listener

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// ErrTextFrame is returned when a WebSocket peer sends a text message; MQTT
// over WebSocket uses binary messages only.
var ErrTextFrame = errors.New("listener: websocket text message")

// WebSocket is an MQTT-over-WebSocket listener (subprotocol "mqtt") for
// mochi. It is used instead of mochi's listeners.NewWebsocket because that
// one cannot report the address it bound (so port 0 is unusable), sets no
// deadline between the upgrade and CONNECT beyond the HTTP server's 60 s
// read timeout, and does not track hijacked sockets, so Close neither
// closes pre-CONNECT sockets nor waits for them.
type WebSocket struct {
	*core
	mu       sync.Mutex
	ln       net.Listener
	srv      *http.Server
	serving  chan struct{}
	upgrader websocket.Upgrader
}

var _ listeners.Listener = (*WebSocket)(nil)

// NewWebSocket returns a WebSocket listener. TLSConfig is not supported.
func NewWebSocket(opts Options) (*WebSocket, error) {
	if opts.TLSConfig != nil {
		return nil, errors.New("listener: websocket listener does not terminate TLS")
	}
	c, err := newCore(opts)
	if err != nil {
		return nil, err
	}
	return &WebSocket{
		core: c,
		upgrader: websocket.Upgrader{
			HandshakeTimeout: c.opts.ConnectTimeout,
			Subprotocols:     []string{"mqtt"},
			// Devices are not browsers and authenticate in CONNECT, so
			// the Origin header carries no authority here.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}, nil
}

// ID returns the listener id.
func (l *WebSocket) ID() string { return l.opts.ID }

// Protocol returns "ws".
func (l *WebSocket) Protocol() string { return "ws" }

// Address returns the bound address once Init succeeded, else the
// configured address.
func (l *WebSocket) Address() string { return boundAddress(&l.mu, &l.ln, l.opts.Address) }

// Init opens the socket.
func (l *WebSocket) Init(log *slog.Logger) error { return l.core.open(log, &l.mu, &l.ln) }

// Serve serves HTTP upgrade requests until Close.
func (l *WebSocket) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.ln == nil || l.srv != nil || l.isClosed() {
		l.mu.Unlock()
		return
	}
	done := make(chan struct{})
	l.serving = done
	l.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			l.handle(w, r, establish)
		}),
		// Also keeps net/http from clearing the connect deadline set at
		// accept while it reads the upgrade request.
		ReadHeaderTimeout: l.opts.ConnectTimeout,
		// A socket whose request was not an upgrade must not idle in
		// keep-alive: it would hold a connection slot past the connect
		// timeout. One request per connection, and idle ones are closed.
		IdleTimeout:    l.opts.ConnectTimeout,
		MaxHeaderBytes: 8 << 10,
		ErrorLog:       slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
	}
	l.srv.SetKeepAlivesEnabled(false)
	srv := l.srv
	ln := &admitListener{Listener: l.ln, core: l.core}
	l.mu.Unlock()
	defer close(done)

	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !l.isClosed() {
		l.log.Error("websocket listener stopped", "listener", l.opts.ID, "error", err)
	}
}

func (l *WebSocket) handle(w http.ResponseWriter, r *http.Request, establish listeners.EstablishFn) {
	if !l.begin() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	ws, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		l.wg.Done() // Upgrade already replied with an HTTP error
		return
	}
	raw, ok := ws.UnderlyingConn().(*rawConn)
	if !ok { // cannot happen: every accepted socket is admitted
		_ = ws.Close()
		l.wg.Done()
		return
	}
	// Fresh connect deadline: the CONNECT packet must follow the upgrade.
	_ = raw.SetDeadline(time.Now().Add(l.opts.ConnectTimeout))
	l.serve(l.newConn(&wsConn{ws: ws}, raw), establish)
}

// Close stops the HTTP server, lets mochi disconnect its clients, closes
// every remaining socket (including upgraded ones) and waits for their
// goroutines. Safe to call more than once.
func (l *WebSocket) Close(closeClients listeners.CloseFn) {
	l.shutdown(func() {
		l.mu.Lock()
		srv, ln, serving := l.srv, l.ln, l.serving
		l.mu.Unlock()
		if srv != nil {
			_ = srv.Close()
		} else if ln != nil {
			_ = ln.Close()
		}
		if serving != nil {
			<-serving
		}
	}, closeClients)
}

// admitListener registers every accepted socket with the core (cap,
// tracking, connect deadline) before net/http sees it.
type admitListener struct {
	net.Listener
	core *core
}

func (a *admitListener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		nc, err := a.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !a.core.isClosed() {
				backoff = acceptBackoff(backoff)
				continue
			}
			return nil, err
		}
		if raw := a.core.admit(nc); raw != nil {
			return raw, nil
		}
	}
}

// wsConn adapts a WebSocket connection to the byte stream mochi reads:
// binary messages are concatenated, so MQTT packets may span messages and
// a message may carry several packets.
type wsConn struct {
	ws *websocket.Conn
	r  io.Reader
	// writeDeadline is applied by Write itself: gorilla's SetWriteDeadline
	// is not safe to call concurrently with a write, and mochi refreshes
	// deadlines from its read goroutine while another goroutine writes.
	writeDeadline atomic.Int64 // unix nanoseconds, 0 = none
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, ErrTextFrame
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			return n, nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	var dl time.Time
	if ns := c.writeDeadline.Load(); ns != 0 {
		dl = time.Unix(0, ns)
	}
	_ = c.ws.SetWriteDeadline(dl)
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) Close() error         { return c.ws.Close() }
func (c *wsConn) LocalAddr() net.Addr  { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

func (c *wsConn) SetDeadline(t time.Time) error {
	_ = c.SetWriteDeadline(t)
	return c.ws.SetReadDeadline(t)
}

func (c *wsConn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

func (c *wsConn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		c.writeDeadline.Store(0)
	} else {
		c.writeDeadline.Store(t.UnixNano())
	}
	return nil
}
