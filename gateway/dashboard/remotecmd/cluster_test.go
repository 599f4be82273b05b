package remotecmd_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/telegate/telegate/broker"
	"github.com/telegate/telegate/gateway/dashboard/feed"
	"github.com/telegate/telegate/gateway/dashboard/fleetstate"
	"github.com/telegate/telegate/gateway/dashboard/remotecmd"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/commands"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/internal/svctest"
	"github.com/telegate/telegate/internal/testenv"
)

const (
	clusterVIN    = "TGDASH00000000001"
	clusterSecret = "secret-dash"
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

// replica is one gateway replica: a real broker, the services' dispatcher
// and the dashboard (its command log fed by its own feed, and a Sender).
type replica struct {
	br     *broker.Broker
	disp   *commands.Dispatcher
	log    *remotecmd.Log
	sender *remotecmd.Sender
}

func startReplica(ctx context.Context, t *testing.T, g *svc.Group, name string, bus *natsbus.Bus, clock func() time.Time) *replica {
	t.Helper()
	r := &replica{br: startBroker(t), log: remotecmd.NewLog(50)}
	session := brokerSession(name, r.br)
	d, err := commands.NewDispatcher(ctx, bus.Conn(), bus.JetStream(), 3, r.br, commands.Config{
		RetryInterval: time.Hour, Session: session, Clock: clock},
		svctest.Logger().With("replica", name))
	if err != nil {
		t.Fatal(err)
	}
	r.disp = d
	g.Go("dispatcher-"+name, d.Run)
	f := feed.New(feed.Config{}, fleetstate.New(nil), nil, bus.JetStream(), nil, r.log, svctest.Logger())
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	r.sender = remotecmd.NewSender(r.br, bus.JetStream(), r.log, svctest.Logger()).WithClock(clock).
		WithCluster(func(vin string) bool { return session(vin) != "" }, remotecmd.ServicesDispatch(bus.JetStream()))
	return r
}

func findRecord(l *remotecmd.Log, id string) (remotecmd.Record, bool) {
	for _, r := range l.List(clusterVIN, 50) {
		if r.CmdID == id {
			return r, true
		}
	}
	return remotecmd.Record{}, false
}

// TestDashboardCommandReachesVehicleOnAnotherReplica: two gateway replicas
// on two nodes of a 3-node JetStream cluster, the vehicle (a real MQTT
// client) connected to B. A command sent from A's dashboard is handed to
// the services' dispatcher and delivered by B: the vehicle receives it
// once, its ack closes it, and the history of both replicas shows the
// final state with the operator's name. A command sent from B's dashboard
// takes the local fast path (not the dispatcher). Without the services, A
// refuses with ErrOtherReplica. Before, A published to its own broker and
// the vehicle never received the command.
func TestDashboardCommandReachesVehicleOnAnotherReplica(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c := testenv.StartNATSCluster(t, 3)
	busA, busB, busC := svctest.ClusterBus(t, c, 0), svctest.ClusterBus(t, c, 1), svctest.ClusterBus(t, c, 2)
	g := svc.NewGroup(svctest.Logger())
	defer g.Close()
	clock := testenv.Clock(t, time.Date(2027, 3, 1, 8, 0, 0, 0, time.UTC))
	a, b := startReplica(ctx, t, g, "a", busA, clock), startReplica(ctx, t, g, "b", busB, clock)
	onB := connectVehicle(t, b.br)
	svctest.Eventually(t, "session on B", func() error {
		if brokerSession("b", b.br)(clusterVIN) == "" {
			return errors.New("no session")
		}
		return nil
	})

	rec, err := a.sender.Send(ctx, clusterVIN, "clear_dtc_reminder", map[string]string{"code": "P0301"}, "alice")
	if err != nil {
		t.Fatalf("send from A: %v", err)
	}
	if rec.Status != remotecmd.StatusPending {
		t.Fatalf("status %q, want pending", rec.Status)
	}
	svctest.Eventually(t, "delivered on B", func() error {
		if n := onB.Count(rec.CmdID); n != 1 {
			return fmt.Errorf("received %d times", n)
		}
		return nil
	})
	// The vehicle's ack, as the event sink publishes it.
	pub := svc.Publisher{JS: busC.JetStream()}
	ack := func(id string) {
		t.Helper()
		data := map[string]any{"vin": clusterVIN, "cmd_id": id, "status": "applied"}
		if err := pub.Publish(ctx, natsbus.SubjectCommandAck(clusterVIN), "cmdack-"+id, "vehicle.cmdack", clusterVIN, clock(), data); err != nil {
			t.Fatal(err)
		}
	}
	ack(rec.CmdID)
	for name, r := range map[string]*replica{"A": a, "B": b} {
		svctest.Eventually(t, "final state in "+name+"'s history", func() error {
			got, ok := findRecord(r.log, rec.CmdID)
			if !ok || got.Status != "applied" || got.Closed.IsZero() || got.User != "alice" || got.Source != "dashboard" ||
				got.Name != "clear_dtc_reminder" || got.Params["code"] != "P0301" {
				return fmt.Errorf("%+v", got)
			}
			return nil
		})
	}
	stored, err := a.disp.Get(ctx, clusterVIN, rec.CmdID)
	if err != nil || stored.State != commands.StateApplied || stored.Attempts != 1 || stored.Origin != "dashboard" ||
		!strings.HasPrefix(stored.Session, "b/") {
		t.Fatalf("stored %+v %v", stored, err)
	}

	// B's dashboard: the vehicle is local, the fast path (no dispatcher).
	local, err := b.sender.Send(ctx, clusterVIN, "ping", nil, "bob")
	if err != nil || local.Status != remotecmd.StatusSent {
		t.Fatalf("send from B: %+v %v", local, err)
	}
	svctest.Eventually(t, "fast path on B", func() error {
		if n := onB.Count(local.CmdID); n != 1 {
			return fmt.Errorf("received %d times", n)
		}
		return nil
	})
	ack(local.CmdID)
	svctest.Eventually(t, "fast path acked in A's history", func() error {
		if got, ok := findRecord(a.log, local.CmdID); !ok || got.Status != "applied" || got.User != "bob" {
			return fmt.Errorf("%+v", got)
		}
		return nil
	})

	// Services disabled: A refuses, nothing is published or recorded.
	noSvc := remotecmd.NewSender(a.br, busA.JetStream(), remotecmd.NewLog(5), svctest.Logger()).
		WithCluster(func(vin string) bool { return brokerSession("a", a.br)(vin) != "" }, nil)
	if _, err := noSvc.Send(ctx, clusterVIN, "ping", nil, "carol"); !errors.Is(err, remotecmd.ErrOtherReplica) {
		t.Fatalf("without services: %v, want ErrOtherReplica", err)
	}

	// Exactly once: one dispatcher publish in all, one reception each.
	if n := a.disp.Stats().Delivered.Load() + b.disp.Stats().Delivered.Load(); n != 1 {
		t.Fatalf("dispatcher published %d times, want 1", n)
	}
	for _, id := range []string{rec.CmdID, local.CmdID} {
		if n := onB.Count(id); n != 1 {
			t.Fatalf("%s received %d times", id, n)
		}
	}
}
