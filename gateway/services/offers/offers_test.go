package offers

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/partners"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/gateway/sink/eventsink"
	"github.com/telegate/telegate/internal/svctest"
)

var testStations = map[string]Station{
	"CS-0001": {ID: "CS-0001", Lat: 48.137, Lon: 11.575},
	"CS-0002": {ID: "CS-0002", Lat: -33.869, Lon: 151.209},
	"CS-0003": {ID: "CS-0003", Lat: 10, Lon: 10}, // no venue nearby
}

func venue(id string, lat, lon float64, tz string, hours []partners.Hours, cap int) partners.Venue {
	return partners.Venue{ID: id, Name: "Venue " + id, Lat: lat, Lon: lon, RadiusM: 500, TimeZone: tz, Hours: hours,
		Offer: partners.Offer{Text: "Coffee -20%", Code: "CODE-" + id}, MinDwell: partners.Duration(10 * time.Minute),
		DailyCap: cap, Available: true}
}

var allWeek = []partners.Hours{{Days: []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}, Open: "00:00", Close: "24:00"}}

type fixture struct {
	ctx  context.Context
	reg  *customers.Registry
	part *partners.Registry
	eng  *Engine
	pub  svc.Publisher
	mu   sync.Mutex
	got  []*nats.Msg
}

func newFixture(t *testing.T) *fixture {
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
	part, err := partners.Open(ctx, svctest.Role(t, roles, natsbus.RolePartners).JetStream(), 1, "", log)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []partners.Partner{
		{ID: "cafe", Name: "Cafe", Venues: []partners.Venue{
			venue("cafe-muc", 48.138, 11.576, "Europe/Berlin", allWeek, 2),
			venue("cafe-syd", -33.870, 151.210, "Australia/Sydney", []partners.Hours{{Days: []string{"mon", "tue", "wed", "thu", "fri"}, Open: "07:00", Close: "19:00"}}, 1),
		}},
		{ID: "bakery", Name: "Bakery", Venues: []partners.Venue{venue("bakery-muc", 48.1365, 11.5745, "Europe/Berlin", allWeek, 1)}},
	} {
		if err := part.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	tokens, err := NewTokens([]TokenKey{{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := NewEngine(ctx, svctest.Role(t, roles, natsbus.RoleOffers).JetStream(), 1, reg, part, Config{Stations: testStations, Tokens: tokens}, log)
	if err != nil {
		t.Fatal(err)
	}
	reg.OnErase(eng.Erase)
	reg.OnWithdraw(eng.Barrier)
	f := &fixture{ctx: ctx, reg: reg, part: part, eng: eng, pub: svc.Publisher{JS: js}}
	sub, err := ops.Conn().Subscribe("partners.>", func(m *nats.Msg) {
		f.mu.Lock()
		f.got = append(f.got, m)
		f.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	g := svc.NewGroup(log)
	t.Cleanup(g.Close)
	g.Go("offers", eng.Run)
	return f
}

type sessionOp struct {
	vin, customer, station string
	at                     time.Time
	consented              bool
	ids                    []string // offer ids this session may produce
}

// TestConsentEnforcedProperty drives random customers, consents,
// withdrawals, erasures and sessions through the real consumer and checks
// the partner side: zero triggers for a driver without the consent at the
// time of the session (never granted, withdrawn or erased), and no partner
// payload with a VIN, customer id, name or anything but the trigger fields.
func TestConsentEnforcedProperty(t *testing.T) {
	f := newFixture(t)
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(42, seed))
	const nCust = 24
	var vins, ids, names []string
	consent := map[string]bool{}
	erased := map[string]bool{}
	for i := range nCust {
		id := fmt.Sprintf("cust-%03d", i)
		vin := fmt.Sprintf("TGSVS%012d", i+1)
		name := fmt.Sprintf("Driver Name %d", i)
		var cs []string
		if rng.IntN(2) == 0 {
			cs = []string{customers.ConsentPartnerOffers}
			consent[id] = true
		}
		if rng.IntN(3) == 0 {
			cs = append(cs, "marketing") // another consent does not count
		}
		if err := f.reg.Register(f.ctx, customers.Registration{ID: id, Name: name, Region: "DE",
			Vehicles: []customers.Vehicle{{VIN: vin, BatteryKWh: float64(40 + rng.IntN(60))}}, Consents: cs,
			IDTags: []string{"TAG-" + id}}, "test"); err != nil {
			t.Fatal(err)
		}
		vins, ids, names = append(vins, vin), append(ids, id), append(names, name)
	}
	// One vehicle without an owner.
	vins = append(vins, "TGSVS999999999999")
	ids = append(ids, "")

	stations := []string{"CS-0001", "CS-0001", "CS-0002", "CS-0003"}
	base := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	var ops []sessionOp
	published := 0
	for step := range 260 {
		switch rng.IntN(20) {
		case 0: // withdraw
			c := ids[rng.IntN(nCust)]
			if !erased[c] {
				if _, err := f.reg.SetConsent(f.ctx, c, customers.ConsentPartnerOffers, false, "app"); err != nil {
					t.Fatal(err)
				}
				consent[c] = false
			}
		case 1: // grant
			c := ids[rng.IntN(nCust)]
			if !erased[c] {
				if _, err := f.reg.SetConsent(f.ctx, c, customers.ConsentPartnerOffers, true, "app"); err != nil {
					t.Fatal(err)
				}
				consent[c] = true
			}
		case 2: // erase
			c := ids[rng.IntN(nCust)]
			if !erased[c] {
				if err := f.reg.Erase(f.ctx, c); err != nil {
					t.Fatal(err)
				}
				erased[c], consent[c] = true, false
			}
		default: // session
			k := rng.IntN(len(vins))
			st := stations[rng.IntN(len(stations))]
			at := base.Add(time.Duration(rng.IntN(30*24*60)) * time.Minute)
			sid := fmt.Sprintf("s-%d", step)
			op := sessionOp{vin: vins[k], customer: ids[k], station: st, at: at,
				consented: ids[k] != "" && consent[ids[k]] && !erased[ids[k]]}
			for _, pv := range []string{"cafe/cafe-muc", "cafe/cafe-syd", "bakery/bakery-muc"} {
				p, v, _ := strings.Cut(pv, "/")
				op.ids = append(op.ids, offerID(st, sid, p, v))
			}
			ev := eventsink.ChargingEvent{Station: st, SessionID: sid, Connector: 1, Event: "started", VIN: vins[k], IDTag: "TAG-" + ids[k],
				PowerW: float64([]int{11, 50, 150}[rng.IntN(3)] * 1000), SoCPct: float64(10 + rng.IntN(40)),
				TargetSoCPct: 80, ReceivedAt: at}
			if err := f.pub.Publish(f.ctx, "charging.session.started."+st, "session-"+sid, "charging.session.started", st, at, ev); err != nil {
				t.Fatal(err)
			}
			published++
			want := int64(published)
			svctest.Eventually(t, "session processed", func() error {
				if n := f.eng.Stats.Sessions.Load(); n < want {
					return fmt.Errorf("%d of %d sessions", n, want)
				}
				return nil
			})
			ops = append(ops, op)
		}
	}
	// Non-vacuity does not depend on the seed: a customer whose consent
	// the random steps never touch charges on five days at a station with
	// venues open all week, with a dwell above every venue's minimum; each
	// session triggers both Munich venues.
	const sureID, sureVIN = "cust-sure", "TGSVS000000009999"
	if err := f.reg.Register(f.ctx, customers.Registration{ID: sureID, Name: "Sure Driver", Region: "DE",
		Vehicles: []customers.Vehicle{{VIN: sureVIN, BatteryKWh: 60}}, Consents: []string{customers.ConsentPartnerOffers}}, "test"); err != nil {
		t.Fatal(err)
	}
	vins, ids, names = append(vins, sureVIN), append(ids, sureID), append(names, "Sure Driver")
	for d := range 5 {
		at := base.AddDate(0, 0, 40+d).Add(10 * time.Hour)
		sid := fmt.Sprintf("sure-%d", d)
		op := sessionOp{vin: sureVIN, customer: sureID, station: "CS-0001", at: at, consented: true}
		for _, pv := range []string{"cafe/cafe-muc", "bakery/bakery-muc"} {
			p, v, _ := strings.Cut(pv, "/")
			op.ids = append(op.ids, offerID("CS-0001", sid, p, v))
		}
		ev := eventsink.ChargingEvent{Station: "CS-0001", SessionID: sid, Connector: 1, Event: "started", VIN: sureVIN,
			PowerW: 11000, SoCPct: 20, TargetSoCPct: 80, ReceivedAt: at}
		// The vehicle corroborates the session (no id tag): its position
		// at the station, received a minute before.
		if err := f.pub.Publish(f.ctx, "vehicle.event."+sureVIN, fmt.Sprintf("vev-%s-%d", sureVIN, d), "vehicle.ignition_off", sureVIN,
			at.Add(-time.Minute), eventsink.VehicleEvent{VIN: sureVIN, Kind: "ignition_off", Seq: uint64(d + 1),
				Position: &eventsink.LatLon{Lat: 48.137, Lon: 11.575}, ReceivedAt: at.Add(-time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if err := f.pub.Publish(f.ctx, "charging.session.started.CS-0001", "session-"+sid, "charging.session.started", "CS-0001", at, ev); err != nil {
			t.Fatal(err)
		}
		published++
		ops = append(ops, op)
	}
	svctest.Eventually(t, "sessions processed", func() error {
		if n := f.eng.Stats.Evaluated.Load(); n < int64(published) {
			return fmt.Errorf("%d of %d sessions", n, published)
		}
		return nil
	})
	// Every trigger is published before HandleSession returns; flush the
	// core subscription.
	want := f.eng.Stats.Triggers.Load()
	svctest.Eventually(t, "triggers received", func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if int64(len(f.got)) < want {
			return fmt.Errorf("%d of %d", len(f.got), want)
		}
		return nil
	})
	if want < 10 {
		t.Fatalf("only %d triggers (seed %d): the property is vacuous", want, seed)
	}
	byID := map[string]sessionOp{}
	for _, op := range ops {
		for _, id := range op.ids {
			byID[id] = op
		}
	}
	allowed := []string{"driver_token", "expected_dwell_min", "expires_at", "id", "offer_code", "partner", "station", "time", "type", "v", "venue"}
	tokens := map[string]string{} // token → partner|customer
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.got {
		var tr partners.Trigger
		if err := json.Unmarshal(m.Data, &tr); err != nil {
			t.Fatal(err)
		}
		op, ok := byID[tr.ID]
		if !ok {
			t.Fatalf("trigger %s for no session", tr.ID)
		}
		if !op.consented {
			t.Fatalf("trigger %s for customer %q without partner_offers consent", tr.ID, op.customer)
		}
		if m.Subject != "partners."+tr.Partner+".triggers" {
			t.Fatalf("trigger for %s on %s", tr.Partner, m.Subject)
		}
		var raw map[string]any
		_ = json.Unmarshal(m.Data, &raw)
		var keys []string
		for k := range raw {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, allowed) {
			t.Fatalf("payload fields %v, want exactly %v", keys, allowed)
		}
		body := string(m.Data)
		for i, v := range vins {
			if strings.Contains(body, v) || (ids[i] != "" && strings.Contains(body, ids[i])) {
				t.Fatalf("payload leaks vin or customer id: %s", body)
			}
		}
		for _, n := range names {
			if strings.Contains(body, n) {
				t.Fatalf("payload leaks a name: %s", body)
			}
		}
		for _, c := range []string{"48.13", "11.57", "-33.8", "151.2"} {
			if strings.Contains(body, c) {
				t.Fatalf("payload carries coordinates: %s", body)
			}
		}
		k := tr.Partner + "|" + op.customer
		if prev, ok := tokens[tr.DriverToken]; ok && prev != k {
			t.Fatalf("token %s shared by %s and %s", tr.DriverToken, prev, k)
		}
		tokens[tr.DriverToken] = k
	}
	t.Logf("seed %d: %d sessions, %d triggers, no-consent %d, capped %d", seed, published, want, f.eng.Stats.NoConsent.Load(), f.eng.Stats.Capped.Load())
}

// TestVenueRules checks range, opening hours (in the venue's time zone),
// availability, min dwell, daily cap, idempotent redelivery, tokens and
// redemption.
func TestVenueRules(t *testing.T) {
	f := newFixture(t)
	ctx := f.ctx
	if err := f.reg.Register(ctx, customers.Registration{ID: "c1", Vehicles: []customers.Vehicle{{VIN: "VINA", BatteryKWh: 60}},
		Consents: []string{customers.ConsentPartnerOffers}, IDTags: []string{"TAG-c1"}}, "test"); err != nil {
		t.Fatal(err)
	}
	ev := func(st, sid string) eventsink.ChargingEvent {
		return eventsink.ChargingEvent{Station: st, SessionID: sid, VIN: "VINA", IDTag: "TAG-c1", PowerW: 11000, SoCPct: 20, TargetSoCPct: 80}
	}
	// Sydney, Monday 2026-06-01 08:00 local = Sunday 22:00 UTC: only cafe-syd (open).
	syd := time.Date(2026, 5, 31, 22, 0, 0, 0, time.UTC)
	if n, err := f.handle(syd, ev("CS-0002", "a")); err != nil || n != 1 {
		t.Fatalf("sydney open: %d %v", n, err)
	}
	// Same session again (redelivery): same trigger, not counted against the cap.
	if n, err := f.handle(syd, ev("CS-0002", "a")); err != nil || n != 1 {
		t.Fatalf("redelivery: %d %v", n, err)
	}
	// Second session same local day: cap 1 reached.
	if n, _ := f.handle(syd.Add(time.Hour), ev("CS-0002", "b")); n != 0 {
		t.Fatalf("cap: %d triggers", n)
	}
	// Saturday in Sydney: closed.
	if n, _ := f.handle(time.Date(2026, 6, 6, 1, 0, 0, 0, time.UTC), ev("CS-0002", "c")); n != 0 {
		t.Fatalf("closed venue: %d triggers", n)
	}
	// Munich: two partners in range.
	muc := time.Date(2026, 6, 2, 10, 0, 0, 0, time.UTC)
	if n, _ := f.handle(muc, ev("CS-0001", "d")); n != 2 {
		t.Fatalf("munich: %d triggers, want 2", n)
	}
	// Sold out: bakery off.
	if err := f.part.SetAvailability(ctx, "bakery", "bakery-muc", false); err != nil {
		t.Fatal(err)
	}
	if n, _ := f.handle(muc.Add(24*time.Hour), ev("CS-0001", "e")); n != 1 {
		t.Fatalf("sold out: %d triggers, want 1", n)
	}
	// Short dwell (SoC 78 → 80 at 150 kW): below min dwell.
	short := ev("CS-0001", "f")
	short.SoCPct, short.PowerW = 78, 150000
	if n, _ := f.handle(muc.Add(48*time.Hour), short); n != 0 {
		t.Fatalf("short dwell: %d", n)
	}
	// Out of range station.
	if n, _ := f.handle(muc, ev("CS-0003", "g")); n != 0 {
		t.Fatalf("no venue in range: %d", n)
	}
	// Redemption by the partner, idempotent, wrong partner/code refused.
	id := offerID("CS-0002", "a", "cafe", "cafe-syd")
	if _, _, err := f.eng.Redeem(ctx, "bakery", id, "CODE-cafe-syd"); err == nil {
		t.Fatal("another partner redeemed the offer")
	}
	if _, _, err := f.eng.Redeem(ctx, "cafe", id, "WRONG"); err == nil {
		t.Fatal("wrong code accepted")
	}
	tr, first, err := f.eng.Redeem(ctx, "cafe", id, "CODE-cafe-syd")
	if err != nil || !first || tr.DriverToken == "" {
		t.Fatalf("redeem: %v %v %+v", err, first, tr)
	}
	if _, first, err := f.eng.Redeem(ctx, "cafe", id, "CODE-cafe-syd"); err != nil || first {
		t.Fatalf("second redeem: %v %v", err, first)
	}
	// Tokens: per partner, stable, different after erasure.
	tk := f.eng.cfg.Tokens
	salt := f.reg.TokenSalt("c1")
	cafe := tk.Driver("cafe", "c1", salt)
	if cafe != tr.DriverToken || cafe == tk.Driver("bakery", "c1", salt) {
		t.Fatal("tokens not stable per partner or linkable across partners")
	}
	if err := f.reg.Erase(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if tk.Driver("cafe", "c1", f.reg.TokenSalt("c1")) == cafe {
		t.Fatal("token unchanged after erasure")
	}
	if _, _, err := f.eng.Redeem(ctx, "cafe", offerID("CS-0001", "d", "cafe", "cafe-muc"), "CODE-cafe-muc"); err == nil {
		t.Fatal("offer of an erased customer redeemable")
	}
	if n, _ := f.handle(muc.Add(72*time.Hour), ev("CS-0001", "h")); n != 0 {
		t.Fatalf("trigger after erasure: %d", n)
	}
}

func TestExpectedDwell(t *testing.T) {
	// 60 kWh, 20 → 80 % = 36 kWh at 11 kW / 0.93 ≈ 211 min.
	if d := ExpectedDwell(20, 80, 11000, 60); d < 205 || d > 215 {
		t.Fatalf("dwell %v", d)
	}
	if ExpectedDwell(80, 80, 11000, 60) != 0 || ExpectedDwell(20, 80, 0, 60) != 0 {
		t.Fatal("no dwell expected")
	}
	if ExpectedDwell(80, 100, 50000, 60) <= ExpectedDwell(60, 80, 50000, 60) {
		t.Fatal("no taper above 80 %")
	}
	// OCPP sessions report no target SoC: DefaultTargetSoC is assumed.
	if ExpectedDwell(20, 0, 11000, 60) != ExpectedDwell(20, DefaultTargetSoC, 11000, 60) || ExpectedDwell(85, 0, 11000, 60) != 0 {
		t.Fatal("unknown target not defaulted")
	}
}

// handle evaluates a session the gateway received at at, with the
// charger's clock right.
func (f *fixture) handle(at time.Time, d eventsink.ChargingEvent) (int, error) {
	d.ReceivedAt = at
	return f.eng.HandleSession(f.ctx, at, d)
}

// testSeed is the property test's seed: TELEGATE_TEST_SEED when set (to
// replay a failure), 1 otherwise; it is logged either way.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(1)
	if v := os.Getenv("TELEGATE_TEST_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("TELEGATE_TEST_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("seed %d (replay with TELEGATE_TEST_SEED=%d)", seed, seed)
	return seed
}
