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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/internal/loglimit"
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
	TTL, Idle time.Duration
	// MaxSessions bounds the live sessions of all users together; at the
	// cap, a login evicts the oldest session of the user holding the most
	// sessions (so one user never logs others out while holding more).
	MaxSessions int
	// MaxSessionsPerUser bounds one user's live sessions; a login beyond
	// it evicts that user's own oldest session.
	MaxSessionsPerUser int
	SecureCookies      bool
	// Login throttling (see docs/dashboard.md, "Login throttling"). Every
	// attempt reserves a slot under the lock BEFORE the password check, so
	// concurrent attempts are counted as they start, not as they end.
	//
	// MaxFailures failed logins per (user name, client address) are free;
	// each further one waits an exponential backoff (BaseBackoff doubling,
	// at most MaxBackoff), one attempt at a time. There is no hard account
	// lockout: other addresses are not affected.
	MaxFailures int
	// MaxSourceFailures failed logins per client address (all user names
	// together) are free; then the same backoff applies to that address.
	MaxSourceFailures int
	// MaxAccountFailures failed logins per user name from all addresses
	// together put the account in guarded mode: only addresses with no
	// recent failure for that user get an attempt (one each). The real
	// user from a clean address still logs in; a botnet gets one guess
	// per address per FailureWindow.
	MaxAccountFailures int
	// FailureWindow: failure counts are forgotten after this long without
	// a failure (and once the backoff has passed).
	FailureWindow           time.Duration
	BaseBackoff, MaxBackoff time.Duration
	Now                     func() time.Time
	// Store, when set, keeps the sessions in a key-value bucket shared by
	// every gateway replica (OpenSessionStore): a login works on every
	// replica, a logout or an eviction on one is refused on all from the
	// next request, and MaxSessionsPerUser holds across replicas. nil:
	// sessions live in this process only. See docs/scaling.md.
	Store jetstream.KeyValue
}

// Manager holds users and sessions and provides the HTTP handlers and
// middleware. Without Config.Store sessions live in memory (a gateway
// restart logs users out); with it they live in the shared bucket and the
// map below only caches this replica's view of them.
type Manager struct {
	cfg   Config
	users *Users
	log   *slog.Logger
	// OnLogin, when set, is called with "ok", "bad_credentials" or
	// "throttled" for every login attempt (metrics).
	OnLogin func(result string)
	// OnLogSuppressed, when set (before serving), is called for every
	// failed or throttled login line dropped by the log rate limit.
	OnLogSuppressed func()
	// logLim rate-limits the failed/throttled login lines per client
	// address and globally: an unauthenticated caller must not be able
	// to flood the log.
	logLim *loglimit.Limiter
	// verify checks a password (users.Verify; tests count the calls).
	verify func(name, password string) (User, error)

	// mu guards sessions and attempts. With Config.Store the failure
	// counts are shared by the replicas (failures.go); attempts is this
	// replica's view and its in-flight reservations.
	mu       sync.Mutex
	sessions map[[sha256.Size]byte]*Session // by hash of the cookie token
	attempts map[string]*attempts           // throttle keys: "a:" user+client, "s:" client, "u:" user
}

// attempts is the throttle state of one key (guarded by Manager.mu).
type attempts struct {
	inflight int       // reserved checks not finished yet
	fails    int       // failures not yet forgotten
	last     time.Time // last failure
	until    time.Time // backoff: no attempt before this
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
	if cfg.MaxSessionsPerUser <= 0 {
		cfg.MaxSessionsPerUser = 10
	}
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 5
	}
	if cfg.MaxSourceFailures <= 0 {
		cfg.MaxSourceFailures = 20
	}
	if cfg.MaxAccountFailures <= 0 {
		cfg.MaxAccountFailures = 50
	}
	if cfg.FailureWindow <= 0 {
		cfg.FailureWindow = 15 * time.Minute
	}
	if cfg.BaseBackoff <= 0 {
		cfg.BaseBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 15 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{cfg: cfg, users: users, log: log, verify: users.Verify,
		sessions: map[[sha256.Size]byte]*Session{}, attempts: map[string]*attempts{}}
	m.logLim = loglimit.New(loglimit.Config{Now: cfg.Now, OnSuppressed: func() {
		if m.OnLogSuppressed != nil {
			m.OnLogSuppressed()
		}
	}})
	return m
}

// logRefused logs a failed or throttled login, rate-limited per client
// address and globally. The user name is logged only when it is a
// configured user's: anything else a caller typed (a password in the
// wrong field, 4 KB of junk) is logged as "(unknown)".
func (m *Manager) logRefused(msg, name, client string) {
	ok, suppressed := m.logLim.Allow(client)
	if !ok {
		return
	}
	attrs := []any{"user", m.users.LogName(name), "client", loglimit.String(client, 64)}
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	m.log.Info(msg, attrs...)
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

func keyOf(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// Login verifies credentials and creates a session. It returns the session
// and the opaque token for the cookie. client is the caller's address (for
// throttling). A throttled attempt returns ErrThrottled without checking
// the password.
func (m *Manager) Login(name, password, client string) (*Session, string, error) {
	s, tok, _, err := m.login(name, password, client)
	return s, tok, err
}

// login is Login that also says, when throttled, how long to wait.
func (m *Manager) login(name, password, client string) (*Session, string, time.Duration, error) {
	now := m.cfg.Now()
	if m.cfg.Store != nil {
		if err := m.pullFailures(now, throttleKeys(name, client)); err != nil {
			return nil, "", 0, err
		}
	}
	keys, wait, ok := m.reserve(now, name, client)
	if !ok {
		m.count("throttled")
		return nil, "", wait, ErrThrottled
	}
	u, err := m.verify(name, password)
	now = m.cfg.Now()
	m.finish(now, keys, err == nil)
	if m.cfg.Store != nil {
		m.pushFailure(now, keys, err == nil)
	}
	if err != nil {
		m.count("bad_credentials")
		return nil, "", 0, err
	}
	token := randomToken()
	s := &Session{User: u.Name, Role: u.Role, CSRF: randomToken(), Created: now,
		ExpiresAt: now.Add(m.cfg.TTL), lastUsed: now, key: keyOf(token)}
	if m.cfg.Store != nil {
		if err := m.storeLogin(s, now); err != nil {
			return nil, "", 0, err
		}
	}
	m.mu.Lock()
	m.sweepLocked(now)
	m.evictLocked(u.Name)
	m.sessions[s.key] = s
	m.mu.Unlock()
	m.count("ok")
	cp := *s
	return &cp, token, 0, nil
}

// evictLocked makes room for one more session of user: first within the
// user's own cap (their oldest goes), then within the global cap (the
// oldest session of whoever holds the most sessions goes, so a user never
// evicts others while holding at least as many).
func (m *Manager) evictLocked(user string) {
	for {
		per := map[string]int{}
		oldest := map[string]*Session{}
		for _, x := range m.sessions {
			per[x.User]++
			if o := oldest[x.User]; o == nil || x.Created.Before(o.Created) {
				oldest[x.User] = x
			}
		}
		switch {
		case per[user] >= m.cfg.MaxSessionsPerUser:
			delete(m.sessions, oldest[user].key)
		case len(m.sessions) >= m.cfg.MaxSessions:
			victim := user
			for u, n := range per {
				if n > per[victim] || (n == per[victim] && oldest[u].Created.Before(oldest[victim].Created)) {
					victim = u
				}
			}
			if oldest[victim] == nil {
				return
			}
			delete(m.sessions, oldest[victim].key)
		default:
			return
		}
	}
}

func (m *Manager) count(result string) {
	if m.OnLogin != nil {
		m.OnLogin(result)
	}
}

// throttle keys of one attempt: per (user, client), per client, per user.
type attemptKeys struct{ pair, source, account string }

func throttleKeys(name, client string) attemptKeys {
	return attemptKeys{pair: "a:" + name + "\x00" + client, source: "s:" + client, account: "u:" + name}
}

// reserve decides, atomically with every other attempt, whether an attempt
// may check a password now and, if so, reserves its slot (inflight). When
// it may not, wait is how long to wait (Retry-After).
func (m *Manager) reserve(now time.Time, name, client string) (attemptKeys, time.Duration, bool) {
	k := throttleKeys(name, client)
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.attempts) > 100_000 { // bound memory under a spray of names
		m.pruneLocked(now)
	}
	pair, src, acct := m.entryLocked(now, k.pair), m.entryLocked(now, k.source), m.entryLocked(now, k.account)
	var wait time.Duration
	ok := true
	for _, c := range []struct {
		e     *attempts
		limit int
	}{{pair, m.cfg.MaxFailures}, {src, m.cfg.MaxSourceFailures}} {
		if c.e.fails+c.e.inflight < c.limit {
			continue // free attempts left
		}
		if c.e.inflight == 0 && !now.Before(c.e.until) {
			continue // backoff passed: one more attempt
		}
		ok = false
		wait = max(wait, c.e.until.Sub(now))
	}
	if acct.fails >= m.cfg.MaxAccountFailures && (pair.fails > 0 || pair.inflight > 0) {
		// Guarded account: only addresses with a clean record for it.
		ok = false
		wait = max(wait, pair.last.Add(m.cfg.FailureWindow).Sub(now))
	}
	if !ok {
		return k, max(wait, time.Second), false
	}
	pair.inflight++
	src.inflight++
	acct.inflight++
	return k, 0, true
}

// entryLocked returns key's state, forgetting failures that are older than
// the window once their backoff has passed.
func (m *Manager) entryLocked(now time.Time, key string) *attempts {
	e := m.attempts[key]
	if e == nil {
		e = &attempts{}
		m.attempts[key] = e
	}
	if e.fails > 0 && now.Sub(e.last) >= m.cfg.FailureWindow && !now.Before(e.until) {
		e.fails = 0
	}
	return e
}

// finish releases the slots of an attempt and records its outcome.
func (m *Manager) finish(now time.Time, k attemptKeys, success bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range []struct {
		key   string
		limit int
	}{{k.pair, m.cfg.MaxFailures}, {k.source, m.cfg.MaxSourceFailures}, {k.account, m.cfg.MaxAccountFailures}} {
		e := m.attempts[c.key]
		if e == nil {
			e = &attempts{inflight: 1}
			m.attempts[c.key] = e
		}
		e.inflight = max(e.inflight-1, 0)
		switch {
		case success && c.key == k.pair:
			e.fails, e.until = 0, time.Time{}
		case success:
			// The source and the account keep their counts: an attacker
			// with one valid account does not reset the others.
		default:
			e.fails++
			e.last = now
			if over := e.fails - c.limit; over >= 0 && c.key != k.account {
				e.until = now.Add(backoff(m.cfg.BaseBackoff, m.cfg.MaxBackoff, over))
			}
		}
	}
}

// backoff is base·2^n, at most maxD.
func backoff(base, maxD time.Duration, n int) time.Duration {
	if n > 30 {
		return maxD
	}
	return min(base<<n, maxD)
}

// pruneLocked drops throttle entries with nothing to remember.
func (m *Manager) pruneLocked(now time.Time) {
	for key, e := range m.attempts {
		if e.inflight == 0 && (e.fails == 0 || (now.Sub(e.last) >= m.cfg.FailureWindow && !now.Before(e.until))) {
			delete(m.attempts, key)
		}
	}
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
	if m.cfg.Store != nil {
		return m.storeLookup(k, now)
	}
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

// Logout ends the session of token (on every replica when the sessions
// are in a shared store; ErrSessionStore when the store cannot be reached).
func (m *Manager) Logout(token string) error {
	k := keyOf(token)
	m.mu.Lock()
	delete(m.sessions, k)
	m.mu.Unlock()
	if m.cfg.Store != nil {
		return m.storeLogout(k)
	}
	return nil
}

// Sessions is the number of live sessions this replica knows of (with a
// shared store: the ones used on this replica).
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
		if errors.Is(err, ErrSessionStore) {
			m.log.Warn("dashboard session store unavailable", "err", err)
			WriteError(w, http.StatusServiceUnavailable, "session store unavailable")
			return
		}
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
	s, token, wait, err := m.login(req.Username, req.Password, client)
	switch {
	case errors.Is(err, ErrThrottled):
		m.logRefused("dashboard login throttled", req.Username, client)
		secs := int64((wait + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
		WriteError(w, http.StatusTooManyRequests, err.Error())
		return
	case errors.Is(err, ErrSessionStore):
		m.log.Warn("dashboard login: session store unavailable", "user", m.users.LogName(req.Username), "err", err)
		WriteError(w, http.StatusServiceUnavailable, "session store unavailable")
		return
	case err != nil:
		m.logRefused("dashboard login failed", req.Username, client)
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
		if err := m.Logout(c.Value); err != nil {
			m.log.Warn("dashboard logout: session store unavailable", "err", err)
			WriteError(w, http.StatusServiceUnavailable, "session store unavailable: not logged out")
			return
		}
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
