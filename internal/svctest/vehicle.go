package svctest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telegate/telegate/broker"
	"github.com/telegate/telegate/broker/registry"
	"github.com/telegate/telegate/decoders/wire"
)

// StartBroker starts a real MQTT broker on a random loopback port that
// knows one vehicle, id, with secret (bcrypt cost 4); closed by Cleanup.
// Two of them are two gateway replicas' brokers in the cluster tests.
func StartBroker(t testing.TB, id, secret string) *broker.Broker {
	t.Helper()
	h, err := registry.HashSecret([]byte(secret), 4)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New([]registry.Device{{ID: id, Kind: registry.KindVehicle, SecretHash: h}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := broker.DefaultConfig()
	cfg.TCPAddr, cfg.WSAddr = "127.0.0.1:0", ""
	b, err := broker.New(cfg, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// BrokerSession is the gateway's session test (app.vehicleSession) on one
// broker: the vehicle's live client there, subscribed to its commands, as
// "name/remote/pointer"; "" when it has none.
func BrokerSession(name string, b *broker.Broker) func(string) string {
	return func(vin string) string {
		cl, ok := b.Server().Clients.Get(vin)
		if !ok || cl.Closed() {
			return ""
		}
		for f := range cl.State.Subscriptions.GetAll() {
			if strings.HasPrefix(f, "vehicles/"+vin+"/cmd/") {
				return fmt.Sprintf("%s/%s/%p", name, cl.Net.Remote, cl)
			}
		}
		return ""
	}
}

// Vehicle is a real MQTT 3.1.1 client subscribed to its command topic at
// QoS 1, counting the commands it receives by id.
type Vehicle struct {
	C    paho.Client
	mu   sync.Mutex
	recv map[string]int // cmd id → deliveries; guarded by mu
}

// ConnectVehicle connects vehicle id (secret) to b and subscribes it to
// vehicles/{id}/cmd/#; disconnected by Cleanup.
func ConnectVehicle(t testing.TB, b *broker.Broker, id, secret string) *Vehicle {
	t.Helper()
	v := &Vehicle{recv: map[string]int{}}
	o := paho.NewClientOptions().AddBroker("tcp://" + b.Addr(broker.ListenerTCP)).SetClientID(id).
		SetUsername(id).SetPassword(secret).SetCleanSession(true).SetAutoReconnect(false)
	v.C = paho.NewClient(o)
	if tok := v.C.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	tok := v.C.Subscribe("vehicles/"+id+"/cmd/#", 1, func(_ paho.Client, m paho.Message) {
		var c wire.Command
		if err := wire.DecodeCommand(m.Payload(), &c); err != nil {
			t.Errorf("command: %v", err)
			return
		}
		v.mu.Lock()
		v.recv[c.CmdID]++
		v.mu.Unlock()
	})
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { v.C.Disconnect(0) })
	return v
}

// Count is how many times command id was delivered.
func (v *Vehicle) Count(id string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.recv[id]
}
