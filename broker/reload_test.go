package broker

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/telegate/telegate/broker/registry"
)

func TestReloadRevokesSessions(t *testing.T) {
	devs := testDevices(t)
	reg, path := testRegistryFile(t, devs)
	b := startBroker(t, reg, nil)
	addr := b.Addr(ListenerTCP)

	// vin1: v5 with a persistent session and a subscription.
	c1, _, err := v5Connect(t, addr, vin1, v5Opts{user: vin1, pass: secrets[vin1], keepalive: 30, sessionExp: 3600})
	if err != nil {
		t.Fatal(err)
	}
	if r := c1.subscribe(t, "vehicles/"+vin1+"/cmd/#"); r[0] != 1 {
		t.Fatal(r)
	}
	c2 := mustV3(t, tcpURL(b), vin2)
	cABC := mustV5(t, addr, chABC)

	// Remove vin1, rotate ABC's secret, keep the rest.
	newHash, err := registry.HashSecret([]byte("abc-rotated"), 4)
	if err != nil {
		t.Fatal(err)
	}
	var next []registry.Device
	for _, d := range devs {
		switch d.ID {
		case vin1:
			continue
		case chABC:
			d.SecretHash = newHash
		}
		next = append(next, d)
	}
	if err := registry.Write(path, next); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}

	c1.waitClosed(t)
	select {
	case d := <-c1.disconnect:
		if d.ReasonCode != 0x98 {
			t.Fatalf("DISCONNECT reason 0x%02x, want 0x98", d.ReasonCode)
		}
	case <-time.After(wait):
		t.Fatal("revoked v5 client got no DISCONNECT")
	}
	cABC.waitClosed(t)

	// The removed device's stored session (and its subscription) is gone.
	eventually(t, "session purged", func() bool {
		_, ok := b.Server().Clients.Get(vin1)
		return !ok
	})
	if subs := b.Server().Topics.Subscribers("vehicles/" + vin1 + "/cmd/x"); len(subs.Subscriptions) != 0 {
		t.Fatalf("revoked subscription still present: %v", subs.Subscriptions)
	}
	if n := b.Stats().Revoked.Load(); n != 2 {
		t.Fatalf("Revoked = %d", n)
	}

	// vin2 is untouched.
	tok := c2.Publish("vehicles/"+vin2+"/telemetry", 1, false, []byte("x"))
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("unrevoked client: %v", tok.Error())
	}
	// vin1 cannot come back; ABC only with the new secret.
	if _, ca, err := v5Connect(t, addr, vin1, v5Opts{user: vin1, pass: secrets[vin1], keepalive: 30}); err == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("removed device reconnected: %+v %v", ca, err)
	}
	if _, ca, err := v5Connect(t, addr, chABC, v5Opts{user: chABC, pass: secrets[chABC], keepalive: 30}); err == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("rotated-away secret accepted: %+v %v", ca, err)
	}
	if _, ca, err := v5Connect(t, addr, chABC, v5Opts{user: chABC, pass: "abc-rotated", keepalive: 30}); err != nil {
		t.Fatalf("new secret refused: %+v %v", ca, err)
	}

	// A broken file is reported and changes nothing.
	if err := os.WriteFile(path, []byte("devices: [{id: nope}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("broken reload: %v", err)
	}
	tok = c2.Publish("vehicles/"+vin2+"/telemetry", 1, false, []byte("x"))
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("after broken reload: %v", tok.Error())
	}
}

func TestReloadDisabledDeviceLosesDelivery(t *testing.T) {
	devs := testDevices(t)
	reg, path := testRegistryFile(t, devs)
	b := startBroker(t, reg, nil)
	c := mustV5(t, b.Addr(ListenerTCP), vin2)
	if r := c.subscribe(t, "vehicles/"+vin2+"/cmd/#"); r[0] != 1 {
		t.Fatal(r)
	}
	for i := range devs {
		if devs[i].ID == vin2 {
			devs[i].Disabled = true
		}
	}
	if err := registry.Write(path, devs); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	c.waitClosed(t)
	if _, ca, err := v5Connect(t, b.Addr(ListenerTCP), vin2, v5Opts{user: vin2, pass: secrets[vin2], keepalive: 30}); err == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("disabled device reconnected: %+v %v", ca, err)
	}
	if b.Stats().RefusedDisabled.Load() != 1 {
		t.Fatal("disabled refusal not counted")
	}
}
