package lease_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/cluster/lease"
	"github.com/telegate/telegate/internal/testenv"
)

// t0 is an arbitrary fixed start for the manual clocks (not today).
var t0 = time.Date(2031, 3, 14, 22, 0, 0, 0, time.UTC)

const (
	ttl    = 3 * time.Second
	bucket = "leases"
)

// env is a lease bucket on a real NATS server or cluster, reachable through
// two independent connections (to two different nodes when clustered).
type env struct {
	c     *testenv.NATSCluster
	clk   *testenv.ManualClock
	nodes int
	busy  atomic.Int64 // lease and ticker KV operations in flight (busyKV)
}

// busyKV is the real KV bucket, counting the operations in flight: step
// does not run the manual clock (~30 manual seconds per real second) while
// one is, so that a renewal taking 100 ms of real time on a loaded box is
// not taken for a holder that stopped renewing.
type busyKV struct {
	jetstream.KeyValue
	busy *atomic.Int64
}

func (k busyKV) track() func() { k.busy.Add(1); return func() { k.busy.Add(-1) } }

func (k busyKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	defer k.track()()
	return k.KeyValue.Get(ctx, key)
}

func (k busyKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	defer k.track()()
	return k.KeyValue.Create(ctx, key, value, opts...)
}

func (k busyKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	defer k.track()()
	return k.KeyValue.Update(ctx, key, value, revision)
}

func (k busyKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	defer k.track()()
	return k.KeyValue.Delete(ctx, key, opts...)
}

// topologies runs f on a single JetStream server (R1 bucket) and on a
// 3-node cluster (R3 bucket).
func topologies(t *testing.T, f func(t *testing.T, e *env)) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("nodes=%d", n), func(t *testing.T) { f(t, newEnv(t, n)) })
	}
}

// newEnv starts n nodes and the lease bucket with n replicas.
func newEnv(t *testing.T, n int) *env {
	c := testenv.StartNATSCluster(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.JetStream(t, 0).CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: bucket, Storage: jetstream.FileStorage, Replicas: n,
	}); err != nil {
		t.Fatal(err)
	}
	return &env{c: c, clk: testenv.NewManualClock(t0), nodes: n}
}

// conn is a fresh connection whose first server is node i (mod size), with
// its own KV handle.
func (e *env) conn(t *testing.T, i int) (*nats.Conn, jetstream.KeyValue) {
	t.Helper()
	nc := e.c.Connect(t, i%e.nodes)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	return nc, kv
}

func (e *env) lease(t *testing.T, kv jetstream.KeyValue, holder string) *lease.Lease {
	t.Helper()
	l, err := lease.New(busyKV{KeyValue: kv, busy: &e.busy}, "scheduler", holder, ttl, e.clk)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// step advances the manual clock by d at a time, pausing briefly so the
// goroutines under test react, until cond holds or limit (real time) runs
// out. It returns whether cond held. The clock stands still while a lease
// or ticker KV operation is in flight (busyKV): manual time measures the
// lease's logic, not the machine's speed.
func (e *env) step(d time.Duration, limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		if e.busy.Load() == 0 {
			e.clk.Advance(d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

func bg(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Two contenders: exactly one holds the lease while the holder renews, for
// many ttl periods.
func TestTwoContendersOneLeader(t *testing.T) {
	topologies(t, func(t *testing.T, e *env) {
		ctx := bg(t)
		_, kvA := e.conn(t, 0)
		_, kvB := e.conn(t, 1)
		a, b := e.lease(t, kvA, "a"), e.lease(t, kvB, "b")
		tokA, err := a.TryAcquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.TryAcquire(ctx); !errors.Is(err, lease.ErrHeld) {
			t.Fatalf("second contender: %v, want ErrHeld", err)
		}
		for range 9 { // 3 ttl periods, renewing every ttl/3
			e.clk.Advance(ttl / 3)
			if err := a.Renew(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := b.TryAcquire(ctx); !errors.Is(err, lease.ErrHeld) {
				t.Fatalf("contender while the holder renews: %v, want ErrHeld", err)
			}
			if tok, ok := a.Token(); !ok || tok != tokA {
				t.Fatalf("holder token %d %v, want %d", tok, ok, tokA)
			}
		}
	})
}

// Two Run loops: exactly one runs the work, never both at once.
func TestRunOneLeader(t *testing.T) {
	topologies(t, func(t *testing.T, e *env) {
		ctx, cancel := context.WithCancel(bg(t))
		var active, maxActive atomic.Int32
		var mu sync.Mutex
		leaders := map[string]int{}
		var wg sync.WaitGroup
		for i, h := range []string{"a", "b"} {
			_, kv := e.conn(t, i)
			l := e.lease(t, kv, h)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = l.Run(ctx, func(ctx context.Context, token uint64) error {
					n := active.Add(1)
					defer active.Add(-1)
					for m := maxActive.Load(); n > m && !maxActive.CompareAndSwap(m, n); m = maxActive.Load() {
					}
					mu.Lock()
					leaders[h]++
					mu.Unlock()
					<-ctx.Done()
					return ctx.Err()
				})
			}()
		}
		// Run for 5 ttl periods. The clock runs ~30 manual seconds per real
		// second: it is held from when a renewal is due (ttl/3 after the
		// last one, plus a margin) until that renewal shows in the bucket,
		// so that a renewal slow in real time (a loaded CI box, a quorum
		// commit) is not taken for a holder that stopped renewing.
		_, kvW := e.conn(t, 0)
		key := lease.KeyPrefix + "scheduler"
		var rev uint64
		var seenAt time.Time
		end := e.clk.Now().Add(5 * ttl)
		deadline := time.Now().Add(30 * time.Second)
		for e.clk.Now().Before(end) {
			if time.Now().After(deadline) {
				t.Fatalf("5 ttl periods not reached (lease revision %d)", rev)
			}
			if en, err := kvW.Get(ctx, key); err == nil && en.Revision() != rev {
				rev, seenAt = en.Revision(), e.clk.Now()
			}
			if rev != 0 && e.clk.Now().Before(seenAt.Add(ttl/3+ttl/10)) {
				e.clk.Advance(ttl / 20)
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(leaders) != 1 || maxActive.Load() != 1 {
			t.Fatalf("tenures %v, max concurrent %d: want one leader, one tenure", leaders, maxActive.Load())
		}
		for h, n := range leaders {
			if n != 1 {
				t.Fatalf("%s led %d times, want once (the holder renewed throughout)", h, n)
			}
		}
	})
}

// A holder that stops renewing (SIGKILL) is replaced after ttl, not before;
// its late renewal then fails.
func TestTakeoverAfterTTL(t *testing.T) {
	topologies(t, func(t *testing.T, e *env) {
		ctx := bg(t)
		_, kvA := e.conn(t, 0)
		_, kvB := e.conn(t, 1)
		a, b := e.lease(t, kvA, "a"), e.lease(t, kvB, "b")
		tokA, err := a.TryAcquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		start := e.clk.Now()
		type tenure struct {
			token uint64
			at    time.Time
		}
		got := make(chan tenure, 1)
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = b.Run(rctx, func(ctx context.Context, token uint64) error {
				got <- tenure{token, e.clk.Now()}
				<-ctx.Done()
				return ctx.Err()
			})
		}()
		var tb tenure
		if !e.step(ttl/20, 30*time.Second, func() bool {
			select {
			case tb = <-got:
				return true
			default:
				return false
			}
		}) {
			t.Fatal("no takeover")
		}
		if tb.at.Sub(start) < ttl {
			t.Fatalf("taken over after %v, before ttl %v", tb.at.Sub(start), ttl)
		}
		if tb.token <= tokA {
			t.Fatalf("new token %d not above the old %d", tb.token, tokA)
		}
		// The old holder wakes up: its renewal fails on the revision.
		if err := a.Renew(ctx); !errors.Is(err, lease.ErrLost) {
			t.Fatalf("stale renew: %v, want ErrLost", err)
		}
		cancel()
		<-done
	})
}

// Release frees the lease at once.
func TestReleaseHandsOver(t *testing.T) {
	topologies(t, func(t *testing.T, e *env) {
		ctx := bg(t)
		_, kvA := e.conn(t, 0)
		_, kvB := e.conn(t, 1)
		a, b := e.lease(t, kvA, "a"), e.lease(t, kvB, "b")
		if _, err := a.TryAcquire(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok := a.Token(); ok {
			t.Fatal("released lease still valid")
		}
		if _, err := b.TryAcquire(ctx); err != nil {
			t.Fatalf("acquire after release: %v", err)
		}
		if err := a.Renew(ctx); !errors.Is(err, lease.ErrNotHeld) {
			t.Fatalf("renew after release: %v", err)
		}
	})
}

// A holder whose renewal fails on the revision (the lease was taken) stops
// its work at once, long before its validity would run out.
func TestStaleLeaderStops(t *testing.T) {
	topologies(t, func(t *testing.T, e *env) {
		ctx := bg(t)
		_, kvA := e.conn(t, 0)
		_, kvB := e.conn(t, 1)
		a := e.lease(t, kvA, "a")
		started := make(chan struct{}, 1)
		stopped := make(chan struct{})
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			_ = a.Run(rctx, func(ctx context.Context, _ uint64) error {
				started <- struct{}{}
				<-ctx.Done()
				close(stopped)
				return ctx.Err()
			})
		}()
		<-started
		// Another writer overwrites the lease (a split brain, an operator).
		if _, err := kvB.Put(ctx, lease.KeyPrefix+"scheduler", []byte(`{"holder":"intruder","ttl_ms":3000}`)); err != nil {
			t.Fatal(err)
		}
		// One renewal period later (well inside the validity) a has stopped.
		e.clk.Advance(ttl/3 + time.Millisecond)
		select {
		case <-stopped:
		case <-time.After(20 * time.Second):
			t.Fatal("stale holder kept working")
		}
		if _, ok := a.Token(); ok {
			t.Fatal("stale holder still thinks it holds the lease")
		}
	})
}

// A holder that cannot reach the bucket stops its work when its validity
// (ttl - guard) ends, not before.
func TestHolderStopsWhenRenewalsFail(t *testing.T) {
	topologies(t, func(t *testing.T, e *env) {
		ctx := bg(t)
		ncA, kvA := e.conn(t, 0)
		a := e.lease(t, kvA, "a")
		started := make(chan struct{}, 1)
		stopped := make(chan struct{})
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			_ = a.Run(rctx, func(ctx context.Context, _ uint64) error {
				started <- struct{}{}
				<-ctx.Done()
				close(stopped)
				return ctx.Err()
			})
		}()
		<-started
		ncA.Close() // every renewal now fails
		validity := ttl - ttl/5
		e.step(ttl/20, 30*time.Second, func() bool { return e.clk.Now().Sub(t0) >= validity-ttl/20 })
		time.Sleep(50 * time.Millisecond)
		select {
		case <-stopped:
			t.Fatalf("stopped at %v, before the validity %v ended", e.clk.Now().Sub(t0), validity)
		default:
		}
		e.clk.Advance(ttl / 20)
		select {
		case <-stopped:
		case <-time.After(20 * time.Second):
			t.Fatal("holder kept working after its validity")
		}
	})
}

func TestNewRejectsBadConfig(t *testing.T) {
	c := testenv.StartNATSCluster(t, 1)
	kv, err := c.JetStream(t).CreateKeyValue(bg(t), jetstream.KeyValueConfig{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	clk := testenv.NewManualClock(t0)
	for name, f := range map[string]func() (*lease.Lease, error){
		"zero ttl":    func() (*lease.Lease, error) { return lease.New(kv, "x", "a", 0, clk) },
		"no holder":   func() (*lease.Lease, error) { return lease.New(kv, "x", "", ttl, clk) },
		"bad name":    func() (*lease.Lease, error) { return lease.New(kv, "a b", "a", ttl, clk) },
		"slow renew":  func() (*lease.Lease, error) { return lease.New(kv, "x", "a", ttl, clk, lease.WithRenewEvery(ttl)) },
		"guard > ttl": func() (*lease.Lease, error) { return lease.New(kv, "x", "a", ttl, clk, lease.WithGuard(ttl)) },
	} {
		if _, err := f(); !errors.Is(err, lease.ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

// After a release, contenders race to re-create the deleted key: exactly
// one wins, the others get ErrHeld (on R3 buckets nats.go reports that
// conflict as a raw API error 10164, not ErrKeyExists).
func TestRaceAfterRelease(t *testing.T) {
	topologies(t, func(t *testing.T, e *env) {
		ctx := bg(t)
		_, kvA := e.conn(t, 0)
		_, kvB := e.conn(t, 1)
		for round := range 10 {
			a, b := e.lease(t, kvA, fmt.Sprintf("a%d", round)), e.lease(t, kvB, fmt.Sprintf("b%d", round))
			first := e.lease(t, kvA, fmt.Sprintf("first%d", round))
			if _, err := first.TryAcquire(ctx); err != nil {
				t.Fatal(err)
			}
			if err := first.Release(ctx); err != nil {
				t.Fatal(err)
			}
			// Safety: never two winners. Liveness: a direct read served by a
			// replica that has not applied the release yet may make both
			// contenders see the old holder (ErrHeld for both); the next
			// attempts then elect one.
			// The liveness bound is generous: on a loaded CI box a replica
			// can lag behind for more than a second (20 attempts 50 ms
			// apart once failed there).
			var won atomic.Int32
			giveUp := time.Now().Add(30 * time.Second)
			for attempt := 0; won.Load() == 0; attempt++ {
				if time.Now().After(giveUp) {
					t.Fatalf("round %d: nobody acquired the released lease in %d attempts over 30 s", round, attempt)
				}
				var wg sync.WaitGroup
				start := make(chan struct{})
				for _, l := range []*lease.Lease{a, b} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						_, err := l.TryAcquire(ctx)
						switch {
						case err == nil:
							won.Add(1)
						case errors.Is(err, lease.ErrHeld):
						default:
							t.Errorf("round %d: %v", round, err)
						}
					}()
				}
				close(start)
				wg.Wait()
				if won.Load() > 1 {
					t.Fatalf("round %d: %d contenders won the released lease; want at most 1", round, won.Load())
				}
				if won.Load() == 0 {
					time.Sleep(50 * time.Millisecond)
				}
			}
			// The winner's release must land before the next round's
			// first contender tries (a failed delete, e.g. a timeout on a
			// loaded box, is retried by the next Release).
			for _, l := range []*lease.Lease{a, b} {
				giveUp := time.Now().Add(30 * time.Second)
				for err := l.Release(ctx); err != nil; err = l.Release(ctx) {
					if time.Now().After(giveUp) {
						t.Fatalf("round %d: release: %v", round, err)
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}
	})
}

// A Release whose delete fails (here: its context is already done) ends
// the tenure but keeps what to delete: the next Release deletes the key,
// and a contender acquires at once instead of waiting for the ttl.
func TestReleaseRetriedAfterFailure(t *testing.T) {
	e := newEnv(t, 1)
	ctx := bg(t)
	_, kv := e.conn(t, 0)
	a, b := e.lease(t, kv, "a"), e.lease(t, kv, "b")
	if _, err := a.TryAcquire(ctx); err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.Release(done); err == nil {
		t.Fatal("release with a cancelled context reported success")
	}
	if _, held := a.Token(); held {
		t.Fatal("tenure still held after a failed release")
	}
	if _, err := b.TryAcquire(ctx); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("before the retried release: %v, want ErrHeld (the key was not deleted)", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatalf("retried release: %v", err)
	}
	if _, err := b.TryAcquire(ctx); err != nil {
		t.Fatalf("after the retried release: %v", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatalf("a third release (nothing left to release): %v", err)
	}
	if _, err := b.TryAcquire(ctx); err != nil {
		t.Fatalf("b lost its lease to a's third release: %v", err)
	}
}

// A contender configured with a shorter ttl waits for the ttl the holder
// advertises (a rolling upgrade that changes the setting stays safe).
func TestContenderHonoursAdvertisedTTL(t *testing.T) {
	e := newEnv(t, 1)
	ctx := bg(t)
	_, kv := e.conn(t, 0)
	long, err := lease.New(kv, "scheduler", "long", 2*ttl, e.clk)
	if err != nil {
		t.Fatal(err)
	}
	short := e.lease(t, kv, "short")
	if _, err := long.TryAcquire(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := short.TryAcquire(ctx); !errors.Is(err, lease.ErrHeld) {
		t.Fatal(err)
	}
	e.clk.Advance(ttl)
	if _, err := short.TryAcquire(ctx); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("after its own ttl: %v, want ErrHeld (holder advertises 2*ttl)", err)
	}
	e.clk.Advance(ttl)
	if _, err := short.TryAcquire(ctx); err != nil {
		t.Fatalf("after the advertised ttl: %v", err)
	}
}

// When work returns on its own, Run releases the lease and returns work's
// error; the other contender gets the lease without waiting for ttl.
func TestRunReturnsWorkErrorAndReleases(t *testing.T) {
	e := newEnv(t, 1)
	ctx := bg(t)
	_, kv := e.conn(t, 0)
	a, b := e.lease(t, kv, "a"), e.lease(t, kv, "b")
	errDone := errors.New("job finished")
	if err := a.Run(ctx, func(context.Context, uint64) error { return errDone }); !errors.Is(err, errDone) {
		t.Fatalf("Run: %v", err)
	}
	if _, err := b.TryAcquire(ctx); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

// TestRenewWhileContendersRead: the holder renews again and again while
// contenders on the other nodes keep trying to acquire (reads, and creates
// when a node's read is behind). A clustered stream refuses a write whose
// subject has another write in flight with "wrong last sequence" even when
// the expected revision is right; the holder must not take that for a lost
// lease.
func TestRenewWhileContendersRead(t *testing.T) {
	e := newEnv(t, 3)
	ctx := bg(t)
	_, kvA := e.conn(t, 0)
	a := e.lease(t, kvA, "a")
	if _, err := a.TryAcquire(ctx); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, h := range []string{"b", "c"} {
		_, kv := e.conn(t, i+1)
		l := e.lease(t, kv, h)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := l.TryAcquire(ctx); !errors.Is(err, lease.ErrHeld) {
					t.Errorf("contender %s: %v, want ErrHeld", h, err)
					return
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for i := range 300 {
		if err := a.Renew(ctx); err != nil {
			t.Fatalf("renewal %d: %v", i, err)
		}
	}
}
