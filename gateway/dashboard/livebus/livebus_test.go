package livebus_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/dashboard/feed"
	"github.com/telegate/telegate/gateway/dashboard/fleetstate"
	"github.com/telegate/telegate/gateway/dashboard/livebus"
	"github.com/telegate/telegate/gateway/sink/live"
	"github.com/telegate/telegate/internal/testenv"
)

const vin = "TGLIVE00000000001"

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// TestRemoteVehicleInFleetAndLiveStream: replicas A and B on two nodes of a
// 3-node NATS cluster. A frame stored by A (its sink's hub) reaches B's
// fleet state (last seen, values) and a live stream watching the vehicle on
// B; without the owner's consent no position leaves A; B does not take
// its own frames back from NATS, and a frame within the rate bound is not
// published.
func TestRemoteVehicleInFleetAndLiveStream(t *testing.T) {
	c := testenv.StartNATSCluster(t, 3)
	clock := testenv.NewManualClock(time.Date(2027, 4, 1, 9, 0, 0, 0, time.UTC))
	type replica struct {
		local, out *live.Hub
		b          *livebus.Bridge
	}
	start := func(node int, name string) replica {
		r := replica{local: live.New(), out: live.New()}
		var err error
		r.b, err = livebus.Start(livebus.Config{NC: c.Connect(t, node), Replica: name, Local: r.local, Out: r.out,
			MinInterval: time.Second, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.b.Close)
		return r
	}
	a, b := start(0, "a"), start(1, "b")
	st := fleetstate.New([]string{vin})
	f := feed.New(feed.Config{}, st, nil, nil, b.out, nil, nil)
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	watch, unwatch := b.out.Subscribe(vin, 16) // B's SSE live stream of the vehicle
	defer unwatch()

	// Core NATS interest crosses the cluster's routes asynchronously:
	// probe until B's subscription is known on A's node.
	probe := c.Connect(t, 0)
	eventually(t, "interest propagated", func() error {
		m := nats.NewMsg(livebus.SubjectPrefix + "PROBE")
		m.Header.Set(livebus.HeaderReplica, "probe")
		m.Data = livebus.Encode(live.Update{}, false)
		if err := probe.PublishMsg(m); err != nil {
			return err
		}
		if b.b.Stats().Received.Load() == 0 {
			return fmt.Errorf("probe not received")
		}
		return nil
	})
	received := b.b.Stats().Received.Load()

	ts := clock.Now().UnixMilli()
	sigs := []wire.Signal{{ID: catalog.Speed, Value: 87.5}, {ID: catalog.Latitude, Value: 48.1}}
	eventually(t, "bridge subscribed", func() error {
		if !a.local.HasSubscribers([]byte(vin)) {
			return fmt.Errorf("no subscriber on A's hub")
		}
		return nil
	})
	a.local.Publish([]byte(vin), ts, 7, sigs)
	select {
	case u := <-watch:
		if u.VIN != vin || u.Seq != 7 || u.TimeMs != ts || len(u.Signals) != 1 || u.Signals[0] != sigs[0] {
			t.Fatalf("live frame on B: %+v", u)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no live frame on B")
	}
	eventually(t, "B's fleet state", func() error {
		d, _ := st.Get(vin)
		if !d.LastSeen.Equal(time.UnixMilli(ts).UTC()) || len(d.Values) != 1 || d.Values[0].Value != 87.5 {
			return fmt.Errorf("%+v", d)
		}
		return nil
	})
	// Within the rate bound: kept local.
	a.local.Publish([]byte(vin), ts+100, 8, sigs[:1])
	eventually(t, "throttled", func() error {
		if a.b.Stats().Throttled.Load() != 1 {
			return fmt.Errorf("throttled %d", a.b.Stats().Throttled.Load())
		}
		return nil
	})
	clock.Advance(time.Second)
	a.local.Publish([]byte(vin), ts+1000, 9, sigs[:1])
	select {
	case u := <-watch:
		if u.Seq != 9 {
			t.Fatalf("frame %d: the throttled frame crossed", u.Seq)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no second live frame on B")
	}
	// A counts a frame as published after PublishMsg returns; B may have
	// handed it to the watch before that.
	eventually(t, "A published 2", func() error {
		if n := a.b.Stats().Published.Load(); n != 2 {
			return fmt.Errorf("published %d", n)
		}
		return nil
	})
	// A probe still in flight when the snapshot was taken may arrive later:
	// B must have received at least the two vehicle frames (the watch above
	// proved which ones crossed).
	if n := b.b.Stats().Received.Load() - received; n < 2 {
		t.Fatalf("B received %d frames", n)
	}
	if n := b.b.Stats().Throttled.Load() + b.b.Stats().Published.Load(); n != 0 {
		t.Fatalf("frames echoed: %d", n)
	}
	if d, err := livebus.Decode([]byte{1, 2, 3}); err == nil {
		t.Fatalf("bad frame decoded: %+v", d)
	}
}
