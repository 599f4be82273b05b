// Package web serves the dashboard's pages and static assets, embedded
// with go:embed (no CDN: the gateways run offline). Pages are thin HTML shells;
// assets/app.js renders them from the JSON API. No inline script or style,
// so the Content-Security-Policy can forbid both.
package web

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"regexp"
	"strings"
)

//go:embed assets
var assets embed.FS

var page = template.Must(template.ParseFS(assets, "assets/page.html"))

// CSP is the Content-Security-Policy of every dashboard response.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// SecurityHeaders sets the dashboard's security headers on every response.
func SecurityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", CSP)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
		h.ServeHTTP(w, r)
	})
}

type pageData struct {
	Title, Page, VIN string
}

func render(w http.ResponseWriter, d pageData) {
	var buf bytes.Buffer
	if err := page.Execute(&buf, d); err != nil {
		http.Error(w, "template error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

var vinRE = regexp.MustCompile(`^[A-HJ-NPR-Z0-9]{17}$`)

// Login is the login page.
func Login(w http.ResponseWriter, _ *http.Request) {
	render(w, pageData{Title: "Sign in", Page: "login"})
}

// Fleet is the fleet overview page.
func Fleet(w http.ResponseWriter, _ *http.Request) {
	render(w, pageData{Title: "Fleet", Page: "fleet"})
}

// Alerts is the active DTC alerts page.
func Alerts(w http.ResponseWriter, _ *http.Request) {
	render(w, pageData{Title: "DTC alerts", Page: "alerts"})
}

// Vehicle returns the vehicle page handler; known reports whether a VIN is
// in the fleet (unknown or malformed VINs get 404).
func Vehicle(known func(string) bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		vin := r.PathValue("vin")
		if !vinRE.MatchString(vin) || !known(vin) {
			http.Error(w, "unknown vehicle", http.StatusNotFound)
			return
		}
		render(w, pageData{Title: vin, Page: "vehicle", VIN: vin})
	}
}

// Assets serves the embedded static files under /ui/assets/.
func Assets() http.Handler {
	sub, _ := fs.Sub(assets, "assets")
	fsrv := http.StripPrefix("/ui/assets/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Files only: no directory listings, no index pages.
		name := strings.TrimPrefix(r.URL.Path, "/ui/assets/")
		if fi, err := fs.Stat(sub, name); name == "" || strings.HasSuffix(name, "/") || r.URL.Path == "/ui/assets/page.html" ||
			err != nil || fi.IsDir() {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=300")
		fsrv.ServeHTTP(w, r)
	})
}
