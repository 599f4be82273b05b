package api_test

// Unit tests of the dashboard API's handlers with httptest: no InfluxDB, no
// NATS, no browser. The real auth.Manager, fleetstate.State, remotecmd.Log
// and Sender and live.Hub are used (all in memory); only History (InfluxDB
// queries) and the Sender's MQTT Publisher are in-test fakes of the
// gateway's own interfaces.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/dashboard/api"
	"github.com/telegate/telegate/gateway/dashboard/auth"
	"github.com/telegate/telegate/gateway/dashboard/fleetstate"
	"github.com/telegate/telegate/gateway/dashboard/history"
	"github.com/telegate/telegate/gateway/dashboard/remotecmd"
	"github.com/telegate/telegate/gateway/sink/live"
)

const (
	vinShared  = "TGTEST00000000001" // owner grants location_sharing
	vinPrivate = "TGTEST00000000002" // owner does not
	vinFresh   = "TGTEST00000000003" // no values since start
	vinUnknown = "TGTEST00000000099" // well-formed, not in the fleet

	latPath = "Vehicle.CurrentLocation.Latitude"
	prefix  = "/api/service/v1"
)

// now is the injected clock of every test here (never the wall clock).
var now = time.Date(2027, 1, 15, 12, 0, 0, 0, time.UTC)

// fakeHistory answers History from fixed data and records the calls.
type fakeHistory struct {
	mu       sync.Mutex // guards every field
	err      error      // returned by every query when set
	series   map[string][]history.Point
	latest   map[string]history.Point
	seen     []history.CodeSeen
	charging []history.ChargingSession
	acks     []history.Ack
	calls    []string // method names, in order
	last     historyCall
}

type historyCall struct {
	vin         string
	paths       []string
	start, stop time.Time
	window      time.Duration
	fn          string
}

func (f *fakeHistory) called(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name)
	return f.err
}

func (f *fakeHistory) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeHistory) SignalHistory(_ context.Context, vin string, paths []string, start, stop time.Time, window time.Duration, fn string) (map[string][]history.Point, error) {
	if err := f.called("SignalHistory"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = historyCall{vin, slices.Clone(paths), start, stop, window, fn}
	return f.series, nil
}

func (f *fakeHistory) Latest(context.Context, string, time.Duration) (map[string]history.Point, error) {
	if err := f.called("Latest"); err != nil {
		return nil, err
	}
	return f.latest, nil
}

func (f *fakeHistory) DTCSeen(context.Context, string, time.Duration) ([]history.CodeSeen, error) {
	if err := f.called("DTCSeen"); err != nil {
		return nil, err
	}
	return f.seen, nil
}

func (f *fakeHistory) ChargingSessions(_ context.Context, _ string, _ time.Duration, limit int) ([]history.ChargingSession, error) {
	if err := f.called("ChargingSessions"); err != nil {
		return nil, err
	}
	return f.charging[:min(limit, len(f.charging))], nil
}

func (f *fakeHistory) CommandAcks(context.Context, string, time.Duration, int) ([]history.Ack, error) {
	if err := f.called("CommandAcks"); err != nil {
		return nil, err
	}
	return f.acks, nil
}

// fakePublisher stands for the embedded MQTT broker (remotecmd.Publisher).
type fakePublisher struct {
	mu     sync.Mutex // guards topics and err
	topics []string
	err    error
}

func (p *fakePublisher) Publish(topic string, _ []byte, _ byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	p.topics = append(p.topics, topic)
	return nil
}

type fixture struct {
	t        *testing.T
	mux      *http.ServeMux
	api      *api.API
	hist     *fakeHistory
	pub      *fakePublisher
	sender   *remotecmd.Sender
	hub      *live.Hub
	state    *fleetstate.State
	consent  sync.Map // vin -> true: location_sharing granted
	commands sync.Map // "name result" -> count
	done     chan struct{}
}

// hashes are bcrypt hashes (cost 8, the minimum users files accept) of
// the users' passwords, computed once.
var hashes = sync.OnceValue(func() map[string]string {
	out := map[string]string{}
	for _, u := range []string{"viewer", "operator"} {
		h, err := auth.HashPassword(u+"-password", 8)
		if err != nil {
			panic(err)
		}
		out[u] = h
	}
	return out
})

func newFixture(t *testing.T) *fixture {
	t.Helper()
	h := hashes()
	users, err := auth.ParseUsers(fmt.Appendf(nil, "users:\n  - name: viewer\n    role: viewer\n    password_hash: %q\n"+
		"  - name: operator\n    role: operator\n    password_hash: %q\n", h["viewer"], h["operator"]))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	clock := func() time.Time { return now }
	f := &fixture{t: t, mux: http.NewServeMux(), hist: &fakeHistory{}, pub: &fakePublisher{}, hub: live.New(),
		state: fleetstate.New([]string{vinShared, vinPrivate, vinFresh}), done: make(chan struct{})}
	t.Cleanup(func() { close(f.done) })
	f.consent.Store(vinShared, true)
	cmds := remotecmd.NewLog(10)
	f.sender = remotecmd.NewSender(f.pub, nil, cmds, log)
	f.api = api.New(api.Deps{
		State: f.state, Hist: f.hist, Cmds: cmds, Sender: f.sender, Hub: f.hub,
		Auth: auth.NewManager(auth.Config{Now: clock}, users, log), Log: log, Now: clock, Done: f.done,
		Limits: api.Limits{MaxRange: 7 * 24 * time.Hour, MaxPoints: 1000, MaxPageSize: 100, MaxLiveStreams: 4,
			MaxLiveStreamsPerUser: 2, MaxSignals: 3},
		Lookback: 30 * 24 * time.Hour,
		OnCommand: func(name, result string) {
			n, _ := f.commands.LoadOrStore(name+" "+result, new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
		},
		LocationAllowed: func(vin string) bool { _, ok := f.consent.Load(vin); return ok },
	})
	for _, r := range f.api.Routes() {
		f.mux.Handle(r.Pattern, r.Handler)
	}
	f.state.SetValue(vinShared, "Vehicle.Speed", 50, now.Add(-time.Minute))
	f.state.SetValue(vinShared, latPath, 48.1, now.Add(-time.Minute))
	f.state.SetValue(vinPrivate, "Vehicle.Speed", 60, now.Add(-time.Minute))
	f.state.SetValue(vinPrivate, latPath, 52.5, now.Add(-time.Minute))
	return f
}

// session is a logged-in user: the cookie and the CSRF token.
type session struct {
	cookie *http.Cookie
	csrf   string
}

func (f *fixture) login(user string) *session {
	f.t.Helper()
	req := httptest.NewRequest(http.MethodPost, prefix+"/login",
		strings.NewReader(fmt.Sprintf(`{"username":%q,"password":%q}`, user, user+"-password")))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	f.mux.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		f.t.Fatalf("login %s: %d %s", user, rec.Code, rec.Body)
	}
	var body struct {
		CSRF string `json:"csrf_token"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.CSRF == "" {
		f.t.Fatalf("login %s: body %s: %v", user, rec.Body, err)
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name == auth.CookieName {
			return &session{cookie: c, csrf: body.CSRF}
		}
	}
	f.t.Fatalf("login %s: no session cookie", user)
	return nil
}

// request is one call; s nil is anonymous.
type request struct {
	method, path string
	s            *session
	body         string
	contentType  string // default application/json when body is set
	csrf         *string
	origin       string
}

func (f *fixture) do(r request) *httptest.ResponseRecorder {
	f.t.Helper()
	if r.method == "" {
		r.method = http.MethodGet
	}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	req := httptest.NewRequest(r.method, r.path, body)
	if r.body != "" {
		ct := r.contentType
		if ct == "" {
			ct = "application/json"
		}
		req.Header.Set("Content-Type", ct)
	}
	if r.s != nil {
		req.AddCookie(r.s.cookie)
		csrf := r.s.csrf
		if r.csrf != nil {
			csrf = *r.csrf
		}
		if csrf != "" {
			req.Header.Set(auth.CSRFHeader, csrf)
		}
	}
	if r.origin != "" {
		req.Header.Set("Origin", r.origin)
	}
	rec := httptest.NewRecorder()
	f.mux.ServeHTTP(rec, req)
	return rec
}

func (f *fixture) get(s *session, path string) *httptest.ResponseRecorder {
	f.t.Helper()
	return f.do(request{path: path, s: s})
}

// wantError checks the status and that the JSON error names want.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, want string) {
	t.Helper()
	var e auth.ErrorBody
	if rec.Code != status || json.Unmarshal(rec.Body.Bytes(), &e) != nil || !strings.Contains(e.Error, want) {
		t.Errorf("got %d %s, want %d with an error containing %q", rec.Code, strings.TrimSpace(rec.Body.String()), status, want)
	}
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder, status int) T {
	t.Helper()
	var v T
	if rec.Code != status {
		t.Fatalf("got %d %s, want %d", rec.Code, rec.Body, status)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("body %s: %v", rec.Body, err)
	}
	return v
}

// TestAPIRequiresSession: every route but login answers 401 without a
// valid session, and an unknown route 404.
func TestAPIRequiresSession(t *testing.T) {
	f := newFixture(t)
	bogus := &session{cookie: &http.Cookie{Name: auth.CookieName, Value: "not-a-session"}}
	for _, r := range f.api.Routes() {
		method, path, ok := strings.Cut(r.Pattern, " ")
		if !ok || r.Name == "login" {
			continue
		}
		path = strings.ReplaceAll(path, "{vin}", vinShared)
		for _, s := range []*session{nil, bogus} {
			wantError(t, f.do(request{method: method, path: path, s: s}), http.StatusUnauthorized, "login required")
		}
	}
	if n := len(f.hist.Calls()); n != 0 {
		t.Errorf("anonymous requests reached InfluxDB %d times", n)
	}
	s := f.login("viewer")
	wantError(t, f.get(s, prefix+"/no-such-route"), http.StatusNotFound, "no such API route")
	wantError(t, f.get(nil, prefix+"/no-such-route"), http.StatusNotFound, "no such API route")
}

// TestAPIVINValidation: a malformed VIN is 400, an unknown one 404, on
// every per-vehicle route, before any query.
func TestAPIVINValidation(t *testing.T) {
	f := newFixture(t)
	s := f.login("operator")
	for _, sub := range []string{"", "/history?signals=Vehicle.Speed", "/dtcs", "/charging", "/commands", "/live"} {
		for _, bad := range []string{"abc", "TGTEST0000000000I", "tgtest00000000001", "TGTEST000000000012", strings.Repeat("Z", 60)} {
			wantError(t, f.get(s, prefix+"/vehicles/"+bad+sub), http.StatusBadRequest, "is not a VIN (17 characters")
		}
		wantError(t, f.get(s, prefix+"/vehicles/"+vinUnknown+sub), http.StatusNotFound, "unknown vehicle "+vinUnknown)
	}
	wantError(t, f.do(request{method: http.MethodPost, path: prefix + "/vehicles/" + vinUnknown + "/commands", s: s,
		body: `{"name":"ping"}`}), http.StatusNotFound, "unknown vehicle")
	if n := len(f.hist.Calls()); n != 0 {
		t.Errorf("invalid VINs reached InfluxDB %d times", n)
	}
	// A long VIN is echoed truncated, never whole.
	if rec := f.get(s, prefix+"/vehicles/"+strings.Repeat("Z", 60)); strings.Contains(rec.Body.String(), strings.Repeat("Z", 41)) {
		t.Errorf("error echoes the whole 60-byte VIN: %s", rec.Body)
	}
}

// TestAPIHistoryValidation: each malformed history request is 400 with a
// message that says what to send, and no query reaches InfluxDB.
func TestAPIHistoryValidation(t *testing.T) {
	f := newFixture(t)
	s := f.login("viewer")
	var four []string
	for _, sig := range catalog.All() {
		if len(four) < 4 && !strings.HasPrefix(sig.Path, api.LocationPrefix) {
			four = append(four, sig.Path)
		}
	}
	for q, want := range map[string]string{
		"":                                   "signals is required",
		"signals=Vehicle.Nope":               `unknown signal "Vehicle.Nope"`,
		"signals=99999":                      `unknown signal "99999"`,
		"signals=Vehicle.Speed,":             `unknown signal ""`,
		"signals=" + strings.Join(four, ","): "at most 3 signals per request",
		"signals=1&end=yesterday":            "end must be an RFC 3339 time",
		"signals=1&start=2027-01-15T10:00:00Z&range=1h":                 "give either range or start, not both",
		"signals=1&start=10:00":                                         "start must be an RFC 3339 time",
		"signals=1&range=-5m":                                           "range must be a positive duration",
		"signals=1&range=soon":                                          "range must be a positive duration",
		"signals=1&range=0s":                                            "range must be a positive duration",
		"signals=1&start=2027-01-15T12:00:00Z":                          "start must be before end",
		"signals=1&start=2027-01-15T11:00:00Z&end=2027-01-15T10:00:00Z": "start must be before end",
		"signals=1&range=8d":                                            "is longer than the maximum 168h0m0s",
		"signals=1&range=1h&window=500ms":                               "window must be a duration of at least 1s",
		"signals=1&range=1h&window=often":                               "window must be a duration of at least 1s",
		"signals=1&range=7d&window=1m":                                  "range/window gives 10080 points per signal; the maximum is 1000",
		"signals=1&agg=median":                                          "agg must be one of mean, min, max, last",
	} {
		t.Run(q, func(t *testing.T) {
			wantError(t, f.get(s, prefix+"/vehicles/"+vinShared+"/history?"+q), http.StatusBadRequest, want)
		})
	}
	if n := len(f.hist.Calls()); n != 0 {
		t.Errorf("invalid history requests reached InfluxDB %d times: %v", n, f.hist.Calls())
	}
}

// TestAPIHistory: a valid request is passed to History as asked (range
// ending at the injected now, automatic window, catalog ids resolved and
// duplicates dropped) and answered with units.
func TestAPIHistory(t *testing.T) {
	f := newFixture(t)
	s := f.login("viewer")
	pts := []history.Point{{T: now.Add(-time.Hour), V: 10}, {T: now.Add(-30 * time.Minute), V: 20}}
	f.hist.series = map[string][]history.Point{"Vehicle.Speed": pts}

	rec := f.get(s, prefix+"/vehicles/"+vinPrivate+"/history?signals=Vehicle.Speed,"+fmt.Sprint(catalog.Speed)+"&range=6h")
	resp := decode[api.HistoryResponse](t, rec, http.StatusOK)
	got := f.hist.last
	if got.vin != vinPrivate || !slices.Equal(got.paths, []string{"Vehicle.Speed"}) || !got.start.Equal(now.Add(-6*time.Hour)) ||
		!got.stop.Equal(now) || got.window != 2*time.Minute || got.fn != "mean" {
		t.Errorf("History called with %+v, want Vehicle.Speed over [now-6h, now), window 2m (6h/300 rounded up), mean", got)
	}
	if resp.VIN != vinPrivate || resp.Window != "2m0s" || resp.Aggregation != "mean" || len(resp.Series) != 1 ||
		resp.Series[0].Unit != "km/h" || len(resp.Series[0].Points) != 2 || resp.Series[0].Points[1].V != 20 {
		t.Errorf("response = %+v", resp)
	}

	rec = f.get(s, prefix+"/vehicles/"+vinPrivate+"/history?signals=Vehicle.Speed&start=2027-01-15T10:00:00%2B01:00&end=2027-01-15T11:00:00Z&window=1m&agg=max")
	resp = decode[api.HistoryResponse](t, rec, http.StatusOK)
	if got := f.hist.last; !got.start.Equal(time.Date(2027, 1, 15, 9, 0, 0, 0, time.UTC)) || got.window != time.Minute || got.fn != "max" ||
		!resp.End.Equal(time.Date(2027, 1, 15, 11, 0, 0, 0, time.UTC)) {
		t.Errorf("explicit range: History called with %+v, response %+v", got, resp)
	}
}

// TestAPIQueryFailure: an InfluxDB error is 502 with a fixed message, never
// the error's text.
func TestAPIQueryFailure(t *testing.T) {
	f := newFixture(t)
	f.hist.err = errors.New("influx: token=SECRET-TOKEN unreachable")
	s := f.login("viewer")
	for _, p := range []string{"/history?signals=Vehicle.Speed", "/dtcs", "/charging", "/commands"} {
		rec := f.get(s, prefix+"/vehicles/"+vinShared+p)
		wantError(t, rec, http.StatusBadGateway, "InfluxDB query failed; try again")
		if strings.Contains(rec.Body.String(), "SECRET") {
			t.Errorf("%s: answer carries the query error: %s", p, rec.Body)
		}
	}
	// The vehicle detail still answers from memory when Latest fails.
	if d := decode[api.VehicleResponse](t, f.get(s, prefix+"/vehicles/"+vinFresh), http.StatusOK); d.VIN != vinFresh || len(d.Values) != 0 {
		t.Errorf("detail with failing Latest = %+v", d)
	}
}

func hasPath(vals []fleetstate.Value, path string) bool {
	return slices.ContainsFunc(vals, func(v fleetstate.Value) bool { return v.Path == path })
}

// TestAPILocationConsent: without the owner's location_sharing consent no
// position leaves the API for any role (detail, history); with it, it does.
func TestAPILocationConsent(t *testing.T) {
	f := newFixture(t)
	f.hist.series = map[string][]history.Point{latPath: {{T: now.Add(-time.Minute), V: 48.1}}}
	for _, user := range []string{"viewer", "operator"} {
		s := f.login(user)
		d := decode[api.VehicleResponse](t, f.get(s, prefix+"/vehicles/"+vinPrivate), http.StatusOK)
		if d.LocationShared || hasPath(d.Values, latPath) || !hasPath(d.Values, "Vehicle.Speed") {
			t.Errorf("%s: detail without consent: shared=%v values=%+v, want speed only", user, d.LocationShared, d.Values)
		}
		rec := f.get(s, prefix+"/vehicles/"+vinPrivate+"/history?signals=Vehicle.Speed,"+latPath)
		wantError(t, rec, http.StatusForbidden, "has not consented to location sharing")

		d = decode[api.VehicleResponse](t, f.get(s, prefix+"/vehicles/"+vinShared), http.StatusOK)
		if !d.LocationShared || !hasPath(d.Values, latPath) {
			t.Errorf("%s: detail with consent: shared=%v values=%+v, want the latitude", user, d.LocationShared, d.Values)
		}
		h := decode[api.HistoryResponse](t, f.get(s, prefix+"/vehicles/"+vinShared+"/history?signals="+latPath), http.StatusOK)
		if len(h.Series) != 1 || len(h.Series[0].Points) != 1 {
			t.Errorf("%s: history with consent = %+v", user, h)
		}
	}
	// Withdrawal applies at once.
	f.consent.Delete(vinShared)
	s := f.login("viewer")
	if d := decode[api.VehicleResponse](t, f.get(s, prefix+"/vehicles/"+vinShared), http.StatusOK); d.LocationShared || hasPath(d.Values, latPath) {
		t.Errorf("detail after withdrawal: %+v", d)
	}
	var queries int
	for _, c := range f.hist.Calls() {
		if c == "SignalHistory" {
			queries++
		}
	}
	if queries != 2 {
		t.Errorf("%d history queries, want 2 (the consented ones): a refused position query reached InfluxDB", queries)
	}
}

// TestAPIVehicleFromHistory: a vehicle not seen since start gets its last
// values from History (redacted like the rest).
func TestAPIVehicleFromHistory(t *testing.T) {
	f := newFixture(t)
	f.hist.latest = map[string]history.Point{"Vehicle.Speed": {T: now.Add(-time.Hour), V: 42}, latPath: {T: now.Add(-time.Hour), V: 1}}
	s := f.login("viewer")
	d := decode[api.VehicleResponse](t, f.get(s, prefix+"/vehicles/"+vinFresh), http.StatusOK)
	i := slices.IndexFunc(d.Values, func(v fleetstate.Value) bool { return v.Path == "Vehicle.Speed" })
	if i < 0 || d.Values[i].Value != 42 || hasPath(d.Values, latPath) || !d.Ready {
		t.Errorf("detail = %+v, want speed 42 from History and no position", d)
	}
}

// TestAPIFleet: list parameters are validated (every problem named at once)
// and the counts answered.
func TestAPIFleet(t *testing.T) {
	f := newFixture(t)
	s := f.login("viewer")
	wantError(t, f.get(s, prefix+"/fleet?page_size=101"), http.StatusBadRequest, "page_size must be an integer between 1 and 100")
	wantError(t, f.get(s, prefix+"/fleet?page=0"), http.StatusBadRequest, "page must be an integer between 1 and 1000000")
	rec := f.get(s, prefix+"/fleet?status=asleep&sort=color")
	wantError(t, rec, http.StatusBadRequest, "status must be one of connected, disconnected; sort must be one of vin, last_seen, health")
	wantError(t, f.get(s, prefix+"/fleet?q="+strings.Repeat("x", 65)), http.StatusBadRequest, "q is longer than 64 characters")
	wantError(t, f.get(s, prefix+"/dtcs?severity=fatal"), http.StatusBadRequest, "severity must be one of info, warning, critical")

	resp := decode[api.FleetResponse](t, f.get(s, prefix+"/fleet?page_size=2&sort=vin"), http.StatusOK)
	if resp.Counts.Vehicles != 3 || resp.Total != 3 || len(resp.Items) != 2 || resp.Items[0].VIN != vinShared {
		t.Errorf("fleet = %+v", resp)
	}
	if a := decode[api.AlertsResponse](t, f.get(s, prefix+"/dtcs"), http.StatusOK); a.Total != 0 || a.Items == nil {
		t.Errorf("alerts = %+v, want an empty list", a)
	}
}

// TestAPIVehicleDTCsChargingCommands: the per-vehicle lists come from
// History and the command log; limits are validated.
func TestAPIVehicleDTCsChargingCommands(t *testing.T) {
	f := newFixture(t)
	f.hist.seen = []history.CodeSeen{{VIN: vinShared, Code: "P0301", First: now.Add(-48 * time.Hour), Last: now.Add(-time.Hour), LastStatus: 0x08}}
	f.hist.charging = []history.ChargingSession{{SessionID: "s1", State: "stopped"}, {SessionID: "s2", State: "active"}}
	f.hist.acks = []history.Ack{{CmdID: "c1", Status: "applied", Time: now}}
	s := f.login("viewer")

	d := decode[api.VehicleDTCsResponse](t, f.get(s, prefix+"/vehicles/"+vinShared+"/dtcs"), http.StatusOK)
	if len(d.History) != 1 || d.History[0].Code != "P0301" || d.History[0].Description == "" || d.History[0].Open {
		t.Errorf("dtcs = %+v", d)
	}
	wantError(t, f.get(s, prefix+"/vehicles/"+vinShared+"/charging?limit=0"), http.StatusBadRequest, "limit must be an integer between 1 and 100")
	ch := decode[struct {
		Items []history.ChargingSession `json:"items"`
	}](t, f.get(s, prefix+"/vehicles/"+vinShared+"/charging?limit=1"), http.StatusOK)
	if len(ch.Items) != 1 || ch.Items[0].SessionID != "s1" {
		t.Errorf("charging = %+v", ch)
	}
	wantError(t, f.get(s, prefix+"/vehicles/"+vinShared+"/commands?limit=x"), http.StatusBadRequest, "limit must be an integer")
	c := decode[api.CommandsResponse](t, f.get(s, prefix+"/vehicles/"+vinShared+"/commands"), http.StatusOK)
	if len(c.Acks) != 1 || c.Acks[0].CmdID != "c1" || len(c.Items) != 0 {
		t.Errorf("commands = %+v", c)
	}
}

func (f *fixture) count(name, result string) int64 {
	n, ok := f.commands.Load(name + " " + result)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

// TestAPISendCommand: only an operator with the CSRF token from the same
// origin sends; bad commands are 400, a broker failure 502; each outcome is
// counted.
func TestAPISendCommand(t *testing.T) {
	f := newFixture(t)
	viewer, op := f.login("viewer"), f.login("operator")
	path := prefix + "/vehicles/" + vinShared + "/commands"
	ping := `{"name":"ping"}`
	empty, wrong := "", "wrong-token"

	wantError(t, f.do(request{method: http.MethodPost, path: path, s: viewer, body: ping}), http.StatusForbidden, "your role (viewer) may not do this")
	wantError(t, f.do(request{method: http.MethodPost, path: path, s: op, body: ping, csrf: &empty}), http.StatusForbidden, "CSRF")
	wantError(t, f.do(request{method: http.MethodPost, path: path, s: op, body: ping, csrf: &wrong}), http.StatusForbidden, "CSRF")
	wantError(t, f.do(request{method: http.MethodPost, path: path, s: op, body: ping, origin: "https://evil.example"}), http.StatusForbidden, "cross-origin request refused")
	wantError(t, f.do(request{method: http.MethodPost, path: path, s: op, body: ping, contentType: "text/plain"}), http.StatusUnsupportedMediaType, "content type must be application/json")
	wantError(t, f.do(request{method: http.MethodPost, path: path, s: op, body: `{"name":"ping","extra":1}`}), http.StatusBadRequest, "body must be JSON")
	wantError(t, f.do(request{method: http.MethodPost, path: path, s: op, body: `{"name":"ping","params":{"a":"1","b":"2","c":"3","d":"4","e":"5","f":"6","g":"7","h":"8","i":"9"}}`}),
		http.StatusBadRequest, "at most 8 params")
	wantError(t, f.do(request{method: http.MethodPost, path: path, s: op, body: `{"name":"self_destruct"}`}), http.StatusBadRequest, `unknown command: "self_destruct"`)
	wantError(t, f.do(request{method: http.MethodPost, path: path, s: op, body: `{"name":"clear_dtc_reminder","params":{"code":"XYZ"}}`}),
		http.StatusBadRequest, `code "XYZ" is not a DTC`)
	if n := len(f.pub.topics); n != 0 {
		t.Fatalf("refused commands published %d messages", n)
	}

	rec := decode[remotecmd.Record](t, f.do(request{method: http.MethodPost, path: path, s: op, body: `{"name":"clear_dtc_reminder","params":{"code":"P0301"}}`}), http.StatusAccepted)
	if rec.VIN != vinShared || rec.User != "operator" || rec.Status != "sent" ||
		!slices.Equal(f.pub.topics, []string{"vehicles/" + vinShared + "/cmd/clear_dtc_reminder"}) {
		t.Errorf("sent %+v, published %v", rec, f.pub.topics)
	}
	list := decode[api.CommandsResponse](t, f.get(viewer, path), http.StatusOK)
	if len(list.Items) != 1 || list.Items[0].CmdID != rec.CmdID {
		t.Errorf("command list = %+v, want the sent command", list.Items)
	}

	f.pub.mu.Lock()
	f.pub.err = errors.New("broker down")
	f.pub.mu.Unlock()
	wantError(t, f.do(request{method: http.MethodPost, path: path, s: op, body: ping}), http.StatusBadGateway, "could not be published")

	// The vehicle's session is on another replica and the services'
	// dispatcher is disabled: 409, nothing published.
	f.pub.mu.Lock()
	f.pub.err, f.pub.topics = nil, nil
	f.pub.mu.Unlock()
	f.sender.WithCluster(func(string) bool { return false }, nil)
	wantError(t, f.do(request{method: http.MethodPost, path: path, s: op, body: ping}), http.StatusConflict, "vehicle connected to another replica")
	if n := len(f.pub.topics); n != 0 {
		t.Fatalf("a command to another replica's vehicle published %d messages", n)
	}

	for k, want := range map[string]int64{"unknown invalid": 1, "clear_dtc_reminder invalid": 1, "clear_dtc_reminder sent": 1, "ping publish_failed": 1, "ping other_replica": 1, "ping invalid": 0} {
		name, result, _ := strings.Cut(k, " ")
		if got := f.count(name, result); got != want {
			t.Errorf("OnCommand(%s, %s) called %d times, want %d", name, result, got, want)
		}
	}
}

// sseEvent is one server-sent event.
type sseEvent struct{ name, data string }

func readEvent(t *testing.T, r *bufio.Reader) sseEvent {
	t.Helper()
	var ev sseEvent
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("live stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && ev.name != "":
			return ev
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
}

// TestAPILiveStreamConsent: the live stream withholds positions, in the
// state and in each frame, unless the owner consents; consent is checked
// per frame; the per-user stream cap is enforced.
func TestAPILiveStreamConsent(t *testing.T) {
	f := newFixture(t)
	srv := httptest.NewServer(f.mux)
	defer srv.Close()
	s := f.login("viewer")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func() *http.Response {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+prefix+"/vehicles/"+vinPrivate+"/live", nil)
		req.AddCookie(s.cookie)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := open()
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("live: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	r := bufio.NewReader(resp.Body)
	ev := readEvent(t, r)
	if ev.name != "state" || !strings.Contains(ev.data, "Vehicle.Speed") || strings.Contains(ev.data, "CurrentLocation") {
		t.Fatalf("first event = %+v, want the state without position", ev)
	}
	nextSignals := func() []api.LiveSignal {
		for {
			ev := readEvent(t, r)
			if ev.name != "signals" {
				continue // periodic state
			}
			var body struct {
				Signals []api.LiveSignal `json:"signals"`
			}
			if err := json.Unmarshal([]byte(ev.data), &body); err != nil {
				t.Fatalf("signals event %s: %v", ev.data, err)
			}
			return body.Signals
		}
	}
	frame := []wire.Signal{{ID: catalog.Speed, Value: 80}, {ID: catalog.Latitude, Value: 52.5}}
	f.hub.Publish([]byte(vinPrivate), now.UnixMilli(), 1, frame)
	if sigs := nextSignals(); len(sigs) != 1 || sigs[0].Path != "Vehicle.Speed" || sigs[0].Value != 80 {
		t.Errorf("frame without consent = %+v, want speed only", sigs)
	}
	f.consent.Store(vinPrivate, true)
	f.hub.Publish([]byte(vinPrivate), now.UnixMilli()+1000, 2, frame)
	if sigs := nextSignals(); len(sigs) != 2 {
		t.Errorf("frame with consent = %+v, want speed and latitude", sigs)
	}

	second := open()
	defer second.Body.Close()
	third := open()
	defer third.Body.Close()
	var e auth.ErrorBody
	if third.StatusCode != http.StatusTooManyRequests || json.NewDecoder(third.Body).Decode(&e) != nil || !strings.Contains(e.Error, "live streams open") {
		t.Errorf("third stream of one user: %d %+v, want 429 (cap 2)", third.StatusCode, e)
	}
}
