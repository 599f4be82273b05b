// Package wsmux is the OCPP WebSocket listener: one HTTP(S) listener serving
// /ocpp/{chargePointId} for both OCPP 1.6J and 2.0.1. It authenticates the
// charge point against the device registry (security profile 1/2: HTTP basic
// auth with username = charge point id; profile 3: client certificate whose
// CN is the charge point id), negotiates the subprotocol, enforces the frame
// size and per-connection rate limits, pre-checks every frame
// (gateway/ocpp/frame) and hands the connection to one of two virtual
// ocpp-go ws.WsServer values, one per OCPP version, so ocpp-go's ocppj
// layer and central systems run unchanged on top of it.
package wsmux

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/lorenzodonini/ocpp-go/ws"
	"golang.org/x/time/rate"

	"github.com/telegate/telegate/broker/acl"
	"github.com/telegate/telegate/broker/registry"
	"github.com/telegate/telegate/gateway/ocpp/frame"
	"github.com/telegate/telegate/internal/loglimit"
)

// Subprotocols served.
const (
	V16  = "ocpp1.6"
	V201 = "ocpp2.0.1"
)

// PathPrefix is the URL path under which charge points connect.
const PathPrefix = "/ocpp/"

// Errors.
var (
	ErrUnauthorized = errors.New("wsmux: charge point not authorized")
	ErrClosed       = errors.New("wsmux: no open connection")
)

// Defaults of the listener limits (Config fields left zero; the gateway
// configuration's ocpp section takes its defaults from here).
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultIdleTimeout    = 5 * time.Second
	DefaultMaxConnections = 10000
)

// Config of the listener.
type Config struct {
	// SecurityProfile is 1 (basic auth, plain ws), 2 (TLS + basic auth) or
	// 3 (mutual TLS, certificate CN = charge point id).
	SecurityProfile int
	TLS             *tls.Config // required for profiles 2 and 3
	MaxFrameBytes   int64
	RatePerConn     float64 // frames per second
	Burst           int
	WriteWait       time.Duration
	PingWait        time.Duration // read deadline between frames/pings (0: none)
	// ConnectTimeout bounds a socket from accept to a completed, authenticated
	// WebSocket upgrade (TLS handshake, requests, keep-alive waits
	// included): then it is closed. 0: DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// IdleTimeout closes a keep-alive socket with no request in flight
	// (before the upgrade). 0: DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxConnections caps the open sockets, authenticated and not; a socket
	// accepted beyond it is closed at once. 0: DefaultMaxConnections.
	MaxConnections int
	Now            func() time.Time
}

// Metrics are the counters the listener feeds (all optional).
type Metrics struct {
	Connect   func(result string)             // ok, bad_credentials, unknown_station, bad_cert, bad_path, bad_subprotocol
	Closed    func(reason string)             // oversized, rate_limited, revoked, panic, replaced, taken_over, ...
	Malformed func(version, reason string)    // frame pre-check failures
	CallError func(version, code string)      // every CALLERROR written
	Message   func(version, action string)    // every accepted CALL
	Conns     func(version string, delta int) // open connections
	// LogSuppressed counts refused-connection log lines dropped by the
	// log rate limit.
	LogSuppressed func()
}

// Server is the listener. Create with New, get the two virtual servers with
// Virtual, then Serve.
type Server struct {
	cfg  Config
	reg  *registry.Registry
	log  *slog.Logger
	m    Metrics
	up   websocket.Upgrader
	virt map[string]*Virtual
	// logLim rate-limits the refused-connection lines per remote address
	// and globally (unauthenticated callers choose how many there are).
	logLim *loglimit.Limiter
	// open counts the accepted sockets not yet closed (guardedListener).
	open atomic.Int64
	http *http.Server
	// mu guards conns.
	mu    sync.Mutex
	conns map[string]*Conn
	// Known reports whether an action exists in a version (for NotImplemented).
	Known map[string]func(string) bool
	// OnConnChange, when set (before Serve), is called with a charge
	// point's id after it connected and after it disconnected; Connected
	// then tells which.
	OnConnChange func(id string)
	// OnSession, when set (before Serve), is called with a charge point's
	// id once its socket is registered (after OnConnChange; its first
	// frame is read after OnSession returns). closed reports whether the
	// socket is already gone; end closes it with a policy-violation close
	// frame, reason "taken over by another replica" (counted as
	// Closed("taken_over")), and never touches a newer socket of the id.
	// The returned release is called when the socket's disconnect is
	// handled. The gateway claims the station in the cluster's sessions
	// bucket here (presence.Presence.Claim).
	OnSession func(id string, closed func() bool, end func()) (release func())
}

// New returns a listener authenticating against reg.
func New(cfg Config, reg *registry.Registry, m Metrics, log *slog.Logger) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.WriteWait == 0 {
		cfg.WriteWait = 10 * time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	nop1 := func(string) {}
	nop2 := func(string, string) {}
	if m.Connect == nil {
		m.Connect = nop1
	}
	if m.Closed == nil {
		m.Closed = nop1
	}
	if m.Malformed == nil {
		m.Malformed = nop2
	}
	if m.CallError == nil {
		m.CallError = nop2
	}
	if m.Message == nil {
		m.Message = nop2
	}
	if m.Conns == nil {
		m.Conns = func(string, int) {}
	}
	if m.LogSuppressed == nil {
		m.LogSuppressed = func() {}
	}
	s := &Server{cfg: cfg, reg: reg, log: log, m: m, conns: map[string]*Conn{}, Known: map[string]func(string) bool{}}
	s.logLim = loglimit.New(loglimit.Config{Now: cfg.Now, OnSuppressed: m.LogSuppressed})
	s.up = websocket.Upgrader{Subprotocols: []string{V201, V16}, HandshakeTimeout: 10 * time.Second,
		// Charge points are not browsers; a browser page must not open a
		// socket with a user's ambient credentials.
		CheckOrigin: func(r *http.Request) bool { return r.Header.Get("Origin") == "" }}
	s.virt = map[string]*Virtual{V16: newVirtual(s, V16), V201: newVirtual(s, V201)}
	return s
}

// Virtual returns the ws.WsServer that sees the connections of subprotocol proto.
func (s *Server) Virtual(proto string) *Virtual { return s.virt[proto] }

// Serve serves ln until Close. It waits until both virtual servers have
// been started (their message handlers installed) before accepting.
func (s *Server) Serve(ln net.Listener) error {
	for _, v := range s.virt {
		<-v.started
	}
	mux := http.NewServeMux()
	mux.HandleFunc(PathPrefix, s.handle)
	s.mu.Lock()
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: s.cfg.ConnectTimeout, IdleTimeout: s.cfg.IdleTimeout,
		TLSConfig: s.cfg.TLS, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	hs := s.http
	s.mu.Unlock()
	ln = &guardedListener{Listener: ln, s: s}
	if s.cfg.SecurityProfile >= 2 {
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	err := hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the listener and closes every connection.
func (s *Server) Close() {
	s.mu.Lock()
	hs := s.http
	conns := make([]*Conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if hs != nil {
		_ = hs.Close()
	}
	for _, c := range conns {
		c.close(websocket.CloseGoingAway, "server shutting down", "shutdown")
		<-c.done
	}
}

// Revalidate closes the connections whose credentials the registry no
// longer accepts (removed, disabled, kind changed, secret rotated out).
func (s *Server) Revalidate() int {
	s.mu.Lock()
	conns := make([]*Conn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	n := 0
	for _, c := range conns {
		if !s.stillValid(c) {
			c.close(websocket.ClosePolicyViolation, "credentials revoked", "revoked")
			n++
		}
	}
	return n
}

func (s *Server) stillValid(c *Conn) bool {
	d, ok := s.reg.Lookup(c.id)
	return ok && !d.Disabled && d.Kind == registry.KindCharger && (c.cert || d.Accepts(c.hash, s.cfg.Now()))
}

// Registered reports whether id is an enabled charger in the device registry.
func (s *Server) Registered(id string) bool {
	d, ok := s.reg.Lookup(id)
	return ok && !d.Disabled && d.Kind == registry.KindCharger
}

// Connected reports whether a charge point has an open connection, and its subprotocol.
func (s *Server) Connected(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.conns[id]
	if !ok {
		return "", false
	}
	return c.proto, true
}

func (s *Server) authenticate(id string, r *http.Request) (hash string, cert bool, result string) {
	if s.cfg.SecurityProfile == 3 {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return "", false, "bad_cert"
		}
		if r.TLS.PeerCertificates[0].Subject.CommonName != id {
			return "", false, "bad_cert"
		}
		d, ok := s.reg.Lookup(id)
		if !ok || d.Disabled || d.Kind != registry.KindCharger {
			return "", false, "unknown_station"
		}
		return "", true, "ok"
	}
	user, pass, ok := r.BasicAuth()
	if !ok || user != id {
		return "", false, "bad_credentials"
	}
	d, h, err := s.reg.VerifyHash(id, []byte(pass))
	switch {
	case errors.Is(err, registry.ErrUnknownDevice), errors.Is(err, registry.ErrDisabled):
		return "", false, "unknown_station"
	case err != nil:
		return "", false, "bad_credentials"
	case d.Kind != registry.KindCharger:
		return "", false, "unknown_station"
	}
	return h, false, "ok"
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path, PathPrefix)
	if !acl.ValidID(registry.KindCharger, id) {
		s.m.Connect("bad_path")
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	hash, cert, result := s.authenticate(id, r)
	if result != "ok" {
		s.m.Connect(result)
		s.logRefused(r.RemoteAddr, "OCPP connection refused", "station", id, "reason", result)
		w.Header().Set("WWW-Authenticate", `Basic realm="ocpp"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	proto := ""
	for _, p := range websocket.Subprotocols(r) {
		if p == V16 || p == V201 {
			proto = p
			break
		}
	}
	if proto == "" {
		s.m.Connect("bad_subprotocol")
		http.Error(w, "subprotocol ocpp1.6 or ocpp2.0.1 required", http.StatusBadRequest)
		return
	}
	wc, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		s.m.Connect("bad_upgrade")
		return
	}
	authenticated(wc.NetConn())
	wc.SetReadLimit(s.cfg.MaxFrameBytes)
	burst := max(s.cfg.Burst, 1)
	lim := rate.NewLimiter(rate.Limit(s.cfg.RatePerConn), burst)
	if s.cfg.RatePerConn <= 0 {
		lim = rate.NewLimiter(rate.Inf, burst)
	}
	c := &Conn{s: s, id: id, proto: proto, ws: wc, hash: hash, cert: cert, tlsState: r.TLS,
		lim: lim, done: make(chan struct{}), v: s.virt[proto]}
	// One connection per charge point: a reconnect replaces the old one
	// (whose TCP connection may be half dead), after the old one's
	// disconnect has been fully handled.
	s.mu.Lock()
	old := s.conns[id]
	s.mu.Unlock()
	if old != nil {
		old.close(websocket.ClosePolicyViolation, "replaced by a new connection", "replaced")
		<-old.done
	}
	s.mu.Lock()
	if cur := s.conns[id]; cur != nil { // lost a race with another reconnect
		s.mu.Unlock()
		s.m.Connect("duplicate")
		_ = wc.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "duplicate"), time.Now().Add(time.Second))
		_ = wc.Close()
		return
	}
	s.conns[id] = c
	s.mu.Unlock()
	s.m.Connect("ok")
	s.m.Conns(proto, 1)
	c.v.connected(c)
	if s.OnConnChange != nil {
		s.OnConnChange(id)
	}
	if s.OnSession != nil {
		c.release = s.OnSession(id, c.closed.Load, c.takenOver)
	}
	go c.readLoop()
}

// OpenSockets is the number of accepted sockets not yet closed
// (authenticated or not).
func (s *Server) OpenSockets() int { return int(s.open.Load()) }

// logRefused logs a refused socket or request, rate-limited per remote
// address and globally; dropped lines are counted (Metrics.LogSuppressed).
func (s *Server) logRefused(remote, msg string, attrs ...any) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ok, suppressed := s.logLim.Allow(host)
	if !ok {
		return
	}
	attrs = append(attrs, "remote", loglimit.String(remote, 64))
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	s.log.Info(msg, attrs...)
}

// guardedListener caps the open sockets and gives every socket the
// pre-authentication deadline (Config.ConnectTimeout).
type guardedListener struct {
	net.Listener
	s *Server
}

func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if n := l.s.open.Add(1); n > int64(l.s.cfg.MaxConnections) {
			l.s.open.Add(-1)
			l.s.m.Connect("over_capacity")
			l.s.logRefused(c.RemoteAddr().String(), "OCPP connection refused: too many open sockets",
				"max_connections", l.s.cfg.MaxConnections)
			_ = c.Close()
			continue
		}
		g := &guardedConn{Conn: c, s: l.s, deadline: time.Now().Add(l.s.cfg.ConnectTimeout)}
		_ = c.SetDeadline(g.deadline)
		return g, nil
	}
}

// guardedConn is an accepted socket. Until authenticated it clamps every
// deadline net/http sets to the pre-authentication deadline, so no
// sequence of requests, keep-alive waits or slow reads keeps an
// unauthenticated socket open longer than ConnectTimeout.
type guardedConn struct {
	net.Conn
	s         *Server
	closeOnce sync.Once
	// mu guards deadline (zero once authenticated).
	mu       sync.Mutex
	deadline time.Time
}

func (c *guardedConn) clamp(t time.Time) time.Time {
	c.mu.Lock()
	d := c.deadline
	c.mu.Unlock()
	if !d.IsZero() && (t.IsZero() || t.After(d)) {
		return d
	}
	return t
}

func (c *guardedConn) SetDeadline(t time.Time) error     { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *guardedConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c *guardedConn) SetWriteDeadline(t time.Time) error {
	return c.Conn.SetWriteDeadline(c.clamp(t))
}

func (c *guardedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { c.s.open.Add(-1) })
	return err
}

// authenticated lifts the pre-authentication deadline of an upgraded
// socket (nc is the hijacked connection, TLS or not).
func authenticated(nc net.Conn) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	g, ok := nc.(*guardedConn)
	if !ok {
		return
	}
	g.mu.Lock()
	g.deadline = time.Time{}
	g.mu.Unlock()
	_ = g.Conn.SetDeadline(time.Time{})
}

// Conn is one charge point connection. It implements ws.Channel.
type Conn struct {
	s        *Server
	v        *Virtual
	id       string
	proto    string
	ws       *websocket.Conn
	hash     string // bcrypt hash the secret matched ("" for certificates)
	cert     bool
	tlsState *tls.ConnectionState
	lim      *rate.Limiter // used by readLoop only
	done     chan struct{}
	// wmu serialises writes (gorilla allows one writer).
	wmu       sync.Mutex
	closeOnce sync.Once
	// closed is set when the socket is closed (by either side).
	closed atomic.Bool
	// release is Server.OnSession's result, set before readLoop starts.
	release func()
}

// takenOver closes the socket because another replica holds the charge
// point's newer connection. It does not block (the presence watcher calls
// it); readLoop then cleans up, leaving a newer socket of the id alone.
func (c *Conn) takenOver() {
	go c.close(websocket.ClosePolicyViolation, "taken over by another replica", "taken_over")
}

// ID is the charge point id.
func (c *Conn) ID() string { return c.id }

// RemoteAddr is the peer address.
func (c *Conn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

// TLSConnectionState is the TLS state (nil for profile 1).
func (c *Conn) TLSConnectionState() *tls.ConnectionState { return c.tlsState }

func (c *Conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(b) > 3 && b[1] == '4' && b[0] == '[' {
		var f []any
		code := "unknown"
		if frameErr := jsonUnmarshal(b, &f); frameErr == nil && len(f) > 2 {
			if s, ok := f[2].(string); ok {
				code = s
			}
		}
		c.s.m.CallError(c.proto, code)
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteWait))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// close sends a close frame and closes the socket; readLoop then cleans up.
func (c *Conn) close(code int, text, reason string) {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.s.m.Closed(reason)
		c.wmu.Lock()
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
		c.wmu.Unlock()
		_ = c.ws.Close()
	})
}

func (c *Conn) readLoop() {
	defer func() {
		if p := recover(); p != nil {
			c.s.log.Error("OCPP connection handler panicked; connection closed", "station", c.id, "panic", fmt.Sprint(p))
			c.close(websocket.CloseInternalServerErr, "internal error", "panic")
		}
		c.closeOnce.Do(func() { c.closed.Store(true); c.s.m.Closed("peer"); _ = c.ws.Close() })
		if c.release != nil {
			c.release()
		}
		c.s.mu.Lock()
		if c.s.conns[c.id] == c {
			delete(c.s.conns, c.id)
		}
		c.s.mu.Unlock()
		c.s.m.Conns(c.proto, -1)
		c.v.disconnected(c)
		if c.s.OnConnChange != nil {
			c.s.OnConnChange(c.id)
		}
		close(c.done)
	}()
	v201 := c.proto == V201
	for {
		if c.s.cfg.PingWait > 0 {
			_ = c.ws.SetReadDeadline(time.Now().Add(c.s.cfg.PingWait))
		}
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.close(websocket.CloseMessageTooBig, "frame too large", "oversized")
			}
			return
		}
		if !c.lim.Allow() {
			c.close(websocket.ClosePolicyViolation, "message rate exceeded", "rate_limited")
			return
		}
		if !c.s.stillValid(c) {
			c.close(websocket.ClosePolicyViolation, "credentials revoked", "revoked")
			return
		}
		if typ != websocket.TextMessage {
			c.s.m.Malformed(c.proto, "binary")
			_ = c.write(frame.EncodeCallError("", frame.ErrorCode(frame.ErrNotJSON, v201), "binary frames are not OCPP-J"))
			continue
		}
		f, err := frame.Parse(data, c.s.Known[c.proto])
		if err != nil {
			c.s.m.Malformed(c.proto, frame.Reason(err))
			if f.Type != frame.CallResult && f.Type != frame.CallError {
				_ = c.write(frame.EncodeCallError(f.UniqueID, frame.ErrorCode(err, v201), err.Error()))
			}
			continue
		}
		if f.Type == frame.Call {
			c.s.m.Message(c.proto, f.Action)
		}
		if h := c.v.handler(); h != nil {
			_ = h(c, data) // ocpp-go answers errors itself
		}
	}
}

// Virtual is the ws.WsServer ocpp-go sees for one subprotocol. Only the
// methods ocppj uses do anything; listening is done by Server.
type Virtual struct {
	s     *Server
	proto string
	// mu guards the handlers, set by ocppj.Server.Start before Serve accepts.
	mu           sync.Mutex
	msg          func(ws.Channel, []byte) error
	onConnect    func(ws.Channel)
	onDisconnect func(ws.Channel)
	checkClient  ws.CheckClientHandler
	started      chan struct{}
	stop         chan struct{}
	startOnce    sync.Once
	stopOnce     sync.Once
	errC         chan error
}

var _ ws.WsServer = (*Virtual)(nil)

func newVirtual(s *Server, proto string) *Virtual {
	return &Virtual{s: s, proto: proto, started: make(chan struct{}), stop: make(chan struct{}), errC: make(chan error)}
}

func (v *Virtual) handler() func(ws.Channel, []byte) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.msg
}

func (v *Virtual) connected(c *Conn) {
	v.mu.Lock()
	h := v.onConnect
	v.mu.Unlock()
	if h != nil {
		h(c)
	}
}

func (v *Virtual) disconnected(c *Conn) {
	v.mu.Lock()
	h := v.onDisconnect
	v.mu.Unlock()
	if h != nil {
		h(c)
	}
}

// Start blocks until Stop (the real listener is Server.Serve).
func (v *Virtual) Start(int, string) {
	v.startOnce.Do(func() { close(v.started) })
	<-v.stop
}

// Stop makes Start return.
func (v *Virtual) Stop() { v.stopOnce.Do(func() { close(v.stop) }) }

// StopConnection closes a charge point's connection.
func (v *Virtual) StopConnection(id string, ce websocket.CloseError) error {
	v.s.mu.Lock()
	c := v.s.conns[id]
	v.s.mu.Unlock()
	if c == nil || c.proto != v.proto {
		return fmt.Errorf("%w: %s", ErrClosed, id)
	}
	c.close(ce.Code, ce.Text, "stopped")
	return nil
}

// Errors is never written to (errors are logged where they happen).
func (v *Virtual) Errors() <-chan error { return v.errC }

// SetMessageHandler implements ws.WsServer.
func (v *Virtual) SetMessageHandler(h func(ws.Channel, []byte) error) {
	v.mu.Lock()
	v.msg = h
	v.mu.Unlock()
}

// SetNewClientHandler implements ws.WsServer.
func (v *Virtual) SetNewClientHandler(h func(ws.Channel)) {
	v.mu.Lock()
	v.onConnect = h
	v.mu.Unlock()
}

// SetDisconnectedClientHandler implements ws.WsServer.
func (v *Virtual) SetDisconnectedClientHandler(h func(ws.Channel)) {
	v.mu.Lock()
	v.onDisconnect = h
	v.mu.Unlock()
}

// SetTimeoutConfig is ignored (Config has the timeouts).
func (v *Virtual) SetTimeoutConfig(ws.ServerTimeoutConfig) {}

// Write sends a frame to a charge point of this subprotocol.
func (v *Virtual) Write(id string, data []byte) error {
	v.s.mu.Lock()
	c := v.s.conns[id]
	v.s.mu.Unlock()
	if c == nil || c.proto != v.proto {
		return fmt.Errorf("%w: %s", ErrClosed, id)
	}
	return c.write(data)
}

// AddSupportedSubprotocol is ignored (the Server negotiates).
func (v *Virtual) AddSupportedSubprotocol(string) {}

// SetBasicAuthHandler is ignored (the Server authenticates against the registry).
func (v *Virtual) SetBasicAuthHandler(func(string, string) bool) {}

// SetCheckOriginHandler is ignored.
func (v *Virtual) SetCheckOriginHandler(func(*http.Request) bool) {}

// SetCheckClientHandler implements ws.WsServer (unused: authentication is the Server's).
func (v *Virtual) SetCheckClientHandler(h func(string, *http.Request) bool) {
	v.mu.Lock()
	v.checkClient = h
	v.mu.Unlock()
}

// Addr is nil: see Server.
func (v *Virtual) Addr() *net.TCPAddr { return nil }

// Connections returns nil: ocpp-go's concrete type cannot be built here.
func (v *Virtual) Connections(string) *ws.WebSocket { return nil }
