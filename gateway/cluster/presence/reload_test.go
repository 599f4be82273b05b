package presence

import (
	"testing"

	"github.com/telegate/telegate/internal/testenv"
)

// TestRegistryReloadBroadcast: a broadcast from one replica makes the
// others reload (not the sender); a malformed message is ignored.
func TestRegistryReloadBroadcast(t *testing.T) {
	c := testenv.StartNATSCluster(t, 3)
	ncA := c.Connect(t, 0)
	got := map[string]chan struct{}{"a": make(chan struct{}, 64), "b": make(chan struct{}, 64), "c": make(chan struct{}, 64)}
	for _, r := range []struct {
		name string
		i    int
	}{{"a", 0}, {"b", 1}, {"c", 2}} {
		ch := got[r.name]
		nc := ncA
		if r.i != 0 {
			nc = c.Connect(t, r.i)
		}
		if _, err := ListenReload(nc, r.name, func() {
			select {
			case ch <- struct{}{}:
			default:
			}
		}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ncA.Publish(SubjectRegistryReload, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	// Subscriptions reach the other nodes asynchronously: repeat the
	// broadcast until both saw one.
	eventually(t, "b and c reload", func() bool {
		if err := BroadcastReload(ncA, "a"); err != nil {
			t.Fatal(err)
		}
		return len(got["b"]) > 0 && len(got["c"]) > 0
	})
	if len(got["a"]) != 0 {
		t.Fatal("the sender reloaded on its own broadcast")
	}
}
