// Package registry holds the table of devices allowed to connect to the
// broker, loaded from a YAML file:
//
//	devices:
//	  - id: TGSVS000000000001     # VIN (17 chars, no I/O/Q) or charger station id
//	    kind: vehicle             # vehicle | charger
//	    secret_hash: "$tgm1$..."   # machine-secret hash (HashMachineSecret) or bcrypt ($2a$10$...)
//	    disabled: false
//	    # optional, during a secret rotation:
//	    previous_secret_hash: "$2a$10$..."        # the secret being replaced, still accepted
//	    previous_valid_until: 2026-12-01T00:00:00Z # RFC 3339; omitted = until removed
//
// Parsing is strict: unknown keys, duplicate keys, duplicate ids, unknown
// kinds, malformed identities and malformed bcrypt hashes are all errors, so
// a typo can never silently open or close access.
//
// A Registry is safe for concurrent use. Verify checks a device secret
// against its bcrypt hash (or, during a rotation, the previous one) and
// remembers a keyed SHA-256 digest of each
// secret that verified, so a reconnect storm of known devices costs a hash
// each rather than a bcrypt each. Reload re-reads the file, swaps the table
// atomically and reports which devices lost access.
package registry

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/telegate/telegate/broker/acl"
)

// Errors returned by the registry. They are wrapped with details; test with
// errors.Is.
var (
	// ErrUnknownDevice means no device with the given id is registered.
	ErrUnknownDevice = errors.New("registry: unknown device")
	// ErrBadSecret means the secret does not match the device's hash.
	ErrBadSecret = errors.New("registry: bad secret")
	// ErrDisabled means the device is registered but disabled.
	ErrDisabled = errors.New("registry: device disabled")
	// ErrInvalid means a registry file or device entry failed validation.
	ErrInvalid = errors.New("registry: invalid")
	// ErrNoPath means Reload was called on a registry not loaded from a file.
	ErrNoPath = errors.New("registry: no file to reload")
)

// Device kinds accepted in the kind field.
const (
	KindVehicle = acl.KindVehicle
	KindCharger = acl.KindCharger
)

// MaxSecretLength is the longest secret accepted. bcrypt ignores everything
// after 72 bytes, so longer secrets are refused rather than truncated.
const MaxSecretLength = 72

// Device is one registered device.
type Device struct {
	// ID is the device identity: the MQTT client id and username. A VIN for
	// vehicles, a station id for chargers.
	ID string `yaml:"id"`
	// Kind is KindVehicle or KindCharger.
	Kind string `yaml:"kind"`
	// SecretHash is the hash of the device secret: a machine-secret hash
	// (HashMachineSecret, for machine-generated secrets) or a bcrypt hash
	// (HashSecret, for anything a person chose).
	SecretHash string `yaml:"secret_hash"`
	// Disabled devices are refused at connect and ACL time.
	Disabled bool `yaml:"disabled"`
	// PreviousSecretHash, if set, is the bcrypt hash of the secret being
	// rotated out: it is accepted too, until PreviousValidUntil (if set).
	PreviousSecretHash string `yaml:"previous_secret_hash,omitempty"`
	// PreviousValidUntil, if set, ends the validity of PreviousSecretHash.
	// Written as RFC 3339; requires PreviousSecretHash.
	PreviousValidUntil Timestamp `yaml:"previous_valid_until,omitempty"`
}

// Timestamp is a point in time written in YAML as an RFC 3339 string, and
// parsed strictly as one (YAML's looser timestamp forms are refused).
type Timestamp struct{ time.Time }

// UnmarshalYAML parses an RFC 3339 scalar.
func (t *Timestamp) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want an RFC 3339 time", n.Line)
	}
	v, err := time.Parse(time.RFC3339, n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not an RFC 3339 time (e.g. 2026-12-01T00:00:00Z)", n.Line, n.Value)
	}
	t.Time = v
	return nil
}

// MarshalYAML writes the time in RFC 3339.
func (t Timestamp) MarshalYAML() (any, error) { return t.UTC().Format(time.RFC3339), nil }

// Accepts reports whether a secret verified against bcrypt hash h gives
// access at time now: h is the current hash, or the previous one within
// its validity.
func (d Device) Accepts(h string, now time.Time) bool {
	if h == "" {
		return false
	}
	return h == d.SecretHash || h == d.PreviousSecretHash && d.previousValid(now)
}

func (d Device) previousValid(now time.Time) bool {
	return d.PreviousSecretHash != "" && (d.PreviousValidUntil.IsZero() || now.Before(d.PreviousValidUntil.Time))
}

// acceptedHashes returns the hashes a secret may verify against at now,
// current first.
func (d Device) acceptedHashes(now time.Time) []string {
	if d.previousValid(now) {
		return []string{d.SecretHash, d.PreviousSecretHash}
	}
	return []string{d.SecretHash}
}

// Validate reports whether d is a well-formed entry.
func (d Device) Validate() error {
	if !acl.ValidKind(d.Kind) {
		return fmt.Errorf("%w: device %q: kind %q is not %q or %q", ErrInvalid, d.ID, d.Kind, KindVehicle, KindCharger)
	}
	if !acl.ValidID(d.Kind, d.ID) {
		if d.Kind == KindVehicle {
			return fmt.Errorf("%w: device %q: not a VIN (17 characters of 0-9, A-Z without I, O, Q)", ErrInvalid, d.ID)
		}
		return fmt.Errorf("%w: device %q: station id must be 1-%d characters of A-Z a-z 0-9 . _ -", ErrInvalid, d.ID, acl.MaxStationIDLength)
	}
	if err := checkHash(d.SecretHash); err != nil {
		return fmt.Errorf("%w: device %q: %w", ErrInvalid, d.ID, err)
	}
	switch {
	case d.PreviousSecretHash == "" && !d.PreviousValidUntil.IsZero():
		return fmt.Errorf("%w: device %q: previous_valid_until without previous_secret_hash", ErrInvalid, d.ID)
	case d.PreviousSecretHash == "":
	case d.PreviousSecretHash == d.SecretHash:
		return fmt.Errorf("%w: device %q: previous_secret_hash equals secret_hash", ErrInvalid, d.ID)
	default:
		if err := checkHash(d.PreviousSecretHash); err != nil {
			return fmt.Errorf("%w: device %q: previous_%w", ErrInvalid, d.ID, err)
		}
	}
	return nil
}

func checkHash(h string) error {
	if isMachineHash(h) {
		_, _, err := parseMachineHash(h)
		return err
	}
	if len(h) != 60 || !(strings.HasPrefix(h, "$2a$") || strings.HasPrefix(h, "$2b$") || strings.HasPrefix(h, "$2y$")) {
		return errors.New("secret_hash is neither a bcrypt hash ($2a$/$2b$/$2y$, 60 characters) nor a machine-secret hash ($tgm1$...)")
	}
	if _, err := bcrypt.Cost([]byte(h)); err != nil {
		return fmt.Errorf("secret_hash: %w", err)
	}
	return nil
}

// Changes describes what a Reload changed. Every slice is sorted.
type Changes struct {
	Added       []string // ids new in the file
	Removed     []string // ids no longer in the file
	Disabled    []string // ids that went from enabled to disabled
	Enabled     []string // ids that went from disabled to enabled
	Rotated     []string // ids whose secret_hash or previous secret (hash, validity) changed
	KindChanged []string // ids whose kind changed
}

// Revoked returns the sorted, de-duplicated ids whose live sessions may
// have to be ended: removed, disabled, rotated and kind-changed devices. A
// rotated device's session survives if the secret it authenticated with is
// still accepted (Device.Accepts); the broker checks that per session.
func (c Changes) Revoked() []string {
	var ids []string
	ids = append(ids, c.Removed...)
	ids = append(ids, c.Disabled...)
	ids = append(ids, c.Rotated...)
	ids = append(ids, c.KindChanged...)
	slices.Sort(ids)
	return slices.Compact(ids)
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool {
	return len(c.Added)+len(c.Removed)+len(c.Disabled)+len(c.Enabled)+len(c.Rotated)+len(c.KindChanged) == 0
}

type table map[string]Device

type cacheEntry struct {
	hash   string // the bcrypt hash the secret verified against
	digest [sha256.Size]byte
}

// cacheEntries holds a device's verified secrets: at most one per hash,
// so at most two during a rotation.
type cacheEntries [2]cacheEntry

// Registry is the device table. The zero value is not usable; create one
// with Load or New.
type Registry struct {
	path   string
	table  atomic.Pointer[table]
	gen    atomic.Uint64 // Generation; bumped by Reload after it replaces table
	reload sync.Mutex    // serialises Reload

	mu    sync.Mutex // guards cache
	cache map[string]cacheEntries
	key   [32]byte // per-process HMAC key for cached digests

	bcryptSlots chan struct{} // bounds concurrent bcrypt comparisons
	now         func() time.Time
}

// Load reads and validates the registry file at path.
func Load(path string) (*Registry, error) {
	devs, err := readFile(path)
	if err != nil {
		return nil, err
	}
	r, err := New(devs)
	if err != nil {
		return nil, err
	}
	r.path = path
	return r, nil
}

// New builds a registry from devices (validated as a file would be). A
// registry built this way cannot Reload.
func New(devices []Device) (*Registry, error) {
	t, err := buildTable(devices)
	if err != nil {
		return nil, err
	}
	r := &Registry{
		cache:       make(map[string]cacheEntries),
		now:         time.Now,
		bcryptSlots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0))),
	}
	if _, err := rand.Read(r.key[:]); err != nil {
		return nil, fmt.Errorf("registry: cache key: %w", err)
	}
	r.table.Store(&t)
	r.gen.Store(1)
	return r, nil
}

// Path returns the file the registry was loaded from, or "".
func (r *Registry) Path() string { return r.path }

// Lookup returns the device registered under id.
func (r *Registry) Lookup(id string) (Device, bool) {
	d, ok := (*r.table.Load())[id]
	return d, ok
}

// Generation identifies the device table in force: it starts at 1 and
// grows each time Reload replaces the table. A value derived from Lookup
// (e.g. an ACL verdict) may be cached under the generation read before the
// Lookup, and used while Generation still returns it: the table it came
// from is then the current one (or was replaced a moment ago, by a Reload
// that has not returned yet).
func (r *Registry) Generation() uint64 { return r.gen.Load() }

// Len returns the number of registered devices.
func (r *Registry) Len() int { return len(*r.table.Load()) }

// Devices returns all registered devices sorted by id.
func (r *Registry) Devices() []Device {
	t := *r.table.Load()
	out := make([]Device, 0, len(t))
	for _, id := range slices.Sorted(maps.Keys(t)) {
		out = append(out, t[id])
	}
	return out
}

// Verify checks secret for device id. It returns the device on success, or
// an error wrapping ErrUnknownDevice, ErrDisabled or ErrBadSecret. See
// VerifyHash.
func (r *Registry) Verify(id string, secret []byte) (Device, error) {
	d, _, err := r.VerifyHash(id, secret)
	return d, err
}

// VerifyHash checks secret for device id against its current hash and,
// during a rotation, its previous hash while that is valid. It returns the
// device and the hash the secret matched (to re-check the session later
// with Device.Accepts), or an error wrapping ErrUnknownDevice, ErrDisabled
// or ErrBadSecret. Secrets that verified before against the same hash are
// accepted from a cache without running bcrypt; a different secret is
// refused without running bcrypt once every accepted hash has a cached
// secret (a hash can only match one secret of at most MaxSecretLength
// bytes).
func (r *Registry) VerifyHash(id string, secret []byte) (Device, string, error) {
	d, ok := r.Lookup(id)
	if !ok {
		return Device{}, "", fmt.Errorf("%w: %q", ErrUnknownDevice, id)
	}
	if d.Disabled {
		return Device{}, "", fmt.Errorf("%w: %q", ErrDisabled, id)
	}
	if len(secret) == 0 || len(secret) > MaxSecretLength {
		return Device{}, "", fmt.Errorf("%w: %q", ErrBadSecret, id)
	}
	digest := r.digest(id, secret)
	hashes := d.acceptedHashes(r.now())

	r.mu.Lock()
	cached := r.cache[id]
	r.mu.Unlock()
	var uncached []string
	for _, h := range hashes {
		i := slices.IndexFunc(cached[:], func(e cacheEntry) bool { return e.hash == h })
		switch {
		case i < 0:
			uncached = append(uncached, h)
		case hmac.Equal(cached[i].digest[:], digest[:]):
			return d, h, nil
		}
	}

	for _, h := range uncached {
		if isMachineHash(h) {
			if !compareMachineHash(h, secret) {
				continue
			}
			r.remember(id, h, digest)
			return d, h, nil
		}
		r.bcryptSlots <- struct{}{}
		err := bcrypt.CompareHashAndPassword([]byte(h), secret)
		<-r.bcryptSlots
		if err != nil {
			continue
		}
		r.remember(id, h, digest)
		return d, h, nil
	}
	return Device{}, "", fmt.Errorf("%w: %q", ErrBadSecret, id)
}

// remember caches digest as the secret of hash h of device id, if h is
// still one of its hashes (a Reload may have run while bcrypt did).
func (r *Registry) remember(id, h string, digest [sha256.Size]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur, ok := r.Lookup(id)
	if !ok || (h != cur.SecretHash && h != cur.PreviousSecretHash) {
		return
	}
	entries := r.cache[id]
	slot := 0
	for i, e := range entries {
		if e.hash == h || e.hash == "" || (e.hash != cur.SecretHash && e.hash != cur.PreviousSecretHash) {
			slot = i
			break
		}
	}
	entries[slot] = cacheEntry{hash: h, digest: digest}
	r.cache[id] = entries
}

// NextExpiry returns the earliest previous_valid_until after now, if any
// device has one.
func (r *Registry) NextExpiry(now time.Time) (time.Time, bool) {
	var next time.Time
	for _, d := range *r.table.Load() {
		u := d.PreviousValidUntil.Time
		if d.PreviousSecretHash != "" && !u.IsZero() && u.After(now) && (next.IsZero() || u.Before(next)) {
			next = u
		}
	}
	return next, !next.IsZero()
}

func (r *Registry) digest(id string, secret []byte) [sha256.Size]byte {
	m := hmac.New(sha256.New, r.key[:])
	m.Write([]byte(id))
	m.Write([]byte{0})
	m.Write(secret)
	var out [sha256.Size]byte
	m.Sum(out[:0])
	return out
}

// Reload re-reads the registry file and atomically replaces the table. On
// error the current table stays in force. The returned Changes lists the
// ids whose access changed; Changes.Revoked are the ones whose live sessions
// should be ended.
func (r *Registry) Reload() (Changes, error) {
	if r.path == "" {
		return Changes{}, ErrNoPath
	}
	r.reload.Lock()
	defer r.reload.Unlock()

	devs, err := readFile(r.path)
	if err != nil {
		return Changes{}, err
	}
	next, err := buildTable(devs)
	if err != nil {
		return Changes{}, err
	}
	prev := *r.table.Load()
	ch := diff(prev, next)

	r.mu.Lock()
	r.table.Store(&next)
	r.gen.Add(1) // after the Store: see Generation
	for id, entries := range r.cache {
		d, ok := next[id]
		for i, e := range entries {
			if !ok || (e.hash != d.SecretHash && e.hash != d.PreviousSecretHash) {
				entries[i] = cacheEntry{}
			}
		}
		if entries == (cacheEntries{}) {
			delete(r.cache, id)
		} else {
			r.cache[id] = entries
		}
	}
	r.mu.Unlock()
	return ch, nil
}

func diff(prev, next table) Changes {
	var c Changes
	for id, n := range next {
		p, ok := prev[id]
		if !ok {
			c.Added = append(c.Added, id)
			continue
		}
		if n.Disabled && !p.Disabled {
			c.Disabled = append(c.Disabled, id)
		}
		if !n.Disabled && p.Disabled {
			c.Enabled = append(c.Enabled, id)
		}
		if n.SecretHash != p.SecretHash || n.PreviousSecretHash != p.PreviousSecretHash ||
			!n.PreviousValidUntil.Equal(p.PreviousValidUntil.Time) {
			c.Rotated = append(c.Rotated, id)
		}
		if n.Kind != p.Kind {
			c.KindChanged = append(c.KindChanged, id)
		}
	}
	for id := range prev {
		if _, ok := next[id]; !ok {
			c.Removed = append(c.Removed, id)
		}
	}
	for _, s := range []*[]string{&c.Added, &c.Removed, &c.Disabled, &c.Enabled, &c.Rotated, &c.KindChanged} {
		slices.Sort(*s)
	}
	return c
}

// HashSecret returns the bcrypt hash of secret at cost (bcrypt.DefaultCost
// if cost is 0). Secrets must be 1 to MaxSecretLength bytes.
func HashSecret(secret []byte, cost int) (string, error) {
	if len(secret) == 0 || len(secret) > MaxSecretLength {
		return "", fmt.Errorf("%w: secret must be 1-%d bytes", ErrInvalid, MaxSecretLength)
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return "", fmt.Errorf("%w: bcrypt cost %d outside %d..%d", ErrInvalid, cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	h, err := bcrypt.GenerateFromPassword(secret, cost)
	if err != nil {
		return "", fmt.Errorf("registry: hash secret: %w", err)
	}
	return string(h), nil
}

// file is the on-disk layout. Devices is a pointer so that a file without a
// devices key is told apart from an empty list.
type file struct {
	Devices *[]Device `yaml:"devices"`
}

func readFile(path string) ([]Device, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	devs, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return devs, nil
}

// Parse decodes and validates a registry document.
func Parse(b []byte) ([]Device, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f file
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty document", ErrInvalid)
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one YAML document", ErrInvalid)
	}
	if f.Devices == nil {
		return nil, fmt.Errorf("%w: missing devices list", ErrInvalid)
	}
	if _, err := buildTable(*f.Devices); err != nil {
		return nil, err
	}
	return *f.Devices, nil
}

func buildTable(devices []Device) (table, error) {
	t := make(table, len(devices))
	for i, d := range devices {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i+1, err)
		}
		if _, dup := t[d.ID]; dup {
			return nil, fmt.Errorf("%w: entry %d: duplicate id %q", ErrInvalid, i+1, d.ID)
		}
		t[d.ID] = d
	}
	return t, nil
}

// Write validates devices and writes them as a registry file at path,
// atomically (temporary file, fsync, rename) and readable only by the owner.
func Write(path string, devices []Device) error {
	if _, err := buildTable(devices); err != nil {
		return err
	}
	list := slices.Clone(devices)
	if list == nil {
		list = []Device{}
	}
	var buf bytes.Buffer
	buf.WriteString("# Device registry for the telegate MQTT broker. See docs/broker.md.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(file{Devices: &list}); err != nil {
		return fmt.Errorf("registry: encode: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("registry: encode: %w", err)
	}

	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".registry-*.yaml")
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("registry: %w", err)
	}
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("registry: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("registry: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
