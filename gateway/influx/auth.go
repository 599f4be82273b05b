package influx

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Errors of the credentials file and of SetupAuth.
var (
	// ErrCredentials: the credentials file is unreadable, malformed, or
	// readable by group or others.
	ErrCredentials = errors.New("influx: credentials file")
	// ErrAuthSetup: the server refused the admin credentials and already
	// has an admin (a data directory from another credentials file).
	ErrAuthSetup = errors.New("influx: authentication set-up failed")
)

// User is an InfluxDB 1.x user.
type User struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

// Token is the user's credential in the form InfluxDB 1.8 accepts after
// "Authorization: Token " (v2 write and Flux APIs): "name:password".
func (u User) Token() string {
	if u.Name == "" {
		return ""
	}
	return u.Name + ":" + u.Password
}

// Credentials are the users of an InfluxDB 1.x server run by the project
// (local influxd, tests, soak). Admin creates the others; the gateway's
// data path never uses it. Writer has ALL (read + write) on Database only,
// Reader READ on Database only. Neither can drop the database or manage
// users.
type Credentials struct {
	Database string `json:"database"`
	Admin    User   `json:"admin"`
	Writer   User   `json:"writer"`
	Reader   User   `json:"reader"`
}

// Default user names of NewCredentials.
const (
	AdminUser  = "admin"
	WriterUser = "telegate"
	ReaderUser = "telegate_reader"
)

// NewCredentials returns random passwords (256 bits each) for the default
// users of database db.
func NewCredentials(db string) Credentials {
	pw := func() string {
		b := make([]byte, 32)
		_, _ = rand.Read(b) // never fails (crypto/rand)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return Credentials{Database: db, Admin: User{AdminUser, pw()}, Writer: User{WriterUser, pw()}, Reader: User{ReaderUser, pw()}}
}

// LoadCredentials reads a credentials file (JSON, see Credentials). The
// file must not be accessible by group or others (0600 or stricter). Only
// Writer is required; Reader defaults to Writer.
func LoadCredentials(path string) (Credentials, error) {
	var c Credentials
	fi, err := os.Stat(path)
	if err != nil {
		return c, fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return c, fmt.Errorf("%w: %s has mode %v, want 0600", ErrCredentials, path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%w: %s: %w", ErrCredentials, path, err)
	}
	if c.Writer.Name == "" || c.Writer.Password == "" {
		return c, fmt.Errorf("%w: %s: writer name and password are required", ErrCredentials, path)
	}
	if c.Reader.Name == "" {
		c.Reader = c.Writer
	}
	return c, nil
}

// LoadOrCreateCredentials loads path, or, when it does not exist, writes
// NewCredentials(db) to it (mode 0600, atomically) and returns them.
func LoadOrCreateCredentials(path, db string) (Credentials, error) {
	c, err := LoadCredentials(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return c, err
	}
	c = NewCredentials(db)
	if err := WriteCredentials(path, c); err != nil {
		return c, err
	}
	return c, nil
}

// WriteCredentials writes c to path with mode 0600 (directory 0700 when
// created), replacing it atomically.
func WriteCredentials(path string, c Credentials) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".credentials-*") // mode 0600
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	return nil
}

// SetupAuth prepares an InfluxDB 1.x server started with authentication
// on (INFLUXDB_HTTP_AUTH_ENABLED=true): it creates the admin user if the
// server has no user yet (1.x accepts that one statement without
// credentials), then, as admin, the database, the writer (ALL on the
// database) and the reader (READ on the database), and resets their
// passwords to c's. It is idempotent and runs at every start. Errors match
// ErrRetryable (server unreachable), ErrPermanent or ErrAuthSetup.
func SetupAuth(ctx context.Context, rawURL string, c Credentials) error {
	base, err := baseURL(rawURL)
	if err != nil {
		return err
	}
	if c.Database == "" || c.Admin.Name == "" || c.Admin.Password == "" || c.Writer.Name == "" || c.Reader.Name == "" {
		return fmt.Errorf("%w: database, admin, writer and reader are required", ErrInvalidConfig)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DisableKeepAlives = true
	defer tr.CloseIdleConnections()
	q := &querier{hc: &http.Client{Transport: tr}, base: base}

	users, err := q.users(ctx, c.Admin)
	if errors.Is(err, errUnauthorized) {
		// No admin yet (first start: 403), or a different one (401).
		if err := q.run(ctx, User{}, "CREATE USER "+quoteIdent(c.Admin.Name)+" WITH PASSWORD "+quoteString(c.Admin.Password)+" WITH ALL PRIVILEGES"); err != nil {
			return fmt.Errorf("%w: the server refuses the admin credentials and did not accept creating the first admin "+
				"(its data directory belongs to other credentials): %w", ErrAuthSetup, err)
		}
		users, err = q.users(ctx, c.Admin)
	}
	if err != nil {
		return err
	}
	stmts := []string{"CREATE DATABASE " + quoteIdent(c.Database)}
	for _, u := range []struct {
		User
		priv string
	}{{c.Writer, "ALL"}, {c.Reader, "READ"}} {
		if u.Name == c.Admin.Name {
			continue
		}
		if users[u.Name] {
			stmts = append(stmts, "SET PASSWORD FOR "+quoteIdent(u.Name)+" = "+quoteString(u.Password))
		} else {
			stmts = append(stmts, "CREATE USER "+quoteIdent(u.Name)+" WITH PASSWORD "+quoteString(u.Password))
			users[u.Name] = true
		}
		stmts = append(stmts, "GRANT "+u.priv+" ON "+quoteIdent(c.Database)+" TO "+quoteIdent(u.Name))
	}
	for _, s := range stmts {
		if err := q.run(ctx, c.Admin, s); err != nil {
			return err
		}
	}
	return nil
}

// errUnauthorized marks a 401 or 403 from /query (403 before the first
// admin exists: "create admin user first").
var errUnauthorized = errors.New("influx: unauthorized")

// querier runs InfluxQL statements over the 1.x /query API.
type querier struct {
	hc   *http.Client
	base string
}

// users returns the names of the server's users, as u.
func (q *querier) users(ctx context.Context, u User) (map[string]bool, error) {
	var out struct {
		Results []struct {
			Series []struct {
				Values [][]any `json:"values"`
			} `json:"series"`
			Error string `json:"error"`
		} `json:"results"`
	}
	if err := q.do(ctx, u, "SHOW USERS", &out); err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, r := range out.Results {
		for _, s := range r.Series {
			for _, v := range s.Values {
				if len(v) > 0 {
					if n, ok := v[0].(string); ok {
						names[n] = true
					}
				}
			}
		}
	}
	return names, nil
}

// run executes one statement as u (no credentials when u is zero).
func (q *querier) run(ctx context.Context, u User, stmt string) error {
	var out struct{}
	return q.do(ctx, u, stmt, &out)
}

func (q *querier) do(ctx context.Context, u User, stmt string, into any) error {
	op := strings.SplitN(stmt, " ", 3)
	opName := strings.ToLower(strings.Join(op[:min(2, len(op))], " "))
	form := url.Values{"q": {stmt}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, q.base+"/query", strings.NewReader(form.Encode()))
	if err != nil {
		return &WriteError{Op: opName, Kind: ErrPermanent, Err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if u.Name != "" {
		req.SetBasicAuth(u.Name, u.Password)
	}
	resp, err := q.hc.Do(req) //nolint:bodyclose // closed by the deferred drainClose below
	if err != nil {
		return transportError(opName, err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("%w: %w", errUnauthorized, statusError(opName, resp))
	}
	if resp.StatusCode/100 != 2 {
		return statusError(opName, resp)
	}
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return &WriteError{Op: opName, Kind: ErrPermanent, StatusCode: resp.StatusCode, Message: "unexpected response", Err: err}
	}
	var e struct {
		Error   string `json:"error"`
		Results []struct {
			Error string `json:"error"`
		} `json:"results"`
	}
	_ = json.Unmarshal(raw, &e)
	msg := e.Error
	for _, r := range e.Results {
		if r.Error != "" {
			msg = r.Error
		}
	}
	if msg != "" {
		return &WriteError{Op: opName, Kind: ErrPermanent, StatusCode: resp.StatusCode, Message: msg}
	}
	if err := json.Unmarshal(raw, into); err != nil {
		return &WriteError{Op: opName, Kind: ErrPermanent, StatusCode: resp.StatusCode, Message: "unexpected response", Err: err}
	}
	return nil
}

// quoteString quotes an InfluxQL string literal.
func quoteString(s string) string {
	return `'` + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`).Replace(s) + `'`
}
