package features

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/svc"
)

// HemisphereBucket holds each vehicle's last known hemisphere, h.{vin} =
// {"hemisphere":"north"|"south"}: the only thing kept from its positions
// (never coordinates or times), written when it changes (revision-checked)
// and only while the owner grants ConsentLocation. Shared by the replicas,
// so a scheduler that takes the lease after a restart or a hand-over
// decides with it. Deleted on erasure and on withdrawal of
// ConsentLocation.
const HemisphereBucket = "feature_hemispheres"

// ConsentLocation is the consent under which a vehicle's positions may be
// processed (docs/services.md, privacy notes).
const ConsentLocation = "location_sharing"

// ErrBadLatitude is returned for a latitude that is not a number in
// [-90, 90]; nothing is stored, Run counts it (Scheduler.BadPositions).
var ErrBadLatitude = fmt.Errorf("%w: latitude", svc.ErrInvalid)

// hemisphereRecord is the value of h.{vin}.
type hemisphereRecord struct {
	Hemisphere string `json:"hemisphere"`
}

// hemiEntry is one cached key: h "" is a deleted key (rev is the delete's
// revision, so an older put seen later does not bring it back).
type hemiEntry struct {
	h   string
	rev uint64
}

// hemispheres is HemisphereBucket with an in-process cache fed by a watch
// of the bucket (so writes by other replicas, deletes included, reach it).
// Until the watch has delivered the bucket's current values, reads go to
// the bucket.
type hemispheres struct {
	kv svc.KV

	mu    sync.RWMutex         // guards cache and ready
	cache map[string]hemiEntry // vin → entry, newest revision wins
	ready bool                 // the watch delivered the current values
}

func newHemispheres(kv svc.KV) *hemispheres {
	return &hemispheres{kv: kv, cache: map[string]hemiEntry{}}
}

func hemisphereKey(vin string) string { return "h." + vin }

// set merges an entry at revision rev into the cache.
func (c *hemispheres) set(vin, h string, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.cache[vin]; ok && cur.rev >= rev {
		return
	}
	c.cache[vin] = hemiEntry{h: h, rev: rev}
}

// forget marks vin deleted in the cache after this process purged its key
// (at the cached revision: a later write, the purge marker included, still
// replaces it).
func (c *hemispheres) forget(vin string) {
	c.mu.Lock()
	c.cache[vin] = hemiEntry{rev: c.cache[vin].rev}
	c.mu.Unlock()
}

// get returns vin's stored hemisphere ("" when none) and the revision to
// update it at (0: create).
func (c *hemispheres) get(ctx context.Context, vin string) (string, uint64, error) {
	c.mu.RLock()
	e, ok := c.cache[vin]
	ready := c.ready
	c.mu.RUnlock()
	if ready {
		if !ok || e.h == "" {
			return "", 0, nil
		}
		return e.h, e.rev, nil
	}
	return c.load(ctx, vin)
}

// load reads vin's entry from the bucket.
func (c *hemispheres) load(ctx context.Context, vin string) (string, uint64, error) {
	var r hemisphereRecord
	rev, err := c.kv.Get(ctx, hemisphereKey(vin), &r)
	if errors.Is(err, svc.ErrNotFound) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("hemisphere of %s: %w", vin, err)
	}
	return r.Hemisphere, rev, nil
}

// store makes h vin's stored hemisphere: nothing is written when it already
// is; otherwise a revision-checked update, re-read and retried on a
// conflict (another replica saw the same position).
func (c *hemispheres) store(ctx context.Context, vin, h string) error {
	cur, rev, err := c.get(ctx, vin)
	if err != nil {
		return err
	}
	for range 5 {
		if cur == h {
			return nil
		}
		nrev, err := c.kv.Swap(ctx, hemisphereKey(vin), hemisphereRecord{Hemisphere: h}, rev)
		if err == nil {
			c.set(vin, h, nrev)
			return nil
		}
		if !errors.Is(err, svc.ErrConflict) {
			return err
		}
		if cur, rev, err = c.load(ctx, vin); err != nil {
			return err
		}
	}
	return fmt.Errorf("hemisphere of %s: %w", vin, svc.ErrConflict)
}

// purge deletes vin's entry (and its history). A vehicle with no entry
// gets no purge marker (withdrawals of other consents come here too).
func (c *hemispheres) purge(ctx context.Context, vin string) error {
	h, _, err := c.load(ctx, vin)
	if err != nil {
		return err
	}
	if h == "" {
		c.forget(vin)
		return nil
	}
	if err := c.kv.Purge(ctx, hemisphereKey(vin)); err != nil {
		return fmt.Errorf("hemisphere of %s: %w", vin, err)
	}
	c.forget(vin)
	return nil
}

// watch feeds the cache until ctx ends; the cache is used from the end of
// the current values on.
func (c *hemispheres) watch(ctx context.Context) error {
	defer func() {
		c.mu.Lock()
		c.ready = false // a stopped watch no longer sees other replicas' writes
		c.mu.Unlock()
	}()
	return c.kv.WatchLoaded(ctx, "", c.apply, func() {
		c.mu.Lock()
		c.ready = true
		c.mu.Unlock()
	})
}

// apply is one watched change of the bucket.
func (c *hemispheres) apply(e jetstream.KeyValueEntry) {
	vin, ok := strings.CutPrefix(e.Key(), "h.")
	if !ok {
		return
	}
	var r hemisphereRecord
	if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &r) != nil {
		r.Hemisphere = ""
	}
	c.set(vin, r.Hemisphere, e.Revision())
}

// SetLatitude records a vehicle's position: its hemisphere (lat < 0:
// south) is stored in HemisphereBucket when it differs from the stored one,
// only for a registered vehicle whose owner grants ConsentLocation (other
// positions are ignored). The latitude itself is not kept.
func (s *Scheduler) SetLatitude(ctx context.Context, vin string, lat float64) error {
	if math.IsNaN(lat) || lat < -90 || lat > 90 {
		return ErrBadLatitude // the value is not logged: location data
	}
	o, ok := s.owners.Lookup(vin)
	if !ok || !s.owners.Consented(o.CustomerID, ConsentLocation) {
		return nil
	}
	h := "north"
	if lat < 0 {
		h = "south"
	}
	if err := s.hemis.store(ctx, vin, h); err != nil {
		return err
	}
	// A withdrawal (or erasure) that ran while this was written: delete
	// what was just stored.
	if o2, ok := s.owners.Lookup(vin); !ok || o2.CustomerID != o.CustomerID || !s.owners.Consented(o.CustomerID, ConsentLocation) {
		return s.hemis.purge(ctx, vin)
	}
	return nil
}

// StoredHemisphere returns a vehicle's stored hemisphere ("" when none).
func (s *Scheduler) StoredHemisphere(ctx context.Context, vin string) (string, error) {
	h, _, err := s.hemis.load(ctx, vin)
	return h, err
}

// Erase deletes the erased customer's vehicles' hemispheres
// (customers.ErasureHook).
func (s *Scheduler) Erase(ctx context.Context, er *customers.Erasure) error {
	var errs []error
	for _, v := range er.Customer.Vehicles {
		errs = append(errs, s.hemis.purge(ctx, v.VIN))
	}
	return errors.Join(errs...)
}

// Withdrawn deletes the hemispheres of customer id's vehicles unless the
// customer still grants ConsentLocation (customers.Registry.OnWithdraw:
// called after any withdrawal).
func (s *Scheduler) Withdrawn(ctx context.Context, id string) error {
	if s.owners.Consented(id, ConsentLocation) {
		return nil
	}
	var errs []error
	for _, vin := range s.owners.VINs(id) {
		errs = append(errs, s.hemis.purge(ctx, vin))
	}
	return errors.Join(errs...)
}

// BadPositions is the number of location events whose latitude was not a
// number in [-90, 90] (ignored).
func (s *Scheduler) BadPositions() int64 { return s.badPositions.Load() }
