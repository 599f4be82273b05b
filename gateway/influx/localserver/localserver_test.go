package localserver_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/influx/localserver"
	"github.com/telegate/telegate/internal/testenv"
)

func query(t *testing.T, base, token, stmt string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/query", strings.NewReader(url.Values{"q": {stmt}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if token != "" {
		req.Header.Set("Authorization", "Token "+token)
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestLocalInfluxAuth: the influxd that `make run` supervises starts with
// authentication on, generates its users once into a 0600 file, refuses
// anonymous requests, and reuses the same credentials after a restart.
func TestLocalInfluxAuth(t *testing.T) {
	bin := testenv.RequireInfluxd(t)
	dir := t.TempDir()
	cfg := localserver.ServerConfig{Config: localserver.Config{Binary: bin, Dir: filepath.Join(dir, "influxdb"), HTTPAddr: testenv.FreeAddr(t),
		RPCAddr: testenv.FreeAddr(t)}, Database: "telemetry"}
	base := "http://" + cfg.HTTPAddr
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)

	p, err := localserver.Start(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	credsPath := filepath.Join(cfg.Dir, "credentials.json")
	fi, err := os.Stat(credsPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		p.Stop()
		t.Fatalf("credentials file: %v %v, want mode 0600", fi, err)
	}
	c1 := p.Credentials()
	if code := query(t, base, "", "DROP DATABASE telemetry"); code != http.StatusUnauthorized {
		t.Errorf("anonymous DROP DATABASE: HTTP %d, want 401", code)
	}
	if code := query(t, base, c1.Writer.Token(), "DROP DATABASE telemetry"); code != http.StatusForbidden {
		t.Errorf("gateway user DROP DATABASE: HTTP %d, want 403", code)
	}
	if code := query(t, base, c1.Reader.Token(), "SHOW MEASUREMENTS ON telemetry"); code != http.StatusOK {
		t.Errorf("reader SHOW MEASUREMENTS: HTTP %d, want 200", code)
	}
	p.Stop()

	p, err = localserver.Start(ctx, cfg, log)
	if err != nil {
		t.Fatalf("restart with the kept credentials: %v", err)
	}
	defer p.Stop()
	if c2 := p.Credentials(); c2 != c1 {
		t.Fatal("credentials changed across restarts")
	}
	w, err := influx.NewWriter(influx.Config{URL: base, Token: c1.Writer.Token(), Bucket: "telemetry/autogen"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Write(ctx, []byte("m v=1 1700000000000\n")); err != nil {
		t.Fatalf("gateway user write after restart: %v", err)
	}
	if err := p.EnsureDatabase(ctx); err != nil {
		t.Fatalf("EnsureDatabase: %v", err)
	}
}

// TestRelativeBinaryPath: `make run` configures `binary: bin/influxd`,
// relative to the gateway's working directory, while influxd runs in its
// data directory; the path must still resolve (it did not: "fork/exec
// bin/influxd: no such file or directory").
func TestRelativeBinaryPath(t *testing.T) {
	bin := testenv.RequireInfluxd(t)
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, bin)
	if err != nil || filepath.IsAbs(rel) {
		t.Skipf("no relative path to %s from %s", bin, wd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := localserver.StartProcess(ctx, localserver.Config{Binary: rel, Dir: filepath.Join(t.TempDir(), "influxdb"),
		HTTPAddr: testenv.FreeAddr(t), RPCAddr: testenv.FreeAddr(t)})
	if err != nil {
		t.Fatalf("start with relative binary %s: %v", rel, err)
	}
	p.Stop()
}
