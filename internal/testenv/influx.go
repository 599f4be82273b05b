// Package testenv starts real servers (InfluxDB 1.8) for integration tests:
// loopback only, free ports, temporary directories, bounded waits, and
// cleanup registered with the test.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"

	"github.com/telegate/telegate/gateway/influx"
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
// assertions: influxd 1.8 needs about 2.3 s of CPU to start (Flux).
const (
	startTimeout = 2 * time.Minute
	stopTimeout  = 30 * time.Second
	queryTimeout = time.Minute
)

// Influx is a real InfluxDB 1.8 server (influxd) run by a test, with Flux
// enabled and database Database created. Its fields are read-only.
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
	// Authentication is on (influx.ServerEnv). Token is the gateway user's
	// "user:password" (ALL on Database only), ReadToken the read-only
	// user's, AdminToken the admin's (for tests of the server's rights).
	// CredentialsFile holds all three (influx.Credentials, mode 0600).
	Token, ReadToken, AdminToken string
	CredentialsFile              string
	// Creds are the users behind the tokens.
	Creds influx.Credentials

	bin string

	mu        sync.Mutex
	proc      *process // nil when not running
	client    influxdb2.Client
	transport *http.Transport
}

// process is one run of influxd.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been waited for
	err  error         // Wait's result, set before done is closed
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
		if !errors.Is(err, errAddrInUse) || n == attempts {
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
	if err := influx.SetupAuth(ctx, i.URL, i.Creds); err != nil {
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
	_ = p.cmd.Process.Signal(sig)
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// errAddrInUse marks a start that failed because a port was taken.
var errAddrInUse = errors.New("address already in use")

// start runs influxd and waits until it answers /ping. On failure the
// process is gone and the error includes the log tail.
func (i *Influx) start() error {
	logf, err := os.OpenFile(i.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	offset, _ := logf.Seek(0, io.SeekEnd)
	cmd := exec.Command(i.bin, "run")
	cmd.Dir = i.Dir
	cmd.Env = append(cleanEnv(), influx.ServerEnv(i.HTTPAddr, i.RPCAddr, i.Dir)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return err
	}
	_ = logf.Close() // the child has its own descriptor
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	i.mu.Lock()
	i.proc = p
	i.mu.Unlock()

	if err := i.waitReady(p); err != nil {
		i.Kill()
		out := i.logSince(offset)
		if bytes.Contains(out, []byte("address already in use")) {
			err = fmt.Errorf("%w: %w", errAddrInUse, err)
		}
		return fmt.Errorf("%w\ninfluxd log:\n%s", err, tail(out))
	}
	return nil
}

// waitReady polls /ping until it answers 204, the process exits, or
// startTimeout passes.
func (i *Influx) waitReady(p *process) error {
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	delay := 10 * time.Millisecond
	for {
		resp, err := hc.Get(i.URL + "/ping")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				select {
				case <-p.done: // someone else's server answered
					return fmt.Errorf("influxd exited: %v", p.err)
				default:
					return nil
				}
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("influxd exited: %v", p.err)
		case <-deadline.C:
			return fmt.Errorf("influxd did not answer %s/ping within %v", i.URL, startTimeout)
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// Query runs a Flux query as the read-only user with influxdb-client-go's
// QueryAPI and returns
// each record's Values() (columns such as "_time", "_value", "_field",
// "_measurement" and the tags). It fails the test on error; call it from
// the test's goroutine.
func (i *Influx) Query(t testing.TB, flux string) []map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	res, err := i.queryClient().QueryAPI("").Query(ctx, flux)
	if err != nil {
		t.Fatalf("testenv: flux query failed: %v\nquery: %s", err, flux)
	}
	defer res.Close()
	var rows []map[string]any
	for res.Next() {
		rows = append(rows, res.Record().Values())
	}
	if err := res.Err(); err != nil {
		t.Fatalf("testenv: flux result: %v\nquery: %s", err, flux)
	}
	return rows
}

// Count returns the number of points of measurement's field at or after
// start in Bucket.
func (i *Influx) Count(t testing.TB, measurement, field string, start time.Time) int {
	t.Helper()
	q := fmt.Sprintf(`from(bucket: %s)
  |> range(start: %s)
  |> filter(fn: (r) => r._measurement == %s and r._field == %s)
  |> group()
  |> count()`,
		FluxString(i.Bucket), start.UTC().Format(time.RFC3339Nano), FluxString(measurement), FluxString(field))
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

// FluxString quotes s as a Flux string literal.
func FluxString(s string) string {
	return `"` + fluxEscaper.Replace(s) + `"`
}

var fluxEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`, "\n", `\n`, "\r", `\r`, "\t", `\t`)

// queryClient returns the client used by Query, created on first use. It
// does not keep connections alive, so restarts never meet a dead one.
func (i *Influx) queryClient() influxdb2.Client {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.client == nil {
		i.transport = &http.Transport{DisableKeepAlives: true}
		opts := influxdb2.DefaultOptions().
			SetHTTPClient(&http.Client{Transport: i.transport}).
			SetApplicationName("telegate-testenv")
		i.client = influxdb2.NewClientWithOptions(i.URL, i.ReadToken, opts)
	}
	return i.client
}

func (i *Influx) closeClient() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.client != nil {
		i.client.Close()
		i.transport.CloseIdleConnections()
		i.client, i.transport = nil, nil
	}
}

// logSince returns the log written after offset.
func (i *Influx) logSince(offset int64) []byte {
	b, err := os.ReadFile(i.LogPath)
	if err != nil || offset > int64(len(b)) {
		return nil
	}
	return b[offset:]
}

// logTail returns the end of the server's log.
func (i *Influx) logTail() string { return tail(i.logSince(0)) }

// tail returns the last lines of a log, at most 8 KiB.
func tail(b []byte) string {
	const maxTail = 8 << 10
	if len(b) > maxTail {
		b = b[len(b)-maxTail:]
		if j := bytes.IndexByte(b, '\n'); j >= 0 {
			b = b[j+1:]
		}
	}
	if len(b) == 0 {
		return "(empty)"
	}
	return string(b)
}

// cleanEnv is the test's environment without INFLUXDB_* variables, so that
// only ServerEnv configures the server.
func cleanEnv() []string {
	env := os.Environ()
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "INFLUXDB_") {
			out = append(out, kv)
		}
	}
	return out
}

// freeAddr returns a free loopback address. It prefers a random port below
// the kernel's ephemeral range, which neither outgoing connections nor
// listeners on port 0 (other tests on this machine) can take while influxd
// starts; it falls back to a kernel-chosen port.
func freeAddr() string {
	lo := ephemeralLow()
	const lowPort = 20000
	if lo-lowPort >= 1000 {
		for range 50 {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(lowPort+rand.IntN(lo-lowPort)))
			if l, err := net.Listen("tcp", addr); err == nil {
				_ = l.Close()
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
