package soak

import (
	"context"
	"errors"
	"fmt"
	"github.com/telegate/telegate/internal/probe"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/telegate/telegate/gateway/influx/localserver"
)

// Bounds of the process waits: safety nets against a wedged process.
const (
	startTimeout = 2 * time.Minute
	stopTimeout  = 30 * time.Second
)

// child is a restartable child process whose unexpected exits are counted.
type child struct {
	name    string
	bin     string
	args    []string
	env     []string
	logPath string
	ready   func(ctx context.Context) error // polled until nil after start

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	halting bool // the runner is stopping it: its exit is expected
	crashes int
	onCrash func(err error)
}

// start runs the process and waits until ready.
func (c *child) start(ctx context.Context) error {
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, c.args...)
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("soak: start %s: %w", c.name, err)
	}
	logf.Close()
	done := make(chan struct{})
	c.mu.Lock()
	c.cmd, c.done, c.halting = cmd, done, false
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		c.mu.Lock()
		unexpected := !c.halting
		if unexpected {
			c.crashes++
			c.cmd = nil
		}
		cb := c.onCrash
		c.mu.Unlock()
		close(done)
		if unexpected && cb != nil {
			cb(err)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		if err := c.ready(ctx); err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("soak: %s exited during start (log %s)", c.name, c.logPath)
		case <-ctx.Done():
			return fmt.Errorf("soak: %s not ready: %w", c.name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// halt sends sig, waits for the exit (SIGKILL after stopTimeout) and does
// not count it as a crash. It is a no-op when the process is not running.
func (c *child) halt(sig syscall.Signal) {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.halting = true
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-done
	}
}

// pid returns the running process id, or 0.
func (c *child) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

func (c *child) crashCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.crashes
}

// rssBytes returns the resident set size of pid (Linux), or 0.
func rssBytes(pid int) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// newInflux prepares an influxd child (started by the caller) in dir.
func newInflux(bin, dir string) (*child, string, error) {
	httpAddr, err := probe.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	rpcAddr, err := probe.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	env := append(localserver.CleanEnv(), localserver.Env(httpAddr, rpcAddr, dir)...)
	url := "http://" + httpAddr
	return &child{name: "influxd", bin: bin, args: []string{"run"}, env: env,
		logPath: filepath.Join(dir, "influxd.log"), ready: probe.HTTPReady(url+"/ping", http.StatusNoContent)}, url, nil
}

// newGateway prepares a gateway child with its configuration in dir.
func newGateway(bin, dir, devicesFile, influxURL, credsFile string) (g *child, mqttAddr, httpAddr string, err error) {
	if mqttAddr, err = probe.FreeAddr(); err != nil {
		return nil, "", "", err
	}
	if httpAddr, err = probe.FreeAddr(); err != nil {
		return nil, "", "", err
	}
	natsAddr, err := probe.FreeAddr()
	if err != nil {
		return nil, "", "", err
	}
	cfg := fmt.Sprintf(`data_dir: %s
devices_file: %s
log_level: warn
http: {addr: %s}
mqtt: {tcp_addr: %s, ws_addr: "", rate_per_device: 5000, rate_burst: 5000}
influx: {url: %s, credentials_file: %s}
nats: {embedded: {addr: %s}}
dashboard: {enabled: false}
services: {enabled: false}
`, filepath.Join(dir, "data"), devicesFile, httpAddr, mqttAddr, influxURL, credsFile, natsAddr)
	cfgFile := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return nil, "", "", err
	}
	var env []string
	for _, kv := range os.Environ() { // the gateway refuses unknown TELEGATE_* variables
		if !strings.HasPrefix(kv, "TELEGATE_") {
			env = append(env, kv)
		}
	}
	return &child{name: "gateway", bin: bin, args: []string{"-config", cfgFile}, env: env,
		logPath: filepath.Join(dir, "gateway.log"), ready: probe.HTTPReady("http://"+httpAddr+"/healthz", http.StatusOK)}, mqttAddr, httpAddr, nil
}

// moduleRoot walks up from the working directory to go.mod.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", errors.New("soak: no go.mod above the working directory")
		}
	}
}
