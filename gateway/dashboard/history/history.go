// Package history runs the dashboard's InfluxQL queries against InfluxDB
// through the one read seam, gateway/influx/query (see docs/data-model.md
// for the measurements): signal history with an aggregation window, latest
// values, charging sessions, command acks, a vehicle's DTC history, and the
// fleet-wide queries that initialise the fleet state at start (last
// connectivity, last diagnostics report, DTC first/last seen, last
// telemetry). Every identifier and literal taken from a caller (VIN, signal
// path) is validated by the API and quoted here (query.Ident, query.String).
package history

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/telegate/telegate/gateway/influx/query"
)

// ErrQuery wraps every failed query.
var ErrQuery = errors.New("history: influx query failed")

// Row bounds (InfluxQL LIMIT / SLIMIT): safety nets against unbounded
// answers, far above what the dashboard shows.
const (
	maxRows   = 10000
	maxSeries = 100000
)

// Config configures a Store.
type Config struct {
	URL   string
	Token string // "user:password" for InfluxDB 1.x, a token for 2.x/3.x; empty for none
	// AuthScheme is the Authorization scheme: query.SchemeToken (default),
	// query.SchemeBearer, query.SchemeBasic.
	AuthScheme string
	Org        string // unused by InfluxQL; kept for configuration compatibility
	// Database and RetentionPolicy are queried; when Database is empty they
	// come from Bucket ("telemetry/autogen").
	Database        string
	RetentionPolicy string
	Bucket          string
	// Timeout bounds one query.
	Timeout time.Duration
}

// Store queries InfluxDB.
type Store struct {
	cfg Config
	r   *query.Reader
}

// New returns a Store. It does not connect.
func New(cfg Config) *Store {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.Database == "" {
		cfg.Database, cfg.RetentionPolicy = query.SplitBucket(cfg.Bucket)
	}
	if cfg.Bucket == "" {
		cfg.Bucket = cfg.Database
		if cfg.RetentionPolicy != "" {
			cfg.Bucket += "/" + cfg.RetentionPolicy
		}
	}
	return &Store{cfg: cfg, r: query.New(query.Config{URL: cfg.URL, Database: cfg.Database,
		RetentionPolicy: cfg.RetentionPolicy, Token: cfg.Token, AuthScheme: cfg.AuthScheme, Timeout: cfg.Timeout})}
}

// Close releases idle connections. Safe to call more than once.
func (s *Store) Close() { s.r.Close() }

// Bucket is the database/retention policy queried.
func (s *Store) Bucket() string { return s.cfg.Bucket }

// Series runs InfluxQL q and returns its series.
func (s *Store) Series(ctx context.Context, q string) ([]query.Series, error) {
	out, err := s.r.Series(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQuery, err)
	}
	return out, nil
}

// Rows runs InfluxQL q and calls f with each row (columns, the series'
// tags, and "time").
func (s *Store) Rows(ctx context.Context, q string, f func(map[string]any)) error {
	series, err := s.Series(ctx, q)
	for _, se := range series {
		for _, r := range se.Rows() {
			f(r)
		}
	}
	return err
}

func str(r map[string]any, k string) string {
	v, _ := r[k].(string)
	return v
}

func tm(r map[string]any) time.Time {
	t, _ := r["time"].(time.Time)
	return t
}

func numKey(r map[string]any, k string) float64 {
	f, _ := query.Float(r[k])
	return f
}

// since is the WHERE condition of the last lookback.
func since(lookback time.Duration) string { return "time >= now() - " + query.Duration(lookback) }

// Point is one sample of a series.
type Point struct {
	T time.Time `json:"t"`
	V float64   `json:"v"`
}

// Aggregations accepted by SignalHistory.
var Aggregations = []string{"mean", "min", "max", "last"}

// SignalHistory returns, per VSS path, the points of vin's signals in
// [start, stop), aggregated over window with fn (mean, min, max, last).
// Booleans and integers are returned as numbers (true = 1). A point's time
// is the end of its window (at most stop), as Flux's aggregateWindow gave.
func (s *Store) SignalHistory(ctx context.Context, vin string, paths []string, start, stop time.Time, window time.Duration, fn string) (map[string][]Point, error) {
	if !slices.Contains(Aggregations, fn) {
		return nil, fmt.Errorf("%w: aggregation %q", ErrQuery, fn)
	}
	out := make(map[string][]Point, len(paths))
	for _, p := range paths {
		out[p] = []Point{}
	}
	if len(paths) == 0 {
		return out, nil
	}
	window = max(window.Truncate(time.Second), time.Second)
	where := fmt.Sprintf(`"vin" = %s AND time >= %s AND time < %s`, query.String(vin), query.Time(start), query.Time(stop))
	// InfluxQL has no mean of booleans: those are averaged here from the
	// raw points (bounded), with the same windows.
	var bools map[string]bool
	if fn == "mean" {
		var err error
		if bools, err = s.boolFields(ctx, "telemetry"); err != nil {
			return out, err
		}
	}
	stmts := make([]string, 0, len(paths))
	for _, p := range paths {
		if bools[p] {
			stmts = append(stmts, fmt.Sprintf(`SELECT %s AS "v" FROM "telemetry" WHERE %s LIMIT %d`, query.Ident(p), where, maxRows))
			continue
		}
		stmts = append(stmts, fmt.Sprintf(`SELECT %s(%s) AS "v" FROM "telemetry" WHERE %s GROUP BY time(%s) fill(none) LIMIT %d`,
			fn, query.Ident(p), where, query.Duration(window), maxRows))
	}
	res, err := s.r.Query(ctx, strings.Join(stmts, "; "))
	if err != nil {
		return out, fmt.Errorf("%w: %w", ErrQuery, err)
	}
	end := func(t time.Time) time.Time {
		t = t.Add(window)
		if t.After(stop) {
			t = stop
		}
		return t.UTC()
	}
	for i, r := range res {
		if i >= len(paths) {
			break
		}
		p := paths[i]
		if r.Err != "" {
			return out, fmt.Errorf("%w: %w: %s", ErrQuery, query.ErrStatement, r.Err)
		}
		if bools[p] {
			type acc struct{ sum, n float64 }
			ws := map[time.Time]*acc{}
			for _, se := range r.Series {
				for _, row := range se.Rows() {
					v, ok := query.Float(row["v"])
					if !ok {
						continue
					}
					w := tm(row).Truncate(window)
					a := ws[w]
					if a == nil {
						a = &acc{}
						ws[w] = a
					}
					a.sum, a.n = a.sum+v, a.n+1
				}
			}
			for w, a := range ws {
				out[p] = append(out[p], Point{T: end(w), V: a.sum / a.n})
			}
		} else {
			for _, se := range r.Series {
				for _, row := range se.Rows() {
					if v, ok := query.Float(row["v"]); ok {
						out[p] = append(out[p], Point{T: end(tm(row)), V: v})
					}
				}
			}
		}
		slices.SortFunc(out[p], func(a, b Point) int { return a.T.Compare(b.T) })
	}
	return out, nil
}

// fieldTypes returns measurement's fields and their types (SHOW FIELD KEYS).
func (s *Store) fieldTypes(ctx context.Context, measurement string) (map[string]string, error) {
	out := map[string]string{}
	err := s.Rows(ctx, "SHOW FIELD KEYS FROM "+query.Ident(measurement), func(r map[string]any) {
		out[str(r, "fieldKey")] = str(r, "fieldType")
	})
	return out, err
}

func (s *Store) boolFields(ctx context.Context, measurement string) (map[string]bool, error) {
	ft, err := s.fieldTypes(ctx, measurement)
	out := map[string]bool{}
	for f, t := range ft {
		if t == "boolean" {
			out[f] = true
		}
	}
	return out, err
}

// Latest returns the last value of every telemetry field of vin within
// lookback (field → value and time).
func (s *Store) Latest(ctx context.Context, vin string, lookback time.Duration) (map[string]Point, error) {
	out := map[string]Point{}
	ft, err := s.fieldTypes(ctx, "telemetry")
	if err != nil {
		return out, err
	}
	fields := make([]string, 0, len(ft))
	for f := range ft {
		if f != "seq" {
			fields = append(fields, f)
		}
	}
	slices.Sort(fields)
	if len(fields) == 0 {
		return out, nil
	}
	// One selector per statement: its row carries the point's own time.
	stmts := make([]string, len(fields))
	for i, f := range fields {
		stmts[i] = fmt.Sprintf(`SELECT last(%s) AS "v" FROM "telemetry" WHERE "vin" = %s AND %s`, query.Ident(f), query.String(vin), since(lookback))
	}
	res, err := s.r.Query(ctx, strings.Join(stmts, "; "))
	if err != nil {
		return out, fmt.Errorf("%w: %w", ErrQuery, err)
	}
	for i, r := range res {
		if i >= len(fields) || r.Err != "" {
			continue
		}
		for _, se := range r.Series {
			for _, row := range se.Rows() {
				if v, ok := query.Float(row["v"]); ok {
					out[fields[i]] = Point{T: tm(row).UTC(), V: v}
				}
			}
		}
	}
	return out, nil
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
	q := fmt.Sprintf(`SELECT last("connected") AS "connected" FROM "connectivity" WHERE %s GROUP BY "device" SLIMIT %d`, since(lookback), maxSeries)
	var out []Connectivity
	err := s.Rows(ctx, q, func(r map[string]any) {
		b, _ := r["connected"].(bool)
		out = append(out, Connectivity{Device: str(r, "device"), Connected: b, Time: tm(r)})
	})
	return out, err
}

// LastSeen returns the time of every vehicle's last telemetry frame within
// lookback.
func (s *Store) LastSeen(ctx context.Context, lookback time.Duration) (map[string]time.Time, error) {
	q := fmt.Sprintf(`SELECT last("seq") FROM "telemetry" WHERE %s GROUP BY "vin" SLIMIT %d`, since(lookback), maxSeries)
	out := map[string]time.Time{}
	err := s.Rows(ctx, q, func(r map[string]any) { out[str(r, "vin")] = tm(r) })
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
	q := fmt.Sprintf(`SELECT "dtcs", "mil", "odometer_km" FROM "diag" WHERE %s GROUP BY "vin" ORDER BY time DESC LIMIT 1 SLIMIT %d`,
		since(lookback), maxSeries)
	byVIN := map[string]*Diag{}
	err := s.Rows(ctx, q, func(r map[string]any) {
		vin := str(r, "vin")
		d := byVIN[vin]
		if d == nil || tm(r).After(d.Time) {
			d = &Diag{VIN: vin, Time: tm(r)}
			byVIN[vin] = d
		}
		if v, ok := r["dtcs"].(string); ok {
			d.DTCs = v
		}
		if v, ok := r["mil"].(bool); ok {
			d.MIL = v
		}
		if v, ok := query.Float(r["odometer_km"]); ok {
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
	where := since(lookback)
	if vin != "" {
		where = `"vin" = ` + query.String(vin) + " AND " + where
	}
	q := fmt.Sprintf(`SELECT first("status") AS "status" FROM "dtc" WHERE %[1]s GROUP BY "vin", "code" SLIMIT %[2]d; `+
		`SELECT last("status") AS "status" FROM "dtc" WHERE %[1]s GROUP BY "vin", "code" SLIMIT %[2]d`, where, maxSeries)
	res, err := s.r.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQuery, err)
	}
	if len(res) != 2 {
		return nil, fmt.Errorf("%w: %w: %d results for 2 statements", ErrQuery, query.ErrResponse, len(res))
	}
	type key struct{ vin, code string }
	m := map[key]*CodeSeen{}
	for i, r := range res {
		if r.Err != "" {
			return nil, fmt.Errorf("%w: %w: %s", ErrQuery, query.ErrStatement, r.Err)
		}
		for _, se := range r.Series {
			for _, row := range se.Rows() {
				k := key{str(row, "vin"), str(row, "code")}
				c := m[k]
				if c == nil {
					c = &CodeSeen{VIN: k.vin, Code: k.code}
					m[k] = c
				}
				if i == 0 {
					c.First = tm(row)
				} else {
					c.Last = tm(row)
					c.LastStatus = int(numKey(row, "status"))
				}
			}
		}
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
	// vin is a field of `charging` (the series are the station's).
	q := fmt.Sprintf(`SELECT "session_id", "energy_wh", "power_w", "soc_pct", "target_soc_pct", "station", "connector", "event" `+
		`FROM "charging" WHERE "vin"::field = %s AND %s ORDER BY time ASC LIMIT %d`, query.String(vin), since(lookback), maxRows)
	m := map[string]*ChargingSession{}
	err := s.Rows(ctx, q, func(r map[string]any) {
		id := str(r, "station") + "/" + str(r, "session_id")
		c := m[id]
		t := tm(r).UTC()
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
		out = out[:max(limit, 0)]
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
	q := fmt.Sprintf(`SELECT "cmd_id", "status_name", "reason" FROM "command_ack" WHERE "vin" = %s AND %s ORDER BY time DESC LIMIT %d`,
		query.String(vin), since(lookback), query.Limit(limit, maxRows))
	var out []Ack
	err := s.Rows(ctx, q, func(r map[string]any) {
		out = append(out, Ack{CmdID: str(r, "cmd_id"), Status: str(r, "status_name"), Reason: str(r, "reason"), Time: tm(r).UTC()})
	})
	return out, err
}
