package web

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPagesAndAssets(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/login", Login)
	mux.Handle("GET /ui/vehicles/{vin}", Vehicle(func(v string) bool { return v == "TGSVS000000000001" }))
	mux.Handle("GET /ui/assets/", Assets())
	h := SecurityHeaders(mux)
	get := func(p string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
		return rec
	}
	rec := get("/ui/login")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `data-page="login"`) || rec.Header().Get("Content-Security-Policy") != CSP {
		t.Fatalf("login: %d %q", rec.Code, rec.Header())
	}
	if strings.Contains(rec.Body.String(), "<script>") || strings.Contains(rec.Body.String(), "style=") {
		t.Fatal("inline script or style in page")
	}
	if rec := get("/ui/vehicles/TGSVS000000000001"); rec.Code != 200 || !strings.Contains(rec.Body.String(), `data-vin="TGSVS000000000001"`) {
		t.Fatalf("vehicle page %d", rec.Code)
	}
	for _, p := range []string{"/ui/vehicles/TGSVS000000000009", "/ui/vehicles/%3Cscript%3E", "/ui/assets/page.html", "/ui/assets/nope.js"} {
		if rec := get(p); rec.Code != 404 {
			t.Errorf("%s: %d", p, rec.Code)
		}
	}
	if rec := get("/ui/assets/app.js"); rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/javascript") {
		t.Fatalf("app.js: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	if rec.Header().Get("X-Frame-Options") != "DENY" || rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Fatal("security headers")
	}
}

// TestAssetsNoDirectoryListing: /ui/assets/ serves files only.
func TestAssetsNoDirectoryListing(t *testing.T) {
	h := Assets()
	for _, p := range []string{"/ui/assets/", "/ui/assets/.", "/ui/assets//", "/ui/assets/app.js/"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
		if rec.Code != http.StatusNotFound || strings.Contains(rec.Body.String(), "app.js") {
			t.Errorf("GET %s: %d %.80q, want 404 without a listing", p, rec.Code, rec.Body.String())
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/assets/app.css", nil))
	if rec.Code != 200 {
		t.Fatalf("app.css: %d", rec.Code)
	}
}
