package features_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/cluster/lease"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/features"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/gateway/sink/eventsink"
	"github.com/telegate/telegate/internal/svctest"
	"github.com/telegate/telegate/internal/testenv"
)

const hemiVIN = "TGHEM000000000001"

// hemiCustomer drives in the southern hemisphere, has no registered region
// (so "north" by default) and shares its location.
var hemiCustomer = customers.Registration{ID: "far-south", Entitlements: []string{"heated_seats"},
	Vehicles: []customers.Vehicle{{VIN: hemiVIN}}, Consents: []string{features.ConsentLocation}}

// publishPosition publishes a location event as the event sink does.
func publishPosition(t *testing.T, ctx context.Context, js jetstream.JetStream, vin string, seq int, lat float64, at time.Time) {
	t.Helper()
	if err := (svc.Publisher{JS: js}).Publish(ctx, "vehicle.event."+vin, fmt.Sprintf("vev-%s-%d", vin, seq), "vehicle.location",
		vin, at, eventsink.VehicleEvent{VIN: vin, Kind: "location", Seq: uint64(seq),
			Position: &eventsink.LatLon{Lat: lat, Lon: 151.2}}); err != nil {
		t.Fatal(err)
	}
}

// A scheduler learns from a position that a vehicle with no region is in
// the southern hemisphere, then stops (its lease released); a second
// replica, started afterwards (it never saw the position), takes the lease
// and must decide with "south": in July heated seats (winter) go on. With
// the hemisphere in one process's memory, the second replica decided
// "north" (no change) until the vehicle sent a new position.
func TestHemisphereSurvivesLeaseHandOver(t *testing.T) {
	const (
		ttl      = 3 * time.Second
		interval = 30 * time.Second
	)
	bus := svctest.Bus(t)
	roles := svctest.Roles(t, bus) // the services on their own users
	ops := svctest.Ops(t, bus)     // the test's own reads and writes
	js := ops.JetStream()
	log := svctest.Logger()
	clk := testenv.NewManualClock(time.Date(2031, 7, 10, 10, 0, 0, 0, time.UTC))
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cat, err := features.ParseCatalog([]byte(catalogYAML))
	if err != nil {
		t.Fatal(err)
	}
	lkv, err := lease.OpenBucket(ctx, svctest.Role(t, roles, natsbus.RoleFeatures).JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	type replica struct {
		reg    *customers.Registry
		sched  *features.Scheduler
		cancel context.CancelFunc
		done   chan error
	}
	start := func(name string) *replica {
		reg, err := customers.Open(ctx, svctest.Role(t, roles, natsbus.RoleCustomers).JetStream(), 1, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		s, err := features.NewScheduler(ctx, svctest.Role(t, roles, natsbus.RoleFeatures).Conn(), svctest.Role(t, roles, natsbus.RoleFeatures).JetStream(), 1, reg, features.Config{Catalog: cat, Interval: interval,
			Clock: svc.Clock(clk.Now), Cluster: lease.Cluster{KV: lkv, Holder: name, TTL: ttl, Clock: clk, Log: log}}, log)
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithCancel(ctx)
		r := &replica{reg: reg, sched: s, cancel: rcancel, done: make(chan error, 2)}
		go func() { r.done <- reg.Run(rctx) }()
		go func() { r.done <- s.Run(rctx) }()
		return r
	}
	stop := func(r *replica) {
		r.cancel()
		<-r.done
		<-r.done
	}
	// step advances the manual clock until cond holds.
	step := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not reached", what)
			}
			clk.Advance(ttl / 20)
			time.Sleep(5 * time.Millisecond)
		}
	}

	a := start("replica-a")
	if err := a.reg.Register(ctx, hemiCustomer, "test"); err != nil {
		t.Fatal(err)
	}
	// Tick 0 (due at once) decides with the default: north, nothing on.
	svctest.Eventually(t, "replica a's first tick", func() error {
		if a.sched.Ticks() == 0 {
			return errors.New("no tick yet")
		}
		return nil
	})
	if st, _ := a.sched.States(ctx, hemiVIN); st["heated_seats"].Want {
		t.Fatalf("before any position: heated seats %+v, want off (north)", st["heated_seats"])
	}
	publishPosition(t, ctx, js, hemiVIN, 1, -33.9, clk.Now())
	svctest.Eventually(t, "hemisphere stored", func() error {
		if h, err := a.sched.StoredHemisphere(ctx, hemiVIN); err != nil || h != "south" {
			return fmt.Errorf("stored %q: %w", h, err)
		}
		return nil
	})
	// A latitude out of range is counted and changes nothing.
	publishPosition(t, ctx, js, hemiVIN, 2, 123, clk.Now())
	svctest.Eventually(t, "bad latitude counted", func() error {
		if n := a.sched.BadPositions(); n != 1 {
			return fmt.Errorf("%d bad positions", n)
		}
		return nil
	})
	stop(a) // releases the lease; its memory is gone

	b := start("replica-b")
	defer stop(b)
	step("replica b ticks", func() bool { return b.sched.Ticks() > 0 })
	st, err := b.sched.States(ctx, hemiVIN)
	if err != nil {
		t.Fatal(err)
	}
	if got := st["heated_seats"]; !got.Want || got.Origin != "in season" {
		t.Fatalf("replica b: heated seats %+v; want on (southern winter) without a new position", got)
	}
	o, ok := b.reg.Lookup(hemiVIN)
	if !ok {
		t.Fatal("replica b: vehicle not registered")
	}
	h, err := b.sched.Hemisphere(ctx, o)
	if err != nil || h != "south" {
		t.Fatalf("replica b: hemisphere %q, %v; want south", h, err)
	}
}

// hemiEnv is one scheduler with its registry wired as in the suite
// (erasure and withdrawal hooks), and the bucket read directly.
type hemiEnv struct {
	ctx   context.Context
	js    jetstream.JetStream
	reg   *customers.Registry
	sched *features.Scheduler
	kv    jetstream.KeyValue
}

func newHemiEnv(t *testing.T) *hemiEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	bus := svctest.Bus(t)
	roles := svctest.Roles(t, bus) // the services on their own users
	ops := svctest.Ops(t, bus)     // the test's own reads and writes
	js := ops.JetStream()
	log := svctest.Logger()
	reg, err := customers.Open(ctx, svctest.Role(t, roles, natsbus.RoleCustomers).JetStream(), 1, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := features.ParseCatalog([]byte(catalogYAML))
	if err != nil {
		t.Fatal(err)
	}
	s, err := features.NewScheduler(ctx, svctest.Role(t, roles, natsbus.RoleFeatures).Conn(), svctest.Role(t, roles, natsbus.RoleFeatures).JetStream(), 1, reg, features.Config{Catalog: cat}, log)
	if err != nil {
		t.Fatal(err)
	}
	reg.OnErase(s.Erase)
	reg.OnWithdraw(s.Withdrawn)
	kv, err := js.KeyValue(ctx, features.HemisphereBucket)
	if err != nil {
		t.Fatal(err)
	}
	return &hemiEnv{ctx: ctx, js: js, reg: reg, sched: s, kv: kv}
}

// rev is the stored entry's revision (0: none).
func (e *hemiEnv) rev(t *testing.T, vin string) uint64 {
	t.Helper()
	en, err := e.kv.Get(e.ctx, "h."+vin)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return en.Revision()
}

// The hemisphere is written only when it changes, never the coordinates.
func TestHemisphereWrittenOnChangeOnly(t *testing.T) {
	e := newHemiEnv(t)
	if err := e.reg.Register(e.ctx, hemiCustomer, "test"); err != nil {
		t.Fatal(err)
	}
	for _, lat := range []float64{-33.9, -34.0, -12.5} {
		if err := e.sched.SetLatitude(e.ctx, hemiVIN, lat); err != nil {
			t.Fatal(err)
		}
	}
	first := e.rev(t, hemiVIN)
	en, err := e.kv.Get(e.ctx, "h."+hemiVIN)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(en.Value()); got != `{"hemisphere":"south"}` {
		t.Fatalf("stored %s; want the hemisphere only", got)
	}
	if err := e.sched.SetLatitude(e.ctx, hemiVIN, -1); err != nil {
		t.Fatal(err)
	}
	if r := e.rev(t, hemiVIN); r != first {
		t.Fatalf("revision %d after a position in the same hemisphere; want %d (no write)", r, first)
	}
	if err := e.sched.SetLatitude(e.ctx, hemiVIN, 48.1); err != nil {
		t.Fatal(err)
	}
	if h, _ := e.sched.StoredHemisphere(e.ctx, hemiVIN); h != "north" {
		t.Fatalf("after crossing the equator: %q, want north", h)
	}
	if err := e.sched.SetLatitude(e.ctx, hemiVIN, 91); !errors.Is(err, features.ErrBadLatitude) {
		t.Fatalf("latitude 91: %v, want ErrBadLatitude", err)
	}
}

// Without the location consent nothing is stored; withdrawing it deletes
// what was stored.
func TestHemisphereNeedsLocationConsent(t *testing.T) {
	e := newHemiEnv(t)
	noConsent := hemiCustomer
	noConsent.Consents = nil
	if err := e.reg.Register(e.ctx, noConsent, "test"); err != nil {
		t.Fatal(err)
	}
	if err := e.sched.SetLatitude(e.ctx, hemiVIN, -33.9); err != nil {
		t.Fatal(err)
	}
	if r := e.rev(t, hemiVIN); r != 0 {
		t.Fatalf("stored without location consent (revision %d)", r)
	}
	if _, err := e.reg.SetConsent(e.ctx, hemiCustomer.ID, features.ConsentLocation, true, "app"); err != nil {
		t.Fatal(err)
	}
	if err := e.sched.SetLatitude(e.ctx, hemiVIN, -33.9); err != nil {
		t.Fatal(err)
	}
	if h, _ := e.sched.StoredHemisphere(e.ctx, hemiVIN); h != "south" {
		t.Fatalf("with consent: %q, want south", h)
	}
	if _, err := e.reg.SetConsent(e.ctx, hemiCustomer.ID, features.ConsentLocation, false, "app"); err != nil {
		t.Fatal(err)
	}
	if r := e.rev(t, hemiVIN); r != 0 {
		t.Fatalf("still stored after the withdrawal (revision %d)", r)
	}
	h, err := e.sched.Hemisphere(e.ctx, customers.Owner{Vehicle: customers.Vehicle{VIN: hemiVIN}})
	if err != nil || h != "north" {
		t.Fatalf("after the withdrawal: hemisphere %q, %v; want north (default)", h, err)
	}
}

// Erasing the customer deletes the vehicle's entry, history included: the
// scheduler's erasure hook, and the registry's erasure as a whole.
func TestHemisphereErased(t *testing.T) {
	e := newHemiEnv(t)
	if err := e.reg.Register(e.ctx, hemiCustomer, "test"); err != nil {
		t.Fatal(err)
	}
	if err := e.sched.SetLatitude(e.ctx, hemiVIN, -33.9); err != nil {
		t.Fatal(err)
	}
	if e.rev(t, hemiVIN) == 0 {
		t.Fatal("not stored")
	}
	// The hook itself (Erase also scrubs every subject carrying the VIN).
	if err := e.sched.Erase(e.ctx, &customers.Erasure{Customer: customers.Customer{ID: hemiCustomer.ID,
		Vehicles: hemiCustomer.Vehicles}}); err != nil {
		t.Fatal(err)
	}
	if r := e.rev(t, hemiVIN); r != 0 {
		t.Fatalf("still stored after the erasure hook (revision %d)", r)
	}
	if err := e.sched.SetLatitude(e.ctx, hemiVIN, -33.9); err != nil {
		t.Fatal(err)
	}
	if e.rev(t, hemiVIN) == 0 {
		t.Fatal("not stored again")
	}
	if err := e.reg.Erase(e.ctx, hemiCustomer.ID); err != nil {
		t.Fatal(err)
	}
	if r := e.rev(t, hemiVIN); r != 0 {
		t.Fatalf("still stored after erasure (revision %d)", r)
	}
	st, err := e.js.Stream(e.ctx, "KV_"+features.HemisphereBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(e.ctx, jetstream.WithSubjectFilter("$KV."+features.HemisphereBucket+".>"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("%d messages left in the bucket's stream after erasure", info.State.Msgs)
	}
}

// A hemisphere stored while the owner no longer grants ConsentLocation (a
// replica whose registry had not yet seen the withdrawal wrote it after
// the withdrawing replica's purge, or that purge failed: its error is not
// returned to the customer) is not used, and the next tick deletes it.
// Before, every tick kept deciding with it.
func TestHemisphereWithoutConsentNotUsedAndDeleted(t *testing.T) {
	e := newHemiEnv(t)
	if err := e.reg.Register(e.ctx, hemiCustomer, "test"); err != nil {
		t.Fatal(err)
	}
	if err := e.sched.SetLatitude(e.ctx, hemiVIN, -33.9); err != nil {
		t.Fatal(err)
	}
	// The withdrawal, made through another replica's registry (no
	// hemisphere hook: as if its purge ran before the write above).
	other, err := customers.Open(e.ctx, e.js, 1, nil, svctest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	octx, ocancel := context.WithCancel(e.ctx)
	odone := make(chan error, 1)
	go func() { odone <- other.Run(octx) }()
	t.Cleanup(func() { ocancel(); <-odone })
	svctest.Eventually(t, "other replica sees the customer", func() error {
		if _, ok := other.Get(hemiCustomer.ID); !ok {
			return errors.New("not yet")
		}
		return nil
	})
	if _, err := other.SetConsent(e.ctx, hemiCustomer.ID, features.ConsentLocation, false, "app"); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(e.ctx)
	rdone := make(chan error, 1)
	go func() { rdone <- e.reg.Run(rctx) }()
	t.Cleanup(func() { rcancel(); <-rdone })
	svctest.Eventually(t, "withdrawal seen", func() error {
		if e.reg.Consented(hemiCustomer.ID, features.ConsentLocation) {
			return errors.New("still consented")
		}
		return nil
	})
	if e.rev(t, hemiVIN) == 0 {
		t.Fatal("the hemisphere should still be stored (no hook ran here)")
	}
	o, ok := e.reg.Lookup(hemiVIN)
	if !ok {
		t.Fatal("vehicle not registered")
	}
	h, err := e.sched.Hemisphere(e.ctx, o)
	if err != nil || h != "north" {
		t.Fatalf("without consent: hemisphere %q, %v; want north (the stored one not used)", h, err)
	}
	if _, err := e.sched.Tick(e.ctx, time.Date(2031, 7, 10, 10, 0, 0, 0, time.UTC), true); err != nil {
		t.Fatal(err)
	}
	if r := e.rev(t, hemiVIN); r != 0 {
		t.Fatalf("still stored without consent after a tick (revision %d)", r)
	}
}
