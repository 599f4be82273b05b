package commands_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telegate/telegate/broker"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/commands"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/internal/svctest"
	"github.com/telegate/telegate/internal/testenv"
)

const (
	clusterVIN    = "TGCMD000000000001"
	clusterSecret = "secret-cmd"
)

func startBroker(t *testing.T) *broker.Broker {
	t.Helper()
	return svctest.StartBroker(t, clusterVIN, clusterSecret)
}

func brokerSession(name string, b *broker.Broker) func(string) string {
	return svctest.BrokerSession(name, b)
}

func connectVehicle(t *testing.T, b *broker.Broker) *svctest.Vehicle {
	t.Helper()
	return svctest.ConnectVehicle(t, b, clusterVIN, clusterSecret)
}

// TestDeliveryFollowsTheVehicleAcrossReplicas: two gateway replicas (a
// dispatcher and a real broker each, on two nodes of a 3-node JetStream
// cluster) share the command consumer, so either may store a request.
// Commands for a vehicle connected to A are delivered by A, whichever
// replica consumed them; commands sent while the vehicle is offline are
// delivered by B once it reconnects there, not by A. Each command reaches
// the vehicle once, is published once in all, and is closed and announced
// once. Before, a request consumed by the replica without the vehicle's
// connection was never delivered.
func TestDeliveryFollowsTheVehicleAcrossReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c := testenv.StartNATSCluster(t, 3)
	busA, busB, busC := svctest.ClusterBus(t, c, 0), svctest.ClusterBus(t, c, 1), svctest.ClusterBus(t, c, 2)
	brA, brB := startBroker(t), startBroker(t)
	g := svc.NewGroup(svctest.Logger())
	defer g.Close()
	var ds []*commands.Dispatcher
	for _, r := range []struct {
		name string
		bus  *natsbus.Bus
		br   *broker.Broker
	}{{"a", busA, brA}, {"b", busB, brB}} {
		d, err := commands.NewDispatcher(ctx, r.bus.Conn(), r.bus.JetStream(), 3, r.br, commands.Config{
			RetryInterval: time.Hour, Session: brokerSession(r.name, r.br), Clock: testenv.Clock(t, time.Date(2027, 3, 1, 8, 0, 0, 0, time.UTC))},
			svctest.Logger().With("replica", r.name))
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
		g.Go("dispatcher-"+r.name, d.Run)
	}
	results := map[string]int{}
	var rmu sync.Mutex
	if _, err := busC.Conn().Subscribe(commands.ResultSubject(clusterVIN), func(m *nats.Msg) {
		ev, err := svc.Decode(m.Data)
		if err != nil {
			return
		}
		var r commands.Result
		if json.Unmarshal(ev.Data, &r) == nil {
			rmu.Lock()
			results[r.CmdID+" "+r.State]++
			rmu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	pub := svc.Publisher{JS: busC.JetStream()}
	send := func(id string) {
		t.Helper()
		if err := commands.Send(ctx, pub, time.Now(), commands.Request{VIN: clusterVIN, CmdID: id, Name: "feature", Origin: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	ack := func(id string) {
		t.Helper()
		a := map[string]any{"vin": clusterVIN, "cmd_id": id, "status": "applied"}
		if err := pub.Publish(ctx, "vehicle.cmdack."+clusterVIN, "cmdack-"+id, "vehicle.cmdack", clusterVIN, time.Now(), a); err != nil {
			t.Fatal(err)
		}
	}
	delivered := func() uint64 { return ds[0].Stats().Delivered.Load() + ds[1].Stats().Delivered.Load() }

	// 1. Connected to A: eight commands, consumed by either replica,
	// delivered by A.
	onA := connectVehicle(t, brA)
	var first []string
	for i := range 8 {
		first = append(first, fmt.Sprintf("a%d", i))
		send(first[i])
	}
	for _, id := range first {
		svctest.Eventually(t, "delivered on A: "+id, func() error {
			if n := onA.Count(id); n != 1 {
				return fmt.Errorf("received %d times", n)
			}
			return nil
		})
		ack(id)
	}
	for _, id := range first {
		svctest.Eventually(t, "applied: "+id, func() error {
			r, err := ds[1].Get(ctx, clusterVIN, id)
			if err != nil || r.State != commands.StateApplied || r.Attempts != 1 || !strings.HasPrefix(r.Session, "a/") {
				return fmt.Errorf("%+v %w", r, err)
			}
			return nil
		})
	}

	// 2. Offline: six commands wait.
	onA.C.Disconnect(0)
	svctest.Eventually(t, "session on A gone", func() error {
		if s := brokerSession("a", brA)(clusterVIN); s != "" {
			return fmt.Errorf("still %s", s)
		}
		return nil
	})
	var second []string
	for i := range 6 {
		second = append(second, fmt.Sprintf("b%d", i))
		send(second[i])
	}
	for _, id := range second {
		svctest.Eventually(t, "pending: "+id, func() error {
			r, err := ds[0].Get(ctx, clusterVIN, id)
			if err != nil || r.State != commands.StatePending {
				return fmt.Errorf("%+v %w", r, err)
			}
			return nil
		})
	}

	// 3. The vehicle reconnects to B: B delivers them, once each.
	onB := connectVehicle(t, brB)
	ev := map[string]any{"device": clusterVIN, "kind": "vehicle", "connected": true}
	if err := pub.Publish(ctx, "vehicle.connectivity.connected."+clusterVIN, "conn-b", "connectivity.connected", clusterVIN, time.Now(), ev); err != nil {
		t.Fatal(err)
	}
	for _, id := range second {
		svctest.Eventually(t, "delivered on B: "+id, func() error {
			if n := onB.Count(id); n != 1 {
				return fmt.Errorf("received %d times", n)
			}
			return nil
		})
		ack(id)
	}
	for _, id := range second {
		svctest.Eventually(t, "applied: "+id, func() error {
			r, err := ds[0].Get(ctx, clusterVIN, id)
			if err != nil || r.State != commands.StateApplied || r.Attempts != 1 || !strings.HasPrefix(r.Session, "b/") {
				return fmt.Errorf("%+v %w", r, err)
			}
			return nil
		})
		if n := onA.Count(id); n != 0 {
			t.Fatalf("%s reached the old connection on A %d times", id, n)
		}
	}
	// Every record is closed: no attempt can be recorded any more, so the
	// counters are final. One publish per command in all.
	if n := delivered(); n != uint64(len(first)+len(second)) {
		t.Fatalf("%d publishes for %d commands", n, len(first)+len(second))
	}
	svctest.Eventually(t, "results", func() error {
		rmu.Lock()
		defer rmu.Unlock()
		for _, id := range append(first, second...) {
			if n := results[id+" applied"]; n != 1 {
				return fmt.Errorf("%s announced %d times (%v)", id, n, results)
			}
		}
		if len(results) != len(first)+len(second) {
			return fmt.Errorf("results %v", results)
		}
		return nil
	})
	for _, id := range append(first, second...) {
		if n := onA.Count(id) + onB.Count(id); n != 1 {
			t.Fatalf("%s received %d times", id, n)
		}
	}
}
