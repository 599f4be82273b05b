// Package partners is the charging-partner registry (partners, venues,
// opening hours, offers, availability) and the delivery of triggers to
// partners: over NATS (a durable pull consumer per partner, natsdelivery.go;
// each partner's credentials can read only its own triggers) and over signed HTTPS webhooks (webhook.go).
package partners

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // the zones are embedded: the runtime image (alpine) ships no zoneinfo, and a venue whose zone does not load is never open

	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/internal/loglimit"
)

// Bucket holds partners registered or changed through the API and venue
// availability switches.
const Bucket = "partners"

// Errors of the registry.
var (
	ErrUnknownPartner = fmt.Errorf("unknown partner: %w", svc.ErrNotFound)
	ErrUnknownVenue   = fmt.Errorf("unknown venue: %w", svc.ErrNotFound)
)

// Partner is a charging partner (e.g. a café chain).
type Partner struct {
	ID   string `json:"id" yaml:"id"`
	Name string `json:"name" yaml:"name"`
	NATS *NATS  `json:"nats,omitempty" yaml:"nats"`
	// APITokenSHA256 is the hex SHA-256 of the partner's bearer token for
	// the services API (redeem offers, flip availability, see deliveries).
	APITokenSHA256 string   `json:"api_token_sha256,omitempty" yaml:"api_token_sha256"`
	Webhook        *Webhook `json:"webhook,omitempty" yaml:"webhook"`
	Venues         []Venue  `json:"venues" yaml:"venues"`
}

// NATS are the partner's credentials on the embedded NATS server.
type NATS struct {
	User string `json:"user" yaml:"user"`
	// PasswordBcrypt is the bcrypt hash of the partner's password.
	PasswordBcrypt string `json:"password_bcrypt" yaml:"password_bcrypt"`
}

// Webhook is the partner's HTTPS endpoint and signing secret.
type Webhook struct {
	URL    string `json:"url" yaml:"url"`
	Secret string `json:"secret" yaml:"secret"`
}

// Venue is a partner location that can receive triggers.
type Venue struct {
	ID       string  `json:"id" yaml:"id"`
	Name     string  `json:"name" yaml:"name"`
	Lat      float64 `json:"lat" yaml:"lat"`
	Lon      float64 `json:"lon" yaml:"lon"`
	RadiusM  float64 `json:"radius_m" yaml:"radius_m"`
	TimeZone string  `json:"timezone" yaml:"timezone"`
	Hours    []Hours `json:"hours" yaml:"hours"`
	Offer    Offer   `json:"offer" yaml:"offer"`
	// MinDwell is the minimum expected dwell for an offer ("15m").
	MinDwell Duration `json:"min_dwell" yaml:"min_dwell"`
	// DailyCap is the maximum number of offers per driver per local day.
	DailyCap  int  `json:"daily_cap" yaml:"daily_cap"`
	Available bool `json:"available" yaml:"available"`
}

// Hours is one opening-hours rule: on the given weekdays, from Open to
// Close (local "HH:MM"; Close may be "24:00"; Close before Open spans
// midnight).
type Hours struct {
	Days  []string `json:"days" yaml:"days"` // mon..sun
	Open  string   `json:"open" yaml:"open"`
	Close string   `json:"close" yaml:"close"`
}

// Offer is what the driver and the partner see.
type Offer struct {
	Text string `json:"text" yaml:"text"`
	Code string `json:"code" yaml:"code"`
}

// Duration is a time.Duration written as "15m" in YAML and JSON.
type Duration time.Duration

// UnmarshalYAML parses "15m".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error { return d.parse(n.Value) }

// UnmarshalJSON parses "15m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	return d.parse(s)
}

// MarshalJSON writes "15m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) parse(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday,
	"wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

func parseClock(s string) (int, error) {
	var h, m int
	if len(s) != 5 || s[2] != ':' {
		return 0, fmt.Errorf("%w: time %q: want HH:MM", svc.ErrInvalid, s)
	}
	if _, err := fmt.Sscanf(s, "%02d:%02d", &h, &m); err != nil || h > 24 || m > 59 || (h == 24 && m != 0) {
		return 0, fmt.Errorf("%w: time %q: want HH:MM", svc.ErrInvalid, s)
	}
	return h*60 + m, nil
}

// Validate checks a partner (untrusted input from the API or a file).
func (p Partner) Validate() error { return p.validate(true) }

// validate checks a partner. strict false accepts an opening-hours rule
// whose window is empty (open equals close): releases before the rule was
// refused stored such partners in the bucket, and dropping the whole entry
// on load would take the partner's other venues, API token and NATS user
// away with it (the rule itself stays never open, as it always was).
func (p Partner) validate(strict bool) error {
	var errs []error
	bad := func(f string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+f, append([]any{svc.ErrInvalid}, a...)...))
	}
	if !svc.ValidID(p.ID) || strings.Contains(p.ID, "_") {
		bad("partner id %q: want 1-64 letters, digits or '-'", p.ID)
	}
	if p.ID == ReservedPartnerID {
		bad("partner id %q is reserved", p.ID)
	}
	if len(p.Name) > 200 {
		bad("name longer than 200 bytes")
	}
	if p.NATS != nil && (!svc.ValidID(p.NATS.User) || !strings.HasPrefix(p.NATS.PasswordBcrypt, "$2")) {
		bad("nats: user must be an id and password_bcrypt a bcrypt hash")
	}
	if p.NATS != nil && natsbus.InternalUser(p.NATS.User) {
		// The embedded server would refuse every partner account.
		bad("nats: user %q is one of the gateway's own users", p.NATS.User)
	}
	if p.APITokenSHA256 != "" && len(p.APITokenSHA256) != 64 {
		bad("api_token_sha256: want 64 hex digits")
	}
	if p.Webhook != nil {
		u, err := url.Parse(p.Webhook.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			// Named without its query and user info, which may hold a token
			// (the error is answered, and logged when a file is loaded).
			bad("webhook url %q: want https://host/...", loglimit.URL(p.Webhook.URL))
		}
		if len(p.Webhook.Secret) < 16 {
			bad("webhook secret: at least 16 bytes")
		}
	}
	if len(p.Venues) > 1000 {
		bad("more than 1000 venues")
	}
	seen := map[string]bool{}
	for _, v := range p.Venues {
		if seen[v.ID] {
			bad("venue %s listed twice", v.ID)
		}
		seen[v.ID] = true
		if err := v.validate(strict); err != nil {
			errs = append(errs, fmt.Errorf("venue %s: %w", v.ID, err))
		}
	}
	return errors.Join(errs...)
}

// Validate checks a venue.
func (v Venue) Validate() error { return v.validate(true) }

// validate checks a venue; strict false accepts empty opening-hours
// windows (Partner.validate).
func (v Venue) validate(strict bool) error {
	var errs []error
	bad := func(f string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+f, append([]any{svc.ErrInvalid}, a...)...))
	}
	if !svc.ValidID(v.ID) {
		bad("venue id %q", v.ID)
	}
	if math.IsNaN(v.Lat) || math.IsNaN(v.Lon) || v.Lat < -90 || v.Lat > 90 || v.Lon < -180 || v.Lon > 180 {
		bad("lat/lon out of range")
	}
	if !(v.RadiusM > 0 && v.RadiusM <= 50000) {
		bad("radius_m %v: want 0 < r <= 50000", v.RadiusM)
	}
	if _, err := time.LoadLocation(v.TimeZone); err != nil || v.TimeZone == "" {
		bad("timezone %q: want an IANA zone such as Europe/Berlin", v.TimeZone)
	}
	if len(v.Hours) == 0 || len(v.Hours) > 50 {
		bad("hours: 1-50 rules")
	}
	for _, h := range v.Hours {
		if len(h.Days) == 0 {
			bad("hours: days missing")
		}
		for _, d := range h.Days {
			if _, ok := weekdays[d]; !ok {
				bad("hours: day %q: want mon..sun", d)
			}
		}
		o, oerr := parseClock(h.Open)
		if oerr != nil {
			errs = append(errs, oerr)
		}
		c, cerr := parseClock(h.Close)
		if cerr != nil {
			errs = append(errs, cerr)
		}
		if strict && oerr == nil && cerr == nil && emptyWindow(o, c) {
			// OpenAt would never be open ("00:00"-"00:00" read as all day
			// elsewhere): refused rather than silently closed.
			bad("hours: open %s equals close %s: an empty window (all day is \"00:00\"-\"24:00\")", h.Open, h.Close)
		}
	}
	if v.Offer.Code == "" || len(v.Offer.Code) > 64 || len(v.Offer.Text) > 500 {
		bad("offer: code 1-64 bytes, text at most 500 bytes")
	}
	if v.MinDwell < 0 || time.Duration(v.MinDwell) > 24*time.Hour {
		bad("min_dwell out of 0..24h")
	}
	if v.DailyCap < 1 || v.DailyCap > 1000 {
		bad("daily_cap %d: want 1..1000", v.DailyCap)
	}
	return errors.Join(errs...)
}

// emptyWindow reports whether an opening-hours rule from o to c (minutes
// of the day, 0-1440) is never open.
func emptyWindow(o, c int) bool { return o == c || (o == 24*60 && c == 0) }

// legacyHours reports whether p has an empty opening-hours window (stored
// by a release that accepted them).
func (p Partner) legacyHours() bool {
	for _, v := range p.Venues {
		for _, h := range v.Hours {
			o, oerr := parseClock(h.Open)
			c, cerr := parseClock(h.Close)
			if oerr == nil && cerr == nil && emptyWindow(o, c) {
				return true
			}
		}
	}
	return false
}

// OpenAt reports whether the venue is open at t (in its time zone).
// Day is the venue's local calendar day of t ("20060102", in its time
// zone: a DST day has 23 or 25 hours), the day a daily cap counts in; ""
// for a venue whose zone does not load (Validate refuses it).
func (v Venue) Day(t time.Time) string {
	loc, err := time.LoadLocation(v.TimeZone)
	if err != nil {
		return ""
	}
	return t.In(loc).Format("20060102")
}

func (v Venue) OpenAt(t time.Time) bool {
	loc, err := time.LoadLocation(v.TimeZone)
	if err != nil {
		return false
	}
	lt := t.In(loc)
	mins := lt.Hour()*60 + lt.Minute()
	for _, h := range v.Hours {
		o, _ := parseClock(h.Open)
		c, _ := parseClock(h.Close)
		for _, d := range h.Days {
			wd := weekdays[d]
			if o <= c {
				if lt.Weekday() == wd && mins >= o && mins < c {
					return true
				}
				continue
			}
			// Spans midnight: open on day d from o, until c on the next day.
			if (lt.Weekday() == wd && mins >= o) || (lt.Weekday() == (wd+1)%7 && mins < c) {
				return true
			}
		}
	}
	return false
}

// File is the partners.yaml format.
type File struct {
	Partners []Partner `yaml:"partners"`
}

// LoadFile reads and validates partners.yaml.
func LoadFile(path string) ([]Partner, error) {
	var f File
	if err := svc.LoadYAML(path, &f); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	users := map[string]bool{}
	for _, p := range f.Partners {
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("%s: partner %s: %w", path, p.ID, err)
		}
		if seen[p.ID] {
			return nil, fmt.Errorf("%s: %w: partner %s listed twice", path, svc.ErrInvalid, p.ID)
		}
		seen[p.ID] = true
		if p.NATS != nil {
			if users[p.NATS.User] {
				return nil, fmt.Errorf("%s: %w: nats user %s used twice", path, svc.ErrInvalid, p.NATS.User)
			}
			users[p.NATS.User] = true
		}
	}
	return f.Partners, nil
}

// Registry holds the partners. Partners from the file are the baseline;
// partners registered or changed through the API, and availability
// switches, are stored in the bucket and win.
//
// Every replica holds the same view: Run watches the bucket, so a partner
// registered, changed (a rotated API token or NATS password) or switched
// sold out through one replica's API takes effect on every replica, and
// OnChange hooks (API tokens, partner NATS accounts) run there too.
type Registry struct {
	kv  svc.KV
	log *slog.Logger

	// file holds the partners of the partners file (read-only after Open):
	// the baseline a partner falls back to when its bucket key is deleted.
	file map[string]Partner

	mu       sync.RWMutex       // guards the fields below
	partners map[string]Partner // effective partners: bucket over file, availability applied
	stored   map[string]Partner // partners from the bucket (key p.{id}), before availability
	avail    map[string]bool    // availability switches by "{partner}.{venue}" (key avail.{partner}.{venue})
	revs     map[string]uint64  // last applied revision per bucket key; older entries are ignored
	onChange []func()
}

// Open loads the file (path may be empty) and the bucket.
func Open(ctx context.Context, js jetstream.JetStream, replicas int, path string, log *slog.Logger) (*Registry, error) {
	kv, err := svc.OpenKV(ctx, js, Bucket, "Charging partners registered through the API, venue availability", replicas)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	r := &Registry{kv: kv, log: log, file: map[string]Partner{}, partners: map[string]Partner{},
		stored: map[string]Partner{}, avail: map[string]bool{}, revs: map[string]uint64{}}
	if path != "" {
		ps, err := LoadFile(path)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			r.file[p.ID] = p
			r.partners[p.ID] = p
		}
	}
	keys, err := kv.Keys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, err
	}
	for _, k := range keys {
		e, err := kv.B.Get(ctx, k)
		if err != nil {
			continue
		}
		r.apply(e)
	}
	return r, nil
}

// Run watches the bucket and applies what other replicas store (and this
// one's own writes, which are already applied); it calls the OnChange
// hooks after a partner changed. It returns nil when ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	return r.kv.Watch(ctx, "", func(e jetstream.KeyValueEntry) {
		if r.apply(e) {
			r.changed()
		}
	})
}

// apply merges a bucket entry (p.{id}: a partner; avail.{partner}.{venue}:
// an availability switch) into the view unless an equal or newer revision
// of its key was applied already. It reports whether a partner (not only
// an availability) changed, so that the OnChange hooks run.
func (r *Registry) apply(e jetstream.KeyValueEntry) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := e.Key()
	if r.revs[key] >= e.Revision() {
		return false
	}
	r.revs[key] = e.Revision()
	put := e.Operation() == jetstream.KeyValuePut
	if id, ok := strings.CutPrefix(key, "p."); ok {
		if !put {
			delete(r.stored, id)
			r.refreshLocked(id)
			return true
		}
		var p Partner
		if err := json.Unmarshal(e.Value(), &p); err != nil || p.validate(false) != nil || p.ID != id {
			r.log.Warn("partner entry in the bucket ignored: invalid", "key", key)
			return false
		}
		if p.legacyHours() {
			r.log.Warn("partner has an opening-hours rule whose open equals its close: never open; the API refuses it on the next write",
				"partner", id)
		}
		r.stored[id] = p
		r.refreshLocked(id)
		return true
	}
	if rest, ok := strings.CutPrefix(key, "avail."); ok {
		pid, _, _ := strings.Cut(rest, ".")
		var a struct {
			Available bool `json:"available"`
		}
		if !put {
			delete(r.avail, rest)
		} else if json.Unmarshal(e.Value(), &a) == nil {
			r.avail[rest] = a.Available
		}
		r.refreshLocked(pid)
	}
	return false
}

// refreshLocked recomputes partner id's effective entry: the bucket's
// version, else the file's, with the availability switches applied.
func (r *Registry) refreshLocked(id string) {
	p, ok := r.stored[id]
	if !ok {
		p, ok = r.file[id]
	}
	if !ok {
		delete(r.partners, id)
		return
	}
	p.Venues = slices.Clone(p.Venues)
	for i := range p.Venues {
		if a, ok := r.avail[id+"."+p.Venues[i].ID]; ok {
			p.Venues[i].Available = a
		}
	}
	r.partners[id] = p
}

// OnChange registers f, called after partners or their NATS users change.
func (r *Registry) OnChange(f func()) {
	r.mu.Lock()
	r.onChange = append(r.onChange, f)
	r.mu.Unlock()
}

func (r *Registry) changed() {
	r.mu.RLock()
	fs := slices.Clone(r.onChange)
	r.mu.RUnlock()
	for _, f := range fs {
		f()
	}
}

// Partners returns every partner, sorted by id.
func (r *Registry) Partners() []Partner {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Partner, 0, len(r.partners))
	for _, p := range r.partners {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Partner) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Get returns partner id.
func (r *Registry) Get(id string) (Partner, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.partners[id]
	return p, ok
}

// Put registers or replaces a partner (API).
func (r *Registry) Put(ctx context.Context, p Partner) error {
	if err := p.Validate(); err != nil {
		return err
	}
	r.mu.RLock()
	for id, o := range r.partners {
		if id != p.ID && p.NATS != nil && o.NATS != nil && o.NATS.User == p.NATS.User {
			r.mu.RUnlock()
			return fmt.Errorf("%w: nats user %s belongs to partner %s", svc.ErrConflict, p.NATS.User, id)
		}
	}
	r.mu.RUnlock()
	if err := r.put(ctx, "p."+p.ID, p); err != nil {
		return err
	}
	r.changed()
	return nil
}

// put stores v under key and applies the stored entry at once, so this
// replica reads its own write before the watch delivers it.
func (r *Registry) put(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := r.kv.B.Put(ctx, key, b); err != nil {
		return err
	}
	e, err := r.kv.B.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("partners: read back %s: %w", key, err)
	}
	r.apply(e)
	return nil
}

// SetAvailability flips a venue's availability switch (sold out: false).
func (r *Registry) SetAvailability(ctx context.Context, pid, vid string, avail bool) error {
	r.mu.RLock()
	p, ok := r.partners[pid]
	r.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%s: %w", pid, ErrUnknownPartner)
	}
	if !slices.ContainsFunc(p.Venues, func(v Venue) bool { return v.ID == vid }) {
		return fmt.Errorf("%s/%s: %w", pid, vid, ErrUnknownVenue)
	}
	return r.put(ctx, "avail."+pid+"."+vid, map[string]bool{"available": avail})
}

// Subject is the NATS subject of a partner's triggers.
func Subject(partnerID string) string { return "partners." + partnerID + ".triggers" }

// Trigger is what a partner receives when a consenting driver starts a
// charging session near one of its venues. It carries nothing else about
// the person: no VIN, name, customer id or car coordinates.
type Trigger struct {
	V    int       `json:"v"`
	ID   string    `json:"id"`   // idempotency key (also Nats-Msg-Id / Idempotency-Key)
	Type string    `json:"type"` // "partner.trigger"
	Time time.Time `json:"time"`
	// Partner and Venue are the partner's own ids.
	Partner string `json:"partner"`
	Venue   string `json:"venue"`
	Station string `json:"station"`
	// DriverToken is a per-partner pseudonym (keyed HMAC): stable for one
	// driver and partner, unlinkable across partners, invalid after erasure.
	DriverToken      string    `json:"driver_token"`
	ExpectedDwellMin int       `json:"expected_dwell_min"`
	OfferCode        string    `json:"offer_code"`
	ExpiresAt        time.Time `json:"expires_at"`
}

// TriggerType is Trigger.Type.
const TriggerType = "partner.trigger"
