package natsbus

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/telegate/telegate/internal/testenv"
)

// TestOpenRetriesWhileClusterSettles: a replica that starts while its
// JetStream cluster has no quorum (two of three nodes down, as during a
// restart or an election) keeps declaring its streams and opens once the
// nodes are back, instead of exiting with "context deadline exceeded" (a
// CI run of the failover test lost a restarted replica that way).
func TestOpenRetriesWhileClusterSettles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster")
	}
	old := declareAttempt
	declareAttempt = time.Second
	t.Cleanup(func() { declareAttempt = old })

	cl := testenv.StartNATSCluster(t, 3)
	cl.Stop(1)
	cl.Stop(2)
	var st Settings
	st.URL, st.User, st.Password, st.Replicas = cl.URL(0), cl.User, cl.Password, 3
	done := make(chan error, 1)
	var bus *Bus
	go func() {
		var err error
		bus, err = Open(context.Background(), Config{Settings: st}, slog.New(slog.DiscardHandler))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Open without quorum returned %v, want it to keep trying", err)
	case <-time.After(3 * time.Second): // several attempts have failed
	}
	cl.Restart(1)
	cl.Restart(2)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Open after the nodes came back: %v", err)
		}
		bus.Close()
	case <-time.After(2 * declareFor):
		t.Fatal("Open did not return")
	}
}
