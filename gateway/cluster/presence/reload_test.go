package presence

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/internal/testenv"
)

// reloadWatcher is a Presence that only counts reload requests.
func reloadWatcher(t *testing.T, kv jetstream.KeyValue, name string) (*Presence, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	p, err := New(Config{KV: kv, Replica: name, End: func(*mqttClient) {}, Log: logger(), Reload: func() { n.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, &n
}

// TestRegistryReloadRequest: a reload requested by replica A reaches B and
// C (not A itself), including C, whose only NATS node was down when the
// request was made: C applies it once it is connected again. A malformed
// request is counted and ignored.
func TestRegistryReloadRequest(t *testing.T) {
	c := testenv.StartNATSCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kvA, kvB := sessionBuckets(t, c)
	// C knows node 2 only: stopping node 2 cuts it off from NATS.
	ncC, err := nats.Connect(c.URL(2), nats.UserInfo(c.User, c.Password), nats.MaxReconnects(-1), nats.IgnoreDiscoveredServers(),
		nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ncC.Close)
	jsC, err := jetstream.New(ncC)
	if err != nil {
		t.Fatal(err)
	}
	kvC, err := jsC.KeyValue(ctx, Bucket)
	if err != nil {
		t.Fatal(err)
	}
	a, nA := reloadWatcher(t, kvA, "a")
	_, nB := reloadWatcher(t, kvB, "b")
	pc, nC := reloadWatcher(t, kvC, "c")

	if _, err := kvA.Put(ctx, ReloadKey, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "malformed request counted on C", func() bool { return pc.Stats().BadClaims.Load() == 1 })
	if err := a.RequestReload(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "B and C reload", func() bool { return nB.Load() == 1 && nC.Load() == 1 })

	// After a node stops, a watch whose ordered consumer lived there
	// stalls until it misses its idle heartbeats and is recreated (about
	// 10 s): wait longer than the package's usual guard.
	slow := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("never: %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	c.Stop(2)
	eventually(t, "C disconnected", func() bool { return !ncC.IsConnected() })
	if err := a.RequestReload(ctx); err != nil {
		t.Fatal(err)
	}
	slow("B reloads again", func() bool { return nB.Load() == 2 })
	if nC.Load() != 1 {
		t.Fatal("C reloaded while cut off")
	}
	c.Restart(2)
	slow("C gets the request made while it was cut off", func() bool { return nC.Load() == 2 })
	if nA.Load() != 0 {
		t.Fatal("the requesting replica reloaded on its own request")
	}
}
