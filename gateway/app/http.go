package app

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func (a *App) startHTTP() error {
	mux := a.mux
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	if a.cfg.HTTP.Pprof {
		registerPprof(mux)
	}
	ln, err := net.Listen("tcp", a.cfg.HTTP.Addr)
	if err != nil {
		return err
	}
	a.httpLn = ln
	a.http = &http.Server{Handler: hostCheck(allowedHosts(a.cfg.HTTP.Addr, a.cfg.HTTP.AllowedHosts), mux), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10}
	go func() { _ = a.http.Serve(ln) }()
	return nil
}

// allowedHosts is the set of Host header names the HTTP server answers
// (lower case, no port, IPv6 without brackets): the configured list, or by
// default the listen address's host plus localhost, 127.0.0.1 and ::1.
func allowedHosts(addr string, configured []string) map[string]bool {
	set := map[string]bool{}
	add := func(h string) {
		h = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
		if h != "" {
			set[h] = true
		}
	}
	if len(configured) > 0 {
		for _, h := range configured {
			add(h)
		}
		return set
	}
	if host, _, err := net.SplitHostPort(addr); err == nil && host != "0.0.0.0" && host != "::" {
		add(host)
	}
	for _, h := range []string{"localhost", "127.0.0.1", "::1"} {
		add(h)
	}
	return set
}

// hostCheck answers 421 Misdirected Request when the request's Host is not
// in allowed: a page from another origin that re-points its DNS name at
// this address (DNS rebinding) cannot read /metrics or the APIs.
func hostCheck(allowed map[string]bool, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		host = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
		if !allowed[host] {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusMisdirectedRequest)
			_, _ = w.Write([]byte(`{"error":"this server does not serve the host named in the request; add it to http.allowed_hosts"}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// HTTPAddr is the bound operations address.
func (a *App) HTTPAddr() string {
	if a.httpLn == nil {
		return ""
	}
	return a.httpLn.Addr().String()
}

type check struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// readyz reports 200 only when InfluxDB answers, NATS is connected and the
// spool has room: a load balancer then stops sending devices to a gateway
// that would refuse their QoS 1 frames.
func (a *App) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	res := map[string]check{}
	ok := true
	set := func(name string, err error) {
		c := check{OK: err == nil}
		if err != nil {
			c.Error = err.Error()
			ok = false
		}
		res[name] = c
	}
	// ?scope=ingest: only what decides whether device frames can be
	// accepted (spool room, sinks alive, NATS). InfluxDB being down is then
	// not a reason to steer devices away: the spool absorbs the outage. Use
	// it for device load balancing across replicas sharing one InfluxDB.
	if r.URL.Query().Get("scope") != "ingest" {
		set("influxdb", a.writer.Ping(ctx))
	}
	var drainErr error
	if a.broker.Draining() {
		drainErr = errDraining
	}
	set("draining", drainErr)
	set("nats", a.bus.Ready())
	st := a.spool.Stats()
	var spoolErr error
	if st.PendingBytes >= int64(a.cfg.Spool.MaxBytes)*9/10 {
		spoolErr = errSpoolAlmostFull
	}
	set("spool", spoolErr)
	set("influx_sink", a.isink.Health())
	set("events_sink", a.esink.Health())
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ready": ok, "checks": res})
}

func (a *App) registerGauges() {
	g := func(name, help string, f func() float64) {
		a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "telegate", Name: name, Help: help}, f))
	}
	g("spool_bytes", "Bytes of spool segments written (data and headers).", func() float64 { return float64(a.spool.Stats().Bytes) })
	g("spool_disk_bytes", "Length of the spool's segment files on disk, preallocated space included.", func() float64 { return float64(a.spool.Stats().DiskBytes) })
	g("spool_pending_bytes", "Spool bytes not yet committed by every consumer.", func() float64 { return float64(a.spool.Stats().PendingBytes) })
	g("spool_max_bytes", "Configured spool capacity.", func() float64 { return float64(a.cfg.Spool.MaxBytes) })
	g("spool_segments", "Spool segment files.", func() float64 { return float64(a.spool.Stats().Segments) })
	g("mqtt_clients_connected", "Connected MQTT clients.", func() float64 { return float64(a.broker.Connected()) })
	g("live_updates_dropped", "Live telemetry updates not delivered to slow dashboard subscribers.", func() float64 { return float64(a.live.Dropped()) })
	a.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "telegate", Name: "spool_appended_records_total",
			Help: "Records appended to the spool since it was opened."}, func() float64 { return float64(a.spool.Stats().Appended) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "telegate", Name: "spool_group_commits_total",
			Help: "Spool group commits (one fdatasync each) since it was opened."}, func() float64 { return float64(a.spool.Stats().Syncs) }))
	a.reg.MustRegister(newBrokerCollector(a.broker.Stats()))
}
