// Package history runs the dashboard's Flux queries against InfluxDB (see
// docs/data-model.md for the measurements): signal history with an
// aggregation window, latest values, charging sessions, command acks, a
// vehicle's DTC history, and the fleet-wide queries that initialise the
// fleet state at start (last connectivity, last diagnostics report, DTC
// first/last seen, last telemetry).
package history

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api/query"
)

// ErrQuery wraps every failed query.
var ErrQuery = errors.New("history: flux query failed")

// Config configures a Store.
type Config struct {
	URL    string
	Token  string // "user:password" for InfluxDB 1.x, a token for 2.x; empty for none
	Org    string
	Bucket string // "telemetry/autogen"
	// Timeout bounds one query.
	Timeout time.Duration
}

// Store queries InfluxDB.
type Store struct {
	cfg    Config
	client influxdb2.Client
	tr     *http.Transport
}

// New returns a Store. It does not connect.
func New(cfg Config) *Store {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 8, IdleConnTimeout: time.Minute}
	opts := influxdb2.DefaultOptions().SetHTTPClient(&http.Client{Transport: tr, Timeout: cfg.Timeout}).
		SetApplicationName("telegate-dashboard")
	return &Store{cfg: cfg, client: influxdb2.NewClientWithOptions(strings.TrimRight(cfg.URL, "/"), cfg.Token, opts), tr: tr}
}

// Close releases idle connections. Safe to call more than once.
func (s *Store) Close() {
	s.client.Close()
	s.tr.CloseIdleConnections()
}

// Bucket is the bucket queried.
func (s *Store) Bucket() string { return s.cfg.Bucket }

// Str quotes v as a Flux string literal.
func Str(v string) string { return `"` + fluxEscaper.Replace(v) + `"` }

var fluxEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`, "\n", `\n`, "\r", `\r`, "\t", `\t`)

// Time formats t as a Flux time literal.
func Time(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// Dur formats d as a Flux duration literal (whole seconds, at least 1s).
func Dur(d time.Duration) string { return fmt.Sprintf("%ds", max(int64(d/time.Second), 1)) }

func (s *Store) from() string { return "from(bucket: " + Str(s.cfg.Bucket) + ")" }

// Rows runs flux and calls f for each record.
func (s *Store) Rows(ctx context.Context, flux string, f func(*query.FluxRecord)) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	res, err := s.client.QueryAPI(s.cfg.Org).Query(ctx, flux)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrQuery, err)
	}
	defer res.Close()
	for res.Next() {
		f(res.Record())
	}
	if err := res.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrQuery, err)
	}
	return nil
}

func str(r *query.FluxRecord, k string) string {
	v, _ := r.ValueByKey(k).(string)
	return v
}

func num(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

func numKey(r *query.FluxRecord, k string) float64 {
	f, _ := num(r.ValueByKey(k))
	return f
}

// Point is one sample of a series.
type Point struct {
	T time.Time `json:"t"`
	V float64   `json:"v"`
}

// Aggregations accepted by SignalHistory.
var Aggregations = []string{"mean", "min", "max", "last"}

// SignalHistory returns, per VSS path, the points of vin's signals in
// [start, stop), aggregated over window with fn (mean, min, max, last).
// Booleans and integers are returned as numbers.
func (s *Store) SignalHistory(ctx context.Context, vin string, paths []string, start, stop time.Time, window time.Duration, fn string) (map[string][]Point, error) {
	if !slices.Contains(Aggregations, fn) {
		return nil, fmt.Errorf("%w: aggregation %q", ErrQuery, fn)
	}
	conds := make([]string, len(paths))
	for i, p := range paths {
		conds[i] = "r._field == " + Str(p)
	}
	q := fmt.Sprintf(`%s
  |> range(start: %s, stop: %s)
  |> filter(fn: (r) => r._measurement == "telemetry" and r.vin == %s)
  |> filter(fn: (r) => %s)
  |> toFloat()
  |> aggregateWindow(every: %s, fn: %s, createEmpty: false)`,
		s.from(), Time(start), Time(stop), Str(vin), strings.Join(conds, " or "), Dur(window), fn)
	out := make(map[string][]Point, len(paths))
	for _, p := range paths {
		out[p] = []Point{}
	}
	err := s.Rows(ctx, q, func(r *query.FluxRecord) {
		if v, ok := num(r.Value()); ok {
			out[r.Field()] = append(out[r.Field()], Point{T: r.Time().UTC(), V: v})
		}
	})
	for _, pts := range out {
		slices.SortFunc(pts, func(a, b Point) int { return a.T.Compare(b.T) })
	}
	return out, err
}

// Latest returns the last value of every telemetry field of vin within
// lookback (field → value and time).
func (s *Store) Latest(ctx context.Context, vin string, lookback time.Duration) (map[string]Point, error) {
	q := fmt.Sprintf(`%s
  |> range(start: -%s)
  |> filter(fn: (r) => r._measurement == "telemetry" and r.vin == %s and r._field != "seq")
  |> last()`, s.from(), Dur(lookback), Str(vin))
	out := map[string]Point{}
	err := s.Rows(ctx, q, func(r *query.FluxRecord) {
		if v, ok := num(r.Value()); ok {
			out[r.Field()] = Point{T: r.Time().UTC(), V: v}
		}
	})
	return out, err
}

// Connectivity is the last connectivity point of a device.
type Connectivity struct {
	Device    string
	Connected bool
	Time      time.Time
}

// LastConnectivity returns the last `connectivity` point of every device
// within lookback.
func (s *Store) LastConnectivity(ctx context.Context, lookback time.Duration) ([]Connectivity, error) {
	q := fmt.Sprintf(`%s
  |> range(start: -%s)
  |> filter(fn: (r) => r._measurement == "connectivity" and r._field == "connected")
  |> last()`, s.from(), Dur(lookback))
	var out []Connectivity
	err := s.Rows(ctx, q, func(r *query.FluxRecord) {
		b, _ := r.Value().(bool)
		out = append(out, Connectivity{Device: str(r, "device"), Connected: b, Time: r.Time()})
	})
	return out, err
}

// LastSeen returns the time of every vehicle's last telemetry frame within
// lookback.
func (s *Store) LastSeen(ctx context.Context, lookback time.Duration) (map[string]time.Time, error) {
	q := fmt.Sprintf(`%s
  |> range(start: -%s)
  |> filter(fn: (r) => r._measurement == "telemetry" and r._field == "seq")
  |> last()`, s.from(), Dur(lookback))
	out := map[string]time.Time{}
	err := s.Rows(ctx, q, func(r *query.FluxRecord) { out[str(r, "vin")] = r.Time() })
	return out, err
}

// Diag is a vehicle's last diagnostics report.
type Diag struct {
	VIN        string
	Time       time.Time
	MIL        bool
	OdometerKm float64
	DTCs       string // "P0301:confirmed,P0420:pending"
}

// LastDiag returns every vehicle's last `diag` report within lookback.
func (s *Store) LastDiag(ctx context.Context, lookback time.Duration) ([]Diag, error) {
	q := fmt.Sprintf(`%s
  |> range(start: -%s)
  |> filter(fn: (r) => r._measurement == "diag" and (r._field == "dtcs" or r._field == "mil" or r._field == "odometer_km"))
  |> last()
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> group()`, s.from(), Dur(lookback))
	byVIN := map[string]*Diag{}
	err := s.Rows(ctx, q, func(r *query.FluxRecord) {
		vin := str(r, "vin")
		d := byVIN[vin]
		if d == nil || r.Time().After(d.Time) {
			// the three fields' last points normally share one time; keep the newest row
			d = &Diag{VIN: vin, Time: r.Time()}
			byVIN[vin] = d
		}
		if v, ok := r.ValueByKey("dtcs").(string); ok {
			d.DTCs = v
		}
		if v, ok := r.ValueByKey("mil").(bool); ok {
			d.MIL = v
		}
		if v, ok := num(r.ValueByKey("odometer_km")); ok {
			d.OdometerKm = v
		}
	})
	out := make([]Diag, 0, len(byVIN))
	for _, d := range byVIN {
		out = append(out, *d)
	}
	return out, err
}

// CodeSeen is when a DTC was first and last reported by a vehicle.
type CodeSeen struct {
	VIN, Code   string
	First, Last time.Time
	LastStatus  int
}

// DTCSeen returns first/last seen of every (vehicle, code) within
// [now-lookback, now]; vin "" means the whole fleet.
func (s *Store) DTCSeen(ctx context.Context, vin string, lookback time.Duration) ([]CodeSeen, error) {
	filter := `r._measurement == "dtc" and r._field == "status"`
	if vin != "" {
		filter += " and r.vin == " + Str(vin)
	}
	base := fmt.Sprintf(`%s
  |> range(start: -%s)
  |> filter(fn: (r) => %s)`, s.from(), Dur(lookback), filter)
	type key struct{ vin, code string }
	m := map[key]*CodeSeen{}
	get := func(r *query.FluxRecord) *CodeSeen {
		k := key{str(r, "vin"), str(r, "code")}
		c := m[k]
		if c == nil {
			c = &CodeSeen{VIN: k.vin, Code: k.code}
			m[k] = c
		}
		return c
	}
	if err := s.Rows(ctx, base+"\n  |> first()", func(r *query.FluxRecord) { get(r).First = r.Time() }); err != nil {
		return nil, err
	}
	if err := s.Rows(ctx, base+"\n  |> last()", func(r *query.FluxRecord) {
		c := get(r)
		c.Last = r.Time()
		c.LastStatus = int(numKey(r, "_value"))
	}); err != nil {
		return nil, err
	}
	out := make([]CodeSeen, 0, len(m))
	for _, c := range m {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b CodeSeen) int { return b.Last.Compare(a.Last) })
	return out, nil
}

// ChargingSession is one charging session of a vehicle, from the
// `charging` measurement's events.
type ChargingSession struct {
	SessionID    string    `json:"session_id"`
	Station      string    `json:"station"`
	Connector    string    `json:"connector"`
	Started      time.Time `json:"started,omitzero"`
	Stopped      time.Time `json:"stopped,omitzero"`
	LastUpdate   time.Time `json:"last_update"`
	State        string    `json:"state"` // active | stopped
	EnergyWh     float64   `json:"energy_wh"`
	MaxPowerW    float64   `json:"max_power_w"`
	SoCStartPct  float64   `json:"soc_start_pct"`
	SoCPct       float64   `json:"soc_pct"`
	TargetSoCPct float64   `json:"target_soc_pct"`
}

// ChargingSessions returns vin's sessions within lookback, newest first,
// at most limit.
func (s *Store) ChargingSessions(ctx context.Context, vin string, lookback time.Duration, limit int) ([]ChargingSession, error) {
	q := fmt.Sprintf(`%s
  |> range(start: -%s)
  |> filter(fn: (r) => r._measurement == "charging")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> filter(fn: (r) => r.vin == %s)
  |> group()
  |> sort(columns: ["_time"])`, s.from(), Dur(lookback), Str(vin))
	m := map[string]*ChargingSession{}
	err := s.Rows(ctx, q, func(r *query.FluxRecord) {
		id := str(r, "station") + "/" + str(r, "session_id")
		c := m[id]
		t := r.Time().UTC()
		if c == nil {
			c = &ChargingSession{SessionID: str(r, "session_id"), Station: str(r, "station"), Connector: str(r, "connector"),
				State: "active", SoCStartPct: numKey(r, "soc_pct")}
			m[id] = c
		}
		switch str(r, "event") {
		case "started":
			c.Started = t
			c.SoCStartPct = numKey(r, "soc_pct")
		case "stopped":
			c.Stopped, c.State = t, "stopped"
		}
		c.LastUpdate = t
		c.EnergyWh = max(c.EnergyWh, numKey(r, "energy_wh"))
		c.MaxPowerW = max(c.MaxPowerW, numKey(r, "power_w"))
		c.SoCPct = numKey(r, "soc_pct")
		c.TargetSoCPct = numKey(r, "target_soc_pct")
	})
	out := make([]ChargingSession, 0, len(m))
	for _, c := range m {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b ChargingSession) int { return b.LastUpdate.Compare(a.LastUpdate) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, err
}

// Ack is one command acknowledgement (`command_ack` measurement).
type Ack struct {
	CmdID  string    `json:"cmd_id"`
	Status string    `json:"status"` // applied | rejected | failed
	Reason string    `json:"reason,omitempty"`
	Time   time.Time `json:"time"`
}

// CommandAcks returns vin's command acks within lookback, newest first, at
// most limit.
func (s *Store) CommandAcks(ctx context.Context, vin string, lookback time.Duration, limit int) ([]Ack, error) {
	q := fmt.Sprintf(`%s
  |> range(start: -%s)
  |> filter(fn: (r) => r._measurement == "command_ack" and r.vin == %s)
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> group()
  |> sort(columns: ["_time"], desc: true)
  |> limit(n: %d)`, s.from(), Dur(lookback), Str(vin), limit)
	var out []Ack
	err := s.Rows(ctx, q, func(r *query.FluxRecord) {
		out = append(out, Ack{CmdID: str(r, "cmd_id"), Status: str(r, "status_name"), Reason: str(r, "reason"), Time: r.Time().UTC()})
	})
	return out, err
}
