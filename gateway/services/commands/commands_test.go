package commands_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/services/commands"
	"github.com/telegate/telegate/gateway/services/internal/svctest"
	"github.com/telegate/telegate/gateway/services/svc"
)

type fakeMQTT struct {
	mu   sync.Mutex
	sent []wire.Command
}

func (f *fakeMQTT) Publish(topic string, payload []byte, qos byte) error {
	var c wire.Command
	if err := wire.DecodeCommand(payload, &c); err != nil {
		return err
	}
	if qos != 1 || topic != "vehicles/VIN1/cmd/"+c.Name {
		return fmt.Errorf("topic %s qos %d", topic, qos)
	}
	f.mu.Lock()
	f.sent = append(f.sent, c)
	f.mu.Unlock()
	return nil
}

func (f *fakeMQTT) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.sent {
		out = append(out, c.CmdID)
	}
	return out
}

// TestDispatcherOfflineSupersedeAck: a command for an offline vehicle
// waits, a later one with the same key supersedes it, the vehicle gets
// only the latest when it comes online, and its ack closes it.
func TestDispatcherOfflineSupersedeAck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bus := svctest.Bus(t)
	js := bus.JetStream()
	var online atomic.Bool
	mq := &fakeMQTT{}
	d, err := commands.NewDispatcher(ctx, bus.Conn(), js, 1, mq, commands.Config{RetryInterval: time.Hour,
		Online: func(string) bool { return online.Load() }}, svctest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	g := svc.NewGroup(svctest.Logger())
	defer g.Close()
	g.Go("dispatcher", d.Run)
	results, err := bus.Conn().SubscribeSync("vehicle.cmdresult.VIN1")
	if err != nil {
		t.Fatal(err)
	}
	pub := svc.Publisher{JS: js}
	send := func(id, state string) {
		if err := commands.Send(ctx, pub, time.Now(), commands.Request{VIN: "VIN1", CmdID: id, Name: "feature", Origin: "test",
			Key: "feature:x", Params: []commands.Param{{Key: "feature", Value: "x"}, {Key: "state", Value: state}}}); err != nil {
			t.Fatal(err)
		}
	}
	send("c1", "on")
	svctest.Eventually(t, "pending", func() error {
		r, err := d.Get(ctx, "VIN1", "c1")
		if err != nil || r.State != commands.StatePending {
			return fmt.Errorf("%+v %v", r, err)
		}
		return nil
	})
	send("c2", "off")
	send("c2", "off") // duplicate request: ignored
	svctest.Eventually(t, "superseded", func() error {
		r, err := d.Get(ctx, "VIN1", "c1")
		if err != nil || r.State != commands.StateSuperseded {
			return fmt.Errorf("%+v %v", r, err)
		}
		return nil
	})
	if len(mq.ids()) != 0 {
		t.Fatalf("sent to an offline vehicle: %v", mq.ids())
	}
	online.Store(true)
	ev := map[string]any{"device": "VIN1", "kind": "vehicle", "connected": true}
	if err := pub.Publish(ctx, "vehicle.connectivity.connected.VIN1", "conn-1", "connectivity.connected", "VIN1", time.Now(), ev); err != nil {
		t.Fatal(err)
	}
	svctest.Eventually(t, "delivered on reconnect", func() error {
		if ids := mq.ids(); len(ids) == 0 || ids[0] != "c2" {
			return fmt.Errorf("sent %v", ids)
		}
		return nil
	})
	for _, id := range mq.ids() {
		if id != "c2" {
			t.Fatalf("superseded command delivered: %v", mq.ids())
		}
	}
	ack := map[string]any{"vin": "VIN1", "cmd_id": "c2", "status": "applied"}
	if err := pub.Publish(ctx, "vehicle.cmdack.VIN1", "cmdack-VIN1-c2-applied", "vehicle.cmdack", "VIN1", time.Now(), ack); err != nil {
		t.Fatal(err)
	}
	svctest.Eventually(t, "closed by the ack", func() error {
		r, err := d.Get(ctx, "VIN1", "c2")
		if err != nil || r.State != commands.StateApplied || r.ClosedAt == nil {
			return fmt.Errorf("%+v %v", r, err)
		}
		return nil
	})
	seen := map[string]bool{}
	for len(seen) < 2 {
		m, err := results.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("results: %v (seen %v)", err, seen)
		}
		ev, _ := svc.Decode(m.Data)
		seen[ev.ID] = true
	}
	if !seen["cmdresult-c1-superseded"] || !seen["cmdresult-c2-applied"] {
		t.Fatalf("results %v", seen)
	}
	if (commands.Request{VIN: "VIN1", CmdID: "a/b", Name: "x"}).Validate() == nil {
		t.Fatal("invalid cmd id accepted")
	}
}
