package features_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/commands"
	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/features"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/internal/svctest"
	"github.com/telegate/telegate/internal/testenv"
)

// vehicleMQTT records what the dispatcher publishes to vehicles (the MQTT
// broker's side of the boundary).
type vehicleMQTT struct {
	mu   sync.Mutex
	sent []wire.Command
}

func (m *vehicleMQTT) Publish(_ string, payload []byte, _ byte) error {
	var c wire.Command
	if err := wire.DecodeCommand(payload, &c); err != nil {
		return err
	}
	m.mu.Lock()
	m.sent = append(m.sent, c)
	m.mu.Unlock()
	return nil
}

func (m *vehicleMQTT) commands() []wire.Command {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.sent)
}

func param(c wire.Command, k string) string {
	for _, p := range c.Params {
		if p.Key == k {
			return p.Value
		}
	}
	return ""
}

// wired is a scheduler and a real command dispatcher on one bus, with the
// scheduler's clock pinned (TELEGATE_TEST_DATE or a fixed date).
type wired struct {
	ctx    context.Context
	bus    *natsbus.Bus
	ops    *natsbus.Client // the test's own reads and writes (full rights)
	sched  *features.Scheduler
	disp   *commands.Dispatcher
	mqtt   *vehicleMQTT
	online sync.Map // vin → true
	day    time.Time
}

func newWired(t *testing.T, regs ...customers.Registration) *wired {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	w := &wired{ctx: ctx, bus: svctest.Bus(t), mqtt: &vehicleMQTT{}}
	w.ops = svctest.Ops(t, w.bus)
	clock := testenv.Clock(t, time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	w.day = clock()
	log := svctest.Logger()
	roles := svctest.Roles(t, w.bus) // the services on their own users
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
	if w.disp, err = commands.NewDispatcher(ctx, svctest.Role(t, roles, natsbus.RoleCommands).Conn(), svctest.Role(t, roles, natsbus.RoleCommands).JetStream(), 1, w.mqtt, commands.Config{RetryInterval: time.Hour,
		Online: func(vin string) bool { _, ok := w.online.Load(vin); return ok }}, log); err != nil {
		t.Fatal(err)
	}
	if w.sched, err = features.NewScheduler(ctx, svctest.Role(t, roles, natsbus.RoleFeatures).Conn(), svctest.Role(t, roles, natsbus.RoleFeatures).JetStream(), 1, reg, features.Config{Catalog: cat, Interval: time.Hour,
		Clock: clock}, log); err != nil {
		t.Fatal(err)
	}
	g := svc.NewGroup(log)
	t.Cleanup(g.Close)
	g.Go("commands", w.disp.Run)
	g.Go("features", w.sched.Run)
	return w
}

func (w *wired) state(t *testing.T, vin, feature string) features.State {
	t.Helper()
	st, err := w.sched.States(w.ctx, vin)
	if err != nil {
		t.Fatal(err)
	}
	return st[feature]
}

func (w *wired) record(vin, id string) (commands.Record, error) { return w.disp.Get(w.ctx, vin, id) }

// comeOnline marks the vehicle online and announces its connection.
func (w *wired) comeOnline(t *testing.T, vin string) {
	t.Helper()
	w.online.Store(vin, true)
	ev := map[string]any{"device": vin, "kind": "vehicle", "connected": true}
	if err := (svc.Publisher{JS: w.ops.JetStream()}).Publish(w.ctx, "vehicle.connectivity.connected."+vin, "conn-"+vin,
		"connectivity.connected", vin, time.Now(), ev); err != nil {
		t.Fatal(err)
	}
}

func (w *wired) ack(t *testing.T, vin, id, status string) {
	t.Helper()
	ack := map[string]any{"vin": vin, "cmd_id": id, "status": status}
	if err := (svc.Publisher{JS: w.ops.JetStream()}).Publish(w.ctx, "vehicle.cmdack."+vin, "cmdack-"+vin+"-"+id+"-"+status,
		"vehicle.cmdack", vin, time.Now(), ack); err != nil {
		t.Fatal(err)
	}
}

var cmdIDRE = regexp.MustCompile(`^feat-([0-9]+)-[0-9a-f]{24}$`)

// TestReversalSameDateDelivered: a feature switched on (the scheduler's
// start-up tick), off (rollback) and on again (restore) on the same date.
// Each decision gets a new command id; the last one reaches the vehicle
// when it comes online and its ack makes the feature active. With ids
// derived from (vin, feature, state, date) the third decision reused the
// first id, which the dispatcher had closed as superseded: it was dropped
// and the vehicle got the "off" instead.
func TestReversalSameDateDelivered(t *testing.T) {
	const vin = "VIN-REV"
	w := newWired(t, customers.Registration{ID: "c", Region: "DE", Entitlements: []string{"wifi"},
		Vehicles: []customers.Vehicle{{VIN: vin}}})
	svctest.Eventually(t, "start-up tick", func() error {
		if w.sched.Ticks() < 1 {
			return fmt.Errorf("no tick yet")
		}
		return nil
	})
	on1 := w.state(t, vin, "wifi")
	if !on1.Want {
		t.Fatalf("start-up tick on %s: %+v", w.day.Format(time.DateOnly), on1)
	}
	decide := func(rolledBack bool) features.Change {
		t.Helper()
		if _, err := w.sched.SetControl(w.ctx, "wifi", func(c *features.Control) { c.RolledBack = rolledBack }); err != nil {
			t.Fatal(err)
		}
		chs, err := w.sched.Tick(w.ctx, w.day, false) // same date as the start-up tick
		if err != nil || len(chs) != 1 || chs[0].On == rolledBack {
			t.Fatalf("tick (rolled back %t): %+v %v", rolledBack, chs, err)
		}
		return chs[0]
	}
	off := decide(true)
	svctest.Eventually(t, "first decision superseded", func() error {
		if r, err := w.record(vin, on1.CmdID); err != nil || r.State != commands.StateSuperseded {
			return fmt.Errorf("%+v %w", r, err)
		}
		return nil
	})
	on2 := decide(false)
	st := w.state(t, vin, "wifi")
	if st.CmdID != on2.CmdID || !st.Pending || st.Status != commands.StatePending {
		t.Fatalf("state after the third decision: %+v", st)
	}
	svctest.Eventually(t, "the last decision open at the dispatcher", func() error {
		r, err := w.record(vin, on2.CmdID)
		if err != nil || r.State != commands.StatePending {
			return fmt.Errorf("%+v %w", r, err)
		}
		if r2, err := w.record(vin, off.CmdID); err != nil || r2.State != commands.StateSuperseded {
			return fmt.Errorf("off: %+v %w", r2, err)
		}
		return nil
	})
	if n := len(w.mqtt.commands()); n != 0 {
		t.Fatalf("%d commands sent to an offline vehicle", n)
	}

	w.comeOnline(t, vin)
	svctest.Eventually(t, "delivered on reconnect", func() error {
		if len(w.mqtt.commands()) == 0 {
			return fmt.Errorf("nothing delivered")
		}
		return nil
	})
	for _, c := range w.mqtt.commands() {
		if c.CmdID != on2.CmdID || param(c, "state") != "on" {
			t.Fatalf("delivered %s state=%s, want only %s (on)", c.CmdID, param(c, "state"), on2.CmdID)
		}
	}
	w.ack(t, vin, on2.CmdID, "applied")
	svctest.Eventually(t, "feature active", func() error {
		if st := w.state(t, vin, "wifi"); !st.Active || st.Pending || st.Status != commands.StateApplied {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	ids := []string{on1.CmdID, off.CmdID, on2.CmdID}
	for i, id := range ids {
		m := cmdIDRE.FindStringSubmatch(id)
		if m == nil || m[1] != fmt.Sprint(i+1) || (i == 2 && st.Gen != 3) {
			t.Fatalf("decision %d: command id %q, want feat-%d-<24 hex>", i+1, id, i+1)
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(ids)))) != 3 {
		t.Fatalf("command ids collide: %v", ids)
	}
}

// TestDecisionRedeliveryIdempotent: a decision stored but not sent (the
// process stopped between the two) is sent by the next tick with its
// stored id, once; a duplicate request for it changes nothing at the
// dispatcher; and every vehicle's ids are random, not derived from what a
// vehicle knows.
func TestDecisionRedeliveryIdempotent(t *testing.T) {
	const vin, other = "VIN-RED", "VIN-OTH"
	w := newWired(t,
		customers.Registration{ID: "c", Region: "DE", Entitlements: []string{"wifi"}, Vehicles: []customers.Vehicle{{VIN: vin}}},
		customers.Registration{ID: "d", Region: "DE", Entitlements: []string{"wifi"}, Vehicles: []customers.Vehicle{{VIN: other}}})
	svctest.Eventually(t, "start-up tick", func() error {
		if w.sched.Ticks() < 1 {
			return fmt.Errorf("no tick yet")
		}
		return nil
	})
	a, b := w.state(t, vin, "wifi"), w.state(t, other, "wifi")
	if a.CmdID == "" || b.CmdID == "" || a.CmdID[len("feat-1-"):] == b.CmdID[len("feat-1-"):] {
		t.Fatalf("ids of the same decision on two vehicles: %q %q", a.CmdID, b.CmdID)
	}

	// The process stopped after storing decision 2 (off) and before
	// sending it: the state says "decided".
	kv, err := w.ops.JetStream().KeyValue(w.ctx, features.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	const stored = "feat-2-00112233445566778899aabb"
	decided := a
	decided.Want, decided.Gen, decided.CmdID, decided.Status, decided.Pending = false, 2, stored, features.StatusDecided, true
	b2, _ := json.Marshal(decided)
	if _, err := kv.Put(w.ctx, "s."+vin+".wifi", b2); err != nil {
		t.Fatal(err)
	}
	if _, err := w.sched.SetControl(w.ctx, "wifi", func(c *features.Control) { c.RolledBack = true }); err != nil {
		t.Fatal(err)
	}
	// Only the other vehicle is a new decision; the stored one is resent.
	chs, err := w.sched.Tick(w.ctx, w.day, false)
	if err != nil || len(chs) != 1 || chs[0].VIN != other {
		t.Fatalf("tick: %+v %v", chs, err)
	}
	if st := w.state(t, vin, "wifi"); st.CmdID != stored || st.Gen != 2 || st.Status != commands.StatePending {
		t.Fatalf("stored decision after the tick: %+v", st)
	}
	// Again: the same decision is sent with the same id, never a new one.
	if err := commands.Send(w.ctx, svc.Publisher{JS: w.ops.JetStream()}, w.day, commands.Request{VIN: vin, CmdID: stored,
		Name: "feature", Origin: "features", Key: "feature:wifi",
		Params: []commands.Param{{Key: "feature", Value: "wifi"}, {Key: "state", Value: "off"}}}); err != nil {
		t.Fatal(err)
	}
	if chs, err := w.sched.Tick(w.ctx, w.day, false); err != nil || len(chs) != 0 {
		t.Fatalf("second tick: %+v %v", chs, err)
	}
	svctest.Eventually(t, "stored decision at the dispatcher", func() error {
		r, err := w.record(vin, stored)
		if err != nil || r.State != commands.StatePending {
			return fmt.Errorf("%+v %w", r, err)
		}
		if r1, err := w.record(vin, a.CmdID); err != nil || r1.State != commands.StateSuperseded {
			return fmt.Errorf("decision 1: %+v %w", r1, err)
		}
		return nil
	})
	recs, err := w.disp.List(w.ctx, vin)
	if err != nil || len(recs) != 2 {
		t.Fatalf("records of %s: %+v %v", vin, recs, err)
	}
	w.comeOnline(t, vin)
	svctest.Eventually(t, "delivered", func() error {
		if r, _ := w.record(vin, stored); r.State != commands.StateSent {
			return fmt.Errorf("%+v", r)
		}
		return nil
	})
	w.ack(t, vin, stored, "applied")
	svctest.Eventually(t, "closed", func() error {
		if st := w.state(t, vin, "wifi"); st.Pending || st.Status != commands.StateApplied || st.Active {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	for _, c := range w.mqtt.commands() {
		if c.CmdID != stored {
			t.Fatalf("delivered %s, want only %s", c.CmdID, stored)
		}
	}
}
