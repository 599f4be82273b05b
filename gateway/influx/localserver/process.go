// Package localserver is the one launcher of a local influxd (InfluxDB
// 1.8, the binary `make influxd` installs into bin/): its environment
// (Env), the process start with a readiness wait on /ping (StartProcess),
// the authentication bootstrap (Start: credentials file + influx.SetupAuth)
// and the stop. The gateway's supervised child (config influx.local) and
// the test harness (internal/testenv.StartInflux) both use it; production
// deployments point the gateway at an external InfluxDB instead.
package localserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Errors.
var (
	ErrBinaryMissing = errors.New("localserver: influxd binary not found (run `make influxd`)")
	ErrNotReady      = errors.New("localserver: influxd did not become ready")
	// ErrAddrInUse accompanies ErrNotReady when a port was taken.
	ErrAddrInUse = errors.New("localserver: address already in use")
)

// Defaults of Config.
const (
	DefaultReadyTimeout = 2 * time.Minute
	DefaultStopTimeout  = 30 * time.Second
)

// Env returns the environment (KEY=value entries, to append to CleanEnv())
// that configures `influxd run` of InfluxDB 1.8 without a configuration
// file: HTTP API on httpAddr (host:port) with authentication on (no
// anonymous query or write; see Start for the first admin), the v1 query
// API (InfluxQL, what the gateway reads with) and the v2 write API, Flux
// on for the Grafana dashboard only (deploy/grafana; the product and its
// tests never use it), RPC (backup/restore) on rpcAddr (callers
// pass loopback addresses), meta, data and WAL under dir, no usage
// reporting, no _internal monitoring database, warnings-only logs, and no
// configuration file from ~/.influxdb or /etc/influxdb. With exec.Cmd.Env
// a later duplicate key wins, so callers can append overrides.
func Env(httpAddr, rpcAddr, dir string) []string {
	return []string{
		"INFLUXDB_CONFIG_PATH=/dev/null",
		"INFLUXDB_REPORTING_DISABLED=true",
		"INFLUXDB_BIND_ADDRESS=" + rpcAddr,
		"INFLUXDB_HTTP_BIND_ADDRESS=" + httpAddr,
		"INFLUXDB_HTTP_FLUX_ENABLED=true",
		"INFLUXDB_HTTP_AUTH_ENABLED=true",
		"INFLUXDB_HTTP_LOG_ENABLED=false",
		"INFLUXDB_HTTP_DEBUG_PPROF_ENABLED=false",
		"INFLUXDB_META_DIR=" + dir + "/meta",
		"INFLUXDB_DATA_DIR=" + dir + "/data",
		"INFLUXDB_DATA_WAL_DIR=" + dir + "/wal",
		"INFLUXDB_DATA_QUERY_LOG_ENABLED=false",
		"INFLUXDB_MONITOR_STORE_ENABLED=false",
		"INFLUXDB_LOGGING_LEVEL=warn",
		"INFLUXDB_LOGGING_SUPPRESS_LOGO=true",
	}
}

// CleanEnv is os.Environ() without INFLUXDB_* variables, so that only Env
// configures the server.
func CleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "INFLUXDB_") {
			out = append(out, kv)
		}
	}
	return out
}

// Config of one influxd process.
type Config struct {
	Binary string
	// Dir holds meta, data and wal (created 0700 if missing).
	Dir string
	// HTTPAddr and RPCAddr are loopback host:port pairs.
	HTTPAddr, RPCAddr string
	// LogPath receives stdout and stderr, appended (default Dir/influxd.log).
	LogPath string
	// ReadyTimeout bounds the wait for /ping (default DefaultReadyTimeout).
	ReadyTimeout time.Duration
	// DeathSignal is sent to influxd if its parent dies (Linux; default
	// SIGTERM; tests use SIGKILL).
	DeathSignal syscall.Signal
}

// Process is a running influxd. Its fields are set by StartProcess and
// read-only after; done/err are owned by the waiting goroutine.
type Process struct {
	cfg  Config
	url  string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been waited for
	err  error         // Wait's result, set before done is closed
	once sync.Once
}

// StartProcess runs influxd with Env and waits (bounded by ctx and
// ReadyTimeout) until /ping answers 204. On failure the process is gone
// and the error (ErrNotReady, with ErrAddrInUse when a port was taken)
// carries the tail of the log written by this start.
func StartProcess(ctx context.Context, cfg Config) (*Process, error) {
	if err := checkExecutable(cfg.Binary); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBinaryMissing, err)
	}
	// The process runs in cfg.Dir, where a relative binary path (the
	// default bin/influxd) would no longer resolve: make it absolute first.
	if bin, err := filepath.Abs(cfg.Binary); err == nil {
		cfg.Binary = bin
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.DeathSignal == 0 {
		cfg.DeathSignal = syscall.SIGTERM
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("localserver: %w", err)
	}
	if cfg.LogPath == "" {
		cfg.LogPath = filepath.Join(cfg.Dir, "influxd.log")
	}
	logf, err := os.OpenFile(cfg.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("localserver: %w", err)
	}
	offset, _ := logf.Seek(0, io.SeekEnd)
	cmd := exec.Command(cfg.Binary, "run")
	cmd.Dir = cfg.Dir
	cmd.Env = append(CleanEnv(), Env(cfg.HTTPAddr, cfg.RPCAddr, cfg.Dir)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr(cfg.DeathSignal)
	err = cmd.Start()
	_ = logf.Close() // the child has its own descriptor
	if err != nil {
		return nil, fmt.Errorf("localserver: start: %w", err)
	}
	p := &Process{cfg: cfg, url: "http://" + cfg.HTTPAddr, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := p.waitReady(ctx); err != nil {
		p.Kill()
		out := logSince(cfg.LogPath, offset)
		if bytes.Contains(out, []byte("address already in use")) {
			err = fmt.Errorf("%w: %w", ErrAddrInUse, err)
		}
		return nil, fmt.Errorf("%w: %w\ninfluxd log:\n%s", ErrNotReady, err, Tail(out))
	}
	return p, nil
}

// URL is the HTTP API's base URL.
func (p *Process) URL() string { return p.url }

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// LogPath is the server's log.
func (p *Process) LogPath() string { return p.cfg.LogPath }

// Stop sends SIGTERM and waits up to DefaultStopTimeout, then SIGKILL.
// Idempotent, safe from any goroutine.
func (p *Process) Stop() { p.halt(syscall.SIGTERM) }

// Kill stops the process with SIGKILL, like a crash, and waits for it.
func (p *Process) Kill() { p.halt(syscall.SIGKILL) }

func (p *Process) halt(sig syscall.Signal) {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(sig)
		timer := time.NewTimer(DefaultStopTimeout)
		defer timer.Stop()
		select {
		case <-p.done:
		case <-timer.C:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// waitReady polls /ping until it answers 204, the process exits, ctx ends
// or ReadyTimeout passes.
func (p *Process) waitReady(ctx context.Context) error {
	hc := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	deadline := time.NewTimer(p.cfg.ReadyTimeout)
	defer deadline.Stop()
	delay := 10 * time.Millisecond
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/ping", nil)
		if resp, err := hc.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				select {
				case <-p.done: // someone else's server answered
					return fmt.Errorf("influxd exited: %w", p.err)
				default:
					return nil
				}
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("influxd exited: %w", p.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("no answer from %s/ping within %v", p.url, p.cfg.ReadyTimeout)
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
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

// logSince returns the log written after offset.
func logSince(path string, offset int64) []byte {
	b, err := os.ReadFile(path)
	if err != nil || offset > int64(len(b)) {
		return nil
	}
	return b[offset:]
}

// Tail returns the last lines of a log, at most 8 KiB.
func Tail(b []byte) string {
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
