package auth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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

func TestLoginThrottle(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := NewManager(Config{MaxFailures: 3, FailureWindow: time.Minute, Now: c.now}, testUsers(t), nil)
	for range 3 {
		if _, _, err := m.Login("op", "bad", "10.0.0.1"); !errors.Is(err, ErrBadLogin) {
			t.Fatal(err)
		}
	}
	if _, _, err := m.Login("op", "op-pass", "10.0.0.2"); !errors.Is(err, ErrThrottled) {
		t.Fatalf("4th attempt: %v", err)
	}
	c.add(time.Minute)
	if _, _, err := m.Login("op", "op-pass", "10.0.0.2"); err != nil {
		t.Fatalf("after window: %v", err)
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
