package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Hashes at the minimum cost keep the tests fast.
func testUsers(t *testing.T) *Users {
	t.Helper()
	op, err := HashPassword("op-pass", 8)
	if err != nil {
		t.Fatal(err)
	}
	vw, _ := HashPassword("view-pass", 8)
	u, err := ParseUsers([]byte("users:\n  - name: op\n    role: operator\n    password_hash: \"" + op +
		"\"\n  - name: view\n    role: viewer\n    password_hash: \"" + vw + "\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestParseUsersRejects(t *testing.T) {
	good, _ := HashPassword("x", 8)
	cases := map[string]string{
		"empty":        "users: []\n",
		"unknown key":  "users:\n  - name: a\n    role: viewer\n    password_hash: \"" + good + "\"\n    admin: true\n",
		"bad role":     "users:\n  - name: a\n    role: admin\n    password_hash: \"" + good + "\"\n",
		"bad name":     "users:\n  - name: \"A B\"\n    role: viewer\n    password_hash: \"" + good + "\"\n",
		"plain pass":   "users:\n  - name: a\n    role: viewer\n    password_hash: secret\n",
		"duplicate":    "users:\n  - name: a\n    role: viewer\n    password_hash: \"" + good + "\"\n  - name: a\n    role: viewer\n    password_hash: \"" + good + "\"\n",
		"not yaml":     "users: [\n",
		"low bcrypt":   "users:\n  - name: a\n    role: viewer\n    password_hash: \"$2a$04$abcdefghijklmnopqrstuuZ3r0pHk3b6aFv9u7WzjZfXzYy3QJx6.\"\n",
		"missing hash": "users:\n  - name: a\n    role: viewer\n",
	}
	for name, in := range cases {
		if _, err := ParseUsers([]byte(in)); !errors.Is(err, ErrInvalidUsers) {
			t.Errorf("%s: err %v, want ErrInvalidUsers", name, err)
		}
	}
}

func TestVerifyAndRoles(t *testing.T) {
	u := testUsers(t)
	if _, err := u.Verify("op", "op-pass"); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"op", "wrong"}, {"nobody", "op-pass"}, {"op", ""}, {"op", strings.Repeat("x", 100)}} {
		if _, err := u.Verify(c[0], c[1]); !errors.Is(err, ErrBadLogin) {
			t.Errorf("Verify(%q,%q) = %v", c[0], c[1], err)
		}
	}
	if !RoleOperator.Allows(RoleViewer) || RoleViewer.Allows(RoleOperator) || Role("x").Allows(RoleViewer) {
		t.Fatal("role order")
	}
}

func TestSessionExpiry(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := NewManager(Config{TTL: time.Hour, Idle: 10 * time.Minute, Now: c.now}, testUsers(t), nil)
	_, tok, err := m.Login("view", "view-pass", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	// Used every 9 minutes: idle never fires, the absolute TTL does.
	for range 6 {
		c.add(9 * time.Minute)
		if _, err := m.Lookup(tok); err != nil {
			t.Fatalf("session ended early at %v: %v", c.now(), err)
		}
	}
	c.add(7 * time.Minute) // 61 minutes after login
	if _, err := m.Lookup(tok); !errors.Is(err, ErrNoSession) {
		t.Fatalf("session past TTL: %v", err)
	}
	_, tok, _ = m.Login("view", "view-pass", "127.0.0.1")
	c.add(10 * time.Minute)
	if _, err := m.Lookup(tok); !errors.Is(err, ErrNoSession) {
		t.Fatalf("idle session: %v", err)
	}
	_, tok, _ = m.Login("view", "view-pass", "127.0.0.1")
	m.Logout(tok)
	if _, err := m.Lookup(tok); !errors.Is(err, ErrNoSession) {
		t.Fatalf("after logout: %v", err)
	}
}

// TestLoginThrottle: failures from one address slow that address down
// (exponential backoff), never lock the user out from another address.
func TestLoginThrottle(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := NewManager(Config{MaxFailures: 3, FailureWindow: time.Minute, BaseBackoff: time.Second, Now: c.now}, testUsers(t), nil)
	for range 3 {
		if _, _, err := m.Login("op", "bad", "10.0.0.1"); !errors.Is(err, ErrBadLogin) {
			t.Fatal(err)
		}
	}
	if _, _, err := m.Login("op", "op-pass", "10.0.0.2"); err != nil {
		t.Fatalf("the real user from another address: %v", err)
	}
	// From 10.0.0.1, the 4th attempt waits 1 s, the next 2 s: exponential.
	_, _, wait, err := m.login("op", "op-pass", "10.0.0.1")
	if !errors.Is(err, ErrThrottled) || wait != time.Second {
		t.Fatalf("4th attempt at once: %v, wait %v", err, wait)
	}
	c.add(time.Second)
	if _, _, err := m.Login("op", "bad", "10.0.0.1"); !errors.Is(err, ErrBadLogin) {
		t.Fatalf("after the backoff: %v", err)
	}
	if _, _, wait, err := m.login("op", "bad", "10.0.0.1"); !errors.Is(err, ErrThrottled) || wait != 2*time.Second {
		t.Fatalf("doubling backoff: %v %v", err, wait)
	}
	c.add(2 * time.Minute) // window and backoff passed: forgotten
	if _, _, err := m.Login("op", "op-pass", "10.0.0.1"); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

// TestLoginThrottleConcurrent: 80 concurrent wrong passwords from one
// address reserve their slots before the password check, so at most
// MaxFailures bcrypt checks run; the rest are throttled at once. The real
// operator from another address still logs in.
func TestLoginThrottleConcurrent(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := NewManager(Config{MaxFailures: 5, Now: c.now}, testUsers(t), nil)
	var checks atomic.Int64
	real := m.verify
	gate := make(chan struct{})
	m.verify = func(name, pw string) (User, error) {
		checks.Add(1)
		<-gate // every check in flight at once: the worst case for a check-then-count race
		return real(name, pw)
	}
	var wg sync.WaitGroup
	var throttled, bad atomic.Int64
	for range 80 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch _, _, err := m.Login("op", "wrong", "203.0.113.9"); {
			case errors.Is(err, ErrThrottled):
				throttled.Add(1)
			case errors.Is(err, ErrBadLogin):
				bad.Add(1)
			}
		}()
	}
	for throttled.Load()+checks.Load() < 80 {
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	if n := checks.Load(); n > 5 || bad.Load() != n || throttled.Load() != 80-n {
		t.Fatalf("%d password checks (want ≤ 5), %d bad, %d throttled", n, bad.Load(), throttled.Load())
	}
	if _, _, err := m.Login("op", "op-pass", "198.51.100.7"); err != nil {
		t.Fatalf("real operator from another address: %v", err)
	}
}

// TestLoginThrottleAccountGuard: many addresses failing on one account put
// it in guarded mode, where only addresses without a recent failure get a
// (single) attempt: the botnet is slowed, the operator still gets in.
func TestLoginThrottleAccountGuard(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := NewManager(Config{MaxFailures: 5, MaxAccountFailures: 10, Now: c.now}, testUsers(t), nil)
	for i := range 10 {
		if _, _, err := m.Login("op", "wrong", "10.1.0."+strconv.Itoa(i)); !errors.Is(err, ErrBadLogin) {
			t.Fatal(err)
		}
	}
	if _, _, err := m.Login("op", "wrong", "10.1.0.1"); !errors.Is(err, ErrThrottled) {
		t.Fatalf("address with a failure on a guarded account: %v", err)
	}
	if _, _, err := m.Login("op", "op-pass", "10.2.0.1"); err != nil {
		t.Fatalf("clean address on a guarded account: %v", err)
	}
	if _, _, err := m.Login("view", "view-pass", "10.1.0.1"); err != nil {
		t.Fatalf("another account from the same address: %v", err)
	}
}

func TestLoginRetryAfterHeader(t *testing.T) {
	m := NewManager(Config{MaxFailures: 1, BaseBackoff: 3 * time.Second}, testUsers(t), nil)
	do := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/login", strings.NewReader(`{"username":"op","password":"nope"}`))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		m.HandleLogin(rec, req)
		return rec
	}
	if rec := do(); rec.Code != http.StatusUnauthorized {
		t.Fatalf("first: %d", rec.Code)
	}
	rec := do()
	if ra, _ := strconv.Atoi(rec.Header().Get("Retry-After")); rec.Code != http.StatusTooManyRequests || ra < 1 || ra > 3 {
		t.Fatalf("throttled: %d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
}

// TestMaxSessionsPerUser: one user's logins evict only that user's oldest
// session; at the global cap the user holding the most sessions pays.
func TestMaxSessionsPerUser(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := NewManager(Config{MaxSessions: 4, MaxSessionsPerUser: 3, Now: c.now}, testUsers(t), nil)
	_, opTok, _ := m.Login("op", "op-pass", "a")
	var viewToks []string
	for range 10 {
		c.add(time.Second)
		_, tok, err := m.Login("view", "view-pass", "b")
		if err != nil {
			t.Fatal(err)
		}
		viewToks = append(viewToks, tok)
	}
	if _, err := m.Lookup(opTok); err != nil {
		t.Fatalf("the operator was logged out by the viewer's logins: %v", err)
	}
	live := 0
	for i, tok := range viewToks {
		if _, err := m.Lookup(tok); err == nil {
			live++
			if i < 7 {
				t.Fatalf("viewer session %d survived, want the newest 3", i)
			}
		}
	}
	if live != 3 || m.Sessions() != 4 {
		t.Fatalf("viewer sessions %d (want 3), total %d", live, m.Sessions())
	}
	// Global cap (4) reached: the operator's next login evicts the
	// viewer's oldest (the viewer holds the most), not the operator's.
	c.add(time.Second)
	if _, _, err := m.Login("op", "op-pass", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Lookup(opTok); err != nil || m.Sessions() != 4 {
		t.Fatalf("global cap: op session %v, sessions %d", err, m.Sessions())
	}
}

func TestMaxSessionsEvictsOldest(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := NewManager(Config{MaxSessions: 2, Now: c.now}, testUsers(t), nil)
	_, first, _ := m.Login("view", "view-pass", "a")
	c.add(time.Second)
	m.Login("view", "view-pass", "a")
	c.add(time.Second)
	m.Login("view", "view-pass", "a")
	if m.Sessions() != 2 {
		t.Fatalf("sessions %d", m.Sessions())
	}
	if _, err := m.Lookup(first); err == nil {
		t.Fatal("oldest session survived")
	}
}

func TestMiddleware(t *testing.T) {
	m := NewManager(Config{}, testUsers(t), nil)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := FromContext(r.Context())
		_, _ = w.Write([]byte(s.User))
	})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", m.HandleLogin)
	mux.Handle("GET /read", m.Require(RoleViewer, ok))
	mux.Handle("POST /write", m.Require(RoleOperator, ok))
	mux.Handle("GET /page", m.RequirePage("/login", ok))
	login := func(user, pass string) (cookie *http.Cookie, csrf string, code int) {
		req := httptest.NewRequest("POST", "/login", strings.NewReader(`{"username":"`+user+`","password":"`+pass+`"}`))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		for _, c := range rec.Result().Cookies() {
			if c.Name == CookieName {
				cookie = c
			}
		}
		if i := strings.Index(rec.Body.String(), `"csrf_token":"`); i >= 0 {
			rest := rec.Body.String()[i+len(`"csrf_token":"`):]
			csrf = rest[:strings.IndexByte(rest, '"')]
		}
		return cookie, csrf, rec.Code
	}
	do := func(method, path string, c *http.Cookie, hdr map[string]string) int {
		req := httptest.NewRequest(method, path, nil)
		if c != nil {
			req.AddCookie(c)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		return rec.Code
	}
	if _, _, code := login("op", "nope"); code != http.StatusUnauthorized {
		t.Fatalf("bad login: %d", code)
	}
	// Login needs JSON (no cross-site form posts).
	req := httptest.NewRequest("POST", "/login", strings.NewReader("username=op&password=op-pass"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnsupportedMediaType {
		t.Fatalf("form login: %d", rec.Code)
	}
	opC, opCSRF, code := login("op", "op-pass")
	if code != 200 || opC == nil || !opC.HttpOnly || opC.SameSite != http.SameSiteStrictMode || opCSRF == "" {
		t.Fatalf("login: %d %+v %q", code, opC, opCSRF)
	}
	vwC, vwCSRF, _ := login("view", "view-pass")
	if c := do("GET", "/read", nil, nil); c != 401 {
		t.Fatalf("no cookie: %d", c)
	}
	if c := do("GET", "/page", nil, nil); c != http.StatusSeeOther {
		t.Fatalf("page without cookie: %d", c)
	}
	if c := do("GET", "/read", &http.Cookie{Name: CookieName, Value: "forged"}, nil); c != 401 {
		t.Fatalf("forged cookie: %d", c)
	}
	if c := do("GET", "/read", vwC, nil); c != 200 {
		t.Fatalf("viewer read: %d", c)
	}
	if c := do("POST", "/write", vwC, map[string]string{CSRFHeader: vwCSRF}); c != 403 {
		t.Fatalf("viewer write: %d", c)
	}
	if c := do("POST", "/write", opC, nil); c != 403 {
		t.Fatalf("write without CSRF: %d", c)
	}
	if c := do("POST", "/write", opC, map[string]string{CSRFHeader: vwCSRF}); c != 403 {
		t.Fatalf("write with another session's CSRF: %d", c)
	}
	if c := do("POST", "/write", opC, map[string]string{CSRFHeader: opCSRF, "Origin": "http://evil.example"}); c != 403 {
		t.Fatalf("cross-origin write: %d", c)
	}
	if c := do("POST", "/write", opC, map[string]string{CSRFHeader: opCSRF, "Origin": "http://example.com"}); c != 200 {
		t.Fatalf("operator write: %d", c)
	}
}

// TestLoginLogBounded: 1,000 failed logins with 4 KB user names from 50
// addresses leave a small log with no caller-chosen name in it; the
// dropped lines are counted.
func TestLoginLogBounded(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	m := NewManager(Config{Now: c.now}, testUsers(t), log)
	m.verify = func(string, string) (User, error) { return User{}, ErrBadLogin } // skip bcrypt: the log is under test
	var suppressed atomic.Int64
	m.OnLogSuppressed = func() { suppressed.Add(1) }
	const secret = "hunter2-typed-in-the-wrong-field"
	for i := range 1000 {
		name := strings.Repeat(string(rune('a'+i%26)), 4000)
		if i%10 == 0 {
			name = secret
		}
		body, _ := json.Marshal(loginReq{Username: name, Password: "x"})
		req := httptest.NewRequest("POST", "/login", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.RemoteAddr = "10.0.0." + strconv.Itoa(i%50) + ":1234"
		rec := httptest.NewRecorder()
		m.HandleLogin(rec, req)
		if rec.Code != http.StatusUnauthorized && rec.Code != http.StatusTooManyRequests {
			t.Fatalf("login %d: %d", i, rec.Code)
		}
	}
	if buf.Len() > 32<<10 {
		t.Fatalf("log is %d bytes after 1000 failed logins, want at most 32 KiB", buf.Len())
	}
	if strings.Contains(buf.String(), secret) {
		t.Fatal("the log holds a user name that is not a configured user's (a password typed as user name)")
	}
	lines := 0
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if u, _ := rec["user"].(string); len(u) > 64 {
			t.Fatalf("logged user name of %d bytes", len(u))
		}
		lines++
	}
	if int64(lines)+suppressed.Load() != 1000 {
		t.Fatalf("%d lines + %d suppressed, want 1000", lines, suppressed.Load())
	}
}
