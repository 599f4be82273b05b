package broker

import (
	"testing"
	"time"

	"github.com/telegate/telegate/broker/registry"
)

// TestSecretRotationWithoutDowntime walks a fleet through a secret
// rotation over real sockets:
//
//  1. vin1, vin2 and charger ABC are connected with their old secrets;
//  2. the registry gets new secrets with the old ones as previous (ABC's
//     previous valid for two more seconds); Reload ends no session;
//  3. new and old secrets both connect; vin2 moves to its new secret;
//  4. ABC's previous secret expires: its old-secret session is ended at
//     the expiry, the old secret is refused, the new one accepted;
//  5. the previous hashes are removed; Reload ends vin1's session (old
//     secret) and keeps vin2's (new secret).
func TestSecretRotationWithoutDowntime(t *testing.T) {
	devs := testDevices(t)
	reg, path := testRegistryFile(t, devs)
	b := startBroker(t, reg, nil)
	addr := b.Addr(ListenerTCP)
	newSecret := map[string]string{vin1: "vin1-next", vin2: "vin2-next", chABC: "abc-next"}
	newHash := map[string]string{}
	for id, s := range newSecret {
		h, err := registry.HashSecret([]byte(s), 4)
		if err != nil {
			t.Fatal(err)
		}
		newHash[id] = h
	}
	connect := func(id, secret string) (*v5Client, byte) {
		t.Helper()
		c, ca, err := v5Connect(t, addr, id, v5Opts{user: id, pass: secret, keepalive: 30})
		if err != nil {
			if ca == nil {
				t.Fatalf("connect %s: %v", id, err)
			}
			return nil, ca.ReasonCode
		}
		return c, 0
	}
	alive := func(c *v5Client, id string) {
		t.Helper()
		topic := "vehicles/" + id + "/telemetry"
		if id == chABC {
			topic = "chargers/" + id + "/status"
		}
		if pr, err := c.publish(t, topic, 1, "x"); err != nil || pr.ReasonCode != 0 {
			t.Fatalf("%s session not usable: %+v %v", id, pr, err)
		}
	}
	write := func(mut func(d *registry.Device)) {
		t.Helper()
		for i := range devs {
			mut(&devs[i])
		}
		if err := registry.Write(path, devs); err != nil {
			t.Fatal(err)
		}
		if err := b.Reload(); err != nil {
			t.Fatal(err)
		}
	}

	// 1. Old secrets.
	c1, _ := connect(vin1, secrets[vin1])
	c2, _ := connect(vin2, secrets[vin2])
	cABC, _ := connect(chABC, secrets[chABC])

	// 2. Rotate: new current, old previous.
	expiry := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second)
	write(func(d *registry.Device) {
		if h, ok := newHash[d.ID]; ok {
			d.PreviousSecretHash, d.SecretHash = d.SecretHash, h
			if d.ID == chABC {
				d.PreviousValidUntil = registry.Timestamp{Time: expiry}
			}
		}
	})
	alive(c1, vin1)
	alive(c2, vin2)
	alive(cABC, chABC)
	if n := b.Stats().Revoked.Load(); n != 0 {
		t.Fatalf("rotation ended %d sessions", n)
	}

	// 3. Both secrets connect (each connect takes over the previous session).
	if _, rc := connect(vin2, secrets[vin2]); rc != 0 {
		t.Fatalf("old secret refused during rotation: 0x%02x", rc)
	}
	c2, rc := connect(vin2, newSecret[vin2])
	if rc != 0 {
		t.Fatalf("new secret refused: 0x%02x", rc)
	}
	alive(c2, vin2)

	// 4. ABC's previous secret expires while its old-secret session is live.
	cABC.waitClosed(t)
	if time.Now().Before(expiry) {
		t.Fatal("session ended before the expiry")
	}
	if _, rc := connect(chABC, secrets[chABC]); rc != 0x86 {
		t.Fatalf("expired previous secret: CONNACK 0x%02x, want 0x86", rc)
	}
	cABC, rc = connect(chABC, newSecret[chABC])
	if rc != 0 {
		t.Fatalf("new secret after expiry: 0x%02x", rc)
	}

	// 5. End the rotation: previous hashes removed.
	write(func(d *registry.Device) {
		d.PreviousSecretHash, d.PreviousValidUntil = "", registry.Timestamp{}
	})
	c1.waitClosed(t)
	select {
	case d := <-c1.disconnect:
		if d.ReasonCode != 0x98 {
			t.Fatalf("DISCONNECT 0x%02x, want 0x98", d.ReasonCode)
		}
	case <-time.After(wait):
		t.Fatal("no DISCONNECT for the old-secret session")
	}
	alive(c2, vin2)
	alive(cABC, chABC)
	if _, rc := connect(vin1, secrets[vin1]); rc != 0x86 {
		t.Fatalf("old secret after the rotation: 0x%02x", rc)
	}
	c1, rc = connect(vin1, newSecret[vin1])
	if rc != 0 {
		t.Fatalf("vin1 new secret: 0x%02x", rc)
	}
	alive(c1, vin1)
	// ABC's expiry and vin1's removal: two sessions ended by the registry.
	if n := b.Stats().Revoked.Load(); n != 2 {
		t.Fatalf("Revoked = %d, want 2", n)
	}
}
