// Package customers is the customer registry: who owns which vehicle
// (VIN → customer), the customer's region, entitlements and consents, and
// erasure. Customers are registered from a YAML file at start-up (once:
// a customer already in the store is not overwritten, so consents changed
// through the API survive a restart) and through the HTTP API.
//
// The registry is the authority for consent: a consent change is stored
// before the API call returns, so the offer engine, which asks the registry
// synchronously, never acts on a withdrawn consent. Every change is also
// published as a profile event (profile.events.{customer}) for the profile
// projector. State lives in the JetStream key-value bucket "customers";
// Run watches it so that several processes share one view.
//
// No key or subject carries a customer id (see erase.go): the record is
// stored under c.{pseudonym} (HMAC of the id with the bucket's pseudonym
// key), and everything else about the customer (profile, profile events,
// offers, caps) is keyed by the customer's random Ref, which only the
// record links to the id. Erasure deletes the record, so what a leftover
// could carry is a random value that leads nowhere.
package customers

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/svc"
)

// Bucket is the key-value bucket of the registry.
const Bucket = "customers"

// ConsentPartnerOffers is the separate consent required for partner offers.
const ConsentPartnerOffers = "partner_offers"

// KnownConsents are the consents the registry accepts.
var KnownConsents = []string{ConsentPartnerOffers, "location_sharing", "marketing", "diagnostics_sharing"}

// DefaultBatteryKWh is used when a vehicle has no battery capacity.
const DefaultBatteryKWh = 60.0

// Errors of the registry.
var (
	ErrUnknownCustomer = fmt.Errorf("unknown customer: %w", svc.ErrNotFound)
	ErrVINTaken        = fmt.Errorf("vin already registered to another customer: %w", svc.ErrConflict)
	ErrExists          = fmt.Errorf("customer already registered: %w", svc.ErrConflict)
)

// Vehicle is a vehicle owned by a customer.
type Vehicle struct {
	VIN        string  `json:"vin" yaml:"vin"`
	Model      string  `json:"model,omitempty" yaml:"model"`
	BatteryKWh float64 `json:"battery_kwh,omitempty" yaml:"battery_kwh"`
	// Region is where the vehicle is registered: "north" / "south"
	// (hemisphere) or an ISO 3166 country code. Empty: the customer's.
	Region string `json:"region,omitempty" yaml:"region"`
}

// Battery returns the battery capacity in kWh (DefaultBatteryKWh if unset).
func (v Vehicle) Battery() float64 {
	if v.BatteryKWh > 0 {
		return v.BatteryKWh
	}
	return DefaultBatteryKWh
}

// Consent is the state of one consent with its history timestamps.
type Consent struct {
	Granted     bool       `json:"granted"`
	GrantedAt   *time.Time `json:"granted_at,omitempty"`
	WithdrawnAt *time.Time `json:"withdrawn_at,omitempty"`
	Source      string     `json:"source"`
}

// Customer is a registered customer.
type Customer struct {
	ID           string             `json:"id"`
	Name         string             `json:"name,omitempty"`
	Region       string             `json:"region,omitempty"`
	Vehicles     []Vehicle          `json:"vehicles"`
	Entitlements []string           `json:"entitlements,omitempty"`
	Consents     map[string]Consent `json:"consents,omitempty"`
	// TokenSalt personalises the customer's partner tokens; erasure deletes
	// it, so tokens already given to partners can never be linked again.
	TokenSalt string `json:"token_salt"`
	// Ref is the customer's random pseudonym: the key of everything stored
	// about the customer outside this record (profile, profile events,
	// offers, caps). Erasure deletes the record, the only link to the id.
	Ref string `json:"ref"`
	// IDTags are the charging id tags (RFID cards, Plug & Charge contract
	// ids) bound to the customer: a session that carries one of them and a
	// VIN of the customer is attributed to the customer (offers.Attributor).
	IDTags  []string  `json:"id_tags,omitempty"`
	Created time.Time `json:"created"`
}

// Registration is the input of Register (YAML file entry or API body).
type Registration struct {
	ID           string    `json:"id" yaml:"id"`
	Name         string    `json:"name" yaml:"name"`
	Region       string    `json:"region" yaml:"region"`
	Vehicles     []Vehicle `json:"vehicles" yaml:"vehicles"`
	Entitlements []string  `json:"entitlements" yaml:"entitlements"`
	Consents     []string  `json:"consents" yaml:"consents"` // granted at registration
	// IDTags are the customer's charging id tags (RFID cards, Plug & Charge
	// contract ids); see Customer.IDTags.
	IDTags []string `json:"id_tags" yaml:"id_tags"`
}

// File is the customers.yaml format.
type File struct {
	Customers []Registration `yaml:"customers"`
}

// Validate checks a registration.
func (r Registration) Validate() error {
	var errs []error
	bad := func(f string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+f, append([]any{svc.ErrInvalid}, a...)...))
	}
	if !svc.ValidID(r.ID) {
		bad("customer id %q: want 1-64 letters, digits, '-' or '_'", r.ID)
	}
	if len(r.Name) > 200 {
		bad("name longer than 200 bytes")
	}
	if !validRegion(r.Region) {
		bad("region %q: want north, south or a two-letter country code", r.Region)
	}
	if len(r.Vehicles) > 100 {
		bad("more than 100 vehicles")
	}
	seen := map[string]bool{}
	for _, v := range r.Vehicles {
		switch {
		case !svc.ValidID(v.VIN):
			bad("vin %q", v.VIN)
		case seen[v.VIN]:
			bad("vin %s listed twice", v.VIN)
		case v.BatteryKWh < 0 || v.BatteryKWh > 500:
			bad("vin %s: battery_kwh %v out of 0..500", v.VIN, v.BatteryKWh)
		case !validRegion(v.Region):
			bad("vin %s: region %q", v.VIN, v.Region)
		case len(v.Model) > 100:
			bad("vin %s: model too long", v.VIN)
		}
		seen[v.VIN] = true
	}
	for _, e := range r.Entitlements {
		if !svc.ValidID(e) {
			bad("entitlement %q", e)
		}
	}
	for _, c := range r.Consents {
		if !slices.Contains(KnownConsents, c) {
			bad("consent %q: want one of %v", c, KnownConsents)
		}
	}
	if len(r.IDTags) > 20 {
		bad("more than 20 id tags")
	}
	tags := map[string]bool{}
	for _, t := range r.IDTags {
		switch {
		case !svc.ValidID(t):
			bad("id tag %q: want 1-64 letters, digits, '-' or '_'", t)
		case tags[t]:
			bad("id tag %s listed twice", t)
		}
		tags[t] = true
	}
	return errors.Join(errs...)
}

func validRegion(s string) bool {
	if s == "" || s == "north" || s == "south" {
		return true
	}
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// southernCountries are the ISO codes whose territory (and cars) are
// mostly in the southern hemisphere.
var southernCountries = map[string]bool{"AU": true, "NZ": true, "ZA": true, "AR": true, "CL": true, "UY": true,
	"PY": true, "BR": true, "BO": true, "PE": true, "NA": true, "BW": true, "ZW": true, "MZ": true, "MG": true,
	"LS": true, "SZ": true, "FJ": true, "ZM": true, "MW": true, "AO": true}

// Hemisphere maps a region to "north" or "south" ("" when unknown).
func Hemisphere(region string) string {
	switch {
	case region == "north" || region == "south":
		return region
	case region == "":
		return ""
	case southernCountries[region]:
		return "south"
	}
	return "north"
}

// LoadFile reads and validates a customers.yaml file.
func LoadFile(path string) ([]Registration, error) {
	var f File
	if err := svc.LoadYAML(path, &f); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	vins := map[string]bool{}
	tags := map[string]bool{}
	for i, r := range f.Customers {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("%s: customer %d: %w", path, i, err)
		}
		if seen[r.ID] {
			return nil, fmt.Errorf("%s: %w: customer %s listed twice", path, svc.ErrInvalid, r.ID)
		}
		seen[r.ID] = true
		for _, v := range r.Vehicles {
			if vins[v.VIN] {
				return nil, fmt.Errorf("%s: %w: vin %s owned twice", path, svc.ErrInvalid, v.VIN)
			}
			vins[v.VIN] = true
		}
		for _, t := range r.IDTags {
			if tags[t] {
				return nil, fmt.Errorf("%s: %w: id tag %s bound twice", path, svc.ErrInvalid, t)
			}
			tags[t] = true
		}
	}
	return f.Customers, nil
}

// EraseHook is called after a consent withdrawal (the offer engine's
// barrier).
type EraseHook func(ctx context.Context, customerID string) error

// ErasureHook is called while a customer is erased, after the record is
// gone: it deletes the service's own data about the customer and adds to
// e.Needles whatever else identifies the customer (offer ids, partner
// tokens), so that Erase can scrub streams and buckets of them.
type ErasureHook func(ctx context.Context, e *Erasure) error

// Registry is the customer registry.
type Registry struct {
	kv    svc.KV
	js    jetstream.JetStream
	pub   svc.Publisher
	clock svc.Clock
	log   *slog.Logger
	// pkey is the bucket's pseudonym key (key meta.pseudonym_key, created
	// once); set by Open, read-only after.
	pkey []byte

	mu     sync.RWMutex // guards the maps and hook lists below
	byID   map[string]*entry
	byVIN  map[string]string
	byRef  map[string]string // ref → customer id
	byTag  map[string]string // id tag → customer id
	erased map[string]bool   // pseudonyms of erased customers
	hooks  []ErasureHook
	wdraw  []EraseHook
	tele   TelemetryEraser // nil: telemetry stays (see SetTelemetryEraser)
	wmu    sync.Mutex      // serialises writes (and their profile events)
}

type entry struct {
	c   Customer
	key string // KV key the record is stored under
	rev uint64
}

// Owner is what the services need to know about a VIN's owner.
type Owner struct {
	CustomerID string
	// Ref is the customer's pseudonym (Customer.Ref): the key of the
	// customer's profile, profile events and offers.
	Ref          string
	Vehicle      Vehicle
	Region       string // vehicle's region, else the customer's
	Entitlements []string
}

// pseudonymKeyKey is the registry bucket key of the pseudonym key.
const pseudonymKeyKey = "meta.pseudonym_key"

// Pseudonym returns the key part under which customer id is stored:
// hex(HMAC-SHA256(pseudonym key, id))[:32]. The record key (c.{pseudonym})
// and the erasure tombstone (erased.{pseudonym}) use it, so no key of the
// bucket carries a customer id.
func (r *Registry) Pseudonym(id string) string {
	m := hmac.New(sha256.New, r.pkey)
	m.Write([]byte("customer:" + id))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

// Open opens the registry on the bucket and loads its current state.
func Open(ctx context.Context, js jetstream.JetStream, replicas int, clock svc.Clock, log *slog.Logger) (*Registry, error) {
	kv, err := svc.OpenKV(ctx, js, Bucket, "Customer registry: vehicles, entitlements, consents", replicas)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	r := &Registry{kv: kv, js: js, pub: svc.Publisher{JS: js}, clock: clock, log: log,
		byID: map[string]*entry{}, byVIN: map[string]string{}, byRef: map[string]string{}, byTag: map[string]string{},
		erased: map[string]bool{}}
	if r.pkey, err = pseudonymKey(ctx, kv); err != nil {
		return nil, err
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
	if err := r.migrate(ctx, keys); err != nil {
		return nil, err
	}
	return r, nil
}

// migrate moves what an older version stored under customer ids
// (c.{id} without a ref, erased.{id}) to pseudonymous keys and removes the
// old keys with their markers. The old version's profile and offers, keyed
// by id, are not carried over; they are erased with the customer.
func (r *Registry) migrate(ctx context.Context, keys []string) error {
	for _, k := range keys {
		if id, ok := strings.CutPrefix(k, "erased."); ok && len(id) != 32 {
			r.mu.Lock()
			r.erased[r.Pseudonym(id)] = true
			r.mu.Unlock()
			if err := r.kv.Put(ctx, "erased."+r.Pseudonym(id), struct{}{}); err != nil {
				return fmt.Errorf("migrate tombstone: %w", err)
			}
			if err := r.dropKey(ctx, k); err != nil {
				return err
			}
		}
	}
	for _, id := range r.IDs() {
		r.mu.RLock()
		e := r.byID[id]
		r.mu.RUnlock()
		if e.key == "c."+r.Pseudonym(id) && e.c.Ref != "" {
			continue
		}
		c := cloneCustomer(e.c)
		if c.Ref == "" {
			b := make([]byte, 16)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			c.Ref = "p" + hex.EncodeToString(b)
		}
		r.mu.Lock()
		r.dropLocked(id)
		r.mu.Unlock()
		if _, err := r.store(ctx, c, 0); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("migrate customer: %w", err)
		}
		if e.key != "c."+r.Pseudonym(id) {
			if err := r.dropKey(ctx, e.key); err != nil {
				return err
			}
		}
		r.log.Info("customer record moved to a pseudonymous key", "customer", id)
	}
	return nil
}

// dropKey purges a registry key and its marker.
func (r *Registry) dropKey(ctx context.Context, key string) error {
	if err := r.kv.Purge(ctx, key); err != nil {
		return fmt.Errorf("migrate: purge: %w", err)
	}
	return purgeSubject(ctx, r.js, "KV_"+Bucket, "$KV."+Bucket+"."+key)
}

// pseudonymKey returns the bucket's pseudonym key, creating it (random, 32
// bytes) when the bucket has none; every process sharing the bucket uses
// the same key.
func pseudonymKey(ctx context.Context, kv svc.KV) ([]byte, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	var key string
	if err := kv.Create(ctx, pseudonymKeyKey, hex.EncodeToString(raw)); err != nil && !errors.Is(err, svc.ErrConflict) {
		return nil, fmt.Errorf("pseudonym key: %w", err)
	}
	if _, err := kv.Get(ctx, pseudonymKeyKey, &key); err != nil {
		return nil, fmt.Errorf("pseudonym key: %w", err)
	}
	b, err := hex.DecodeString(key)
	if err != nil || len(b) < 16 {
		return nil, fmt.Errorf("%w: pseudonym key in bucket %s", svc.ErrInvalid, Bucket)
	}
	return b, nil
}

// OnErase registers a hook run by Erase.
func (r *Registry) OnErase(h ErasureHook) {
	r.mu.Lock()
	r.hooks = append(r.hooks, h)
	r.mu.Unlock()
}

// OnWithdraw registers a hook run after a consent withdrawal is stored
// (the offer engine waits there for evaluations in flight).
func (r *Registry) OnWithdraw(h EraseHook) {
	r.mu.Lock()
	r.wdraw = append(r.wdraw, h)
	r.mu.Unlock()
}

// Run watches the bucket so that changes made by other processes are seen;
// it returns when ctx ends.
func (r *Registry) Run(ctx context.Context) error {
	return r.kv.Watch(ctx, "", r.apply, jetstream.IncludeHistory())
}

// apply merges a bucket entry into the cache, ignoring stale revisions.
func (r *Registry) apply(e jetstream.KeyValueEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := e.Key()
	if pn, ok := strings.CutPrefix(key, "erased."); ok {
		if e.Operation() == jetstream.KeyValuePut {
			r.erased[pn] = true
			for id, en := range r.byID {
				if en.key == "c."+pn {
					r.dropLocked(id)
				}
			}
		}
		return
	}
	if !strings.HasPrefix(key, "c.") {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		for id, en := range r.byID {
			if en.key == key && en.rev < e.Revision() {
				r.dropLocked(id)
			}
		}
		return
	}
	var c Customer
	if json.Unmarshal(e.Value(), &c) != nil || r.erased[strings.TrimPrefix(key, "c.")] {
		return
	}
	if cur := r.byID[c.ID]; cur != nil && cur.rev >= e.Revision() {
		return
	}
	r.setLocked(c, key, e.Revision())
}

func (r *Registry) setLocked(c Customer, key string, rev uint64) {
	if old := r.byID[c.ID]; old != nil {
		r.unindexLocked(c.ID, old.c)
	}
	r.byID[c.ID] = &entry{c: c, key: key, rev: rev}
	for _, v := range c.Vehicles {
		r.byVIN[v.VIN] = c.ID
	}
	if c.Ref != "" {
		r.byRef[c.Ref] = c.ID
	}
	for _, t := range c.IDTags {
		r.byTag[t] = c.ID
	}
}

func (r *Registry) unindexLocked(id string, c Customer) {
	for _, v := range c.Vehicles {
		if r.byVIN[v.VIN] == id {
			delete(r.byVIN, v.VIN)
		}
	}
	if r.byRef[c.Ref] == id {
		delete(r.byRef, c.Ref)
	}
	for _, t := range c.IDTags {
		if r.byTag[t] == id {
			delete(r.byTag, t)
		}
	}
}

func (r *Registry) dropLocked(id string) {
	if old := r.byID[id]; old != nil {
		r.unindexLocked(id, old.c)
		delete(r.byID, id)
	}
}

// RegisterFile registers every customer of a customers.yaml file that is
// not yet known (and was not erased). It returns how many were added.
func (r *Registry) RegisterFile(ctx context.Context, path string) (int, error) {
	regs, err := LoadFile(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, reg := range regs {
		err := r.Register(ctx, reg, "registration-file")
		switch {
		case err == nil:
			n++
		case errors.Is(err, ErrExists), errors.Is(err, svc.ErrErased):
		default:
			return n, fmt.Errorf("customer %s: %w", reg.ID, err)
		}
	}
	return n, nil
}

// Register adds a customer; source names where the consents came from.
func (r *Registry) Register(ctx context.Context, reg Registration, source string) error {
	if err := reg.Validate(); err != nil {
		return err
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.RLock()
	_, exists := r.byID[reg.ID]
	erased := r.erased[r.Pseudonym(reg.ID)]
	var taken string
	for _, v := range reg.Vehicles {
		if o, ok := r.byVIN[v.VIN]; ok && o != reg.ID {
			taken = v.VIN
		}
	}
	for _, t := range reg.IDTags {
		if o, ok := r.byTag[t]; ok && o != reg.ID {
			taken = "id tag " + t
		}
	}
	r.mu.RUnlock()
	switch {
	case erased:
		return fmt.Errorf("%s: %w", reg.ID, svc.ErrErased)
	case exists:
		return fmt.Errorf("%s: %w", reg.ID, ErrExists)
	case taken != "":
		return fmt.Errorf("%s: %w", taken, ErrVINTaken)
	}
	now := r.clock.Now().UTC()
	salt := make([]byte, 16+16)
	if _, err := rand.Read(salt); err != nil {
		return err
	}
	c := Customer{ID: reg.ID, Name: reg.Name, Region: reg.Region, Vehicles: reg.Vehicles, Entitlements: reg.Entitlements,
		Consents: map[string]Consent{}, TokenSalt: hex.EncodeToString(salt[:16]), Ref: "p" + hex.EncodeToString(salt[16:]),
		IDTags: slices.Clone(reg.IDTags), Created: now}
	if c.Vehicles == nil {
		c.Vehicles = []Vehicle{}
	}
	for _, k := range reg.Consents {
		c.Consents[k] = Consent{Granted: true, GrantedAt: &now, Source: source}
	}
	rev, err := r.store(ctx, c, 0)
	if err != nil {
		return err
	}
	subj := ProfileSubject(c.Ref)
	if err := r.pub.Publish(ctx, subj, "cust-reg-"+c.Ref, "customer.registered", c.Ref, now,
		map[string]any{"customer_id": c.ID, "name": c.Name, "region": c.Region, "entitlements": c.Entitlements}); err != nil {
		return err
	}
	for _, v := range c.Vehicles {
		if err := r.pub.Publish(ctx, subj, "cust-veh-"+c.Ref+"-"+v.VIN, "vehicle.linked", c.Ref, now,
			VehicleLinked{VIN: v.VIN, Model: v.Model, BatteryKWh: v.Battery()}); err != nil {
			return err
		}
	}
	for _, k := range reg.Consents {
		if err := r.publishConsent(ctx, c.Ref, k, c.Consents[k], now, rev); err != nil {
			return err
		}
	}
	r.log.Info("customer registered", "customer", c.ID, "vehicles", len(c.Vehicles), "source", source)
	return nil
}

// VehicleLinked is the data of the vehicle.linked profile event.
type VehicleLinked struct {
	VIN        string  `json:"vin"`
	Model      string  `json:"model,omitempty"`
	BatteryKWh float64 `json:"battery_kwh"`
}

// ConsentChanged is the data of the consent.changed profile event.
type ConsentChanged struct {
	Consent string    `json:"consent"`
	Granted bool      `json:"granted"`
	At      time.Time `json:"at"`
	Source  string    `json:"source"`
}

// publishConsent publishes a consent change on the profile subject of ref.
// rev is the revision of the customer record that stored the change: it
// names the event (never the clock, whose two readings may be equal: a
// grant and a withdrawal at the same instant must both reach the profile,
// and a Nats-Msg-Id seen before is dropped as a duplicate).
func (r *Registry) publishConsent(ctx context.Context, ref, consent string, c Consent, now time.Time, rev uint64) error {
	evID := fmt.Sprintf("consent-%s-%s-r%d", ref, consent, rev)
	return r.pub.Publish(ctx, ProfileSubject(ref), evID, "consent.changed", ref, now,
		ConsentChanged{Consent: consent, Granted: c.Granted, At: now, Source: c.Source})
}

// ProfileSubject is the profile event subject of a customer's pseudonym
// (Customer.Ref, Owner.Ref): never a customer id.
func ProfileSubject(ref string) string { return natsbus.SubjectProfile(ref) }

// store writes c (CAS on rev) and updates the cache. It returns the
// record's new revision.
func (r *Registry) store(ctx context.Context, c Customer, rev uint64) (uint64, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return 0, err
	}
	key := "c." + r.Pseudonym(c.ID)
	var nrev uint64
	if rev == 0 {
		nrev, err = r.kv.B.Create(ctx, key, b)
	} else {
		nrev, err = r.kv.B.Update(ctx, key, b, rev)
	}
	if err != nil {
		return 0, fmt.Errorf("store customer %s: %w", c.ID, err)
	}
	r.mu.Lock()
	if cur := r.byID[c.ID]; cur == nil || cur.rev < nrev {
		r.setLocked(c, key, nrev)
	}
	r.mu.Unlock()
	return nrev, nil
}

// SetConsent grants or withdraws consent for customer id. It is effective
// (stored, and seen by Consented) when it returns.
func (r *Registry) SetConsent(ctx context.Context, id, consent string, granted bool, source string) (Consent, error) {
	if !slices.Contains(KnownConsents, consent) {
		return Consent{}, fmt.Errorf("%w: consent %q: want one of %v", svc.ErrInvalid, consent, KnownConsents)
	}
	if source == "" || len(source) > 100 {
		return Consent{}, fmt.Errorf("%w: source: 1-100 bytes", svc.ErrInvalid)
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.RLock()
	e := r.byID[id]
	r.mu.RUnlock()
	if e == nil {
		return Consent{}, fmt.Errorf("%s: %w", id, ErrUnknownCustomer)
	}
	c := cloneCustomer(e.c)
	now := r.clock.Now().UTC()
	cs := c.Consents[consent]
	cs.Granted, cs.Source = granted, source
	if granted {
		cs.GrantedAt = &now
	} else {
		cs.WithdrawnAt = &now
	}
	c.Consents[consent] = cs
	rev, err := r.store(ctx, c, e.rev)
	if err != nil {
		return Consent{}, err
	}
	if err := r.publishConsent(ctx, c.Ref, consent, cs, now, rev); err != nil {
		r.log.Warn("consent stored, profile event not published", "customer", id, "err", err)
	}
	if !granted {
		r.mu.RLock()
		hooks := slices.Clone(r.wdraw)
		r.mu.RUnlock()
		for _, h := range hooks {
			_ = h(ctx, id)
		}
	}
	return cs, nil
}

// Get returns a copy of customer id.
func (r *Registry) Get(id string) (Customer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.byID[id]
	if e == nil {
		return Customer{}, false
	}
	return cloneCustomer(e.c), true
}

// Lookup returns the owner of vin.
func (r *Registry) Lookup(vin string) (Owner, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	id, ok := r.byVIN[vin]
	if !ok {
		return Owner{}, false
	}
	c := r.byID[id].c
	for _, v := range c.Vehicles {
		if v.VIN == vin {
			reg := v.Region
			if reg == "" {
				reg = c.Region
			}
			return Owner{CustomerID: id, Ref: c.Ref, Vehicle: v, Region: reg, Entitlements: slices.Clone(c.Entitlements)}, true
		}
	}
	return Owner{}, false
}

// Consented reports whether customer id currently grants consent.
func (r *Registry) Consented(id, consent string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.byID[id]
	return e != nil && e.c.Consents[consent].Granted
}

// IDTagOwner returns the customer an id tag is bound to.
func (r *Registry) IDTagOwner(tag string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	id, ok := r.byTag[tag]
	return id, ok
}

// ByRef returns the customer id of a pseudonym (Customer.Ref); false once
// the customer is erased.
func (r *Registry) ByRef(ref string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	id, ok := r.byRef[ref]
	return id, ok
}

// VINs returns the VINs of customer id's vehicles (nil when unknown).
func (r *Registry) VINs(id string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.byID[id]
	if e == nil {
		return nil
	}
	out := make([]string, 0, len(e.c.Vehicles))
	for _, v := range e.c.Vehicles {
		out = append(out, v.VIN)
	}
	return out
}

// Ref returns the pseudonym of customer id ("" when unknown).
func (r *Registry) Ref(id string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.byID[id]; e != nil {
		return e.c.Ref
	}
	return ""
}

// TokenSalt returns the customer's partner-token salt ("" when unknown).
func (r *Registry) TokenSalt(id string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if e := r.byID[id]; e != nil {
		return e.c.TokenSalt
	}
	return ""
}

// Vehicles lists every registered vehicle's owner, sorted by VIN.
func (r *Registry) Vehicles() []Owner {
	r.mu.RLock()
	vins := make([]string, 0, len(r.byVIN))
	for v := range r.byVIN {
		vins = append(vins, v)
	}
	r.mu.RUnlock()
	slices.Sort(vins)
	out := make([]Owner, 0, len(vins))
	for _, v := range vins {
		if o, ok := r.Lookup(v); ok {
			out = append(out, o)
		}
	}
	return out
}

// IDs lists the registered customer ids, sorted.
func (r *Registry) IDs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.byID))
	for id := range r.byID {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func cloneCustomer(c Customer) Customer {
	c.Vehicles = slices.Clone(c.Vehicles)
	c.Entitlements = slices.Clone(c.Entitlements)
	c.IDTags = slices.Clone(c.IDTags)
	m := make(map[string]Consent, len(c.Consents))
	for k, v := range c.Consents {
		m[k] = v
	}
	c.Consents = m
	return c
}
