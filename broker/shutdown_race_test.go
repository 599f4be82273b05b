package broker

import (
	"sync"
	"testing"
	"time"
)

// TestCloseWhileClientsLeave closes the broker while clean-session clients
// drop their sockets at the same moment (each one's end runs
// Clients.Delete). With mochi's own listener closer (Clients.GetByListener,
// a nested read lock) a Delete waiting between the two RLocks deadlocked
// Close for good; CI once hung 17 minutes on it. The broker now closes
// listener clients from one GetAll copy (closeListenerClients).
func TestCloseWhileClientsLeave(t *testing.T) {
	ids := []string{vin1, vin2, chABC, chABCD}
	for i := 0; i < 25; i++ {
		b := startBroker(t, nil, nil)
		addr := b.Addr(ListenerTCP)
		conns := make([]interface{ Close() error }, 0, len(ids))
		for _, id := range ids {
			c, _ := rawConnect(t, addr, id)
			conns = append(conns, c)
		}
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Add(1)
			go func() { defer wg.Done(); _ = c.Close() }()
		}
		done := make(chan error, 1)
		go func() { done <- b.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: Close: %v", i, err)
			}
		case <-time.After(wait):
			t.Fatalf("round %d: Close hung while clients were leaving", i)
		}
		wg.Wait()
	}
}
