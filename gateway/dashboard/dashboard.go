// Package dashboard is the service-team web dashboard and JSON API of the
// gateway: it wires the users and sessions (auth), the in-memory fleet
// projection (fleetstate) and what feeds it (feed), InfluxDB queries
// (history), operator commands (commands), the JSON API (api) and the
// embedded pages (web), and mounts them on the gateway's HTTP mux with
// security headers and request metrics. See docs/dashboard.md.
package dashboard

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegate/telegate/gateway/config"
	"github.com/telegate/telegate/gateway/dashboard/api"
	"github.com/telegate/telegate/gateway/dashboard/auth"
	"github.com/telegate/telegate/gateway/dashboard/feed"
	"github.com/telegate/telegate/gateway/dashboard/fleetstate"
	"github.com/telegate/telegate/gateway/dashboard/history"
	"github.com/telegate/telegate/gateway/dashboard/remotecmd"
	"github.com/telegate/telegate/gateway/dashboard/web"
	"github.com/telegate/telegate/gateway/sink/live"
	"github.com/telegate/telegate/internal/loglimit"
)

// ErrNoUsers is returned by New when no users file is configured.
var ErrNoUsers = errors.New("dashboard: no users_file configured")

// Options are what the dashboard needs from the gateway.
type Options struct {
	Config config.Dashboard
	Influx history.Config
	// VINs are the registered vehicles (the fleet).
	VINs []string
	// Hub is the live telemetry hub (nil: no live values).
	Hub *live.Hub
	// JS is the JetStream context (nil: no NATS events, commands not recorded).
	JS jetstream.JetStream
	// Publisher sends MQTT commands to vehicles (the embedded broker).
	Publisher remotecmd.Publisher
	// VehicleLocal reports whether a vehicle's MQTT session (ready for
	// commands) is on this replica (nil: every command goes to Publisher,
	// a single replica). A command to another vehicle is handed to the
	// services' dispatcher when Dispatch is set (and JS is not nil), and
	// refused (409) otherwise.
	VehicleLocal func(vin string) bool
	Dispatch     bool
	// Registerer receives the dashboard's metrics (nil: not registered).
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// Now is the clock of sessions (nil: time.Now).
	Now func() time.Time
	// LocationAllowed reports whether a vehicle's owner grants the
	// location_sharing consent (nil: nobody does, no positions shown).
	LocationAllowed func(vin string) bool
	// Sessions is the login session bucket shared by every gateway replica
	// (auth.SessionBucket; nil: sessions in this process only).
	Sessions jetstream.KeyValue
}

// Dashboard is a running dashboard.
type Dashboard struct {
	opts  Options
	log   *slog.Logger
	users *auth.Users
	auth  *auth.Manager
	state *fleetstate.State
	hist  *history.Store
	cmds  *remotecmd.Log
	feed  *feed.Feed
	api   *api.API
	m     *metrics
	done  chan struct{}
	once  sync.Once
}

// New loads the users file and builds the dashboard; Mount and Start put
// it to work.
func New(o Options) (*Dashboard, error) {
	if o.Config.UsersFile == "" {
		return nil, ErrNoUsers
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	users, err := auth.LoadUsers(o.Config.UsersFile)
	if err != nil {
		return nil, err
	}
	if o.Influx.Timeout <= 0 {
		o.Influx.Timeout = o.Config.QueryTimeout
	}
	d := &Dashboard{opts: o, log: o.Log, users: users, done: make(chan struct{})}
	d.auth = auth.NewManager(auth.Config{TTL: o.Config.SessionTTL, Idle: o.Config.SessionIdle,
		MaxSessions: o.Config.MaxSessions, MaxSessionsPerUser: o.Config.MaxSessionsPerUser, SecureCookies: o.Config.SecureCookies, Now: o.Now,
		Store: o.Sessions}, users, o.Log)
	d.state = fleetstate.New(o.VINs)
	d.hist = history.New(o.Influx)
	d.cmds = remotecmd.NewLog(100)
	d.feed = feed.New(feed.Config{Lookback: o.Config.InitLookback}, d.state, d.hist, o.JS, o.Hub, d.cmds, o.Log)
	d.m = newMetrics(d)
	if o.Registerer != nil {
		if err := d.m.register(o.Registerer); err != nil {
			return nil, fmt.Errorf("dashboard: metrics: %w", err)
		}
	}
	d.auth.OnLogin = func(result string) { d.m.logins.WithLabelValues(result).Inc() }
	d.auth.OnLogSuppressed = func() { d.m.logSuppressed.Inc() }
	hub := o.Hub
	if hub == nil {
		hub = live.New()
	}
	sender := remotecmd.NewSender(o.Publisher, o.JS, d.cmds, o.Log)
	if o.VehicleLocal != nil {
		var dispatch remotecmd.DispatchFunc
		if o.Dispatch && o.JS != nil {
			dispatch = remotecmd.ServicesDispatch(o.JS)
		}
		sender.WithCluster(o.VehicleLocal, dispatch)
	}
	d.api = api.New(api.Deps{
		State: d.state, Hist: d.hist, Cmds: d.cmds, Sender: sender,
		Hub: hub, Auth: d.auth, Log: o.Log, Ready: d.feed.Ready, Done: d.done, Lookback: o.Config.InitLookback,
		Limits: api.Limits{MaxRange: o.Config.MaxHistoryRange, MaxPoints: o.Config.MaxPoints,
			MaxPageSize: o.Config.MaxPageSize, MaxLiveStreams: o.Config.MaxLiveStreams,
			MaxLiveStreamsPerUser: o.Config.MaxLiveStreamsPerUser},
		OnCommand:       func(name, result string) { d.m.commands.WithLabelValues(name, result).Inc() },
		LiveStreams:     func(delta int) { d.m.live.Add(float64(delta)) },
		LocationAllowed: o.LocationAllowed,
	})
	return d, nil
}

// Mount registers the pages and API routes on mux.
func (d *Dashboard) Mount(mux *http.ServeMux) {
	handle := func(pattern, route string, h http.Handler) {
		mux.Handle(pattern, web.SecurityHeaders(d.instrument(route, h)))
	}
	for _, r := range d.api.Routes() {
		handle(r.Pattern, "api_"+r.Name, r.Handler)
	}
	page := func(h http.HandlerFunc) http.Handler { return d.auth.RequirePage("/ui/login", h) }
	handle("GET /{$}", "root", http.RedirectHandler("/ui/", http.StatusSeeOther))
	handle("GET /ui", "root", http.RedirectHandler("/ui/", http.StatusSeeOther))
	handle("GET /ui/login", "page_login", http.HandlerFunc(web.Login))
	handle("GET /ui/{$}", "page_fleet", page(web.Fleet))
	handle("GET /ui/alerts", "page_alerts", page(web.Alerts))
	handle("GET /ui/vehicles/{vin}", "page_vehicle", page(web.Vehicle(d.state.Known)))
	handle("GET /ui/assets/", "assets", web.Assets())
}

// Start starts following the fleet (live hub at once; InfluxDB load and
// NATS consumers in the background).
func (d *Dashboard) Start() error {
	if err := d.feed.Start(); err != nil {
		return err
	}
	d.log.Info("dashboard started", "users", d.users.Len(), "vehicles", d.state.Len())
	return nil
}

// Ready reports whether the fleet state has been loaded.
func (d *Dashboard) Ready() bool { return d.feed.Ready() }

// State is the fleet projection (tests, benchmarks).
func (d *Dashboard) State() *fleetstate.State { return d.state }

// Close ends live streams, stops the feed and releases InfluxDB
// connections. Safe to call more than once.
func (d *Dashboard) Close() {
	d.once.Do(func() {
		close(d.done)
		d.feed.Close()
		d.hist.Close()
		if d.opts.Registerer != nil {
			d.m.unregister(d.opts.Registerer)
		}
	})
}

// statusWriter records the status code; Unwrap keeps http.ResponseController
// (Flush, write deadlines for server-sent events) working.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// maxLogPath bounds the request path in a log line.
const maxLogPath = 256

// instrument counts requests and their latency per route, and logs
// server errors.
func (d *Dashboard) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		h.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		el := time.Since(start)
		d.m.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		if route != "api_live" {
			d.m.latency.WithLabelValues(route).Observe(el.Seconds())
		}
		lvl := slog.LevelDebug
		if sw.code >= 500 {
			lvl = slog.LevelWarn
		}
		// The path is the caller's, authenticated or not: bounded.
		d.log.Log(r.Context(), lvl, "dashboard request", "method", loglimit.String(r.Method, 16),
			"path", loglimit.String(r.URL.Path, maxLogPath), "route", route,
			"status", sw.code, "duration", el.Round(time.Microsecond))
	})
}

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	logins   *prometheus.CounterVec
	// logSuppressed counts failed/throttled login log lines dropped by
	// the log rate limit.
	logSuppressed prometheus.Counter
	commands      *prometheus.CounterVec
	live          prometheus.Gauge
	sessions      prometheus.GaugeFunc
	fleet         *fleetCollector
}

func newMetrics(d *Dashboard) *metrics {
	const ns, sub = "telegate", "dashboard"
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "http_requests_total",
			Help: "Dashboard and API requests by route and status code."}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "http_request_duration_seconds",
			Help:    "Dashboard and API request latency by route (live streams excluded).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"route"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "logins_total",
			Help: "Login attempts by result (ok, bad_credentials, throttled)."}, []string{"result"}),
		logSuppressed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "login_log_lines_suppressed_total",
			Help: "Failed or throttled login log lines dropped by the log rate limit (per client address and global)."}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "commands_total",
			Help: "Operator commands by command and result (sent, invalid, publish_failed)."}, []string{"command", "result"}),
		live: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "live_streams",
			Help: "Open live (server-sent events) streams."}),
		sessions: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "sessions",
			Help: "Live login sessions."}, func() float64 { return float64(d.auth.Sessions()) }),
		fleet: &fleetCollector{st: d.state, desc: prometheus.NewDesc(ns+"_"+sub+"_fleet_vehicles",
			"Vehicles in the dashboard's fleet state by status (total, connected, warning, critical).", []string{"status"}, nil)},
	}
}

func (m *metrics) all() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.latency, m.logins, m.logSuppressed, m.commands, m.live, m.sessions, m.fleet}
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range m.all() {
		if err := r.Register(c); err != nil {
			m.unregister(r)
			return err
		}
	}
	return nil
}

func (m *metrics) unregister(r prometheus.Registerer) {
	for _, c := range m.all() {
		r.Unregister(c)
	}
}

type fleetCollector struct {
	st   *fleetstate.State
	desc *prometheus.Desc
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	total, conn, warn, crit := c.st.Counts()
	for _, x := range []struct {
		s string
		n int
	}{{"total", total}, {"connected", conn}, {"warning", warn}, {"critical", crit}} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(x.n), x.s)
	}
}
