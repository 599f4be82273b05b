package features_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/commands"
	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/features"
	"github.com/telegate/telegate/internal/svctest"
)

const catalogYAML = `
features:
  - id: heated_seats
    name: Heated seats
    season: winter
    command: {name: feature, params: {level: "2"}}
  - id: cabin_precond
    name: Cabin pre-conditioning
    season: summer
  - id: wifi
    name: Wi-Fi hotspot
    season: all-year
  - id: sport_mode
    name: Sport mode
    season: all-year
`

type env struct {
	ctx   context.Context
	reg   *customers.Registry
	sched *features.Scheduler
	cmds  atomic.Int64
}

func newEnv(t *testing.T, regs ...customers.Registration) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	bus := svctest.Bus(t)
	roles := svctest.Roles(t, bus) // the services on their own users
	ops := svctest.Ops(t, bus)     // the test's own reads and writes
	log := svctest.Logger()
	reg, err := customers.Open(ctx, svctest.Role(t, roles, natsbus.RoleCustomers).JetStream(), 1, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range regs {
		if err := reg.Register(ctx, r, "test"); err != nil {
			t.Fatal(err)
		}
	}
	cat, err := features.ParseCatalog([]byte(catalogYAML))
	if err != nil {
		t.Fatal(err)
	}
	s, err := features.NewScheduler(ctx, svctest.Role(t, roles, natsbus.RoleFeatures).Conn(), svctest.Role(t, roles, natsbus.RoleFeatures).JetStream(), 1, reg, features.Config{Catalog: cat}, log)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{ctx: ctx, reg: reg, sched: s}
	sub, err := ops.Conn().Subscribe("vehicle.cmd.*", func(*nats.Msg) { e.cmds.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return e
}

// ack plays the vehicle: every change is applied.
func (e *env) ack(t *testing.T, chs []features.Change, at time.Time) {
	t.Helper()
	for _, c := range chs {
		st := "off"
		if c.On {
			st = "on"
		}
		r := commands.Result{Request: commands.Request{VIN: c.VIN, CmdID: c.CmdID, Name: "feature", Origin: "features",
			Params: []commands.Param{{Key: "feature", Value: c.Feature}, {Key: "state", Value: st}}}, State: commands.StateApplied}
		if err := e.sched.HandleResult(e.ctx, r, at); err != nil {
			t.Fatal(err)
		}
	}
}

// TestYearWalk walks 2026 day by day with an injected date and checks every
// transition of every feature in both hemispheres (region-based and
// latitude-based).
func TestYearWalk(t *testing.T) {
	all := []string{"heated_seats", "cabin_precond", "wifi"} // not sport_mode: not entitled
	e := newEnv(t,
		customers.Registration{ID: "north", Region: "DE", Entitlements: all, Vehicles: []customers.Vehicle{{VIN: "VIN-N"}}},
		customers.Registration{ID: "south", Region: "AU", Entitlements: all, Vehicles: []customers.Vehicle{{VIN: "VIN-S"}}},
		customers.Registration{ID: "moved", Region: "DE", Entitlements: all, Vehicles: []customers.Vehicle{{VIN: "VIN-L"}},
			Consents: []string{features.ConsentLocation}},
	)
	// Registered in Germany, last seen in Cape Town.
	if err := e.sched.SetLatitude(e.ctx, "VIN-L", -33.9); err != nil {
		t.Fatal(err)
	}
	var got []string
	total := 0
	for d := time.Date(2026, 1, 1, 6, 0, 0, 0, time.UTC); d.Year() == 2026; d = d.AddDate(0, 0, 1) {
		chs, err := e.sched.Tick(e.ctx, d, false)
		if err != nil {
			t.Fatal(err)
		}
		// A second tick on the same day changes nothing (idempotent).
		if again, _ := e.sched.Tick(e.ctx, d, false); len(again) != 0 {
			t.Fatalf("%s: second tick: %v", d.Format("01-02"), again)
		}
		e.ack(t, chs, d)
		total += len(chs)
		for _, c := range chs {
			got = append(got, fmt.Sprintf("%s %s %s %t", d.Format("01-02"), c.VIN, c.Feature, c.On))
		}
	}
	var want []string
	for _, vin := range []string{"VIN-N", "VIN-S", "VIN-L"} {
		south := vin != "VIN-N"
		add := func(date, feature string, on bool) {
			want = append(want, fmt.Sprintf("%s %s %s %t", date, vin, feature, on))
		}
		add("01-01", "wifi", true)
		if !south {
			add("01-01", "heated_seats", true)
			add("04-01", "heated_seats", false)
			add("06-01", "cabin_precond", true)
			add("09-01", "cabin_precond", false)
			add("11-01", "heated_seats", true)
		} else {
			add("01-01", "cabin_precond", true)
			add("03-01", "cabin_precond", false)
			add("05-01", "heated_seats", true)
			add("10-01", "heated_seats", false)
			add("12-01", "cabin_precond", true)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("transitions:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	svctest.Eventually(t, "commands on NATS", func() error {
		if n := e.cmds.Load(); n != int64(total) {
			return fmt.Errorf("%d commands, want %d", n, total)
		}
		return nil
	})
	st, _ := e.sched.States(e.ctx, "VIN-N")
	if !st["heated_seats"].Active || st["cabin_precond"].Active || !st["wifi"].Active || st["heated_seats"].Pending {
		t.Fatalf("end-of-year state: %+v", st)
	}
}

// TestDryRunRolloutRollback checks that a dry run sends nothing, that a
// rollout percentage selects a stable subset and that a rollback
// deactivates the feature everywhere.
func TestDryRunRolloutRollback(t *testing.T) {
	var regs []customers.Registration
	for i := range 40 {
		regs = append(regs, customers.Registration{ID: fmt.Sprintf("c%02d", i), Region: "FR", Entitlements: []string{"wifi"},
			Vehicles: []customers.Vehicle{{VIN: fmt.Sprintf("VIN%014d", i)}}})
	}
	e := newEnv(t, regs...)
	day := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	if _, err := e.sched.SetControl(e.ctx, "wifi", func(c *features.Control) { p := 50; c.Rollout = &p }); err != nil {
		t.Fatal(err)
	}
	plan, err := e.sched.Tick(e.ctx, day, true)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := range 40 {
		if features.InRollout("wifi", fmt.Sprintf("VIN%014d", i), 50) {
			want++
		}
	}
	if len(plan) != want || want == 0 || want == 40 {
		t.Fatalf("dry-run plan %d changes, want %d of 40", len(plan), want)
	}
	chs, err := e.sched.Tick(e.ctx, day, false)
	if err != nil || len(chs) != len(plan) {
		t.Fatalf("real tick: %d %v", len(chs), err)
	}
	for i := range chs {
		if chs[i].CmdID == "" || plan[i].CmdID != "" {
			t.Fatalf("command ids: planned %q, decided %q (ids are drawn when deciding)", plan[i].CmdID, chs[i].CmdID)
		}
		if p := plan[i]; p.VIN != chs[i].VIN || p.Feature != chs[i].Feature || p.On != chs[i].On || p.Reason != chs[i].Reason {
			t.Fatalf("dry run and real run differ: %+v %+v", plan[i], chs[i])
		}
	}
	e.ack(t, chs, day)
	if _, err := e.sched.SetControl(e.ctx, "wifi", func(c *features.Control) { c.RolledBack = true }); err != nil {
		t.Fatal(err)
	}
	back, err := e.sched.Tick(e.ctx, day.Add(time.Hour), false)
	if err != nil || len(back) != want {
		t.Fatalf("rollback: %d changes, want %d (%v)", len(back), want, err)
	}
	for _, c := range back {
		if c.On {
			t.Fatalf("rollback activates: %+v", c)
		}
	}
	svctest.Eventually(t, "commands on NATS (none from the dry run)", func() error {
		if n := e.cmds.Load(); n != int64(2*want) {
			return fmt.Errorf("%d commands, want %d", n, 2*want)
		}
		return nil
	})
}

func TestInSeason(t *testing.T) {
	d := func(m time.Month) time.Time { return time.Date(2026, m, 15, 0, 0, 0, 0, time.UTC) }
	cases := []struct {
		season, hemi string
		m            time.Month
		want         bool
	}{
		{features.Winter, "north", time.January, true}, {features.Winter, "north", time.April, false},
		{features.Winter, "south", time.July, true}, {features.Winter, "south", time.January, false},
		{features.Summer, "north", time.July, true}, {features.Summer, "south", time.January, true},
		{features.Summer, "south", time.July, false}, {features.AllYear, "south", time.May, true},
	}
	for _, c := range cases {
		if got := features.InSeason(c.season, c.hemi, d(c.m)); got != c.want {
			t.Errorf("%s %s %s: %v", c.season, c.hemi, c.m, got)
		}
	}
}
