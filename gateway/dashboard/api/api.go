// Package api is the dashboard's JSON API (documented in docs/openapi.yaml):
// fleet list, vehicle detail, live signals (server-sent events), signal
// history from InfluxDB, DTCs, charging sessions and remotecmd. Every route
// except login needs a session (package auth); sending commands needs the
// operator role and the CSRF token.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/gateway/dashboard/auth"
	"github.com/telegate/telegate/gateway/dashboard/fleetstate"
	"github.com/telegate/telegate/gateway/dashboard/history"
	"github.com/telegate/telegate/gateway/dashboard/remotecmd"
	"github.com/telegate/telegate/gateway/sink/live"
)

// Limits bound what one request may ask for.
type Limits struct {
	MaxRange       time.Duration // signal history range
	MaxPoints      int           // points per series
	MaxPageSize    int           // fleet page size, list limits
	MaxLiveStreams int           // concurrent SSE streams, all users
	// MaxLiveStreamsPerUser bounds one user's concurrent SSE streams
	// (429 for that user; the global cap answers 503 for everyone).
	MaxLiveStreamsPerUser int
	MaxSignals            int // signals per history request
}

// Fleet is the in-memory fleet state the API reads and completes
// (*fleetstate.State).
type Fleet interface {
	Known(vin string) bool
	Counts() (total, connected, warning, critical int)
	List(f fleetstate.Filter, page, pageSize int) fleetstate.Page
	Get(vin string) (fleetstate.Detail, bool)
	Alerts(f fleetstate.AlertFilter, limit int) ([]fleetstate.Alert, int)
	// SetValue and DTCSeen fill the state from History's answers.
	SetValue(vin, path string, val float64, t time.Time)
	DTCSeen(vin, code string, first, last time.Time)
}

// History is the stored telemetry the API queries (*history.Store, backed
// by InfluxDB). Errors are answered 502 without their text.
type History interface {
	SignalHistory(ctx context.Context, vin string, paths []string, start, stop time.Time, window time.Duration, fn string) (map[string][]history.Point, error)
	Latest(ctx context.Context, vin string, lookback time.Duration) (map[string]history.Point, error)
	DTCSeen(ctx context.Context, vin string, lookback time.Duration) ([]history.CodeSeen, error)
	ChargingSessions(ctx context.Context, vin string, lookback time.Duration, limit int) ([]history.ChargingSession, error)
	CommandAcks(ctx context.Context, vin string, lookback time.Duration, limit int) ([]history.Ack, error)
}

// CommandLog lists the commands sent recently (*remotecmd.Log).
type CommandLog interface {
	List(vin string, limit int) []remotecmd.Record
}

// CommandSender validates and sends a command to a vehicle
// (*remotecmd.Sender): remotecmd.ErrUnknownCommand and ErrBadParam are
// answered 400, other errors 502.
type CommandSender interface {
	Send(ctx context.Context, vin, name string, params map[string]string, user string) (remotecmd.Record, error)
}

// LiveFeed delivers a vehicle's telemetry frames as they are stored
// (*live.Hub).
type LiveFeed interface {
	Subscribe(vin string, buffer int) (<-chan live.Update, func())
}

// The gateway's concrete types are what the API consumes.
var (
	_ Fleet         = (*fleetstate.State)(nil)
	_ History       = (*history.Store)(nil)
	_ CommandLog    = (*remotecmd.Log)(nil)
	_ CommandSender = (*remotecmd.Sender)(nil)
	_ LiveFeed      = (*live.Hub)(nil)
)

// Deps are what the API reads and drives.
type Deps struct {
	State  Fleet
	Hist   History
	Cmds   CommandLog
	Sender CommandSender
	Hub    LiveFeed
	Auth   *auth.Manager
	Log    *slog.Logger
	Limits Limits
	// Now is the clock of history ranges ending now (default time.Now).
	Now      func() time.Time
	Ready    func() bool     // fleet state loaded
	Done     <-chan struct{} // closed at shutdown: live streams end
	Lookback time.Duration   // DTC history / charging / acks lookback
	// OnCommand, if set, counts commands by name and result.
	OnCommand func(name, result string)
	// LiveStreams, if set, is told of each stream opened (+1) and closed (-1).
	LiveStreams func(delta int)
	// LocationAllowed reports whether vin's owner currently grants the
	// location_sharing consent. Without it (or when nil) no position
	// (Vehicle.CurrentLocation.*) leaves the API, for any role: not in the
	// vehicle detail, the history or the live stream.
	LocationAllowed func(vin string) bool
}

// LocationPrefix is the VSS branch of position signals (latitude,
// longitude, heading), shown only with the owner's location consent.
const LocationPrefix = "Vehicle.CurrentLocation."

// locationOK reports whether vin's position may be shown now.
func (a *API) locationOK(vin string) bool {
	return a.d.LocationAllowed != nil && a.d.LocationAllowed(vin)
}

// redact removes position values from d unless vin's owner consents.
func (a *API) redact(vin string, d fleetstate.Detail) fleetstate.Detail {
	if a.locationOK(vin) {
		return d
	}
	vals := make([]fleetstate.Value, 0, len(d.Values))
	for _, v := range d.Values {
		if !strings.HasPrefix(v.Path, LocationPrefix) {
			vals = append(vals, v)
		}
	}
	d.Values = vals
	return d
}

// API serves the routes.
type API struct {
	d    Deps
	live atomic.Int64

	mu       sync.Mutex     // guards liveUser
	liveUser map[string]int // open live streams per user
}

// New returns the API.
func New(d Deps) *API {
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Limits.MaxSignals <= 0 {
		d.Limits.MaxSignals = 8
	}
	if d.Lookback <= 0 {
		d.Lookback = 30 * 24 * time.Hour
	}
	if d.Ready == nil {
		d.Ready = func() bool { return true }
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Limits.MaxLiveStreamsPerUser <= 0 {
		d.Limits.MaxLiveStreamsPerUser = max(d.Limits.MaxLiveStreams, 1)
	}
	return &API{d: d, liveUser: map[string]int{}}
}

// Route is one API route.
type Route struct {
	Pattern string // "GET /api/service/v1/fleet"
	Name    string // metric label
	Handler http.Handler
}

// Routes lists every route with its auth applied.
func (a *API) Routes() []Route {
	viewer := func(f http.HandlerFunc) http.Handler { return a.d.Auth.Require(auth.RoleViewer, f) }
	operator := func(f http.HandlerFunc) http.Handler { return a.d.Auth.Require(auth.RoleOperator, f) }
	return []Route{
		{"POST /api/service/v1/login", "login", http.HandlerFunc(a.d.Auth.HandleLogin)},
		{"POST /api/service/v1/logout", "logout", viewer(a.d.Auth.HandleLogout)},
		{"GET /api/service/v1/session", "session", viewer(a.d.Auth.HandleSession)},
		{"GET /api/service/v1/fleet", "fleet", viewer(a.fleet)},
		{"GET /api/service/v1/dtcs", "dtcs", viewer(a.alerts)},
		{"GET /api/service/v1/signals", "signals", viewer(a.signals)},
		{"GET /api/service/v1/commands", "command_specs", viewer(a.commandSpecs)},
		{"GET /api/service/v1/vehicles/{vin}", "vehicle", viewer(a.vehicle)},
		{"GET /api/service/v1/vehicles/{vin}/history", "history", viewer(a.history)},
		{"GET /api/service/v1/vehicles/{vin}/dtcs", "vehicle_dtcs", viewer(a.vehicleDTCs)},
		{"GET /api/service/v1/vehicles/{vin}/charging", "charging", viewer(a.charging)},
		{"GET /api/service/v1/vehicles/{vin}/commands", "commands", viewer(a.commandList)},
		{"POST /api/service/v1/vehicles/{vin}/commands", "send_command", operator(a.sendCommand)},
		{"GET /api/service/v1/vehicles/{vin}/live", "live", viewer(a.liveStream)},
		{"/api/service/", "not_found", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			auth.WriteError(w, http.StatusNotFound, "no such API route")
		})},
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func bad(w http.ResponseWriter, format string, args ...any) {
	auth.WriteError(w, http.StatusBadRequest, fmt.Sprintf(format, args...))
}

var vinRE = regexp.MustCompile(`^[A-HJ-NPR-Z0-9]{17}$`)

// vinOf validates the {vin} path value: 400 when malformed, 404 when not
// in the fleet.
func (a *API) vinOf(w http.ResponseWriter, r *http.Request) (string, bool) {
	vin := r.PathValue("vin")
	if !vinRE.MatchString(vin) {
		bad(w, "vin %q is not a VIN (17 characters of 0-9, A-Z without I, O, Q)", trunc(vin))
		return "", false
	}
	if !a.d.State.Known(vin) {
		auth.WriteError(w, http.StatusNotFound, "unknown vehicle "+vin)
		return "", false
	}
	return vin, true
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// intParam parses an optional integer query parameter in [lo, hi].
func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s must be an integer between %d and %d", name, lo, hi)
	}
	return n, nil
}

func oneOf(r *http.Request, name string, allowed ...string) (string, error) {
	v := r.URL.Query().Get(name)
	if v == "" || slices.Contains(allowed, v) {
		return v, nil
	}
	return "", fmt.Errorf("%s must be one of %s", name, strings.Join(allowed, ", "))
}

func textParam(r *http.Request, name string, maxLen int) (string, error) {
	v := strings.TrimSpace(r.URL.Query().Get(name))
	if len(v) > maxLen {
		return "", fmt.Errorf("%s is longer than %d characters", name, maxLen)
	}
	return v, nil
}

// FleetResponse is GET /api/service/v1/fleet.
type FleetResponse struct {
	fleetstate.Page
	Counts Counts   `json:"counts"`
	Models []string `json:"models"`
	Ready  bool     `json:"state_ready"`
}

// Counts summarise the fleet.
type Counts struct {
	Vehicles  int `json:"vehicles"`
	Connected int `json:"connected"`
	Warning   int `json:"warning"`
	Critical  int `json:"critical"`
}

func (a *API) fleet(w http.ResponseWriter, r *http.Request) {
	var f fleetstate.Filter
	var errs []error
	add := func(v string, err error) string {
		if err != nil {
			errs = append(errs, err)
		}
		return v
	}
	page, err := intParam(r, "page", 1, 1, 1_000_000)
	errs = append(errs, err)
	size, err := intParam(r, "page_size", 50, 1, a.d.Limits.MaxPageSize)
	errs = append(errs, err)
	f.Query = add(textParam(r, "q", 64))
	f.Model = add(textParam(r, "model", 64))
	f.DTC = add(textParam(r, "dtc", 5))
	f.Status = add(oneOf(r, "status", "connected", "disconnected"))
	f.Health = add(oneOf(r, "health", fleetstate.HealthOK, fleetstate.HealthWarning, fleetstate.HealthCritical))
	f.Sort = add(oneOf(r, "sort", "vin", "last_seen", "health"))
	if err := errors.Join(errs...); err != nil {
		bad(w, "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	resp := FleetResponse{Page: a.d.State.List(f, page, size), Models: fleetstate.Models, Ready: a.d.Ready()}
	resp.Counts.Vehicles, resp.Counts.Connected, resp.Counts.Warning, resp.Counts.Critical = a.d.State.Counts()
	writeJSON(w, http.StatusOK, resp)
}

// AlertsResponse is GET /api/service/v1/dtcs.
type AlertsResponse struct {
	Total int                `json:"total"`
	Items []fleetstate.Alert `json:"items"`
}

func (a *API) alerts(w http.ResponseWriter, r *http.Request) {
	var f fleetstate.AlertFilter
	var errs []error
	add := func(v string, err error) string {
		if err != nil {
			errs = append(errs, err)
		}
		return v
	}
	limit, err := intParam(r, "limit", 100, 1, a.d.Limits.MaxPageSize)
	errs = append(errs, err)
	f.Severity = add(oneOf(r, "severity", "info", "warning", "critical"))
	f.Status = add(oneOf(r, "status", "pending", "confirmed", "permanent"))
	f.Code = add(textParam(r, "code", 5))
	f.Query = add(textParam(r, "q", 17))
	if err := errors.Join(errs...); err != nil {
		bad(w, "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	items, total := a.d.State.Alerts(f, limit)
	if items == nil {
		items = []fleetstate.Alert{}
	}
	writeJSON(w, http.StatusOK, AlertsResponse{Total: total, Items: items})
}

// SignalInfo is one catalog entry.
type SignalInfo struct {
	ID          uint16  `json:"id"`
	Path        string  `json:"path"`
	Unit        string  `json:"unit"`
	Type        string  `json:"type"`
	Min         float64 `json:"min"`
	Max         float64 `json:"max"`
	Description string  `json:"description"`
}

func (a *API) signals(w http.ResponseWriter, _ *http.Request) {
	all := catalog.All()
	out := make([]SignalInfo, 0, len(all))
	for _, s := range all {
		out = append(out, SignalInfo{s.ID, s.Path, s.Unit, s.Type.String(), s.Min, s.Max, s.Description})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) commandSpecs(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, remotecmd.Specs)
}

// VehicleResponse is GET /api/service/v1/vehicles/{vin}.
type VehicleResponse struct {
	fleetstate.Detail
	Ready bool `json:"state_ready"`
	// LocationShared: the owner grants location_sharing, so position
	// values are included; false: they are withheld.
	LocationShared bool `json:"location_shared"`
}

func (a *API) vehicle(w http.ResponseWriter, r *http.Request) {
	vin, ok := a.vinOf(w, r)
	if !ok {
		return
	}
	d, _ := a.d.State.Get(vin)
	if len(d.Values) == 0 && a.d.Hist != nil {
		// Not seen since start: the last values from InfluxDB.
		if latest, err := a.d.Hist.Latest(r.Context(), vin, 24*time.Hour); err == nil {
			for path, p := range latest {
				a.d.State.SetValue(vin, path, p.V, p.T)
			}
			d, _ = a.d.State.Get(vin)
		} else {
			a.d.Log.Warn("dashboard: latest values query failed", "vin", vin, "err", err)
		}
	}
	writeJSON(w, http.StatusOK, VehicleResponse{Detail: a.redact(vin, d), Ready: a.d.Ready(), LocationShared: a.locationOK(vin)})
}

// HistoryResponse is GET /api/service/v1/vehicles/{vin}/history.
type HistoryResponse struct {
	VIN         string    `json:"vin"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	Window      string    `json:"window"`
	Aggregation string    `json:"aggregation"`
	Series      []Series  `json:"series"`
}

// Series is one signal's points.
type Series struct {
	Path   string          `json:"path"`
	Unit   string          `json:"unit"`
	Points []history.Point `json:"points"`
}

// niceWindows are the automatic aggregation windows.
var niceWindows = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second,
	30 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour}

// parseDuration accepts Go durations plus a "d" (days) suffix.
func parseDuration(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 || n > 3660 {
			return 0, errors.New("bad days")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

func (a *API) history(w http.ResponseWriter, r *http.Request) {
	vin, ok := a.vinOf(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	now := a.d.Now().UTC()
	// signals
	raw := q.Get("signals")
	if raw == "" {
		bad(w, "signals is required: comma-separated VSS paths or catalog ids, e.g. Vehicle.Speed")
		return
	}
	var paths []string
	for item := range strings.SplitSeq(raw, ",") {
		item = strings.TrimSpace(item)
		var sig *catalog.Signal
		if id, err := strconv.ParseUint(item, 10, 16); err == nil {
			sig, ok = catalog.Lookup(uint16(id))
		} else {
			sig, ok = catalog.ByPath(item)
		}
		if !ok {
			bad(w, "unknown signal %q (see GET /api/service/v1/signals)", trunc(item))
			return
		}
		if !slices.Contains(paths, sig.Path) {
			paths = append(paths, sig.Path)
		}
	}
	if len(paths) > a.d.Limits.MaxSignals {
		bad(w, "at most %d signals per request", a.d.Limits.MaxSignals)
		return
	}
	if !a.locationOK(vin) && slices.ContainsFunc(paths, func(p string) bool { return strings.HasPrefix(p, LocationPrefix) }) {
		auth.WriteError(w, http.StatusForbidden, "the owner of "+vin+" has not consented to location sharing: position signals are not shown")
		return
	}
	// range: either range=<duration> (ending now) or start/end (RFC 3339)
	end := now
	var start time.Time
	if s := q.Get("end"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			bad(w, "end must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
			return
		}
		end = t.UTC()
	}
	switch s := q.Get("start"); {
	case s != "" && q.Get("range") != "":
		bad(w, "give either range or start, not both")
		return
	case s != "":
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			bad(w, "start must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
			return
		}
		start = t.UTC()
	default:
		rs := q.Get("range")
		if rs == "" {
			rs = "1h"
		}
		d, err := parseDuration(rs)
		if err != nil || d <= 0 {
			bad(w, "range must be a positive duration such as 15m, 6h or 7d")
			return
		}
		start = end.Add(-d)
	}
	span := end.Sub(start)
	if span <= 0 {
		bad(w, "start must be before end")
		return
	}
	if span > a.d.Limits.MaxRange {
		bad(w, "range %s is longer than the maximum %s", span, a.d.Limits.MaxRange)
		return
	}
	// window
	var window time.Duration
	if s := q.Get("window"); s != "" && s != "auto" {
		d, err := parseDuration(s)
		if err != nil || d < time.Second {
			bad(w, "window must be a duration of at least 1s (or auto)")
			return
		}
		window = d
	} else {
		target := span / 300
		window = niceWindows[len(niceWindows)-1]
		for _, n := range niceWindows {
			if n >= target {
				window = n
				break
			}
		}
	}
	if pts := int64(math.Ceil(float64(span) / float64(window))); pts > int64(a.d.Limits.MaxPoints) {
		bad(w, "range/window gives %d points per signal; the maximum is %d: use a larger window", pts, a.d.Limits.MaxPoints)
		return
	}
	agg := q.Get("agg")
	if agg == "" {
		agg = "mean"
	}
	if !slices.Contains(history.Aggregations, agg) {
		bad(w, "agg must be one of %s", strings.Join(history.Aggregations, ", "))
		return
	}
	res, err := a.d.Hist.SignalHistory(r.Context(), vin, paths, start, end, window, agg)
	if err != nil {
		a.queryFailed(w, r, err)
		return
	}
	out := HistoryResponse{VIN: vin, Start: start, End: end, Window: window.String(), Aggregation: agg, Series: []Series{}}
	for _, p := range paths {
		sig, _ := catalog.ByPath(p)
		out.Series = append(out.Series, Series{Path: p, Unit: sig.Unit, Points: res[p]})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) queryFailed(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // client gone
	}
	a.d.Log.Error("dashboard: InfluxDB query failed", "path", r.URL.Path, "err", err)
	auth.WriteError(w, http.StatusBadGateway, "InfluxDB query failed; try again")
}

// VehicleDTCsResponse is GET /api/service/v1/vehicles/{vin}/dtcs.
type VehicleDTCsResponse struct {
	VIN     string           `json:"vin"`
	Open    []fleetstate.DTC `json:"open"`
	History []DTCHistory     `json:"history"`
}

// DTCHistory is a code reported by the vehicle within the lookback.
type DTCHistory struct {
	Code        string    `json:"code"`
	Description string    `json:"description"`
	Severity    string    `json:"severity"`
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
	LastStatus  string    `json:"last_status"`
	Open        bool      `json:"open"`
}

func (a *API) vehicleDTCs(w http.ResponseWriter, r *http.Request) {
	vin, ok := a.vinOf(w, r)
	if !ok {
		return
	}
	d, _ := a.d.State.Get(vin)
	seen, err := a.d.Hist.DTCSeen(r.Context(), vin, a.d.Lookback)
	if err != nil {
		a.queryFailed(w, r, err)
		return
	}
	open := map[string]fleetstate.DTC{}
	for _, x := range d.OpenDTCs {
		open[x.Code] = x
	}
	resp := VehicleDTCsResponse{VIN: vin, Open: d.OpenDTCs, History: []DTCHistory{}}
	for _, c := range seen {
		a.d.State.DTCSeen(vin, c.Code, c.First, c.Last)
		h := DTCHistory{Code: c.Code, FirstSeen: c.First.UTC(), LastSeen: c.Last.UTC(), LastStatus: statusName(c.LastStatus)}
		h.Description, h.Severity = describe(c.Code)
		_, h.Open = open[c.Code]
		resp.History = append(resp.History, h)
	}
	if d2, ok := a.d.State.Get(vin); ok {
		resp.Open = d2.OpenDTCs
	}
	writeJSON(w, http.StatusOK, resp)
}

func (a *API) charging(w http.ResponseWriter, r *http.Request) {
	vin, ok := a.vinOf(w, r)
	if !ok {
		return
	}
	limit, err := intParam(r, "limit", 20, 1, a.d.Limits.MaxPageSize)
	if err != nil {
		bad(w, "%s", err.Error())
		return
	}
	out, err := a.d.Hist.ChargingSessions(r.Context(), vin, a.d.Lookback, limit)
	if err != nil {
		a.queryFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"vin": vin, "items": out})
}

// CommandsResponse is GET /api/service/v1/vehicles/{vin}/remotecmd.
type CommandsResponse struct {
	VIN   string             `json:"vin"`
	Items []remotecmd.Record `json:"items"`
	// Acks are the vehicle's acks from InfluxDB (also for commands sent by
	// other components or before the history's horizon).
	Acks []history.Ack `json:"acks"`
}

func (a *API) commandList(w http.ResponseWriter, r *http.Request) {
	vin, ok := a.vinOf(w, r)
	if !ok {
		return
	}
	limit, err := intParam(r, "limit", 50, 1, a.d.Limits.MaxPageSize)
	if err != nil {
		bad(w, "%s", err.Error())
		return
	}
	resp := CommandsResponse{VIN: vin, Items: a.d.Cmds.List(vin, limit), Acks: []history.Ack{}}
	acks, err := a.d.Hist.CommandAcks(r.Context(), vin, a.d.Lookback, limit)
	if err != nil {
		a.queryFailed(w, r, err)
		return
	}
	if acks != nil {
		resp.Acks = acks
	}
	writeJSON(w, http.StatusOK, resp)
}

// CommandRequest is POST /api/service/v1/vehicles/{vin}/remotecmd.
type CommandRequest struct {
	Name   string            `json:"name"`
	Params map[string]string `json:"params"`
}

func (a *API) sendCommand(w http.ResponseWriter, r *http.Request) {
	vin, ok := a.vinOf(w, r)
	if !ok {
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		auth.WriteError(w, http.StatusUnsupportedMediaType, "content type must be application/json")
		return
	}
	var req CommandRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		bad(w, "body must be JSON {\"name\": ..., \"params\": {...}}")
		return
	}
	if len(req.Params) > 8 {
		bad(w, "at most 8 params")
		return
	}
	s, _ := auth.FromContext(r.Context())
	rec, err := a.d.Sender.Send(r.Context(), vin, req.Name, req.Params, s.User)
	result := "sent"
	switch {
	case errors.Is(err, remotecmd.ErrUnknownCommand), errors.Is(err, remotecmd.ErrBadParam):
		result = "invalid"
		bad(w, "%s", strings.TrimPrefix(err.Error(), "commands: "))
	case errors.Is(err, remotecmd.ErrOtherReplica):
		result = "other_replica"
		auth.WriteError(w, http.StatusConflict, "vehicle connected to another replica (or offline): commands to it need the post-purchase services' dispatcher, which is disabled")
	case err != nil:
		result = "publish_failed"
		auth.WriteError(w, http.StatusBadGateway, "the command could not be published to the vehicle")
	default:
		writeJSON(w, http.StatusAccepted, rec)
	}
	if a.d.OnCommand != nil {
		name := req.Name
		if _, ok := remotecmd.Lookup(name); !ok {
			name = "unknown"
		}
		a.d.OnCommand(name, result)
	}
}

// LiveSignal is one value in a live "signals" event.
type LiveSignal struct {
	Path  string    `json:"path"`
	Unit  string    `json:"unit,omitempty"`
	Value float64   `json:"value"`
	Time  time.Time `json:"time"`
}

// liveStream is GET /api/service/v1/vehicles/{vin}/live: server-sent events.
// Events: "state" (the vehicle detail, at once and every 2 s: connectivity,
// DTCs, health) and "signals" (each stored telemetry frame).
func (a *API) liveStream(w http.ResponseWriter, r *http.Request) {
	vin, ok := a.vinOf(w, r)
	if !ok {
		return
	}
	s, _ := auth.FromContext(r.Context())
	if !a.acquireUserStream(s.User) {
		w.Header().Set("Retry-After", "5")
		auth.WriteError(w, http.StatusTooManyRequests, fmt.Sprintf("you already have %d live streams open; close one first", a.d.Limits.MaxLiveStreamsPerUser))
		return
	}
	defer a.releaseUserStream(s.User)
	if n := a.live.Add(1); n > int64(a.d.Limits.MaxLiveStreams) {
		a.live.Add(-1)
		auth.WriteError(w, http.StatusServiceUnavailable, "too many live streams; try again later")
		return
	}
	defer a.live.Add(-1)
	if a.d.LiveStreams != nil {
		a.d.LiveStreams(1)
		defer a.d.LiveStreams(-1)
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ch, unsub := a.d.Hub.Subscribe(vin, 64)
	defer unsub()
	send := func(event string, v any) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	state := func() bool {
		d, _ := a.d.State.Get(vin)
		return send("state", a.redact(vin, d))
	}
	if _, err := fmt.Fprint(w, "retry: 3000\n\n"); err != nil || !state() {
		return
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	ctx := r.Context()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.done():
			return
		case <-tick.C:
			if !state() {
				return
			}
		case u := <-ch:
			out := make([]LiveSignal, 0, len(u.Signals))
			t := time.UnixMilli(u.TimeMs).UTC()
			locOK := a.locationOK(vin) // per frame: a withdrawal applies at once
			for _, s := range u.Signals {
				if sig, ok := catalog.Lookup(s.ID); ok && sig.Valid(s.Value) && (locOK || !strings.HasPrefix(sig.Path, LocationPrefix)) {
					out = append(out, LiveSignal{Path: sig.Path, Unit: sig.Unit, Value: s.Value, Time: t})
				}
			}
			if !send("signals", map[string]any{"seq": u.Seq, "time": t, "signals": out}) {
				return
			}
		}
	}
}

// acquireUserStream counts one more live stream for user, unless the
// user is at MaxLiveStreamsPerUser.
func (a *API) acquireUserStream(user string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.liveUser[user] >= a.d.Limits.MaxLiveStreamsPerUser {
		return false
	}
	a.liveUser[user]++
	return true
}

func (a *API) releaseUserStream(user string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.liveUser[user]--; a.liveUser[user] <= 0 {
		delete(a.liveUser, user)
	}
}

func (a *API) done() <-chan struct{} {
	if a.d.Done == nil {
		return nil
	}
	return a.d.Done
}

// LiveStreams is the number of open live streams.
func (a *API) LiveStreams() int64 { return a.live.Load() }
