package features_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telegate/telegate/gateway/cluster/lease"
	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/features"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/internal/svctest"
	"github.com/telegate/telegate/internal/testenv"
)

// replica is one gateway replica's customers registry and scheduler, on
// its own connection to its own cluster node.
type replica struct {
	bus    interface{ Close() error }
	reg    *customers.Registry
	sched  *features.Scheduler
	cancel context.CancelFunc
	done   chan error
}

// Two schedulers on two nodes of a 3-node JetStream cluster: every tick's
// commands are requested exactly once (counted on NATS), by the leader
// alone; when the leader dies (its connection is cut, it stops renewing)
// the other replica takes over after the lease ttl and goes on with the
// next tick: no tick lost, none doubled.
func TestSchedulerOneLeaderAcrossReplicas(t *testing.T) {
	const (
		ttl      = 3 * time.Second
		interval = 30 * time.Second
	)
	c := testenv.StartNATSCluster(t, 3)
	clk := testenv.NewManualClock(time.Date(2031, 3, 14, 22, 0, 0, 0, time.UTC))
	log := svctest.Logger()
	cat, err := features.ParseCatalog([]byte(catalogYAML))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	// Command requests as NATS carries them, seen from the third node.
	var mu sync.Mutex
	reqs := map[string]int{} // vin → requests
	watch := c.Connect(t, 2)
	if _, err := watch.Subscribe("vehicle.cmd.*", func(m *nats.Msg) {
		mu.Lock()
		reqs[m.Subject[len("vehicle.cmd."):]]++
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	count := func(vin string) int {
		mu.Lock()
		defer mu.Unlock()
		return reqs[vin]
	}

	start := func(node int, name string) *replica {
		bus := svctest.ClusterBus(t, c, node)
		kv, err := lease.OpenBucket(ctx, bus.JetStream(), 3)
		if err != nil {
			t.Fatal(err)
		}
		reg, err := customers.Open(ctx, bus.JetStream(), 3, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		s, err := features.NewScheduler(ctx, bus.Conn(), bus.JetStream(), 3, reg, features.Config{Catalog: cat,
			Interval: interval, Clock: svc.Clock(clk.Now),
			Cluster: lease.Cluster{KV: kv, Holder: name, TTL: ttl, Clock: clk, Log: log}}, log)
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithCancel(ctx)
		r := &replica{bus: bus, reg: reg, sched: s, cancel: rcancel, done: make(chan error, 2)}
		go func() { r.done <- reg.Run(rctx) }()
		go func() { r.done <- s.Run(rctx) }()
		t.Cleanup(func() { rcancel(); <-r.done; <-r.done })
		return r
	}
	a, b := start(0, "replica-a"), start(1, "replica-b")
	both := []*replica{a, b}
	// done counts the ticks the replicas finished or coalesced.
	done := func() int64 {
		var n int64
		for _, r := range both {
			n += r.sched.Ticks() + r.sched.Coalesced()
		}
		return n
	}

	// step advances the manual clock until cond holds (the lease renews on
	// the way, every ttl/3). The clock runs ~30 s per real second: it is
	// held at half an interval past a tick that no replica has finished, so
	// that a replica slow in real time (a loaded CI box) is not seen as a
	// hand-over longer than an interval (a coalesced tick). The manual
	// time of the hand-over stays what is checked.
	step := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		t0, d0 := clk.Now(), done()
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not reached", what)
			}
			now := clk.Now()
			due := int64(now.Truncate(interval).Sub(t0.Truncate(interval)) / interval) // ticks since t0
			if done() >= d0+due || now.Before(now.Truncate(interval).Add(interval/2)) {
				clk.Advance(ttl / 20)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// register adds a vehicle entitled to an all-year feature through
	// replica a and waits until both replicas know it: the next tick
	// requests exactly one command for it.
	vin := func(i int) string { return fmt.Sprintf("TGCLU%012d", i) }
	register := func(i int) {
		t.Helper()
		if err := a.reg.Register(ctx, customers.Registration{ID: fmt.Sprintf("c%d", i), Region: "DE",
			Entitlements: []string{"wifi"}, Vehicles: []customers.Vehicle{{VIN: vin(i)}}}, "test"); err != nil {
			t.Fatal(err)
		}
		svctest.Eventually(t, "registration seen by both replicas", func() error {
			for _, r := range []*replica{a, b} {
				if _, ok := r.reg.Lookup(vin(i)); !ok {
					return fmt.Errorf("%s unknown", vin(i))
				}
			}
			return nil
		})
	}

	// Ticks 0..3 with both replicas up: one vehicle per tick.
	next := 0
	for ; next < 4; next++ {
		register(next)
		step(fmt.Sprintf("command for %s", vin(next)), func() bool { return count(vin(next)) > 0 })
	}
	leader, other := a, b
	if b.sched.Ticks() > 0 {
		leader, other = b, a
	}
	if leader.sched.Ticks() == 0 || other.sched.Ticks() != 0 {
		t.Fatalf("ticks: leader %d, other %d; want one replica ticking", leader.sched.Ticks(), other.sched.Ticks())
	}
	// The leader dies: its connection goes, it can neither renew nor
	// release.
	leaderTicks := leader.sched.Ticks()
	_ = leader.bus.Close()
	leader.cancel()
	if err := <-leader.done; err != nil && !errors.Is(err, context.Canceled) {
		t.Logf("dead leader: %v", err)
	}
	<-leader.done
	leader.done <- nil // for Cleanup
	leader.done <- nil
	if leader == a {
		a = b // register through the survivor from now on
	}
	for ; next < 8; next++ {
		register(next)
		step(fmt.Sprintf("command for %s after the hand-over", vin(next)), func() bool { return count(vin(next)) > 0 })
	}
	if other.sched.Ticks() == 0 {
		t.Fatal("the surviving replica never ticked")
	}
	// A few more intervals with nothing to decide, then the tally: every
	// vehicle's command was requested exactly once, no tick was skipped.
	end := clk.Now().Add(3 * interval)
	step("quiet ticks", func() bool { return !clk.Now().Before(end) })
	time.Sleep(200 * time.Millisecond)
	for i := range next {
		if n := count(vin(i)); n != 1 {
			t.Errorf("%s: %d command requests, want exactly 1", vin(i), n)
		}
	}
	if n := other.sched.Coalesced() + leader.sched.Coalesced(); n != 0 {
		t.Errorf("%d ticks coalesced: the hand-over took longer than an interval", n)
	}
	t.Logf("ticks: dead leader %d, survivor %d", leaderTicks, other.sched.Ticks())
}
