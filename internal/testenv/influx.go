// Package testenv starts real servers (InfluxDB 1.8) for integration tests:
// loopback only, free ports, temporary directories, bounded waits, and
// cleanup registered with the test.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/influx/localserver"
	"github.com/telegate/telegate/gateway/influx/query"
)

// NotFoundMessage starts the fatal error of StartInflux when there is no
// influxd binary. Outside -short mode tests never skip for lack of it:
// `make influxd` builds it.
const NotFoundMessage = "InfluxDB binary not found: run `make influxd`"

// SkipIfShort skips the test in -short mode (`go test -short`, `make
// test-short`) because it needs an external server or program (needs names
// it, e.g. "a real InfluxDB (influxd)"). -short runs only the tests that need
// no external binary; embedded nats-server is in-process and still runs.
// `make test` runs without -short, so every skipped test runs there.
func SkipIfShort(t testing.TB, needs string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("skipped in -short mode: needs %s; `make test` runs it", needs)
	}
}

// RequireInfluxd returns the influxd binary for tests that run it
// themselves: in -short mode it skips the test (without looking for the
// binary, so a present bin/influxd is not used silently), else it fails the
// test with NotFoundMessage if the binary is missing.
func RequireInfluxd(t testing.TB) string {
	t.Helper()
	SkipIfShort(t, "a real InfluxDB (influxd)")
	bin, err := InfluxdPath()
	if err != nil {
		t.Fatalf("%s: %v", NotFoundMessage, err)
	}
	return bin
}

// Bounds of the waits. They are safety nets against a wedged server, not
// assertions: influxd 1.8 needs a few seconds of CPU to start.
const (
	startTimeout = 2 * time.Minute
	queryTimeout = time.Minute
)

// Influx is a real InfluxDB 1.8 server (influxd) run by a test through the
// product's launcher (gateway/influx/localserver), read with InfluxQL, and
// database Database created. Its fields are read-only.
type Influx struct {
	// URL is the HTTP API's base URL, "http://127.0.0.1:PORT".
	URL string
	// Database is the database created at start: "telemetry".
	Database string
	// Bucket is the 2.x-style bucket name of Database's default retention
	// policy: "telemetry/autogen".
	Bucket string
	// Dir holds the server's data (meta, data, wal) and LogPath.
	Dir string
	// LogPath is the server's stdout and stderr, appended across restarts.
	LogPath string
	// HTTPAddr and RPCAddr are the loopback addresses the server listens on.
	HTTPAddr, RPCAddr string
	// Authentication is on (localserver.Env). Token is the gateway user's
	// "user:password" (ALL on Database only), ReadToken the read-only
	// user's, AdminToken the admin's (for tests of the server's rights).
	// CredentialsFile holds all three (influx.Credentials, mode 0600).
	Token, ReadToken, AdminToken string
	CredentialsFile              string
	// Creds are the users behind the tokens.
	Creds influx.Credentials

	bin string

	mu   sync.Mutex
	proc *localserver.Process // nil when not running
	rd   *query.Reader        // created by reader; guarded by mu
}

// StartInflux starts influxd in a temporary directory on free loopback
// ports with authentication on, waits until it answers /ping, creates the
// admin, the gateway user and the read-only user (Token, ReadToken,
// AdminToken) and database "telemetry", and
// registers a cleanup that stops it (printing the tail of its log if the
// test failed). The binary is $INFLUXD if set, else bin/influxd at the
// module root (found by walking up from the working directory to go.mod);
// if it is missing the test fails with NotFoundMessage. In -short mode it
// skips the test (RequireInfluxd).
func StartInflux(t testing.TB) *Influx {
	t.Helper()
	bin := RequireInfluxd(t)
	dir := t.TempDir()
	i := &Influx{
		Database: "telemetry",
		Bucket:   "telemetry/autogen",
		Dir:      dir,
		LogPath:  filepath.Join(dir, "influxd.log"),
		bin:      bin,
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("influxd log tail (%s):\n%s", i.LogPath, i.logTail())
		}
		i.Stop()
		i.closeClient()
	})
	const attempts = 3
	began := time.Now()
	for n := 1; ; n++ {
		i.HTTPAddr, i.RPCAddr = freeAddr(), freeAddr()
		i.URL = "http://" + i.HTTPAddr
		err := i.start()
		if err == nil {
			break
		}
		if !errors.Is(err, localserver.ErrAddrInUse) || n == attempts {
			t.Fatalf("testenv: start influxd: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	i.Creds = influx.NewCredentials(i.Database)
	i.Token, i.ReadToken, i.AdminToken = i.Creds.Writer.Token(), i.Creds.Reader.Token(), i.Creds.Admin.Token()
	i.CredentialsFile = filepath.Join(dir, "credentials.json")
	if err := influx.WriteCredentials(i.CredentialsFile, i.Creds); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := localserver.Bootstrap(ctx, i.URL, i.Creds); err != nil {
		t.Fatalf("testenv: users and database %q: %v", i.Database, err)
	}
	t.Logf("testenv: influxd ready at %s in %v (dir %s)", i.URL, time.Since(began).Round(time.Millisecond), dir)
	return i
}

// InfluxdPath returns the influxd binary to run: $INFLUXD if set (it must
// exist), else <module root>/bin/influxd.
func InfluxdPath() (string, error) {
	if p := os.Getenv("INFLUXD"); p != "" {
		return p, checkExecutable(p)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "bin", "influxd")
			return p, checkExecutable(p)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
		dir = parent
	}
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// Start restarts a stopped or killed server on the same ports and data
// directory (for outage tests). It fails the test if the server is running
// or does not come up.
func (i *Influx) Start(t testing.TB) {
	t.Helper()
	i.mu.Lock()
	running := i.proc != nil
	i.mu.Unlock()
	if running {
		t.Fatalf("testenv: influxd at %s is already running", i.URL)
	}
	began := time.Now()
	if err := i.start(); err != nil {
		t.Fatalf("testenv: restart influxd: %v", err)
	}
	t.Logf("testenv: influxd restarted in %v", time.Since(began).Round(time.Millisecond))
}

// Stop stops the server with SIGTERM and waits for it to exit (SIGKILL after
// a bound). It is idempotent and safe to call from any goroutine.
func (i *Influx) Stop() { i.halt(syscall.SIGTERM) }

// Kill stops the server with SIGKILL, like a crash, and waits for it to exit.
// It is idempotent.
func (i *Influx) Kill() { i.halt(syscall.SIGKILL) }

func (i *Influx) halt(sig syscall.Signal) {
	i.mu.Lock()
	p := i.proc
	i.proc = nil
	i.mu.Unlock()
	if p == nil {
		return
	}
	if sig == syscall.SIGKILL {
		p.Kill()
	} else {
		p.Stop()
	}
}

// start runs influxd (localserver.StartProcess) and waits until it
// answers /ping. On failure the process is gone and the error includes the
// log tail.
func (i *Influx) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	p, err := localserver.StartProcess(ctx, localserver.Config{Binary: i.bin, Dir: i.Dir, HTTPAddr: i.HTTPAddr,
		RPCAddr: i.RPCAddr, LogPath: i.LogPath, ReadyTimeout: startTimeout, DeathSignal: syscall.SIGKILL})
	if err != nil {
		return err
	}
	i.mu.Lock()
	i.proc = p
	i.mu.Unlock()
	return nil
}

// Query runs an InfluxQL query (SELECT or SHOW) as the read-only user
// through the product's read seam (gateway/influx/query: v1 query API,
// epoch=ns) and returns the values in the long form Flux gave: one row per
// non-null field value, with "_time", "_measurement", "_field", "_value"
// and the series' tags (use GROUP BY * to have every tag). Values keep
// their InfluxDB type (float64, int64, uint64, string, bool; from SHOW
// FIELD KEYS, since JSON writes a float 80.0 as 80); a selector's column
// ("last_Vehicle.Speed" from last(*)) takes its field's type. It fails
// the test on error; call it from the test's goroutine.
func (i *Influx) Query(t testing.TB, influxql string) []map[string]any {
	t.Helper()
	series := i.series(t, influxql)
	types := i.fieldTypes(t, series)
	var rows []map[string]any
	for _, s := range series {
		ti := s.Col("time")
		for _, v := range s.Values {
			for c, col := range s.Columns {
				if c == ti || v[c] == nil {
					continue
				}
				r := map[string]any{"_measurement": s.Name, "_field": col, "_value": typed(types[s.Name], col, v[c])}
				if ti >= 0 {
					r["_time"] = v[ti]
				}
				for k, tv := range s.Tags {
					r[k] = tv
				}
				rows = append(rows, r)
			}
		}
	}
	return rows
}

// QueryRows runs an InfluxQL query like Query and returns one row per
// result row in the wide form (Flux's pivot): "_time", "_measurement",
// the tags, and each non-null column under its name.
func (i *Influx) QueryRows(t testing.TB, influxql string) []map[string]any {
	t.Helper()
	series := i.series(t, influxql)
	types := i.fieldTypes(t, series)
	var rows []map[string]any
	for _, s := range series {
		for _, r := range s.Rows() {
			for k, v := range r {
				r[k] = typed(types[s.Name], k, v)
			}
			if tv, ok := r["time"]; ok {
				r["_time"] = tv
				delete(r, "time")
			}
			r["_measurement"] = s.Name
			rows = append(rows, r)
		}
	}
	return rows
}

func (i *Influx) series(t testing.TB, influxql string) []query.Series {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	series, err := i.reader().Series(ctx, influxql)
	if err != nil {
		t.Fatalf("testenv: influxql query failed: %v\nquery: %s", err, influxql)
	}
	return series
}

// fieldTypes returns measurement → field → type for the measurements of
// series (one SHOW FIELD KEYS).
func (i *Influx) fieldTypes(t testing.TB, series []query.Series) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	if len(series) == 0 {
		return out
	}
	for _, s := range i.series(t, "SHOW FIELD KEYS") {
		m := out[s.Name]
		if m == nil {
			m = map[string]string{}
			out[s.Name] = m
		}
		k, ty := s.Col("fieldKey"), s.Col("fieldType")
		for _, v := range s.Values {
			name, _ := v[k].(string)
			typ, _ := v[ty].(string)
			m[name] = typ
		}
	}
	return out
}

// typed converts v of column col: the field's type, or, for a selector's
// column "fn_field", that field's type.
func typed(types map[string]string, col string, v any) any {
	typ, ok := types[col]
	if !ok {
		if _, f, cut := strings.Cut(col, "_"); cut {
			typ = types[f]
		}
	}
	return query.Typed(v, typ)
}

// Count returns the number of points of measurement's field at or after
// start in Database.
func (i *Influx) Count(t testing.TB, measurement, field string, start time.Time) int {
	t.Helper()
	q := fmt.Sprintf(`SELECT count(%s) FROM %s WHERE time >= %s`,
		query.Ident(field), query.Ident(measurement), query.Time(start))
	rows := i.Query(t, q)
	if len(rows) == 0 {
		return 0
	}
	n, ok := rows[0]["_value"].(int64)
	if !ok {
		t.Fatalf("testenv: count returned %T %v", rows[0]["_value"], rows[0]["_value"])
	}
	return int(n)
}

// reader returns the read-only user's query.Reader, created on first use.
// It does not keep connections alive, so restarts never meet a dead one.
func (i *Influx) reader() *query.Reader {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.rd == nil {
		i.rd = query.New(query.Config{URL: i.URL, Database: i.Database, Token: i.ReadToken, Timeout: queryTimeout,
			Client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: queryTimeout}})
	}
	return i.rd
}

func (i *Influx) closeClient() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.rd != nil {
		i.rd.Close()
		i.rd = nil
	}
}

// logTail returns the end of the server's log.
func (i *Influx) logTail() string {
	b, _ := os.ReadFile(i.LogPath)
	return localserver.Tail(b)
}

// handedOut holds the low ports freeAddr returned in this process, so that
// two addresses picked before their servers bind them (a cluster's nodes,
// a gateway's MQTT, HTTP and NATS ports) never coincide.
var handedOut struct {
	mu    sync.Mutex // guards ports
	ports map[int]bool
}

// freeAddr returns a free loopback address. It prefers a random port below
// the kernel's ephemeral range, which neither outgoing connections nor
// listeners on port 0 (other tests on this machine) can take while the
// server (influxd, a gateway, a NATS node) starts; it falls back to a
// kernel-chosen port.
func freeAddr() string {
	lo := ephemeralLow()
	const lowPort = 20000
	if lo-lowPort >= 1000 {
		handedOut.mu.Lock()
		defer handedOut.mu.Unlock()
		if handedOut.ports == nil {
			handedOut.ports = make(map[int]bool)
		}
		for range 50 {
			port := lowPort + rand.IntN(lo-lowPort)
			if handedOut.ports[port] {
				continue
			}
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			if l, err := net.Listen("tcp", addr); err == nil {
				_ = l.Close()
				handedOut.ports[port] = true
				return addr
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0" // influxd will fail and say why
	}
	defer l.Close()
	return l.Addr().String()
}

// ephemeralLow returns the low end of the kernel's ephemeral port range
// (Linux), or 0 when unknown.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}
