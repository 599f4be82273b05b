package app

import (
	"net/http"
	"net/http/pprof"
)

// registerPprof mounts Go's runtime profiles under /debug/pprof/ on the
// operations listener (config http.pprof, off by default). The handlers are
// registered on the gateway's own mux, never on http.DefaultServeMux, so
// importing net/http/pprof exposes nothing unless the operator opts in.
func registerPprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
