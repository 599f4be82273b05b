package dashboard

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegate/telegate/gateway/config"
	"github.com/telegate/telegate/gateway/dashboard/history"
)

func TestConfigValidation(t *testing.T) {
	c := config.Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := []func(*config.Dashboard){
		func(d *config.Dashboard) { d.SessionTTL = time.Second },
		func(d *config.Dashboard) { d.SessionIdle = 2 * d.SessionTTL },
		func(d *config.Dashboard) { d.MaxPoints = 1 },
		func(d *config.Dashboard) { d.MaxPageSize = 0 },
		func(d *config.Dashboard) { d.MaxHistoryRange = 0 },
		func(d *config.Dashboard) { d.InitLookback = time.Minute },
		func(d *config.Dashboard) { d.MaxLiveStreams = 0 },
		func(d *config.Dashboard) { d.QueryTimeout = time.Hour },
		func(d *config.Dashboard) { d.MaxSessions = -1 },
	}
	for i, f := range bad {
		c := config.Default()
		f(&c.Dashboard)
		if err := c.Validate(); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "dashboard.") {
			t.Errorf("case %d: %v", i, err)
		}
	}
}

func TestDevUsersFileAndLifecycle(t *testing.T) {
	c := config.Default().Dashboard
	if _, err := New(Options{Config: c}); !errors.Is(err, ErrNoUsers) {
		t.Fatalf("no users: %v", err)
	}
	c.UsersFile = filepath.Join("..", "..", "deploy", "users.dev.yaml")
	reg := prometheus.NewRegistry()
	d, err := New(Options{Config: c, Influx: history.Config{URL: "http://127.0.0.1:1", Bucket: "telemetry/autogen"},
		VINs: []string{"TGSVS000000000001"}, Registerer: reg})
	if err != nil {
		t.Fatalf("deploy/users.dev.yaml: %v", err)
	}
	if _, err := d.users.Verify("demo", "demo-telegate"); err != nil {
		t.Fatalf("demo login: %v", err)
	}
	d.Close()
	d.Close() // idempotent
	bad := filepath.Join(t.TempDir(), "u.yaml")
	os.WriteFile(bad, []byte("users:\n  - name: x\n    role: root\n"), 0o600)
	c.UsersFile = bad
	if _, err := New(Options{Config: c}); err == nil {
		t.Fatal("bad users file accepted")
	}
}

// TestRequestLogPathBounded: an unauthenticated request with a 12 KB path
// leaves a request log line with the path cut to maxLogPath bytes.
func TestRequestLogPathBounded(t *testing.T) {
	c := config.Default().Dashboard
	c.UsersFile = filepath.Join("..", "..", "deploy", "users.dev.yaml")
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := New(Options{Config: c, Influx: history.Config{URL: "http://127.0.0.1:1", Bucket: "telemetry/autogen"}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	mux := http.NewServeMux()
	d.Mount(mux)
	path := "/ui/vehicles/" + strings.Repeat("A", 12<<10)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	var line struct{ Msg, Path string }
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if err := json.Unmarshal([]byte(l), &line); err == nil && line.Msg == "dashboard request" {
			break
		}
	}
	if line.Msg != "dashboard request" {
		t.Fatalf("no request line in the log:\n%s", buf.String())
	}
	if len(line.Path) > maxLogPath+len("…") || buf.Len() > 2<<10 {
		t.Fatalf("logged path of %d bytes (log %d bytes), want at most %d", len(line.Path), buf.Len(), maxLogPath)
	}
}
