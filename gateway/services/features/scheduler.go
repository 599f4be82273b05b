package features

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/cluster/lease"
	"github.com/telegate/telegate/gateway/services/commands"
	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/profile"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/gateway/sink/eventsink"
)

// Bucket holds per-vehicle feature state (s.{vin}.{feature}) and feature
// controls (ctl.{feature}: rollout override, rollback).
const Bucket = "features"

// ErrUnknownFeature is returned for a feature not in the catalog.
var ErrUnknownFeature = fmt.Errorf("unknown feature: %w", svc.ErrNotFound)

// Owners lists the registered vehicles (customers.Registry).
type Owners interface {
	Vehicles() []customers.Owner
	Lookup(vin string) (customers.Owner, bool)
	// Consented reports whether customer id grants consent (the
	// hemisphere is stored only with ConsentLocation).
	Consented(id, consent string) bool
	// VINs lists customer id's vehicles.
	VINs(id string) []string
}

// StatusDecided is the status of a decision stored in the feature state
// but not yet accepted by NATS (the scheduler sends it again, with the same
// command id, at its next tick).
const StatusDecided = "decided"

// State is a feature's state on one vehicle (KV s.{vin}.{feature}; written
// by the scheduler under its mutex with revision checks).
type State struct {
	Want bool `json:"want"` // last requested state
	// Gen counts the scheduler's decisions for this vehicle and feature;
	// every decision (on or off) increments it.
	Gen uint64 `json:"gen,omitempty"`
	// CmdID is the command of decision Gen: fixed (and stored) when the
	// decision is taken, before it is sent, so a retry reuses it and a new
	// decision never reuses an old one (see newCmdID).
	CmdID   string    `json:"cmd_id"`
	Status  string    `json:"status"`            // StatusDecided, then commands.State* of that command
	Active  bool      `json:"active"`            // state the vehicle acknowledged
	Changed time.Time `json:"changed"`           // when Want last changed
	Reason  string    `json:"reason,omitempty"`  // vehicle's reason on reject/fail
	Applied time.Time `json:"applied,omitzero"`  // when Active last changed
	Target  string    `json:"target_date"`       // scheduler date of the change
	Origin  string    `json:"origin,omitempty"`  // "season", "rollback", ...
	Pending bool      `json:"pending,omitempty"` // change sent, not yet acked
}

// Control is the run-time control of a feature.
type Control struct {
	Rollout    *int `json:"rollout,omitempty"`
	RolledBack bool `json:"rolled_back"`
}

// Change is one planned or performed activation/deactivation. A planned
// change (dry run) has no command id yet: ids are drawn when a decision is
// taken.
type Change struct {
	VIN     string `json:"vin"`
	Feature string `json:"feature"`
	On      bool   `json:"on"`
	CmdID   string `json:"cmd_id,omitempty"`
	Reason  string `json:"reason"`
}

// Config configures the scheduler.
type Config struct {
	Catalog  []Feature
	Interval time.Duration // between ticks (default 1 h)
	DryRun   bool          // compute and log plans, send nothing
	Clock    svc.Clock     // the scheduler's date source
	// Cluster, when enabled, runs the ticks under the lease
	// "features-scheduler": one replica ticks, a new leader resumes at the
	// first tick not completed (see Run). Zero: every Run ticks on its own.
	Cluster lease.Cluster
}

// LeaseName is the lease (and tick record) of the scheduled ticks.
const LeaseName = "features-scheduler"

// Scheduler computes desired feature states and sends the commands.
type Scheduler struct {
	cfg    Config
	js     jetstream.JetStream
	nc     *nats.Conn
	kv     svc.KV
	pub    svc.Publisher
	owners Owners
	log    *slog.Logger

	mu    sync.Mutex // one tick / result at a time in this process; the s.* keys' writes are revision-checked across replicas
	ticks atomic.Int64
	// coalesced counts scheduled ticks skipped because a later one was
	// already due (catch-up after no replica led for a while).
	coalesced atomic.Int64
	// behind counts the ticks coalesced since the schedule fell behind
	// (0: on time); it makes a catch-up one log line at each end instead of
	// one per missed tick (a day's outage is 8 640 ticks of 10 s).
	behind atomic.Int64
	hemis  *hemispheres // last known hemisphere per VIN (KV HemisphereBucket, cached)
	// badPositions counts location events with an invalid latitude.
	badPositions atomic.Int64
}

// NewScheduler opens the features bucket.
func NewScheduler(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, replicas int, owners Owners, cfg Config, log *slog.Logger) (*Scheduler, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Hour
	}
	kv, err := svc.OpenKV(ctx, js, Bucket, "Seasonal feature state per vehicle and feature controls", replicas)
	if err != nil {
		return nil, err
	}
	hkv, err := svc.OpenKV(ctx, js, HemisphereBucket, "Last known hemisphere (north/south) per vehicle, from consented positions", replicas)
	if err != nil {
		return nil, err
	}
	return &Scheduler{cfg: cfg, js: js, nc: nc, kv: kv, pub: svc.Publisher{JS: js}, owners: owners, log: log,
		hemis: newHemispheres(hkv)}, nil
}

// Catalog returns the catalog.
func (s *Scheduler) Catalog() []Feature { return slices.Clone(s.cfg.Catalog) }

func (s *Scheduler) feature(id string) (Feature, bool) {
	i := slices.IndexFunc(s.cfg.Catalog, func(f Feature) bool { return f.ID == id })
	if i < 0 {
		return Feature{}, false
	}
	return s.cfg.Catalog[i], true
}

// Hemisphere of a vehicle: the last known hemisphere stored from its
// positions (HemisphereBucket, shared by the replicas) while its owner
// grants ConsentLocation, else the registered region, else north.
//
// A hemisphere stored without that consent is not used and is deleted
// here, so the lease holder's next tick retries: a replica whose registry
// had not yet seen a withdrawal can store one after the withdrawing
// replica's purge, and a failed purge is not reported to the customer.
func (s *Scheduler) Hemisphere(ctx context.Context, o customers.Owner) (string, error) {
	h, _, err := s.hemis.get(ctx, o.Vehicle.VIN)
	if err != nil {
		return "", err
	}
	if h != "" && !s.owners.Consented(o.CustomerID, ConsentLocation) {
		if err := s.hemis.purge(ctx, o.Vehicle.VIN); err != nil {
			s.log.Warn("hemisphere stored without location consent not deleted (retried next tick)", "vin", o.Vehicle.VIN, "err", err)
		}
		h = ""
	}
	if h != "" {
		return h, nil
	}
	if h := customers.Hemisphere(o.Region); h != "" {
		return h, nil
	}
	return "north", nil
}

// InRollout reports whether vin falls inside a rollout percentage: a
// stable hash of feature and VIN, so raising the percentage only adds
// vehicles.
func InRollout(feature, vin string, pct int) bool {
	h := sha256.Sum256([]byte(feature + "\x00" + vin))
	return int(binary.BigEndian.Uint64(h[:8])%100) < pct
}

// Desired is a vehicle's desired state of feature f on date, the vehicle
// being in hemisphere ("north" or "south", see Hemisphere).
func (s *Scheduler) Desired(o customers.Owner, hemisphere string, f Feature, ctl Control, date time.Time) (bool, string) {
	pct := 100
	if f.Rollout != nil {
		pct = *f.Rollout
	}
	if ctl.Rollout != nil {
		pct = *ctl.Rollout
	}
	switch {
	case !slices.Contains(o.Entitlements, f.ID):
		return false, "not entitled"
	case ctl.RolledBack:
		return false, "rolled back"
	case !InRollout(f.ID, o.Vehicle.VIN, pct):
		return false, "outside rollout"
	case !InSeason(f.Season, hemisphere, date):
		return false, "out of season"
	}
	return true, "in season"
}

// newCmdID returns the command id of decision gen: "feat-{gen}-" and 96
// random bits. The generation makes ids of one vehicle-feature distinct by
// construction (a decision after a reversal never reuses an id the
// dispatcher has closed); the random part makes them unguessable, so no
// vehicle can predict another's ids, and keeps ids distinct even if the
// state is ever reset.
func newCmdID(gen uint64) (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "feat-" + strconv.FormatUint(gen, 10) + "-" + hex.EncodeToString(b), nil
}

// Ticks is the number of ticks completed (scheduled or API).
func (s *Scheduler) Ticks() int64 { return s.ticks.Load() }

// Control returns a feature's control.
func (s *Scheduler) Control(ctx context.Context, feature string) (Control, uint64, error) {
	var c Control
	rev, err := s.kv.Get(ctx, "ctl."+feature, &c)
	if errors.Is(err, svc.ErrNotFound) {
		err = nil
	}
	return c, rev, err
}

// Tick computes every vehicle's desired state for the scheduler's date
// and, unless dryRun (or Config.DryRun), sends the changes. It returns the
// changes.
//
// A change is a decision: the state is stored first with the next
// generation and a fresh command id (revision-checked), then the command is
// sent with that id. A decision stored but not sent (NATS unavailable,
// crash) is sent again, with the same id, by the next tick; the dispatcher
// ignores a request it already has, so redelivery is idempotent.
func (s *Scheduler) Tick(ctx context.Context, date time.Time, dryRun bool) ([]Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.ticks.Add(1)
	dryRun = dryRun || s.cfg.DryRun
	day := date.UTC().Format("2006-01-02")
	ctls := map[string]Control{}
	for _, f := range s.cfg.Catalog {
		c, _, err := s.Control(ctx, f.ID)
		if err != nil {
			return nil, err
		}
		ctls[f.ID] = c
	}
	var changes []Change
	for _, o := range s.owners.Vehicles() {
		hemi, err := s.Hemisphere(ctx, o)
		if err != nil {
			return changes, err
		}
		for _, f := range s.cfg.Catalog {
			want, why := s.Desired(o, hemi, f, ctls[f.ID], date)
			key := "s." + o.Vehicle.VIN + "." + f.ID
			var st State
			rev, err := s.kv.Get(ctx, key, &st)
			if err != nil && !errors.Is(err, svc.ErrNotFound) {
				return changes, err
			}
			if rev != 0 && st.Want == want {
				if st.Status == StatusDecided && !dryRun {
					// Decided earlier, not accepted by NATS: same decision, same id.
					ch := Change{VIN: o.Vehicle.VIN, Feature: f.ID, On: st.Want, CmdID: st.CmdID, Reason: st.Origin}
					if err := s.deliver(ctx, f, ch, key, st, rev, date); err != nil {
						return changes, err
					}
				}
				continue
			}
			if rev == 0 && !want {
				continue
			}
			ch := Change{VIN: o.Vehicle.VIN, Feature: f.ID, On: want, Reason: why}
			if dryRun {
				changes = append(changes, ch)
				continue
			}
			id, err := newCmdID(st.Gen + 1)
			if err != nil {
				return changes, err
			}
			ch.CmdID = id
			st.Want, st.Gen, st.CmdID, st.Status, st.Changed, st.Target, st.Origin, st.Pending, st.Reason =
				want, st.Gen+1, id, StatusDecided, date.UTC(), day, why, true, ""
			if rev, err = s.kv.Swap(ctx, key, st, rev); err != nil {
				return changes, err
			}
			changes = append(changes, ch)
			if err := s.deliver(ctx, f, ch, key, st, rev, date); err != nil {
				return changes, err
			}
		}
	}
	if len(changes) > 0 {
		s.log.Info("feature changes", "date", day, "changes", len(changes), "dry_run", dryRun)
	}
	return changes, nil
}

// deliver sends the stored decision st (revision rev) and marks it pending.
func (s *Scheduler) deliver(ctx context.Context, f Feature, ch Change, key string, st State, rev uint64, at time.Time) error {
	if err := s.send(ctx, f, ch, at); err != nil {
		return fmt.Errorf("feature %s on %s: decision %d stored, not sent (retried next tick): %w", f.ID, ch.VIN, st.Gen, err)
	}
	st.Status = commands.StatePending
	if err := s.kv.Update(ctx, key, st, rev); err != nil && !errors.Is(err, svc.ErrConflict) {
		return err
	}
	// On a conflict a result already moved the state on: nothing to mark.
	return nil
}

func (s *Scheduler) send(ctx context.Context, f Feature, ch Change, at time.Time) error {
	state := "off"
	if ch.On {
		state = "on"
	}
	params := []commands.Param{{Key: "feature", Value: f.ID}, {Key: "state", Value: state}}
	keys := make([]string, 0, len(f.Command.Params))
	for k := range f.Command.Params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		params = append(params, commands.Param{Key: k, Value: f.Command.Params[k]})
	}
	return commands.Send(ctx, s.pub, at, commands.Request{VIN: ch.VIN, CmdID: ch.CmdID, Name: f.Command.Name,
		Params: params, Origin: "features", Key: "feature:" + f.ID})
}

// HandleResult records a closed command; an applied change is written to
// the customer's profile.
func (s *Scheduler) HandleResult(ctx context.Context, r commands.Result, at time.Time) error {
	if r.Origin != "features" {
		return nil
	}
	feature := ""
	for _, p := range r.Params {
		if p.Key == "feature" {
			feature = p.Value
		}
	}
	if _, ok := s.feature(feature); !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := "s." + r.VIN + "." + feature
	var st State
	rev, err := s.kv.Get(ctx, key, &st)
	if err != nil {
		if errors.Is(err, svc.ErrNotFound) {
			return nil
		}
		return err
	}
	if st.CmdID != r.CmdID {
		return nil // superseded by a later change
	}
	if !st.Pending && st.Status == r.State {
		return nil
	}
	st.Status, st.Pending, st.Reason = r.State, false, r.Reason
	if r.State == commands.StateApplied {
		st.Active, st.Applied = st.Want, at.UTC()
	}
	if err := s.kv.Update(ctx, key, st, rev); err != nil {
		return err
	}
	if r.State != commands.StateApplied {
		s.log.Warn("feature command not applied", "vin", r.VIN, "feature", feature, "state", r.State, "reason", r.Reason)
		return nil
	}
	o, ok := s.owners.Lookup(r.VIN)
	if !ok {
		return nil
	}
	return s.pub.Publish(ctx, customers.ProfileSubject(o.Ref), "feature-"+r.CmdID, profile.TypeFeatureChanged,
		o.Ref, at, profile.FeatureChanged{VIN: r.VIN, Feature: feature, Active: st.Want, CmdID: r.CmdID})
}

// States returns the feature states of a vehicle.
func (s *Scheduler) States(ctx context.Context, vin string) (map[string]State, error) {
	out := map[string]State{}
	for _, f := range s.cfg.Catalog {
		var st State
		if _, err := s.kv.Get(ctx, "s."+vin+"."+f.ID, &st); err == nil {
			out[f.ID] = st
		}
	}
	return out, nil
}

// SetControl updates a feature's control (rollout, rollback).
func (s *Scheduler) SetControl(ctx context.Context, feature string, update func(*Control)) (Control, error) {
	if _, ok := s.feature(feature); !ok {
		return Control{}, fmt.Errorf("%s: %w", feature, ErrUnknownFeature)
	}
	for range 5 {
		c, rev, err := s.Control(ctx, feature)
		if err != nil {
			return c, err
		}
		update(&c)
		err = s.kv.Update(ctx, "ctl."+feature, c, rev)
		if errors.Is(err, svc.ErrConflict) {
			continue
		}
		return c, err
	}
	return Control{}, fmt.Errorf("%s: %w", feature, svc.ErrConflict)
}

// Run ticks every Interval, records command results and last known
// hemispheres until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	watched := make(chan struct{})
	hctx, stopWatch := context.WithCancel(ctx)
	defer func() { <-watched }()
	defer stopWatch()
	go func() {
		defer close(watched)
		if err := s.hemis.watch(hctx); err != nil {
			// Hemisphere reads the bucket directly while the cache is not
			// loaded: slower, still correct.
			s.log.Warn("hemisphere watch stopped; reading the bucket directly", "err", err)
		}
	}()
	sub, err := s.nc.Subscribe("vehicle.event.*", func(m *nats.Msg) {
		ev, err := svc.Decode(m.Data)
		if err != nil {
			return
		}
		var d eventsink.VehicleEvent
		if json.Unmarshal(ev.Data, &d) != nil || d.Position == nil || d.VIN == "" {
			return
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err = s.SetLatitude(wctx, d.VIN, d.Position.Lat)
		switch {
		case errors.Is(err, ErrBadLatitude):
			s.badPositions.Add(1)
		case err != nil && ctx.Err() == nil:
			s.log.Warn("hemisphere not stored", "vin", d.VIN, "err", err)
		}
	})
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	errc := make(chan error, 1)
	go func() {
		errc <- svc.Consume(ctx, s.js, svc.ConsumerSpec{Stream: "VEHICLE", Durable: "features-results",
			Filter: "vehicle.cmdresult.>"}, s.log, func(ctx context.Context, m jetstream.Msg) error {
			ev, err := svc.Decode(m.Data())
			if err != nil {
				return err
			}
			var r commands.Result
			if err := json.Unmarshal(ev.Data, &r); err != nil {
				return fmt.Errorf("%w: result: %w", svc.ErrInvalid, err)
			}
			if !strings.HasPrefix(r.CmdID, "feat-") {
				return nil
			}
			return s.HandleResult(ctx, r, ev.Time)
		})
	}()
	if s.cfg.Cluster.Enabled() {
		err := s.cfg.Cluster.RunEvery(ctx, LeaseName, s.cfg.Interval, s.scheduledTick)
		if ctx.Err() == nil {
			return err // the lease bucket is unusable: stop the service
		}
		return <-errc
	}
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := s.Tick(ctx, s.cfg.Clock.Now(), false); err != nil && ctx.Err() == nil {
			s.log.Warn("feature tick failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return <-errc
		case <-t.C:
		}
	}
}

// scheduledTick is one tick of the leased schedule. The decisions depend
// only on the scheduler's date and the stored states, so a tick whose
// successor is already due (the replicas had no leader for a while) is
// recorded as done without work: the latest one decides for it. An error
// makes the Ticker run the tick again (Tick is idempotent: a stored
// decision is sent again with the same command id).
func (s *Scheduler) scheduledTick(ctx context.Context, tk lease.Tick) error {
	if lease.Behind(tk, s.cfg.Interval, s.cfg.Cluster.Clock) {
		s.coalesced.Add(1)
		if s.behind.Add(1) == 1 {
			s.log.Info("feature ticks behind schedule: coalescing the missed ones into the latest due", "from_tick", tk.Index, "due", tk.At)
		}
		s.log.Debug("feature tick coalesced into a later one", "tick", tk.Index, "due", tk.At)
		return nil
	}
	s.caughtUp(tk)
	date := s.cfg.Clock.Now()
	if _, err := s.Tick(ctx, date, false); err != nil {
		return fmt.Errorf("feature tick %d (%s): %w", tk.Index, date.UTC().Format("2006-01-02"), err)
	}
	s.log.Debug("feature tick done", "tick", tk.Index, "date", date.UTC().Format("2006-01-02"), "attempt", tk.Attempt)
	return nil
}

// caughtUp logs the end of a catch-up (see behind) before tick tk runs.
func (s *Scheduler) caughtUp(tk lease.Tick) {
	if n := s.behind.Swap(0); n > 0 {
		s.log.Info("feature ticks caught up", "coalesced", n, "tick", tk.Index, "due", tk.At)
	}
}

// Coalesced is the number of scheduled ticks skipped because a later tick
// was already due.
func (s *Scheduler) Coalesced() int64 { return s.coalesced.Load() }
