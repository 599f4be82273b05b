package mqtt

import (
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Patched by telegate (see README.md in this directory): NextImmediate and
// Clients.GetByListener took their read lock twice; a writer waiting
// between the two RLocks deadlocked both for good.

func hammer(t *testing.T, what string, read func(), write func()) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for n := 0; n < 4; n++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					write()
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; n < 200_000; n++ {
			read()
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: deadlocked against concurrent writers", what)
	}
	close(stop)
	wg.Wait()
}

func TestTelegateNextImmediateConcurrentWriters(t *testing.T) {
	i := NewInflights()
	i.Set(packets.Packet{PacketID: 1, Expiry: -1})
	hammer(t, "Inflight.NextImmediate", func() { i.NextImmediate() }, func() {
		i.Set(packets.Packet{PacketID: 2})
		i.Delete(2)
	})
}

func TestTelegateGetByListenerConcurrentWriters(t *testing.T) {
	cl := NewClients()
	cl.Add(&Client{ID: "a", Net: ClientConnection{Listener: "tcp"}})
	hammer(t, "Clients.GetByListener", func() { cl.GetByListener("tcp") }, func() {
		cl.Add(&Client{ID: "b", Net: ClientConnection{Listener: "tcp"}})
		cl.Delete("b")
	})
}
