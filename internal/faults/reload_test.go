package faults

import (
	"os"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telegate/telegate/broker/registry"
	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/internal/testenv"
)

// TestRevocationReachesEveryReplica: two gateway processes on a 3-node
// NATS cluster share one device registry file. A vehicle is connected to
// replica B; the operator disables it in the file and sends SIGHUP to
// replica A only. B ends the vehicle's session (it got A's reload request
// through the sessions bucket) and both replicas refuse it from then on;
// another vehicle is not affected.
func TestRevocationReachesEveryReplica(t *testing.T) {
	cl := testenv.StartNATSCluster(t, 3)
	in := testenv.StartInflux(t)
	devices := testenv.WriteRegistry(t, t.TempDir(), 2, 0)
	opts := testenv.GatewayOptions{NATSURL: cl.URLs(), NATSUser: cl.User, NATSPassword: cl.Password, NATSReplicas: 3,
		DevicesFile: devices}
	a := testenv.StartGateway(t, in, 2, opts)
	b := testenv.StartGateway(t, in, 2, opts)

	reg, err := registry.Load(devices)
	if err != nil {
		t.Fatal(err)
	}
	devs := reg.Devices()
	revoked, kept := devs[0].ID, devs[1].ID
	connect := func(g *testenv.Gateway, id string, lost chan<- error) (paho.Client, error) {
		o := paho.NewClientOptions().AddBroker(g.MQTTURL).SetClientID(id).SetUsername(id).
			SetPassword(sim.Secret(testenv.FleetKey, id)).SetCleanSession(true).SetAutoReconnect(false).
			SetConnectTimeout(10 * time.Second).SetConnectRetry(false)
		if lost != nil {
			o.SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
		}
		c := paho.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(15 * time.Second) {
			t.Fatalf("connect %s: no answer", id)
		}
		if tok.Error() == nil {
			t.Cleanup(func() { c.Disconnect(100) })
		}
		return c, tok.Error()
	}
	lost := make(chan error, 1)
	if _, err := connect(b, revoked, lost); err != nil {
		t.Fatalf("before the revocation: %v", err)
	}
	keptLost := make(chan error, 1)
	if _, err := connect(b, kept, keptLost); err != nil {
		t.Fatal(err)
	}

	for i := range devs {
		if devs[i].ID == revoked {
			devs[i].Disabled = true
		}
	}
	if err := registry.Write(devices, devs); err != nil {
		t.Fatal(err)
	}
	p, err := os.FindProcess(a.PID)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(60 * time.Second):
		t.Fatal("the revoked vehicle's session on replica B was not ended after SIGHUP to replica A")
	}
	for _, g := range []*testenv.Gateway{a, b} {
		if _, err := connect(g, revoked, nil); err == nil {
			t.Fatalf("revoked vehicle accepted by %s", g.MQTTURL)
		}
	}
	select {
	case err := <-keptLost:
		t.Fatalf("the other vehicle lost its session: %v", err)
	default:
	}
}
