// Package fleetstate is the dashboard's in-memory projection of the fleet:
// per vehicle whether it is connected, when it was last seen, its open DTCs
// with first/last seen, MIL and odometer, and the last value of every
// signal. It is fed by the caller (NATS events, the live telemetry hub and
// an initial load from InfluxDB) and answers the fleet list, vehicle and
// alert queries without touching InfluxDB. All methods are safe for
// concurrent use.
package fleetstate

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/dtc"
	"github.com/telegate/telegate/decoders/wire"
)

// Health of a vehicle, from its open DTCs and MIL.
const (
	HealthOK       = "ok"
	HealthWarning  = "warning"
	HealthCritical = "critical"
)

// Models are the display models derived from the VIN (the registry has no
// model): see ModelOf.
var Models = []string{"Aero EV", "Terra SUV", "Urbo Hatch", "Cargo Van"}

// ModelOf derives a stable display model from a VIN: the VIN's trailing
// serial number modulo len(Models) (the simulator's VINs end in a serial),
// or an FNV hash of the VIN when it does not end in digits.
func ModelOf(vin string) string {
	i := len(vin)
	for i > 0 && vin[i-1] >= '0' && vin[i-1] <= '9' && len(vin)-i < 9 {
		i--
	}
	if n, err := strconv.Atoi(vin[i:]); err == nil && i < len(vin) {
		return Models[(n+len(Models)-1)%len(Models)]
	}
	h := fnv.New32a()
	h.Write([]byte(vin))
	return Models[h.Sum32()%uint32(len(Models))]
}

// DTC is an open diagnostic trouble code of a vehicle.
type DTC struct {
	Code        string    `json:"code"`
	Status      string    `json:"status"` // pending | confirmed | permanent
	Description string    `json:"description"`
	Severity    string    `json:"severity"` // info | warning | critical
	FirstSeen   time.Time `json:"first_seen"`
	LastSeen    time.Time `json:"last_seen"`
}

// Value is the last value of a signal.
type Value struct {
	Path  string    `json:"path"`
	Unit  string    `json:"unit,omitempty"`
	Value float64   `json:"value"`
	Time  time.Time `json:"time"`
}

type vehicle struct {
	vin, model  string
	connected   bool
	connTime    time.Time
	lastSeen    time.Time
	mil         bool
	odometer    float64
	diagTime    time.Time
	dtcs        map[string]*DTC
	values      map[uint16]Value
	valuesTimes int64 // ms of the newest telemetry applied
}

// Summary is one row of the fleet list.
type Summary struct {
	VIN        string    `json:"vin"`
	Model      string    `json:"model"`
	Connected  bool      `json:"connected"`
	LastSeen   time.Time `json:"last_seen,omitzero"`
	Health     string    `json:"health"`
	MIL        bool      `json:"mil"`
	OdometerKm float64   `json:"odometer_km"`
	DTCs       []string  `json:"dtcs"`
	SpeedKmh   *float64  `json:"speed_kmh,omitempty"`
	SoCPct     *float64  `json:"soc_pct,omitempty"`
}

// Detail is one vehicle with its open DTCs and last values.
type Detail struct {
	Summary
	ConnectivityChanged time.Time `json:"connectivity_changed,omitzero"`
	LastDiag            time.Time `json:"last_diag,omitzero"`
	OpenDTCs            []DTC     `json:"open_dtcs"`
	Values              []Value   `json:"values"`
}

// Alert is an open DTC of a vehicle (fleet-wide alert list).
type Alert struct {
	VIN   string `json:"vin"`
	Model string `json:"model"`
	DTC
}

// State is the projection.
type State struct {
	mu       sync.RWMutex
	vehicles map[string]*vehicle
	order    []string // sorted VINs
	dirty    bool
}

// New returns a state holding vins (registered vehicles), all disconnected
// and never seen.
func New(vins []string) *State {
	s := &State{vehicles: make(map[string]*vehicle, len(vins))}
	for _, v := range vins {
		s.addLocked(v)
	}
	return s
}

func (s *State) addLocked(vin string) *vehicle {
	v := s.vehicles[vin]
	if v == nil {
		v = &vehicle{vin: vin, model: ModelOf(vin), dtcs: map[string]*DTC{}, values: map[uint16]Value{}}
		s.vehicles[vin] = v
		s.dirty = true
	}
	return v
}

// Known reports whether vin is in the fleet.
func (s *State) Known(vin string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.vehicles[vin]
	return ok
}

// Len is the number of vehicles.
func (s *State) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.vehicles)
}

// Counts returns the number of vehicles connected, and with health warning
// or critical.
func (s *State) Counts() (total, connected, warning, critical int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, v := range s.vehicles {
		total++
		if v.connected {
			connected++
		}
		switch v.health() {
		case HealthWarning:
			warning++
		case HealthCritical:
			critical++
		}
	}
	return
}

// Telemetry applies a telemetry frame: last seen and last values. Only
// known vehicles are tracked (the registry is the fleet).
func (s *State) Telemetry(vin string, tsMs int64, sigs []wire.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vehicles[vin]
	if v == nil {
		return
	}
	t := time.UnixMilli(tsMs).UTC()
	if t.After(v.lastSeen) {
		v.lastSeen = t
	}
	if tsMs < v.valuesTimes {
		return // an older frame (replay): keep the newer values
	}
	v.valuesTimes = tsMs
	for _, x := range sigs {
		sig, ok := catalog.Lookup(x.ID)
		if !ok || !sig.Valid(x.Value) {
			continue
		}
		v.values[x.ID] = Value{Path: sig.Path, Unit: sig.Unit, Value: x.Value, Time: t}
	}
}

// SetValue sets one last value (initial load from InfluxDB), unless a newer
// one is already known.
func (s *State) SetValue(vin, path string, val float64, t time.Time) {
	sig, ok := catalog.ByPath(path)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vehicles[vin]
	if v == nil {
		return
	}
	if cur, ok := v.values[sig.ID]; ok && !cur.Time.Before(t) {
		return
	}
	v.values[sig.ID] = Value{Path: sig.Path, Unit: sig.Unit, Value: val, Time: t.UTC()}
	if t.After(v.lastSeen) {
		v.lastSeen = t.UTC()
	}
}

// Seen records that the vehicle sent something at t.
func (s *State) Seen(vin string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.vehicles[vin]; v != nil && t.After(v.lastSeen) {
		v.lastSeen = t.UTC()
	}
}

// Connectivity applies a connected/disconnected event at t. An event older
// than the one already applied is ignored (replays, initial load racing
// live events).
func (s *State) Connectivity(vin string, connected bool, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vehicles[vin]
	if v == nil || t.Before(v.connTime) {
		return
	}
	v.connected, v.connTime = connected, t.UTC()
	if connected && t.After(v.lastSeen) {
		v.lastSeen = t.UTC()
	}
}

// Diag applies a full diagnostics snapshot (the `diag` measurement's
// fields): dtcs is "P0301:confirmed,P0420:pending" ("" when none). Codes
// not in the snapshot are closed; first seen is kept for codes that stay
// open. Older snapshots than the last applied are ignored.
func (s *State) Diag(vin string, t time.Time, mil bool, odometerKm float64, dtcs string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vehicles[vin]
	if v == nil || t.Before(v.diagTime) {
		return
	}
	v.diagTime, v.mil, v.odometer = t.UTC(), mil, odometerKm
	if t.After(v.lastSeen) {
		v.lastSeen = t.UTC()
	}
	open := map[string]string{}
	for item := range strings.SplitSeq(dtcs, ",") {
		code, status, _ := strings.Cut(strings.TrimSpace(item), ":")
		if code != "" {
			open[code] = status
		}
	}
	for code := range v.dtcs {
		if _, ok := open[code]; !ok {
			delete(v.dtcs, code)
		}
	}
	for code, status := range open {
		d := v.dtcs[code]
		if d == nil {
			d = newDTC(code, t)
			v.dtcs[code] = d
		}
		d.Status = status
		if t.After(d.LastSeen) {
			d.LastSeen = t.UTC()
		}
	}
}

func newDTC(code string, t time.Time) *DTC {
	d := &DTC{Code: code, FirstSeen: t.UTC(), LastSeen: t.UTC(), Severity: dtc.Warning.String()}
	if c, err := dtc.Parse(code); err == nil {
		desc, sev, _ := dtc.Describe(c)
		d.Description, d.Severity = desc, sev.String()
	}
	if d.Description == "" {
		d.Description = "Manufacturer-specific or uncommon code"
	}
	return d
}

// DTCEvent applies a telemetry.dtc.{raised|updated|cleared} event: status
// is the new status ("cleared" closes the code). t is the report's time.
func (s *State) DTCEvent(vin, code, status string, mil bool, odometerKm float64, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vehicles[vin]
	if v == nil {
		return
	}
	if !t.Before(v.diagTime) {
		v.mil, v.odometer = mil, odometerKm
	}
	if t.After(v.lastSeen) {
		v.lastSeen = t.UTC()
	}
	d := v.dtcs[code]
	if status == "cleared" {
		if d != nil && !t.Before(d.LastSeen) {
			delete(v.dtcs, code)
		}
		return
	}
	if d == nil {
		if t.Before(v.diagTime) {
			return // a later snapshot already decided this code's state
		}
		d = newDTC(code, t)
		v.dtcs[code] = d
	}
	if t.Before(d.FirstSeen) {
		d.FirstSeen = t.UTC()
	}
	if !t.Before(d.LastSeen) {
		d.Status, d.LastSeen = status, t.UTC()
	}
}

// DTCSeen refines the first/last seen of an open code (from the `dtc`
// measurement: one point per report carrying the code).
func (s *State) DTCSeen(vin, code string, first, last time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vehicles[vin]
	if v == nil {
		return
	}
	d := v.dtcs[code]
	if d == nil {
		return
	}
	if !first.IsZero() && first.Before(d.FirstSeen) {
		d.FirstSeen = first.UTC()
	}
	if last.After(d.LastSeen) {
		d.LastSeen = last.UTC()
	}
}

func (v *vehicle) health() string {
	h := HealthOK
	if v.mil {
		h = HealthWarning
	}
	for _, d := range v.dtcs {
		if d.Severity == "critical" {
			return HealthCritical
		}
		h = HealthWarning
	}
	return h
}

func (v *vehicle) summary() Summary {
	s := Summary{VIN: v.vin, Model: v.model, Connected: v.connected, LastSeen: v.lastSeen, Health: v.health(),
		MIL: v.mil, OdometerKm: v.odometer, DTCs: make([]string, 0, len(v.dtcs))}
	for c := range v.dtcs {
		s.DTCs = append(s.DTCs, c)
	}
	slices.Sort(s.DTCs)
	if x, ok := v.values[catalog.Speed]; ok {
		s.SpeedKmh = &x.Value
	}
	if x, ok := v.values[catalog.TractionSoC]; ok {
		s.SoCPct = &x.Value
	}
	return s
}

// Filter selects vehicles of the fleet list. Empty fields match all.
type Filter struct {
	// Query matches a VIN substring (case-insensitive).
	Query string
	// Model matches the display model exactly (case-insensitive).
	Model string
	// DTC matches vehicles with this open code (prefix, e.g. "P03").
	DTC string
	// Status is "connected" or "disconnected".
	Status string
	// Health is ok, warning or critical.
	Health string
	// Sort is "vin" (default), "last_seen" (newest first) or "health"
	// (critical first).
	Sort string
}

// Page is one page of the fleet list.
type Page struct {
	Total    int       `json:"total"`
	Page     int       `json:"page"`
	PageSize int       `json:"page_size"`
	Items    []Summary `json:"items"`
}

func (s *State) sortedLocked() []string {
	if s.dirty || len(s.order) != len(s.vehicles) {
		s.order = s.order[:0]
		for vin := range s.vehicles {
			s.order = append(s.order, vin)
		}
		slices.Sort(s.order)
		s.dirty = false
	}
	return s.order
}

func (f Filter) match(v *vehicle) bool {
	if f.Query != "" && !strings.Contains(v.vin, strings.ToUpper(f.Query)) &&
		!strings.Contains(strings.ToLower(v.model), strings.ToLower(f.Query)) {
		return false
	}
	if f.Model != "" && !strings.EqualFold(f.Model, v.model) {
		return false
	}
	if f.Status == "connected" && !v.connected || f.Status == "disconnected" && v.connected {
		return false
	}
	if f.Health != "" && v.health() != f.Health {
		return false
	}
	if f.DTC != "" {
		want := strings.ToUpper(f.DTC)
		found := false
		for c := range v.dtcs {
			if strings.HasPrefix(c, want) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func healthRank(h string) int {
	switch h {
	case HealthCritical:
		return 0
	case HealthWarning:
		return 1
	}
	return 2
}

// List returns page (1-based) of size pageSize of the vehicles matching f.
func (s *State) List(f Filter, page, pageSize int) Page {
	s.mu.Lock() // sortedLocked may rebuild the order
	order := s.sortedLocked()
	matched := make([]*vehicle, 0, 64)
	for _, vin := range order {
		if v := s.vehicles[vin]; f.match(v) {
			matched = append(matched, v)
		}
	}
	switch f.Sort {
	case "last_seen":
		slices.SortStableFunc(matched, func(a, b *vehicle) int { return b.lastSeen.Compare(a.lastSeen) })
	case "health":
		slices.SortStableFunc(matched, func(a, b *vehicle) int { return cmp.Compare(healthRank(a.health()), healthRank(b.health())) })
	}
	p := Page{Total: len(matched), Page: page, PageSize: pageSize, Items: []Summary{}}
	from := (page - 1) * pageSize
	for i := from; i < len(matched) && i < from+pageSize; i++ {
		p.Items = append(p.Items, matched[i].summary())
	}
	s.mu.Unlock()
	return p
}

// Get returns one vehicle.
func (s *State) Get(vin string) (Detail, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v := s.vehicles[vin]
	if v == nil {
		return Detail{}, false
	}
	d := Detail{Summary: v.summary(), ConnectivityChanged: v.connTime, LastDiag: v.diagTime,
		OpenDTCs: make([]DTC, 0, len(v.dtcs)), Values: make([]Value, 0, len(v.values))}
	for _, x := range v.dtcs {
		d.OpenDTCs = append(d.OpenDTCs, *x)
	}
	sortDTCs(d.OpenDTCs)
	for _, x := range v.values {
		d.Values = append(d.Values, x)
	}
	slices.SortFunc(d.Values, func(a, b Value) int { return strings.Compare(a.Path, b.Path) })
	return d, true
}

func sevRank(s string) int {
	switch s {
	case "critical":
		return 0
	case "warning":
		return 1
	}
	return 2
}

func sortDTCs(ds []DTC) {
	slices.SortFunc(ds, func(a, b DTC) int {
		if c := cmp.Compare(sevRank(a.Severity), sevRank(b.Severity)); c != 0 {
			return c
		}
		return strings.Compare(a.Code, b.Code)
	})
}

// AlertFilter selects alerts. Empty fields match all.
type AlertFilter struct {
	Severity string // info | warning | critical
	Code     string // code prefix
	Status   string // pending | confirmed | permanent
	Query    string // VIN substring
}

// Alerts returns the open DTCs of the fleet matching f, most severe first,
// then most recently seen first, and the total before truncation to limit.
func (s *State) Alerts(f AlertFilter, limit int) ([]Alert, int) {
	s.mu.RLock()
	var out []Alert
	for _, v := range s.vehicles {
		if f.Query != "" && !strings.Contains(v.vin, strings.ToUpper(f.Query)) {
			continue
		}
		for _, d := range v.dtcs {
			if f.Severity != "" && d.Severity != f.Severity || f.Status != "" && d.Status != f.Status ||
				f.Code != "" && !strings.HasPrefix(d.Code, strings.ToUpper(f.Code)) {
				continue
			}
			out = append(out, Alert{VIN: v.vin, Model: v.model, DTC: *d})
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b Alert) int {
		if c := cmp.Compare(sevRank(a.Severity), sevRank(b.Severity)); c != 0 {
			return c
		}
		if c := b.LastSeen.Compare(a.LastSeen); c != 0 {
			return c
		}
		return strings.Compare(a.VIN+a.Code, b.VIN+b.Code)
	})
	total := len(out)
	if len(out) > limit {
		out = out[:limit]
	}
	return out, total
}

// String is a short description (logs).
func (s *State) String() string {
	t, c, w, cr := s.Counts()
	return fmt.Sprintf("%d vehicles, %d connected, %d warning, %d critical", t, c, w, cr)
}
