package influx

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	ihttp "github.com/influxdata/influxdb-client-go/v2/api/http"
)

// DefaultTimeout bounds one request when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Config configures a Writer.
type Config struct {
	// URL is the server's base URL, e.g. "http://127.0.0.1:8086".
	URL string
	// Token authenticates: an API token for 2.x, "user:password" for 1.x
	// with authentication enabled, empty otherwise.
	Token string
	// Org is the 2.x organization; ignored by 1.x (may be empty).
	Org string
	// Bucket is the 2.x bucket or, for 1.x, "database/retention-policy"
	// (e.g. "telemetry/autogen"). Required.
	Bucket string
	// Timeout bounds each request (default DefaultTimeout).
	Timeout time.Duration
	// Precision of the timestamps in the batches: time.Nanosecond,
	// time.Microsecond, time.Millisecond (the default) or time.Second.
	// Encoders must use the same precision (see Writer.NewEncoder).
	Precision time.Duration
	// Gzip compresses request bodies.
	Gzip bool
}

// Writer sends encoded batches to InfluxDB's /api/v2/write endpoint (served
// by InfluxDB 2.x and by 1.8 with its compatibility API). It does no
// batching, buffering or retrying of its own: each Write is one HTTP request,
// and its error says whether the caller should retry (ErrRetryable) or
// dead-letter (ErrPermanent). A nil error means the server accepted every
// line. A Writer is safe for concurrent use.
type Writer struct {
	cfg       Config
	log       *slog.Logger
	client    influxdb2.Client
	svc       ihttp.Service
	transport *http.Transport
	writeURL  string
	pingURL   string
	gzPool    sync.Pool // of *gzipBuffer

	// mu is held shared by requests in flight and exclusively by Close, so
	// that Close waits for them before releasing the connections.
	mu     sync.RWMutex
	closed bool
}

// gzipBuffer is a reusable compressor and its output.
type gzipBuffer struct {
	buf bytes.Buffer
	zw  *gzip.Writer
}

// NewWriter validates cfg and returns a Writer. It does not contact the
// server (see Ping and EnsureDatabase). A nil log discards log records.
func NewWriter(cfg Config, log *slog.Logger) (*Writer, error) {
	base, err := baseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.Bucket == "" {
		return nil, fmt.Errorf("%w: empty bucket", ErrInvalidConfig)
	}
	switch {
	case cfg.Timeout == 0:
		cfg.Timeout = DefaultTimeout
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("%w: negative timeout %v", ErrInvalidConfig, cfg.Timeout)
	}
	if cfg.Precision == 0 {
		cfg.Precision = time.Millisecond
	}
	prec, ok := precisionName(cfg.Precision)
	if !ok {
		return nil, fmt.Errorf("%w: precision %v is not one of 1ns, 1µs, 1ms, 1s", ErrInvalidConfig, cfg.Precision)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	q := url.Values{}
	if cfg.Org != "" {
		q.Set("org", cfg.Org)
	}
	q.Set("bucket", cfg.Bucket)
	q.Set("precision", prec)

	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 8
	opts := influxdb2.DefaultOptions().
		SetHTTPClient(&http.Client{Transport: tr}).
		SetApplicationName("telegate")
	client := influxdb2.NewClientWithOptions(base, cfg.Token, opts)

	w := &Writer{
		cfg:       cfg,
		log:       log,
		client:    client,
		svc:       client.HTTPService(),
		transport: tr,
		writeURL:  base + "/api/v2/write?" + q.Encode(),
		pingURL:   base + "/ping",
	}
	w.gzPool.New = func() any {
		zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed) // valid level: no error
		return &gzipBuffer{zw: zw}
	}
	log.Info("influx writer ready", "url", redact(base), "bucket", cfg.Bucket,
		"org", cfg.Org, "precision", prec, "gzip", cfg.Gzip, "timeout", cfg.Timeout)
	return w, nil
}

// NewEncoder returns an Encoder whose timestamps match the Writer's
// precision.
func (w *Writer) NewEncoder() *Encoder { return &Encoder{Precision: w.cfg.Precision} }

// Write sends lines (complete line-protocol lines, e.g. Encoder.Bytes) in
// one HTTP request and waits for the server's answer. It never retries and
// never drops: nil means every line was accepted; otherwise the error
// matches ErrRetryable or ErrPermanent (see WriteError) and the caller still
// owns the batch. lines is not retained or modified. Empty lines is a no-op.
func (w *Writer) Write(ctx context.Context, lines []byte) error {
	if len(lines) == 0 {
		return nil
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()

	body := lines
	if w.cfg.Gzip {
		gb := w.gzPool.Get().(*gzipBuffer)
		defer w.gzPool.Put(gb)
		gb.buf.Reset()
		gb.zw.Reset(&gb.buf)
		_, _ = gb.zw.Write(lines) // writes to a bytes.Buffer cannot fail
		_ = gb.zw.Close()
		body = gb.buf.Bytes()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.writeURL, bytes.NewReader(body))
	if err != nil {
		return &WriteError{Op: "write", Kind: ErrPermanent, Err: err}
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	if w.cfg.Gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := w.svc.DoHTTPRequestWithResponse(req, nil) //nolint:bodyclose // closed by the deferred drainClose below
	if err != nil {
		werr := transportError("write", err)
		w.log.Debug("influx write failed", "bytes", len(lines), "err", werr)
		return werr
	}
	defer drainClose(resp.Body)
	if resp.StatusCode/100 == 2 {
		return nil
	}
	werr := statusError("write", resp)
	w.log.Debug("influx write rejected", "bytes", len(lines), "status", resp.StatusCode, "err", werr)
	return werr
}

// Ping checks that the server answers (GET /ping, served by 1.x and 2.x).
// Errors match ErrRetryable or ErrPermanent like Write's.
func (w *Writer) Ping(ctx context.Context) error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.pingURL, nil)
	if err != nil {
		return &WriteError{Op: "ping", Kind: ErrPermanent, Err: err}
	}
	resp, err := w.svc.DoHTTPRequestWithResponse(req, nil) //nolint:bodyclose // closed by the deferred drainClose below
	if err != nil {
		return transportError("ping", err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode/100 != 2 {
		return statusError("ping", resp)
	}
	return nil
}

// Close waits for requests in flight (each bounded by Config.Timeout) and
// releases the Writer's connections. Later calls return ErrClosed. Close is
// idempotent.
func (w *Writer) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	w.client.Close()
	w.transport.CloseIdleConnections()
	w.log.Debug("influx writer closed")
}

// v2Version matches the X-Influxdb-Version of servers that have no
// databases to create (2.x, 3.x, Cloud: "v2.7.4", "2.7.1", "3.0.0").
var v2Version = regexp.MustCompile(`^v?([2-9]|[1-9][0-9]+)\.`)

// EnsureDatabase creates database db on an InfluxDB 1.x server at rawURL if
// it does not exist yet (CREATE DATABASE is idempotent). token is
// "user:password" when 1.x authentication is enabled. Servers that report a
// version 2 or later in the X-Influxdb-Version header of /ping are left
// alone: their buckets are managed outside the gateway. A 1.x server built
// from source reports "unknown", so anything that is not clearly 2+ is
// treated as 1.x. Errors match ErrRetryable (server unreachable) or
// ErrPermanent, or ErrInvalidConfig.
func EnsureDatabase(ctx context.Context, rawURL, token, db string) error {
	base, err := baseURL(rawURL)
	if err != nil {
		return err
	}
	if db == "" {
		return fmt.Errorf("%w: empty database name", ErrInvalidConfig)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	auth := func(req *http.Request) {
		if token != "" {
			req.Header.Set("Authorization", "Token "+token)
		}
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ping", nil)
	if err != nil {
		return &WriteError{Op: "ping", Kind: ErrPermanent, Err: err}
	}
	auth(req)
	resp, err := hc.Do(req) //nolint:bodyclose // closed by drainClose on both paths below
	if err != nil {
		return transportError("ping", err)
	}
	if resp.StatusCode/100 != 2 {
		defer drainClose(resp.Body)
		return statusError("ping", resp)
	}
	drainClose(resp.Body)
	if v2Version.MatchString(resp.Header.Get("X-Influxdb-Version")) {
		return nil
	}

	form := url.Values{"q": {"CREATE DATABASE " + quoteIdent(db)}}
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, base+"/query", strings.NewReader(form.Encode()))
	if err != nil {
		return &WriteError{Op: "create database", Kind: ErrPermanent, Err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	auth(req)
	resp, err = hc.Do(req) //nolint:bodyclose // closed by the deferred drainClose below
	if err != nil {
		return transportError("create database", err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode/100 != 2 {
		return statusError("create database", resp)
	}
	var out struct {
		Error   string `json:"error"`
		Results []struct {
			Error string `json:"error"`
		} `json:"results"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return &WriteError{Op: "create database", Kind: ErrPermanent, StatusCode: resp.StatusCode,
			Message: "unexpected response", Err: err}
	}
	msg := out.Error
	for _, r := range out.Results {
		if r.Error != "" {
			msg = r.Error
		}
	}
	if msg != "" {
		return &WriteError{Op: "create database", Kind: ErrPermanent, StatusCode: resp.StatusCode, Message: msg}
	}
	return nil
}

// Backoff bounds.
const (
	BackoffMin = 100 * time.Millisecond
	BackoffMax = 10 * time.Second
)

// RetryAfterMax caps the wait a server's Retry-After can impose (see
// RetryWait): a longer request is cut to 60 s, so a misconfigured proxy
// answering "Retry-After: 86400" cannot stall the sink for a day.
const RetryAfterMax = 60 * time.Second

// Backoff returns how long to wait before retry number attempt (0 for the
// first retry): exponential from BackoffMin, doubling per attempt, capped at
// BackoffMax, with "equal jitter" (uniform in the upper half of the step) so
// that replicas retrying together spread out. The result is always within
// [BackoffMin, BackoffMax]. It does not know the server's Retry-After:
// callers pass it through RetryWait with the error they retry.
func Backoff(attempt int) time.Duration {
	step := BackoffMax
	if attempt < 0 {
		attempt = 0
	}
	if attempt < 16 {
		step = min(BackoffMin<<attempt, BackoffMax)
	}
	d := step/2 + rand.N(step/2+1)
	return max(d, BackoffMin)
}

// RetryWait returns how long to wait before retrying after err, given the
// computed backoff: the server's Retry-After (WriteError.RetryAfter of a
// 429 or 503 answer, anywhere in err's chain) when it is longer than
// backoff, capped at RetryAfterMax; never less than backoff.
func RetryWait(backoff time.Duration, err error) time.Duration {
	var we *WriteError
	if errors.As(err, &we) && we.RetryAfter > backoff {
		return max(min(we.RetryAfter, RetryAfterMax), backoff)
	}
	return backoff
}

// baseURL validates an http(s) URL and returns it without trailing slash.
func baseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%w: url: %w", ErrInvalidConfig, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%w: url %q: want http(s)://host[:port]", ErrInvalidConfig, u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("%w: url %q: unexpected query or fragment", ErrInvalidConfig, u.Redacted())
	}
	return strings.TrimRight(raw, "/"), nil
}

// redact hides a password in a URL for logging.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparsable)"
}

// precisionName maps a precision to the write API's parameter.
func precisionName(p time.Duration) (string, bool) {
	switch p {
	case time.Nanosecond:
		return "ns", true
	case time.Microsecond:
		return "us", true
	case time.Millisecond:
		return "ms", true
	case time.Second:
		return "s", true
	}
	return "", false
}

// quoteIdent quotes an InfluxQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}
