package sim

import (
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telegate/telegate/decoders/wire"
)

// fakeToken is a publish token the test completes by hand.
type fakeToken struct {
	done chan struct{}
	err  error
}

func (t *fakeToken) Wait() bool                     { <-t.done; return true }
func (t *fakeToken) WaitTimeout(time.Duration) bool { <-t.done; return true }
func (t *fakeToken) Done() <-chan struct{}          { return t.done }
func (t *fakeToken) Error() error                   { return t.err }

// fakeClient records publishes and never acks them by itself. Methods other
// than Publish are not used by the publishing path.
type fakeClient struct {
	paho.Client
	mu     sync.Mutex
	tokens []*fakeToken
}

func (c *fakeClient) Publish(string, byte, bool, any) paho.Token {
	c.mu.Lock()
	defer c.mu.Unlock()
	tok := &fakeToken{done: make(chan struct{})}
	c.tokens = append(c.tokens, tok)
	return tok
}

func (c *fakeClient) published() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.tokens)
}

func (c *fakeClient) complete(i int, err error) {
	c.mu.Lock()
	tok := c.tokens[i]
	c.mu.Unlock()
	tok.err = err
	close(tok.done)
}

// TestInflightLimit checks that a device never has more than
// InflightPerDevice unacknowledged publishes: it blocks until an ack frees
// a slot.
func TestInflightLimit(t *testing.T) {
	f, err := New(Config{Vehicles: 1, FleetKey: "k", InflightPerDevice: 3, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	d := newDevice(f, "TGSVS000000000001", KindVehicle, 0, 1)
	fc := &fakeClient{}
	d.client = fc
	go d.collect()

	const total = 8
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range total {
			if !d.acquire() {
				return
			}
			d.send(topicEvents, "vehicles/x/events", &wire.VehicleEvent{Version: wire.Version, Seq: uint64(i + 1), Kind: wire.EventOnline})
		}
	}()

	waitFor(t, "first window", func() bool { return fc.published() == 3 })
	time.Sleep(20 * time.Millisecond) // give a broken limiter the chance to overrun
	if n := fc.published(); n != 3 {
		t.Fatalf("%d publishes in flight, limit 3", n)
	}
	for i := 0; i < total; i++ {
		fc.complete(i, nil)
		want := min(i+4, total)
		waitFor(t, "next publish", func() bool { return fc.published() == want })
		if n := fc.published(); n-(i+1) > 3 {
			t.Fatalf("%d unacked publishes, limit 3", n-(i+1))
		}
	}
	<-published
	d.finish(false)
	s := f.Summary()
	if ev := s.Topics["events"]; ev.Sent != total || ev.Acked != total || s.Latency.Count != total {
		t.Errorf("events %+v latency count %d", ev, s.Latency.Count)
	}
}

// TestPublishFailuresCounted checks that a failed publish is an error, not
// an ack, and frees its slot.
func TestPublishFailuresCounted(t *testing.T) {
	f, err := New(Config{Vehicles: 1, FleetKey: "k", InflightPerDevice: 1, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	d := newDevice(f, "TGSVS000000000001", KindVehicle, 0, 1)
	fc := &fakeClient{}
	d.client = fc
	go d.collect()
	for i := range 2 {
		if !d.acquire() {
			t.Fatal("acquire")
		}
		d.send(topicTelemetry, "t", &wire.VehicleEvent{Version: wire.Version, Kind: wire.EventOnline})
		fc.complete(i, paho.ErrNotConnected)
	}
	d.finish(false)
	s := f.Summary()
	if tel := s.Topics["telemetry"]; tel.Sent != 2 || tel.Failed != 2 || tel.Acked != 0 || s.PublishErrors != 2 || s.Errors != 2 {
		t.Errorf("summary %+v", s)
	}
}
