package app

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHostCheck: only allowed Host headers are served (DNS rebinding).
func TestHostCheck(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("metrics")) })
	h := hostCheck(allowedHosts("127.0.0.1:8080", nil), ok)
	for host, want := range map[string]int{
		"127.0.0.1:8080": 200, "localhost:8080": 200, "LOCALHOST": 200, "[::1]:8080": 200,
		"evil.example:8080": http.StatusMisdirectedRequest, "evil.example": http.StatusMisdirectedRequest,
		"127.0.0.1.evil.example": http.StatusMisdirectedRequest, "": http.StatusMisdirectedRequest,
	} {
		req := httptest.NewRequest("GET", "/metrics", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %q: %d, want %d", host, rec.Code, want)
		}
		if want != 200 && (strings.Contains(rec.Body.String(), "metrics") || !strings.Contains(rec.Body.String(), "allowed_hosts")) {
			t.Errorf("Host %q: body %q", host, rec.Body.String())
		}
	}
	cfg := allowedHosts("0.0.0.0:8080", []string{"gw.example.com", "[fd00::1]"})
	if !cfg["gw.example.com"] || !cfg["fd00::1"] || cfg["localhost"] || cfg["0.0.0.0"] {
		t.Fatalf("configured set %v", cfg)
	}
	if def := allowedHosts("0.0.0.0:8080", nil); def["0.0.0.0"] || !def["127.0.0.1"] {
		t.Fatalf("wildcard listen: %v", def)
	}
}
