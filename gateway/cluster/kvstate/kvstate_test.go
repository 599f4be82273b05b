package kvstate_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/cluster/kvstate"
	"github.com/telegate/telegate/internal/testenv"
)

// caps returns the "caps" bucket (n replicas) through two connections whose
// first servers are nodes 0 and 1 (the same node when n = 1).
func caps(t *testing.T, n int) (jetstream.KeyValue, jetstream.KeyValue, context.Context) {
	t.Helper()
	c := testenv.StartNATSCluster(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	kv0, err := c.JetStream(t, 0).CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "caps", Storage: jetstream.FileStorage, Replicas: n})
	if err != nil {
		t.Fatal(err)
	}
	kv1, err := c.JetStream(t, 1%n).KeyValue(ctx, "caps")
	if err != nil {
		t.Fatal(err)
	}
	return kv0, kv1, ctx
}

// race runs attempts rounds; in each, one goroutine per kv calls Increment
// on key(round) at the same moment. It returns the successes per round.
func race(t *testing.T, ctx context.Context, kvs []jetstream.KeyValue, rounds, perRound int, key func(int) string, limit int) []int32 {
	t.Helper()
	wins := make([]int32, rounds)
	for r := range rounds {
		start := make(chan struct{})
		var wg sync.WaitGroup
		var won atomic.Int32
		for _, kv := range kvs {
			for range perRound {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					n, ok, err := kvstate.Increment(ctx, kv, key(r), limit)
					if err != nil {
						t.Errorf("round %d: %v", r, err)
						return
					}
					if ok {
						won.Add(1)
						if n < 1 || n > limit {
							t.Errorf("round %d: ok with count %d, limit %d", r, n, limit)
						}
					} else if n != limit {
						t.Errorf("round %d: refused at count %d, limit %d", r, n, limit)
					}
				}()
			}
		}
		close(start)
		wg.Wait()
		wins[r] = won.Load()
	}
	return wins
}

// A cap of 1 holds when two replicas, connected to two different cluster
// nodes, count the same driver at the same moment, many times over.
func TestIncrementCapOfOneAcrossNodes(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("nodes=%d", n), func(t *testing.T) {
			kv0, kv1, ctx := caps(t, n)
			kvs := []jetstream.KeyValue{kv0, kv1}
			// Fresh keys: both race to Create.
			wins := race(t, ctx, kvs, 40, 1, func(r int) string { return fmt.Sprintf("offers.p1.d%d.2031-03-14", r) }, 1)
			for r, w := range wins {
				if w != 1 {
					t.Errorf("fresh key, round %d: %d successes, want 1", r, w)
				}
			}
			// One key, many attempts from both: still exactly one.
			wins = race(t, ctx, kvs, 40, 1, func(int) string { return "offers.p1.same.2031-03-14" }, 1)
			total := int32(0)
			for _, w := range wins {
				total += w
			}
			if total != 1 {
				t.Errorf("same key: %d successes over 80 attempts, want 1", total)
			}
		})
	}
}

// A cap of 3 with 2 nodes × 4 concurrent callers: exactly 3 succeed.
func TestIncrementCapOfThree(t *testing.T) {
	kv0, kv1, ctx := caps(t, 3)
	wins := race(t, ctx, []jetstream.KeyValue{kv0, kv1}, 10, 4, func(r int) string { return fmt.Sprintf("k%d", r) }, 3)
	for r, w := range wins {
		if w != 3 {
			t.Errorf("round %d: %d successes, want 3", r, w)
		}
	}
	if n, err := kvstate.Count(ctx, kv0, "k0"); err != nil || n != 3 {
		t.Fatalf("count %d %v, want 3", n, err)
	}
}

// A deleted counter (a reset) is re-created by exactly one racer: the
// Create-over-delete-marker conflict, which nats.go does not map to
// ErrKeyExists on replicated buckets, is recognised.
func TestIncrementAfterDelete(t *testing.T) {
	kv0, kv1, ctx := caps(t, 3)
	for r := range 20 {
		key := fmt.Sprintf("reset%d", r)
		if _, err := kv0.Put(ctx, key, []byte("1")); err != nil {
			t.Fatal(err)
		}
		if err := kv0.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	wins := race(t, ctx, []jetstream.KeyValue{kv0, kv1}, 20, 2, func(r int) string { return fmt.Sprintf("reset%d", r) }, 1)
	for r, w := range wins {
		if w != 1 {
			t.Errorf("round %d: %d successes, want 1", r, w)
		}
	}
}

func TestIncrementBadInput(t *testing.T) {
	kv, _, ctx := caps(t, 1)
	if _, _, err := kvstate.Increment(ctx, kv, "x", 0); !errors.Is(err, kvstate.ErrBadLimit) {
		t.Fatalf("limit 0: %v", err)
	}
	if _, err := kv.Put(ctx, "junk", []byte("not a number")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := kvstate.Increment(ctx, kv, "junk", 1); !errors.Is(err, kvstate.ErrCorrupt) {
		t.Fatalf("junk value: %v, want ErrCorrupt", err)
	}
	if _, err := kvstate.Count(ctx, kv, "junk"); !errors.Is(err, kvstate.ErrCorrupt) {
		t.Fatalf("junk count: %v, want ErrCorrupt", err)
	}
	if n, err := kvstate.Count(ctx, kv, "absent"); err != nil || n != 0 {
		t.Fatalf("absent count %d %v", n, err)
	}
}
