package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/config"
)

// TestPprofOptIn: /debug/pprof is absent (404) on the operations listener by
// default and serves Go's profiles only when http.pprof is true.
func TestPprofOptIn(t *testing.T) {
	if config.Default().HTTP.Pprof {
		t.Fatal("http.pprof must default to false")
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	get := func(t *testing.T, url string) (int, string) {
		t.Helper()
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(body)
	}
	paths := []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine?debug=1",
		"/debug/pprof/cmdline", "/debug/pprof/symbol", "/debug/pprof/profile?seconds=1", "/debug/pprof/trace?seconds=1"}

	t.Run("off", func(t *testing.T) {
		e := startEnv(t, 1, 0)
		base := "http://" + e.gw.HTTPAddr()
		for _, p := range paths {
			if code, _ := get(t, base+p); code != http.StatusNotFound {
				t.Errorf("GET %s with http.pprof off: status %d, want 404", p, code)
			}
		}
		if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
			t.Errorf("/healthz: status %d", code)
		}
	})

	t.Run("on", func(t *testing.T) {
		e := startEnv(t, 1, 0, func(c *config.Config) { c.HTTP.Pprof = true })
		base := "http://" + e.gw.HTTPAddr()
		for _, p := range paths {
			code, body := get(t, base+p)
			if code != http.StatusOK {
				t.Errorf("GET %s with http.pprof on: status %d, want 200", p, code)
				continue
			}
			switch {
			case p == "/debug/pprof/" && !strings.Contains(body, "goroutine"):
				t.Errorf("index does not list profiles: %.200q", body)
			case strings.HasPrefix(p, "/debug/pprof/heap") && !strings.Contains(body, "heap profile"):
				t.Errorf("heap profile: unexpected body %.200q", body)
			case strings.HasPrefix(p, "/debug/pprof/profile") && len(body) == 0:
				t.Error("CPU profile is empty")
			}
		}
	})
}
