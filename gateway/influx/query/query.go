// Package query is the one seam for reads from InfluxDB: InfluxQL over the
// v1 query API (GET/POST /query?db=&rp=&q=&epoch=ns, JSON results), which
// InfluxDB 1.x serves natively, 2.x through its v1 compatibility API (with
// a DBRP mapping) and 3.x (Core, Enterprise, Cloud) natively. Flux is not
// used: 3.x does not run it and 2.x keeps it in maintenance. Writes stay on
// the v2 write API (gateway/influx.Writer).
//
// Every query is built with Ident, String, Regex, Time and Duration, so no
// caller-supplied text ever reaches InfluxQL unescaped; Parse decodes the
// JSON response and is pure (unit-tested without a server).
package query

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Errors. Every error of Reader matches ErrQuery; a statement the server
// refused (syntax, unknown function, rights) also matches ErrStatement,
// and a 401/403 matches ErrUnauthorized.
var (
	ErrQuery        = errors.New("influx query failed")
	ErrStatement    = errors.New("influx query: statement error")
	ErrUnauthorized = errors.New("influx query: unauthorized")
	ErrResponse     = errors.New("influx query: malformed response")
	ErrConfig       = errors.New("influx query: invalid configuration")
)

// Auth schemes sent as "Authorization: <scheme> <token>".
const (
	// SchemeToken is accepted by 1.8 ("Token user:password"), 2.x (API
	// token) and 3.x. The default.
	SchemeToken = "Token"
	// SchemeBearer is accepted by 3.x (and 2.x).
	SchemeBearer = "Bearer"
	// SchemeBasic sends the token "user:password" as HTTP Basic auth
	// (1.x, 2.x v1 compatibility with a v1 auth, 3.x ignores the user).
	SchemeBasic = "Basic"
)

// maxBody bounds the response read (32 MiB): queries carry LIMITs, this is
// the safety net against an unbounded answer.
const maxBody = 32 << 20

// Config configures a Reader.
type Config struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:8086.
	URL string
	// Database (1.x database, 2.x DBRP-mapped database, 3.x database) and
	// RetentionPolicy ("" for the default; 2.x maps db/rp to a bucket).
	Database        string
	RetentionPolicy string
	// Token is "user:password" (1.x) or an API token (2.x, 3.x); empty
	// sends no credentials.
	Token string
	// AuthScheme is SchemeToken (default), SchemeBearer or SchemeBasic.
	AuthScheme string
	// Timeout bounds one request (default 15 s).
	Timeout time.Duration
	// Client overrides the HTTP client (nil: a client with Timeout that
	// does not follow redirects).
	Client *http.Client
}

// Validate reports an unusable configuration.
func (c Config) Validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: url %q", ErrConfig, c.URL)
	}
	if c.Database == "" {
		return fmt.Errorf("%w: database is required", ErrConfig)
	}
	switch c.AuthScheme {
	case "", SchemeToken, SchemeBearer, SchemeBasic:
	default:
		return fmt.Errorf("%w: auth scheme %q (Token, Bearer or Basic)", ErrConfig, c.AuthScheme)
	}
	if c.AuthScheme == SchemeBasic && c.Token != "" && !strings.Contains(c.Token, ":") {
		return fmt.Errorf("%w: Basic auth needs a user:password token", ErrConfig)
	}
	return nil
}

// SplitBucket splits a 1.8-style bucket "db/rp" into database and
// retention policy ("db" alone: default retention policy).
func SplitBucket(bucket string) (db, rp string) {
	db, rp, _ = strings.Cut(bucket, "/")
	return db, rp
}

// Reader runs InfluxQL over the v1 query API. Safe for concurrent use;
// its fields are set by New and read-only after.
type Reader struct {
	cfg  Config
	base string
	hc   *http.Client
	tr   *http.Transport // nil when Config.Client was given
}

// New returns a Reader. It does not connect.
func New(cfg Config) *Reader {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.AuthScheme == "" {
		cfg.AuthScheme = SchemeToken
	}
	r := &Reader{cfg: cfg, base: strings.TrimRight(cfg.URL, "/"), hc: cfg.Client}
	if r.hc == nil {
		r.tr = &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 8, IdleConnTimeout: time.Minute}
		r.hc = &http.Client{Transport: r.tr, Timeout: cfg.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return r
}

// Config returns the Reader's configuration (defaults applied).
func (r *Reader) Config() Config { return r.cfg }

// Close releases idle connections. Safe to call more than once.
func (r *Reader) Close() {
	if r.tr != nil {
		r.tr.CloseIdleConnections()
	}
}

// Query runs read statements (SELECT, SHOW; several separated by ";") with
// GET and returns one Result per statement. A statement's error is in its
// Result (Err); the returned error is for the request as a whole.
func (r *Reader) Query(ctx context.Context, q string) ([]Result, error) {
	return r.do(ctx, http.MethodGet, q)
}

// Series runs q like Query and returns the series of all its statements,
// or the first statement's error (matching ErrStatement).
func (r *Reader) Series(ctx context.Context, q string) ([]Series, error) {
	res, err := r.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	var out []Series
	for _, x := range res {
		if x.Err != "" {
			return nil, fmt.Errorf("%w: %w: %s", ErrQuery, ErrStatement, x.Err)
		}
		out = append(out, x.Series...)
	}
	return out, nil
}

// Exec runs statements that change the server (DROP SERIES, DELETE,
// CREATE ...) with POST, as 1.x requires, and returns the first error.
func (r *Reader) Exec(ctx context.Context, q string) error {
	res, err := r.do(ctx, http.MethodPost, q)
	if err != nil {
		return err
	}
	for _, x := range res {
		if x.Err != "" {
			return fmt.Errorf("%w: %w: %s", ErrQuery, ErrStatement, x.Err)
		}
	}
	return nil
}

// Params are the v1 query API's URL parameters for q.
func (r *Reader) Params(q string) url.Values {
	v := url.Values{"db": {r.cfg.Database}, "q": {q}, "epoch": {"ns"}}
	if r.cfg.RetentionPolicy != "" {
		v.Set("rp", r.cfg.RetentionPolicy)
	}
	return v
}

// Authorization is the header value sent, "" without a token.
func (r *Reader) Authorization() string {
	if r.cfg.Token == "" {
		return ""
	}
	return AuthHeader(r.cfg.AuthScheme, r.cfg.Token)
}

func (r *Reader) do(ctx context.Context, method, q string) ([]Result, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	params := r.Params(q)
	var body io.Reader
	target := r.base + "/query"
	if method == http.MethodGet {
		target += "?" + params.Encode()
	} else {
		body = strings.NewReader(params.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQuery, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "application/json")
	if a := r.Authorization(); a != "" {
		req.Header.Set("Authorization", a)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQuery, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		_ = resp.Body.Close()
	}()
	lr := io.LimitReader(resp.Body, maxBody)
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("%w: %w: HTTP %d %s", ErrQuery, ErrUnauthorized, resp.StatusCode, errorText(lr))
	case resp.StatusCode/100 != 2:
		return nil, fmt.Errorf("%w: HTTP %d %s", ErrQuery, resp.StatusCode, errorText(lr))
	}
	res, err := Parse(lr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQuery, err)
	}
	return res, nil
}

// errorText returns the server's error message (JSON {"error": ...} or
// text), bounded.
func errorText(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 4<<10))
	if res, err := Parse(strings.NewReader(string(b))); err == nil {
		for _, x := range res {
			if x.Err != "" {
				return x.Err
			}
		}
	} else if e := topError(b); e != "" {
		return e
	}
	return strings.TrimSpace(string(b))
}

// AuthHeader returns the Authorization header for token with scheme
// (Token, Bearer or Basic; Basic expects "user:password").
func AuthHeader(scheme, token string) string {
	if scheme == SchemeBasic {
		user, pass, _ := strings.Cut(token, ":")
		req := http.Request{Header: http.Header{}}
		req.SetBasicAuth(user, pass)
		return req.Header.Get("Authorization")
	}
	if scheme == "" {
		scheme = SchemeToken
	}
	return scheme + " " + token
}
