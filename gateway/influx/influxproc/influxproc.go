// Package influxproc supervises a local influxd child process: the InfluxDB
// 1.8 server that `make influxd` installs into bin/. It is what makes the
// default set-up a single command; production deployments point the gateway
// at an external InfluxDB instead and leave this disabled.
package influxproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/telegate/telegate/gateway/influx"
)

// Errors.
var (
	ErrBinaryMissing = errors.New("influxproc: influxd binary not found (run `make influxd`)")
	ErrNotReady      = errors.New("influxproc: influxd did not become ready")
)

// Config of the child process.
type Config struct {
	Binary string
	Dir    string
	// HTTPAddr and RPCAddr are loopback host:port pairs (config validates).
	HTTPAddr string
	RPCAddr  string
	// Database is created, with the users that may use it.
	Database string
	// CredentialsFile keeps the generated users' passwords (mode 0600;
	// default <Dir>/credentials.json), reused on later starts.
	CredentialsFile string
}

// Proc is a running influxd.
type Proc struct {
	cmd   *exec.Cmd
	log   *os.File
	done  chan struct{}
	once  sync.Once
	url   string
	creds influx.Credentials // set by Start, read-only after
}

// Start launches influxd with authentication on, waits (bounded by ctx)
// until /ping answers, then creates or checks its users and database
// (influx.SetupAuth) with the credentials of cfg.CredentialsFile,
// generating that file on first start.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Proc, error) {
	if _, err := os.Stat(cfg.Binary); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBinaryMissing, cfg.Binary)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("influxproc: %w", err)
	}
	if cfg.CredentialsFile == "" {
		cfg.CredentialsFile = filepath.Join(cfg.Dir, "credentials.json")
	}
	if cfg.Database == "" {
		cfg.Database = "telemetry"
	}
	creds, err := influx.LoadOrCreateCredentials(cfg.CredentialsFile, cfg.Database)
	if err != nil {
		return nil, fmt.Errorf("influxproc: %w", err)
	}
	creds.Database = cfg.Database
	lf, err := os.OpenFile(filepath.Join(cfg.Dir, "influxd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("influxproc: %w", err)
	}
	cmd := exec.Command(cfg.Binary, "run")
	cmd.Env = append(os.Environ(), influx.ServerEnv(cfg.HTTPAddr, cfg.RPCAddr, cfg.Dir)...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("influxproc: start: %w", err)
	}
	p := &Proc{cmd: cmd, log: lf, done: make(chan struct{}), url: "http://" + cfg.HTTPAddr, creds: creds}
	go func() { _ = cmd.Wait(); close(p.done) }()
	url := "http://" + cfg.HTTPAddr + "/ping"
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				if err := influx.SetupAuth(ctx, p.url, creds); err != nil {
					p.Stop()
					return nil, fmt.Errorf("influxproc: %w (credentials %s)", err, cfg.CredentialsFile)
				}
				log.Info("local influxd ready", "addr", cfg.HTTPAddr, "dir", cfg.Dir, "pid", cmd.Process.Pid,
					"auth", "on", "credentials", cfg.CredentialsFile)
				return p, nil
			}
		}
		select {
		case <-p.done:
			p.Stop()
			return nil, fmt.Errorf("%w: exited (see %s)", ErrNotReady, lf.Name())
		case <-ctx.Done():
			p.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("%w: after 60s (see %s)", ErrNotReady, lf.Name())
		}
	}
}

// Credentials are the local server's users (admin, writer, reader).
func (p *Proc) Credentials() influx.Credentials { return p.creds }

// EnsureDatabase re-creates the database and the users' grants as admin
// (after an operator dropped it); idempotent.
func (p *Proc) EnsureDatabase(ctx context.Context) error {
	return influx.SetupAuth(ctx, p.url, p.creds)
}

// Stop sends SIGTERM and waits up to 30 s, then SIGKILL. Idempotent.
func (p *Proc) Stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		p.log.Close()
	})
}
