package auth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telegate/telegate/internal/testenv"
)

// replicaManagers are two replicas' session managers sharing the session
// bucket through connections to two different nodes of a 3-node cluster.
func replicaManagers(t *testing.T, cfg Config) (*Manager, *Manager, *clock) {
	t.Helper()
	c := testenv.StartNATSCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clk := &clock{t: time.Date(2031, 1, 1, 9, 0, 0, 0, time.UTC)}
	cfg.Now = clk.now
	users := testUsers(t)
	var ms []*Manager
	for node := range 2 {
		kv, err := OpenSessionStore(ctx, c.JetStream(t, node), 3, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Store = kv
		ms = append(ms, NewManager(cfg, users, nil))
	}
	return ms[0], ms[1], clk
}

func sessionMux(m *Manager) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", m.HandleLogin)
	mux.Handle("GET /session", m.Require(RoleViewer, http.HandlerFunc(m.HandleSession)))
	mux.Handle("POST /logout", m.Require(RoleViewer, http.HandlerFunc(m.HandleLogout)))
	return mux
}

// A login through replica A's handler works with its cookie on replica B;
// a logout on B is refused on A at once.
func TestSessionSharedAcrossReplicas(t *testing.T) {
	a, b, _ := replicaManagers(t, Config{TTL: time.Hour})
	srvA, srvB := httptest.NewServer(sessionMux(a)), httptest.NewServer(sessionMux(b))
	defer srvA.Close()
	defer srvB.Close()

	resp, err := http.Post(srvA.URL+"/login", "application/json", strings.NewReader(`{"username":"op","password":"op-pass"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == CookieName {
			cookie = c
		}
	}
	if resp.StatusCode != http.StatusOK || cookie == nil {
		t.Fatalf("login on A: %d, cookie %v", resp.StatusCode, cookie)
	}
	csrf, _ := a.Lookup(cookie.Value)
	do := func(srv *httptest.Server, method, path string) int {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		req.AddCookie(cookie)
		req.Header.Set(CSRFHeader, csrf.CSRF)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := do(srvB, "GET", "/session"); got != http.StatusOK {
		t.Fatalf("A's cookie on B: %d, want 200", got)
	}
	if got := do(srvA, "GET", "/session"); got != http.StatusOK {
		t.Fatalf("A's cookie on A: %d, want 200", got)
	}
	if got := do(srvB, "POST", "/logout"); got != http.StatusNoContent {
		t.Fatalf("logout on B: %d", got)
	}
	if got := do(srvA, "GET", "/session"); got != http.StatusUnauthorized {
		t.Fatalf("A after logout on B: %d, want 401", got)
	}
	if got := do(srvB, "GET", "/session"); got != http.StatusUnauthorized {
		t.Fatalf("B after logout on B: %d, want 401", got)
	}
}

// MaxSessionsPerUser holds across replicas: logins alternating between
// them evict the user's oldest session everywhere, and concurrent logins
// on both never leave more than the cap alive.
func TestSessionPerUserCapAcrossReplicas(t *testing.T) {
	a, b, clk := replicaManagers(t, Config{TTL: time.Hour, MaxSessionsPerUser: 2})
	var toks []string
	for i, m := range []*Manager{a, b, a} {
		_, tok, err := m.Login("view", "view-pass", "127.0.0.1")
		if err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
		toks = append(toks, tok)
		clk.add(time.Second)
	}
	for _, m := range []*Manager{a, b} {
		if _, err := m.Lookup(toks[0]); !errors.Is(err, ErrNoSession) {
			t.Fatalf("oldest session beyond the cap: %v, want ErrNoSession", err)
		}
		for _, tok := range toks[1:] {
			if _, err := m.Lookup(tok); err != nil {
				t.Fatalf("session within the cap: %v", err)
			}
		}
	}
	// Concurrent logins of one user on both replicas.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := a
			if i%2 == 1 {
				m = b
			}
			_, tok, err := m.Login("op", "op-pass", "10.0.0."+string(rune('1'+i)))
			if err != nil {
				t.Errorf("concurrent login: %v", err)
				return
			}
			mu.Lock()
			toks = append(toks, tok)
			mu.Unlock()
		}()
	}
	wg.Wait()
	live := 0
	for _, tok := range toks[3:] {
		if _, err := b.Lookup(tok); err == nil {
			live++
		}
	}
	if live != 2 {
		t.Fatalf("%d live sessions of one user after concurrent logins, want exactly the cap, 2", live)
	}
}

// TestLoginThrottleAcrossReplicas: failures are counted once for all
// replicas. Guesses spread over replicas A and B get one allowance
// (MaxFailures per user and address), not one per replica: the attempt on B
// after two failures on A is throttled without a password check; after the
// backoff one more guess is allowed (on B) and A throttles the next at
// once; a success clears the pair on both. Concurrent failures on both
// replicas are all counted (compare-and-set).
func TestLoginThrottleAcrossReplicas(t *testing.T) {
	a, b, clk := replicaManagers(t, Config{TTL: time.Hour, MaxFailures: 2, MaxSourceFailures: 1000,
		MaxAccountFailures: 1000, BaseBackoff: time.Minute})
	var checksB atomic.Int64
	realB := b.verify
	b.verify = func(name, pw string) (User, error) { checksB.Add(1); return realB(name, pw) }
	const addr = "203.0.113.7"
	for range 2 {
		if _, _, err := a.Login("op", "wrong", addr); !errors.Is(err, ErrBadLogin) {
			t.Fatal(err)
		}
	}
	if _, _, err := b.Login("op", "wrong", addr); !errors.Is(err, ErrThrottled) {
		t.Fatalf("third guess, on B: %v, want throttled", err)
	}
	if n := checksB.Load(); n != 0 {
		t.Fatalf("B checked %d passwords while throttled", n)
	}
	clk.add(time.Minute) // the backoff after the 2nd failure has passed
	if _, _, err := b.Login("op", "wrong", addr); !errors.Is(err, ErrBadLogin) {
		t.Fatalf("guess after the backoff, on B: %v", err)
	}
	if _, _, err := a.Login("op", "op-pass", addr); !errors.Is(err, ErrThrottled) {
		t.Fatalf("next attempt on A right after B's failure: %v, want throttled", err)
	}
	clk.add(2 * time.Minute)
	if _, _, err := a.Login("op", "op-pass", addr); err != nil {
		t.Fatalf("right password after the backoff: %v", err)
	}
	if _, _, err := b.Login("op", "wrong", addr); !errors.Is(err, ErrBadLogin) {
		t.Fatalf("after a success the pair starts over on B too: %v", err)
	}

	// Concurrent failures from one address on both replicas, another user.
	var wg sync.WaitGroup
	for i := range 8 {
		m := a
		if i%2 == 1 {
			m = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, _ = m.Login("view", "wrong", "198.51.100."+strconv.Itoa(i))
		}()
	}
	wg.Wait()
	ctx, cancel := storeCtx()
	defer cancel()
	e, err := a.cfg.Store.Get(ctx, failureKey(throttleKeys("view", "").account))
	if err != nil {
		t.Fatal(err)
	}
	var rec storedFailures
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Fails != 8 {
		t.Fatalf("account failures stored: %d, want 8", rec.Fails)
	}
	if strings.Contains(string(e.Value()), "view") {
		t.Fatalf("stored record names the user: %s", e.Value())
	}
}
