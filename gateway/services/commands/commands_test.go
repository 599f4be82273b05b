package commands_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/commands"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/internal/svctest"
	"github.com/telegate/telegate/internal/testenv"
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
	roles := svctest.Roles(t, bus) // the services on their own users
	ops := svctest.Ops(t, bus)     // the test's own reads and writes
	js := ops.JetStream()
	var online atomic.Bool
	mq := &fakeMQTT{}
	d, err := commands.NewDispatcher(ctx, svctest.Role(t, roles, natsbus.RoleCommands).Conn(), svctest.Role(t, roles, natsbus.RoleCommands).JetStream(), 1, mq, commands.Config{RetryInterval: time.Hour,
		Online: func(string) bool { return online.Load() }}, svctest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	g := svc.NewGroup(svctest.Logger())
	defer g.Close()
	g.Go("dispatcher", d.Run)
	results, err := ops.Conn().SubscribeSync("vehicle.cmdresult.VIN1")
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
			return fmt.Errorf("%+v %w", r, err)
		}
		return nil
	})
	send("c2", "off")
	send("c2", "off") // duplicate request: ignored
	svctest.Eventually(t, "superseded", func() error {
		r, err := d.Get(ctx, "VIN1", "c1")
		if err != nil || r.State != commands.StateSuperseded {
			return fmt.Errorf("%+v %w", r, err)
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
			return fmt.Errorf("%+v %w", r, err)
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

// TestDispatcherClosedAndExpired: a request for a command already closed is
// not delivered again and its final state is announced again (the
// requester learns the request was not carried out); a command that
// expires while its vehicle is offline closes as expired without waiting
// for the vehicle.
func TestDispatcherClosedAndExpired(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bus := svctest.Bus(t)
	roles := svctest.Roles(t, bus) // the services on their own users
	ops := svctest.Ops(t, bus)     // the test's own reads and writes
	js := ops.JetStream()
	mq := &fakeMQTT{}
	// The dispatcher's clock: TELEGATE_TEST_DATE or a fixed date, moving on.
	clock := testenv.Clock(t, time.Date(2027, 1, 15, 12, 0, 0, 0, time.UTC))
	d, err := commands.NewDispatcher(ctx, svctest.Role(t, roles, natsbus.RoleCommands).Conn(), svctest.Role(t, roles, natsbus.RoleCommands).JetStream(), 1, mq, commands.Config{RetryInterval: time.Second,
		Online: func(string) bool { return false }, Clock: clock}, svctest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	g := svc.NewGroup(svctest.Logger())
	defer g.Close()
	g.Go("dispatcher", d.Run)
	results, err := ops.Conn().SubscribeSync("vehicle.cmdresult.VIN1")
	if err != nil {
		t.Fatal(err)
	}
	pub := svc.Publisher{JS: js}
	send := func(id, key string, exp *time.Time) {
		t.Helper()
		if err := commands.Send(ctx, pub, clock(), commands.Request{VIN: "VIN1", CmdID: id, Name: "feature", Origin: "test",
			Key: key, ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	next := func() commands.Result {
		t.Helper()
		m, err := results.NextMsg(20 * time.Second)
		if err != nil {
			t.Fatalf("result: %v", err)
		}
		ev, _ := svc.Decode(m.Data)
		var r commands.Result
		if err := json.Unmarshal(ev.Data, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	send("a1", "feature:x", nil)
	send("a2", "feature:x", nil) // supersedes a1
	if r := next(); r.CmdID != "a1" || r.State != commands.StateSuperseded {
		t.Fatalf("result %+v", r)
	}
	// a1 again (a requester reusing a closed id): not reopened, and the
	// final state is announced again. JetStream deduplicates the request's
	// Nats-Msg-Id for its duplicate window, so go around it as a requester
	// after the window would: a new message, the same command id.
	if err := pub.Publish(ctx, commands.Subject("VIN1"), "again-a1", commands.TypeRequest, "test", clock(),
		commands.Request{VIN: "VIN1", CmdID: "a1", Name: "feature", Origin: "test", Key: "feature:x"}); err != nil {
		t.Fatal(err)
	}
	svctest.Eventually(t, "closed id re-announced", func() error {
		if n, _, _ := results.Pending(); n == 0 {
			return fmt.Errorf("no result yet")
		}
		return nil
	})
	if r, err := d.Get(ctx, "VIN1", "a1"); err != nil || r.State != commands.StateSuperseded {
		t.Fatalf("a1 reopened: %+v %v", r, err)
	}
	if r, err := d.Get(ctx, "VIN1", "a2"); err != nil || r.State != commands.StatePending {
		t.Fatalf("a2 after a1's re-request: %+v %v", r, err)
	}
	// An expiring command for the offline vehicle closes as expired.
	exp := clock().Add(time.Second)
	send("b1", "", &exp)
	svctest.Eventually(t, "expired while offline", func() error {
		r, err := d.Get(ctx, "VIN1", "b1")
		if err != nil || r.State != commands.StateExpired || r.ClosedAt == nil {
			return fmt.Errorf("%+v %w", r, err)
		}
		return nil
	})
	seen := map[string]bool{}
	for len(seen) < 2 {
		r := next()
		seen[r.CmdID+" "+r.State] = true
	}
	if !seen["a1 superseded"] || !seen["b1 expired"] {
		t.Fatalf("results %v", seen)
	}
	if ids := mq.ids(); len(ids) != 0 {
		t.Fatalf("sent to an offline vehicle: %v", ids)
	}
	// Stored in the stream, so durable consumers (the scheduler, the
	// dashboard) get the announcement again too: a1 twice, b1 once.
	st, err := js.Stream(ctx, "VEHICLE")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("vehicle.cmdresult.VIN1"))
	if err != nil || info.State.Subjects["vehicle.cmdresult.VIN1"] != 3 {
		t.Fatalf("results stored: %v %v", info.State.Subjects, err)
	}
}
