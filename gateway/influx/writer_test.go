package influx

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer is an httptest server whose handler the test sets.
func fakeServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func newTestWriter(t *testing.T, cfg Config) *Writer {
	t.Helper()
	if cfg.Bucket == "" {
		cfg.Bucket = "telemetry/autogen"
	}
	w, err := NewWriter(cfg, nil)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	t.Cleanup(w.Close)
	return w
}

func TestNewWriterValidates(t *testing.T) {
	for _, cfg := range []Config{
		{URL: "", Bucket: "b"},
		{URL: "127.0.0.1:8086", Bucket: "b"},
		{URL: "ftp://host", Bucket: "b"},
		{URL: "http://host?x=1", Bucket: "b"},
		{URL: "http://host", Bucket: ""},
		{URL: "http://host", Bucket: "b", Timeout: -1},
		{URL: "http://host", Bucket: "b", Precision: time.Minute},
		{URL: "http://host", Bucket: "b", Precision: 10 * time.Millisecond},
	} {
		if w, err := NewWriter(cfg, nil); !errors.Is(err, ErrInvalidConfig) {
			if w != nil {
				w.Close()
			}
			t.Errorf("NewWriter(%+v) error = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}

func TestWriteRequest(t *testing.T) {
	type request struct {
		method, path string
		query        map[string]string
		header       http.Header
		body         []byte
	}
	var (
		mu  sync.Mutex
		got []request
	)
	srv := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		q := map[string]string{}
		for k := range r.URL.Query() {
			q[k] = r.URL.Query().Get(k)
		}
		mu.Lock()
		got = append(got, request{r.Method, r.URL.Path, q, r.Header.Clone(), body})
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	batch := []byte("m,vin=A v=1 1\nm,vin=B v=2 2\n")

	w := newTestWriter(t, Config{URL: srv.URL + "/", Token: "user:secret", Org: "acme", Precision: time.Second})
	if err := w.Write(context.Background(), batch); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := w.Write(context.Background(), nil); err != nil {
		t.Fatalf("empty Write: %v", err)
	}
	wz := newTestWriter(t, Config{URL: srv.URL, Gzip: true})
	if err := wz.Write(context.Background(), batch); err != nil {
		t.Fatalf("gzip Write: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d requests, want 2 (an empty batch sends nothing)", len(got))
	}

	r := got[0]
	if r.method != http.MethodPost || r.path != "/api/v2/write" {
		t.Errorf("request %s %s", r.method, r.path)
	}
	if want := map[string]string{"bucket": "telemetry/autogen", "org": "acme", "precision": "s"}; !equalMaps(r.query, want) {
		t.Errorf("query %v, want %v", r.query, want)
	}
	if a := r.header.Get("Authorization"); a != "Token user:secret" {
		t.Errorf("Authorization %q", a)
	}
	if !bytes.Equal(r.body, batch) {
		t.Errorf("body %q", r.body)
	}

	r = got[1]
	if want := map[string]string{"bucket": "telemetry/autogen", "precision": "ms"}; !equalMaps(r.query, want) {
		t.Errorf("gzip query %v, want %v", r.query, want)
	}
	if r.header.Get("Content-Encoding") != "gzip" || r.header.Get("Authorization") != "" {
		t.Errorf("gzip headers %v", r.header)
	}
	zr, err := gzip.NewReader(bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if plain, _ := io.ReadAll(zr); !bytes.Equal(plain, batch) {
		t.Errorf("gzip body decodes to %q", plain)
	}
	if e := w.NewEncoder(); e.Precision != time.Second {
		t.Errorf("NewEncoder precision %v", e.Precision)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestWriteErrorClassification(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		kind       error
		tooLarge   bool
		msg        string
		retryAfter time.Duration
	}{
		{name: "1.x parse error", status: 400, header: map[string]string{"Content-Type": "application/json"},
			body: `{"error":"unable to parse 'm f=': missing field value"}`, kind: ErrPermanent,
			msg: "unable to parse 'm f=': missing field value"},
		{name: "2.x parse error", status: 400, header: map[string]string{"Content-Type": "application/json"},
			body: `{"code":"invalid","message":"no field"}`, kind: ErrPermanent, msg: "no field"},
		{name: "too large", status: 413, body: "too big", kind: ErrPermanent, tooLarge: true, msg: "too big"},
		{name: "unprocessable", status: 422, kind: ErrPermanent, msg: "Unprocessable Entity"},
		{name: "header message", status: 400, header: map[string]string{"X-Influxdb-Error": "bad"}, kind: ErrPermanent, msg: "bad"},
		{name: "unauthorized", status: 401, kind: ErrRetryable, msg: "Unauthorized"},
		{name: "forbidden", status: 403, kind: ErrRetryable, msg: "Forbidden"},
		{name: "database not found", status: 404, header: map[string]string{"Content-Type": "application/json"},
			body: `{"error":"database not found: \"x\""}`, kind: ErrRetryable, msg: `database not found: "x"`},
		{name: "request timeout", status: 408, kind: ErrRetryable, msg: "Request Timeout"},
		{name: "rate limited", status: 429, header: map[string]string{"Retry-After": "7"}, kind: ErrRetryable,
			msg: "Too Many Requests", retryAfter: 7 * time.Second},
		{name: "internal", status: 500, body: "timeout", kind: ErrRetryable, msg: "timeout"},
		{name: "unavailable", status: 503, kind: ErrRetryable, msg: "Service Unavailable"},
		{name: "bad gateway", status: 502, kind: ErrRetryable, msg: "Bad Gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			w := newTestWriter(t, Config{URL: srv.URL})
			err := w.Write(context.Background(), []byte("m v=1 1\n"))
			other := ErrPermanent
			if errors.Is(tt.kind, ErrPermanent) {
				other = ErrRetryable
			}
			if !errors.Is(err, tt.kind) || errors.Is(err, other) {
				t.Fatalf("error %v: want only %v", err, tt.kind)
			}
			if errors.Is(err, ErrTooLarge) != tt.tooLarge {
				t.Errorf("errors.Is(err, ErrTooLarge) = %v", !tt.tooLarge)
			}
			var we *WriteError
			if !errors.As(err, &we) {
				t.Fatalf("%T is not a *WriteError", err)
			}
			if we.StatusCode != tt.status || we.Message != tt.msg || we.RetryAfter != tt.retryAfter || we.Op != "write" {
				t.Errorf("WriteError %+v", we)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Error() %q lacks the server's message", err)
			}
		})
	}
}

func TestWriteTransportErrorsAreRetryable(t *testing.T) {
	// Nothing listens: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	w := newTestWriter(t, Config{URL: "http://" + addr})
	if err := w.Write(context.Background(), []byte("m v=1 1\n")); !errors.Is(err, ErrRetryable) {
		t.Errorf("refused: %v", err)
	}
	if err := w.Ping(context.Background()); !errors.Is(err, ErrRetryable) {
		t.Errorf("Ping refused: %v", err)
	}

	// The server hangs up mid-request.
	srv := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close()
	})
	w = newTestWriter(t, Config{URL: srv.URL})
	if err := w.Write(context.Background(), []byte("m v=1 1\n")); !errors.Is(err, ErrRetryable) {
		t.Errorf("hang-up: %v", err)
	}

	// The server never answers: Config.Timeout ends the request. The handler
	// waits for the request to be abandoned, so no timing is asserted.
	stop := make(chan struct{})
	hang := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // lets the server notice the hang-up
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	})
	t.Cleanup(func() { close(stop) }) // runs before hang.Close
	w = newTestWriter(t, Config{URL: hang.URL, Timeout: 50 * time.Millisecond})
	err = w.Write(context.Background(), []byte("m v=1 1\n"))
	if !errors.Is(err, ErrRetryable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout: %v", err)
	}
	// So does the caller's context.
	w = newTestWriter(t, Config{URL: hang.URL})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Write(ctx, []byte("m v=1 1\n")); !errors.Is(err, ErrRetryable) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestPing(t *testing.T) {
	status := http.StatusNoContent
	srv := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ping" {
			t.Errorf("Ping requested %s", r.URL.Path)
		}
		w.WriteHeader(status)
	})
	w := newTestWriter(t, Config{URL: srv.URL})
	if err := w.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	status = http.StatusServiceUnavailable
	if err := w.Ping(context.Background()); !errors.Is(err, ErrRetryable) {
		t.Fatalf("Ping 503: %v", err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	srv := fakeServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	w, err := NewWriter(Config{URL: srv.URL, Bucket: "b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(context.Background(), []byte("m v=1 1\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w.Close()
	if err := w.Write(context.Background(), []byte("m v=1 1\n")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
	if err := w.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping after Close: %v", err)
	}
}

// TestCloseWaitsForWrites closes while writes are in flight: they complete
// and no connection is left behind (goleak checks at exit).
func TestCloseWaitsForWrites(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 4)
	srv := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		w.WriteHeader(http.StatusNoContent)
	})
	w, err := NewWriter(Config{URL: srv.URL, Bucket: "b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- w.Write(context.Background(), []byte("m v=1 1\n")) }()
	}
	for range 4 {
		<-arrived
	}
	closed := make(chan struct{})
	go func() { w.Close(); close(closed) }()
	close(release)
	<-closed
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("in-flight Write: %v", err)
		}
	}
}

func TestEnsureDatabase(t *testing.T) {
	var (
		mu      sync.Mutex
		queries []string
		auth    []string
	)
	handler := func(version, queryResp string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			auth = append(auth, r.Header.Get("Authorization"))
			mu.Unlock()
			w.Header().Set("X-Influxdb-Version", version)
			switch r.URL.Path {
			case "/ping":
				w.WriteHeader(http.StatusNoContent)
			case "/query":
				_ = r.ParseForm()
				mu.Lock()
				queries = append(queries, r.Method+" "+r.PostForm.Get("q"))
				mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, queryResp)
			default:
				http.NotFound(w, r)
			}
		}
	}
	ok := `{"results":[{"statement_id":0}]}`
	reset := func() {
		mu.Lock()
		queries, auth = nil, nil
		mu.Unlock()
	}
	seen := func() (q, a []string) {
		mu.Lock()
		defer mu.Unlock()
		return queries, auth
	}

	for _, version := range []string{"1.8.3", "unknown", ""} {
		reset()
		srv := fakeServer(t, handler(version, ok))
		if err := EnsureDatabase(context.Background(), srv.URL, "u:p", `tele"metry`); err != nil {
			t.Fatalf("version %q: %v", version, err)
		}
		queries, auth := seen()
		if len(queries) != 1 || queries[0] != `POST CREATE DATABASE "tele\"metry"` {
			t.Errorf("version %q: queries %q", version, queries)
		}
		if len(auth) != 2 || auth[0] != "Token u:p" || auth[1] != "Token u:p" {
			t.Errorf("version %q: Authorization %q", version, auth)
		}
	}
	for _, version := range []string{"v2.7.4", "2.7.1", "3.0.0", "v10.0.0"} {
		reset()
		srv := fakeServer(t, handler(version, ok))
		err := EnsureDatabase(context.Background(), srv.URL, "", "telemetry")
		if queries, _ := seen(); err != nil || len(queries) != 0 {
			t.Errorf("version %q: err %v, queries %q (want none)", version, err, queries)
		}
	}

	srv := fakeServer(t, handler("1.8.3", `{"results":[{"statement_id":0,"error":"unauthorized"}]}`))
	err := EnsureDatabase(context.Background(), srv.URL, "", "telemetry")
	var we *WriteError
	if !errors.Is(err, ErrPermanent) || !errors.As(err, &we) || we.Message != "unauthorized" {
		t.Errorf("statement error: %v", err)
	}
	if err := EnsureDatabase(context.Background(), srv.URL, "", ""); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("empty name: %v", err)
	}
	if err := EnsureDatabase(context.Background(), "localhost:8086", "", "x"); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("bad URL: %v", err)
	}
	srv.Close()
	if err := EnsureDatabase(context.Background(), srv.URL, "", "x"); !errors.Is(err, ErrRetryable) {
		t.Errorf("server down: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	prevMax := time.Duration(0)
	for attempt := -1; attempt < 100; attempt++ {
		for range 50 {
			d := Backoff(attempt)
			if d < BackoffMin || d > BackoffMax {
				t.Fatalf("Backoff(%d) = %v, outside [%v, %v]", attempt, d, BackoffMin, BackoffMax)
			}
			step := BackoffMax
			if attempt >= 0 && attempt < 7 {
				step = BackoffMin << attempt
			} else if attempt < 0 {
				step = BackoffMin
			}
			if d < step/2 || d > step {
				t.Fatalf("Backoff(%d) = %v, want within [%v, %v]", attempt, d, step/2, step)
			}
			prevMax = max(prevMax, d)
		}
	}
	if prevMax != BackoffMax && prevMax < BackoffMax*9/10 {
		t.Errorf("largest backoff %v never approached the cap", prevMax)
	}
	if Backoff(0) != BackoffMin {
		t.Errorf("Backoff(0) = %v, want %v", Backoff(0), BackoffMin)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"3":                             3 * time.Second,
		"soon":                          0,
		"Thu, 01 Jan 2026 00:00:30 GMT": 30 * time.Second,
		"Wed, 31 Dec 2025 00:00:30 GMT": 0,
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestWriteErrorTruncatesLongMessages(t *testing.T) {
	e := &WriteError{Op: "write", Kind: ErrPermanent, StatusCode: 400, Message: strings.Repeat("x", 5000)}
	s := e.Error()
	if len(s) > 1200 || !strings.Contains(s, "3976 more bytes") || !strings.HasSuffix(s, "(permanent)") {
		t.Errorf("Error() = %q", s)
	}
}

// BenchmarkWriteLoopback measures the Writer's overhead per 1000-line batch
// against a loopback server that discards the body.
func BenchmarkWriteLoopback(b *testing.B) {
	for _, gz := range []bool{false, true} {
		name := "plain"
		if gz {
			name = "gzip"
		}
		b.Run(name, func(b *testing.B) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusNoContent)
			}))
			defer srv.Close()
			w, err := NewWriter(Config{URL: srv.URL, Bucket: "b", Gzip: gz}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			var e Encoder
			vin := []byte("WVWZZZ1JZXW000001")
			for i := range 1000 {
				encode32(&e, vin, int64(i)*int64(time.Millisecond))
			}
			b.SetBytes(int64(e.Len()))
			b.ReportAllocs()
			for b.Loop() {
				if err := w.Write(context.Background(), e.Bytes()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestRetryWait: the server's Retry-After counts when longer than the
// backoff (also wrapped), is capped at RetryAfterMax, never shortens it.
func TestRetryWait(t *testing.T) {
	ra := func(d time.Duration) error {
		return fmt.Errorf("sink: %w", &WriteError{Op: "write", Kind: ErrRetryable, StatusCode: 429, RetryAfter: d})
	}
	for _, c := range []struct {
		backoff time.Duration
		err     error
		want    time.Duration
	}{
		{time.Second, ra(7 * time.Second), 7 * time.Second},
		{time.Second, ra(time.Hour), RetryAfterMax},
		{time.Second, ra(0), time.Second},
		{time.Second, ra(500 * time.Millisecond), time.Second},
		{2 * time.Minute, ra(time.Hour), 2 * time.Minute}, // never less than the backoff
		{time.Second, errors.New("not an HTTP answer"), time.Second},
		{time.Second, nil, time.Second},
	} {
		if got := RetryWait(c.backoff, c.err); got != c.want {
			t.Errorf("RetryWait(%v, %v) = %v, want %v", c.backoff, c.err, got, c.want)
		}
	}
}
