package lease_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/cluster/lease"
)

const every = 10 * time.Second

var sched = lease.Schedule{Start: t0, Every: every}

// tally counts tick runs across every holder of a test.
type tally struct {
	mu        sync.Mutex
	started   map[uint64]int
	completed map[uint64]int
	attempts  map[uint64][]int
	holders   map[uint64][]string
}

func newTally() *tally {
	return &tally{started: map[uint64]int{}, completed: map[uint64]int{}, attempts: map[uint64][]int{}, holders: map[uint64][]string{}}
}

func (ty *tally) start(h string, tk lease.Tick) {
	ty.mu.Lock()
	defer ty.mu.Unlock()
	ty.started[tk.Index]++
	ty.attempts[tk.Index] = append(ty.attempts[tk.Index], tk.Attempt)
	ty.holders[tk.Index] = append(ty.holders[tk.Index], h)
}

func (ty *tally) complete(tk lease.Tick) {
	ty.mu.Lock()
	defer ty.mu.Unlock()
	ty.completed[tk.Index]++
}

// doneThrough reports whether ticks 0..n all completed.
func (ty *tally) doneThrough(n uint64) bool {
	ty.mu.Lock()
	defer ty.mu.Unlock()
	for i := uint64(0); i <= n; i++ {
		if ty.completed[i] == 0 {
			return false
		}
	}
	return true
}

func (e *env) ticker(t *testing.T, kv jetstream.KeyValue, holder string) *lease.Ticker {
	t.Helper()
	tk, err := lease.NewTicker(busyKV{KeyValue: kv, busy: &e.busy}, "daily", holder, sched, e.clk, lease.WithRetryEvery(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// runJob runs lease + ticker for holder until ctx ends; work is the tick
// body. It returns a channel closed when Run has returned.
func runJob(ctx context.Context, l *lease.Lease, tk *lease.Ticker, work func(context.Context, lease.Tick) error) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = l.Run(ctx, func(ctx context.Context, token uint64) error { return tk.Run(ctx, token, work) })
	}()
	return done
}

// The leader crashes in the middle of tick 4 (its connection dies with it,
// so it neither finishes, records, nor releases anything). The other
// replica takes over after ttl, re-runs tick 4 and goes on: every tick
// completes exactly once in total, none is skipped.
func TestTickerExactlyOnceAcrossLeaderCrash(t *testing.T) {
	topologies(t, func(t *testing.T, e *env) {
		ctx := bg(t)
		ncA, kvA := e.conn(t, 0)
		_, kvB := e.conn(t, 1)
		ty := newTally()
		ctxA, crashA := context.WithCancel(ctx)
		doneA := runJob(ctxA, e.lease(t, kvA, "a"), e.ticker(t, kvA, "a"), func(ctx context.Context, tk lease.Tick) error {
			ty.start("a", tk)
			if tk.Index == 4 {
				ncA.Close() // SIGKILL: nothing more reaches the bucket
				crashA()
				return errors.New("crashed")
			}
			ty.complete(tk)
			return nil
		})
		if !e.step(ttl/20, 30*time.Second, func() bool { return ty.doneThrough(0) }) {
			t.Fatal("a never ran tick 0")
		}
		ctxB, stopB := context.WithCancel(ctx)
		defer stopB()
		doneB := runJob(ctxB, e.lease(t, kvB, "b"), e.ticker(t, kvB, "b"), func(ctx context.Context, tk lease.Tick) error {
			ty.start("b", tk)
			ty.complete(tk)
			return nil
		})
		if !e.step(ttl/20, 60*time.Second, func() bool { return ty.doneThrough(9) }) {
			t.Fatalf("ticks not done: completed %v", ty.completed)
		}
		stopB()
		<-doneA
		<-doneB
		ty.mu.Lock()
		defer ty.mu.Unlock()
		for i := uint64(0); i <= 9; i++ {
			if ty.completed[i] != 1 {
				t.Errorf("tick %d completed %d times, want 1", i, ty.completed[i])
			}
		}
		if got := ty.holders[4]; len(got) != 2 || got[0] != "a" || got[1] != "b" {
			t.Errorf("tick 4 run by %v, want a (crashed) then b", got)
		}
		if got := ty.attempts[4]; len(got) != 2 || got[1] != 2 {
			t.Errorf("tick 4 attempts %v, want the re-run marked attempt 2", got)
		}
		for i := uint64(5); i <= 9; i++ {
			if h := ty.holders[i]; len(h) != 1 || h[0] != "b" {
				t.Errorf("tick %d run by %v, want b once", i, h)
			}
		}
	})
}

// At least once, honestly: a leader that finished a tick's work but died
// before recording it leaves the tick to be run again by the next leader.
func TestTickerReRunsTickWhoseCompletionWasNotRecorded(t *testing.T) {
	topologies(t, func(t *testing.T, e *env) {
		ctx := bg(t)
		ncA, kvA := e.conn(t, 0)
		_, kvB := e.conn(t, 1)
		ty := newTally()
		ctxA, crashA := context.WithCancel(ctx)
		doneA := runJob(ctxA, e.lease(t, kvA, "a"), e.ticker(t, kvA, "a"), func(ctx context.Context, tk lease.Tick) error {
			ty.start("a", tk)
			ty.complete(tk)
			if tk.Index == 2 {
				ncA.Close() // dies right after the work, before the record
				crashA()
			}
			return nil
		})
		if !e.step(ttl/20, 30*time.Second, func() bool { return ty.doneThrough(2) }) {
			t.Fatal("a never ran tick 2")
		}
		<-doneA
		ctxB, stopB := context.WithCancel(ctx)
		doneB := runJob(ctxB, e.lease(t, kvB, "b"), e.ticker(t, kvB, "b"), func(ctx context.Context, tk lease.Tick) error {
			ty.start("b", tk)
			ty.complete(tk)
			return nil
		})
		if !e.step(ttl/20, 60*time.Second, func() bool { return ty.doneThrough(3) }) {
			t.Fatalf("ticks not done: completed %v", ty.completed)
		}
		stopB()
		<-doneB
		ty.mu.Lock()
		defer ty.mu.Unlock()
		if ty.completed[2] != 2 || ty.attempts[2][1] != 2 {
			t.Fatalf("tick 2 completed %d times, attempts %v: want a re-run (attempt 2)", ty.completed[2], ty.attempts[2])
		}
		for _, i := range []uint64{0, 1, 3} {
			if ty.completed[i] != 1 {
				t.Errorf("tick %d completed %d times, want 1", i, ty.completed[i])
			}
		}
	})
}

// A holder with an older fencing token than the tick record's stops
// without running anything; the error counts as a lost lease.
func TestTickerFencesOlderToken(t *testing.T) {
	topologies(t, func(t *testing.T, e *env) {
		ctx := bg(t)
		_, kv := e.conn(t, 0)
		newer, older := e.ticker(t, kv, "new"), e.ticker(t, kv, "old")
		rctx, cancel := context.WithCancel(ctx)
		ran := make(chan struct{})
		errc := make(chan error, 1)
		go func() {
			errc <- newer.Run(rctx, 100, func(context.Context, lease.Tick) error { close(ran); return nil })
		}()
		<-ran
		for {
			n, err := newer.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("newer: %v", err)
		}
		var called atomic.Bool
		err := older.Run(ctx, 50, func(context.Context, lease.Tick) error { called.Store(true); return nil })
		if !errors.Is(err, lease.ErrFenced) || !errors.Is(err, lease.ErrLost) {
			t.Fatalf("older token: %v, want ErrFenced (an ErrLost)", err)
		}
		if called.Load() {
			t.Fatal("fenced holder ran a tick")
		}
	})
}

// Stopping the NATS node a leader is connected to never yields two leaders
// at once, and the schedule goes on without a gap once a leader is back.
func TestNodeStopDuringLeadership(t *testing.T) {
	e := newEnv(t, 3)
	ctx := bg(t)
	ty := newTally()
	var (
		active, maxActive atomic.Int32
		violations        atomic.Int32
		leases            [2]*lease.Lease
		dones             [2]<-chan struct{}
	)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, h := range []string{"a", "b"} {
		_, kv := e.conn(t, i) // a on node 0, b on node 1
		leases[i] = e.lease(t, kv, h)
	}
	for i, h := range []string{"a", "b"} {
		_, kv := e.conn(t, i)
		other := leases[1-i]
		dones[i] = runJob(rctx, leases[i], e.ticker(t, kv, h), func(ctx context.Context, tk lease.Tick) error {
			n := active.Add(1)
			defer active.Add(-1)
			for m := maxActive.Load(); n > m && !maxActive.CompareAndSwap(m, n); m = maxActive.Load() {
			}
			if _, ok := other.Token(); ok {
				violations.Add(1) // both valid at the same clock instant
			}
			ty.start(h, tk)
			ty.complete(tk)
			return nil
		})
	}
	if !e.step(ttl/20, 30*time.Second, func() bool { return ty.doneThrough(3) }) {
		t.Fatal("no leader ran ticks 0-3")
	}
	leader := 0
	if _, ok := leases[1].Token(); ok {
		leader = 1
	}
	e.c.Stop(leader) // the node the leader's connection uses
	if !e.step(ttl/20, 60*time.Second, func() bool { return ty.doneThrough(8) }) {
		t.Fatalf("schedule stalled with node %d down: completed %v", leader, ty.completed)
	}
	e.c.Restart(leader)
	if !e.step(ttl/20, 60*time.Second, func() bool { return ty.doneThrough(12) }) {
		t.Fatalf("schedule stalled after restart: completed %v", ty.completed)
	}
	cancel()
	<-dones[0]
	<-dones[1]
	if v := violations.Load(); v != 0 {
		t.Fatalf("%d tick runs while the other holder's lease was valid", v)
	}
	if m := maxActive.Load(); m != 1 {
		t.Fatalf("%d tick runs at once", m)
	}
	ty.mu.Lock()
	defer ty.mu.Unlock()
	for i := uint64(0); i <= 12; i++ {
		// A tick may legitimately run twice only when its completion write
		// was cut off by the outage; the re-run must say so.
		if ty.completed[i] > 1 && ty.attempts[i][len(ty.attempts[i])-1] < 2 {
			t.Errorf("tick %d ran %d times, re-run not marked (attempts %v)", i, ty.completed[i], ty.attempts[i])
		}
	}
	t.Logf("leader was on node %d; runs per tick %v", leader, ty.completed)
}
