package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// CookieName is the session cookie.
const CookieName = "telegate_session"

// CSRFHeader carries the session's CSRF token on state-changing requests.
const CSRFHeader = "X-CSRF-Token"

// Session is a logged-in user.
type Session struct {
	User      string    `json:"user"`
	Role      Role      `json:"role"`
	CSRF      string    `json:"csrf_token"`
	Created   time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	lastUsed  time.Time
	key       [sha256.Size]byte
}

// Config configures a Manager.
type Config struct {
	TTL, Idle     time.Duration
	MaxSessions   int
	SecureCookies bool
	// MaxFailures failed logins per user name (and per client address)
	// within FailureWindow make further attempts fail with ErrThrottled.
	MaxFailures   int
	FailureWindow time.Duration
	Now           func() time.Time
}

// Manager holds users and sessions and provides the HTTP handlers and
// middleware. Sessions live in memory: a gateway restart logs users out.
type Manager struct {
	cfg   Config
	users *Users
	log   *slog.Logger
	// OnLogin, when set, is called with "ok", "bad_credentials" or
	// "throttled" for every login attempt (metrics).
	OnLogin func(result string)

	mu       sync.Mutex
	sessions map[[sha256.Size]byte]*Session
	failures map[string]*failure
}

type failure struct {
	n     int
	start time.Time
}

// NewManager returns a Manager for users.
func NewManager(cfg Config, users *Users, log *slog.Logger) *Manager {
	if cfg.TTL <= 0 {
		cfg.TTL = 12 * time.Hour
	}
	if cfg.Idle <= 0 || cfg.Idle > cfg.TTL {
		cfg.Idle = cfg.TTL
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 1000
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 10
	}
	if cfg.FailureWindow <= 0 {
		cfg.FailureWindow = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Manager{cfg: cfg, users: users, log: log,
		sessions: map[[sha256.Size]byte]*Session{}, failures: map[string]*failure{}}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

func keyOf(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// Login verifies credentials and creates a session. It returns the session
// and the opaque token for the cookie. client is the caller's address (for
// throttling).
func (m *Manager) Login(name, password, client string) (*Session, string, error) {
	now := m.cfg.Now()
	if m.throttled(now, "u:"+name) || m.throttled(now, "c:"+client) {
		m.count("throttled")
		return nil, "", ErrThrottled
	}
	u, err := m.users.Verify(name, password)
	if err != nil {
		m.fail(now, "u:"+name)
		m.fail(now, "c:"+client)
		m.count("bad_credentials")
		return nil, "", err
	}
	token := randomToken()
	s := &Session{User: u.Name, Role: u.Role, CSRF: randomToken(), Created: now,
		ExpiresAt: now.Add(m.cfg.TTL), lastUsed: now, key: keyOf(token)}
	m.mu.Lock()
	delete(m.failures, "u:"+name)
	m.sweepLocked(now)
	for len(m.sessions) >= m.cfg.MaxSessions {
		var oldest *Session
		for _, x := range m.sessions {
			if oldest == nil || x.Created.Before(oldest.Created) {
				oldest = x
			}
		}
		delete(m.sessions, oldest.key)
	}
	m.sessions[s.key] = s
	m.mu.Unlock()
	m.count("ok")
	cp := *s
	return &cp, token, nil
}

func (m *Manager) count(result string) {
	if m.OnLogin != nil {
		m.OnLogin(result)
	}
}

func (m *Manager) throttled(now time.Time, key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.failures[key]
	return f != nil && now.Sub(f.start) < m.cfg.FailureWindow && f.n >= m.cfg.MaxFailures
}

func (m *Manager) fail(now time.Time, key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.failures) > 100_000 { // bound memory under a spray of names
		clear(m.failures)
	}
	f := m.failures[key]
	if f == nil || now.Sub(f.start) >= m.cfg.FailureWindow {
		f = &failure{start: now}
		m.failures[key] = f
	}
	f.n++
}

func (m *Manager) sweepLocked(now time.Time) {
	for k, s := range m.sessions {
		if m.expired(s, now) {
			delete(m.sessions, k)
		}
	}
}

func (m *Manager) expired(s *Session, now time.Time) bool {
	return !now.Before(s.ExpiresAt) || now.Sub(s.lastUsed) >= m.cfg.Idle
}

// Lookup returns a copy of the session of token and refreshes its idle
// timer.
func (m *Manager) Lookup(token string) (*Session, error) {
	if token == "" || len(token) > 128 {
		return nil, ErrNoSession
	}
	now := m.cfg.Now()
	k := keyOf(token)
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[k]
	if s == nil {
		return nil, ErrNoSession
	}
	if m.expired(s, now) {
		delete(m.sessions, k)
		return nil, ErrNoSession
	}
	s.lastUsed = now
	cp := *s
	return &cp, nil
}

// Logout ends the session of token.
func (m *Manager) Logout(token string) {
	m.mu.Lock()
	delete(m.sessions, keyOf(token))
	m.mu.Unlock()
}

// Sessions is the number of live sessions.
func (m *Manager) Sessions() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweepLocked(m.cfg.Now())
	return len(m.sessions)
}

type ctxKey struct{}

// FromContext returns the session attached by Require.
func FromContext(ctx context.Context) (*Session, bool) {
	s, ok := ctx.Value(ctxKey{}).(*Session)
	return s, ok
}

func (m *Manager) session(r *http.Request) (*Session, error) {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return nil, ErrNoSession
	}
	return m.Lookup(c.Value)
}

// Require wraps h: the request needs a valid session whose role allows
// need; unsafe methods also need the session's CSRF token in CSRFHeader and
// a same-origin Origin (when the browser sends one). Failures are answered
// 401/403 with a JSON error.
func (m *Manager) Require(need Role, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := m.session(r)
		if err != nil {
			WriteError(w, http.StatusUnauthorized, "login required")
			return
		}
		if !s.Role.Allows(need) {
			WriteError(w, http.StatusForbidden, "your role ("+string(s.Role)+") may not do this")
			return
		}
		if !safeMethod(r.Method) {
			if !SameOrigin(r) {
				WriteError(w, http.StatusForbidden, "cross-origin request refused")
				return
			}
			got := r.Header.Get(CSRFHeader)
			if subtle.ConstantTimeCompare([]byte(got), []byte(s.CSRF)) != 1 {
				WriteError(w, http.StatusForbidden, ErrCSRF.Error())
				return
			}
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, s)))
	})
}

// RequirePage wraps a page handler: without a valid session the browser is
// redirected to the login page (with the page to come back to).
func (m *Manager) RequirePage(loginPath string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := m.session(r)
		if err != nil {
			http.Redirect(w, r, loginPath+"?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, s)))
	})
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// SameOrigin reports whether the request's Origin (or, lacking it, Referer)
// names the host it was sent to. Requests without either (non-browser
// clients) pass: browsers always send Origin on cross-site POSTs.
func SameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

type loginReq struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type sessionResp struct {
	User      string    `json:"user"`
	Role      Role      `json:"role"`
	CSRFToken string    `json:"csrf_token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// HandleLogin is POST /api/service/v1/login with JSON {"username","password"}. It
// sets the session cookie and answers the session (with its CSRF token).
// The JSON content type and the same-origin check stop login CSRF.
func (m *Manager) HandleLogin(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		WriteError(w, http.StatusUnsupportedMediaType, "content type must be application/json")
		return
	}
	if !SameOrigin(r) {
		WriteError(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	var req loginReq
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		WriteError(w, http.StatusBadRequest, "body must be JSON {\"username\": ..., \"password\": ...}")
		return
	}
	client, _, _ := net.SplitHostPort(r.RemoteAddr)
	s, token, err := m.Login(req.Username, req.Password, client)
	switch {
	case errors.Is(err, ErrThrottled):
		m.log.Warn("dashboard login throttled", "user", req.Username, "client", client)
		WriteError(w, http.StatusTooManyRequests, err.Error())
		return
	case err != nil:
		m.log.Info("dashboard login failed", "user", req.Username, "client", client)
		WriteError(w, http.StatusUnauthorized, "wrong user name or password")
		return
	}
	m.log.Info("dashboard login", "user", s.User, "role", s.Role, "client", client)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: token, Path: "/", HttpOnly: true,
		Secure: m.cfg.SecureCookies, SameSite: http.SameSiteStrictMode, Expires: s.ExpiresAt})
	writeJSON(w, http.StatusOK, sessionResp{s.User, s.Role, s.CSRF, s.ExpiresAt})
}

// HandleLogout is POST /api/service/v1/logout (wrap with Require for CSRF).
func (m *Manager) HandleLogout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(CookieName); err == nil {
		m.Logout(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", HttpOnly: true,
		Secure: m.cfg.SecureCookies, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	w.WriteHeader(http.StatusNoContent)
}

// HandleSession is GET /api/service/v1/session (wrap with Require): who am I, and
// the CSRF token to send on state-changing calls.
func (m *Manager) HandleSession(w http.ResponseWriter, r *http.Request) {
	s, _ := FromContext(r.Context())
	writeJSON(w, http.StatusOK, sessionResp{s.User, s.Role, s.CSRF, s.ExpiresAt})
}

// ErrorBody is the JSON body of every API error.
type ErrorBody struct {
	Error string `json:"error"`
}

// WriteError answers status with {"error": msg}.
func WriteError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorBody{msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
