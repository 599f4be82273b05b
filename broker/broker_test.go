package broker

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

func tcpURL(b *Broker) string { return "tcp://" + b.Addr(ListenerTCP) }

func TestConnectV3(t *testing.T) {
	b := startBroker(t, nil, nil)
	tests := []struct {
		name           string
		id, user, pass string
		code           byte
	}{
		{"ok", vin1, vin1, secrets[vin1], 0},
		{"charger ok", chABC, chABC, secrets[chABC], 0},
		{"bad password", vin1, vin1, "nope", 5},
		{"other device's password", vin1, vin1, secrets[vin2], 5},
		{"no password", vin1, vin1, "", 5},
		{"unknown id", "TGSVS000000000003", "TGSVS000000000003", secrets[vin1], 5},
		{"client id differs from username", vin1, vin2, secrets[vin2], 5},
		{"username differs from client id", vin2, vin1, secrets[vin1], 5},
		{"empty username", vin1, "", secrets[vin1], 5},
		{"disabled", vinOff, vinOff, secrets[vinOff], 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, code, err := v3Connect(t, v3Options(tcpURL(b), tt.id, tt.user, tt.pass))
			if code != tt.code {
				t.Fatalf("CONNACK return code %d, want %d (err %v)", code, tt.code, err)
			}
			if (err == nil) != (tt.code == 0) {
				t.Fatalf("err = %v", err)
			}
			if c != nil {
				c.Disconnect(0)
			}
		})
	}
	st := b.Stats()
	// The server counts a session after writing CONNACK: wait for it.
	eventually(t, "sessions counted", func() bool { return st.ConnectsAccepted.Load() == 2 })
	if st.AuthFailures.Load() != 8 {
		t.Fatalf("stats: %v", st.Snapshot())
	}
	if st.RefusedBadSecret.Load() != 3 || st.RefusedUnknownDevice.Load() != 1 ||
		st.RefusedIdentityMismatch.Load() != 3 || st.RefusedDisabled.Load() != 1 {
		t.Fatalf("refusal reasons: %v", st.Snapshot())
	}
}

func TestConnectV5(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	tests := []struct {
		name           string
		id, user, pass string
		code           byte
	}{
		{"ok", vin1, vin1, secrets[vin1], 0},
		{"bad password", vin1, vin1, "nope", 0x86},
		{"unknown id", "TGSVS000000000003", "TGSVS000000000003", secrets[vin1], 0x86},
		{"client id differs from username", vin1, vin2, secrets[vin2], 0x86},
		{"disabled", vinOff, vinOff, secrets[vinOff], 0x86},
		{"empty client id", "", vin1, secrets[vin1], 0x85},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ca, err := v5Connect(t, addr, tt.id, v5Opts{user: tt.user, pass: tt.pass, keepalive: 30})
			if ca == nil {
				t.Fatalf("no CONNACK: %v", err)
			}
			if ca.ReasonCode != tt.code {
				t.Fatalf("CONNACK reason 0x%02x, want 0x%02x", ca.ReasonCode, tt.code)
			}
			if tt.code != 0 {
				if c != nil || err == nil {
					t.Fatal("refused connect returned a client")
				}
				return
			}
			p := ca.Properties
			if p == nil || p.MaximumPacketSize == nil || *p.MaximumPacketSize != 64<<10 ||
				p.TopicAliasMaximum == nil || *p.TopicAliasMaximum != TopicAliasMaximum ||
				p.RetainAvailable || p.SharedSubAvailable ||
				p.MaximumQoS == nil || *p.MaximumQoS != 1 ||
				p.ReceiveMaximum == nil || *p.ReceiveMaximum != 64 {
				t.Fatalf("CONNACK properties do not advertise the limits: %+v", p)
			}
			if p.ServerKeepAlive != nil {
				t.Fatalf("server keepalive sent for an acceptable keepalive: %d", *p.ServerKeepAlive)
			}
		})
	}
}

func TestKeepaliveClampV5(t *testing.T) {
	b := startBroker(t, nil, func(c *Config) { c.MaxKeepalive = 90 * time.Second })
	for _, ka := range []uint16{0, 91, 65535} {
		_, ca, err := v5Connect(t, b.Addr(ListenerTCP), vin1, v5Opts{user: vin1, pass: secrets[vin1], keepalive: ka})
		if err != nil {
			t.Fatal(err)
		}
		if ca.Properties.ServerKeepAlive == nil || *ca.Properties.ServerKeepAlive != 90 {
			t.Fatalf("keepalive %d: server keepalive %v, want 90", ka, ca.Properties.ServerKeepAlive)
		}
	}
}

func TestPublishACLV5(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, nil, nil, rec)
	addr := b.Addr(ListenerTCP)
	c := mustV5(t, addr, vin1)

	for _, leaf := range []string{"telemetry", "diag", "events", "cmd-ack"} {
		topic := "vehicles/" + vin1 + "/" + leaf
		pr, err := c.publish(t, topic, 1, "x")
		if err != nil || pr.ReasonCode != 0 {
			t.Fatalf("publish %s: %+v %v", topic, pr, err)
		}
		if got := rec.next(t); got != topic {
			t.Fatalf("hook saw %q, want %q", got, topic)
		}
	}
	for _, topic := range []string{
		"vehicles/" + vin2 + "/telemetry",
		"vehicles/" + vin1 + "/cmd/x",
		"vehicles/" + vin1 + "/telemetry/x",
		"vehicles/" + vin1,
		"chargers/" + chABC + "/status",
	} {
		pr, err := c.publish(t, topic, 1, "x")
		if pr == nil || pr.ReasonCode != 0x87 {
			t.Fatalf("publish %s: %+v %v, want PUBACK 0x87", topic, pr, err)
		}
	}
	// Still connected and working.
	if pr, err := c.publish(t, "vehicles/"+vin1+"/events", 1, "x"); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("after denials: %+v %v", pr, err)
	}
	if got := rec.next(t); got != "vehicles/"+vin1+"/events" {
		t.Fatalf("hook saw %q", got)
	}
	if all := rec.all(); len(all) != 5 {
		t.Fatalf("hook saw denied publishes: %v", all)
	}
	if n := b.Stats().ACLDeniedPublish.Load(); n != 5 {
		t.Fatalf("ACLDeniedPublish = %d", n)
	}
	// mochi would drop a QoS 1 publish to $SYS without any PUBACK; the
	// broker disconnects the client instead.
	_, _ = c.publish(t, "$SYS/broker/x", 0, "x")
	c.waitClosed(t)
	select {
	case d := <-c.disconnect:
		if d.ReasonCode != 0x90 {
			t.Fatalf("DISCONNECT reason 0x%02x, want 0x90", d.ReasonCode)
		}
	case <-time.After(wait):
		t.Fatal("no DISCONNECT for a $SYS publish")
	}
}

func TestPublishACLPrefixTricks(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	abc := mustV5(t, addr, chABC)
	abcd := mustV5(t, addr, chABCD)
	tests := []struct {
		c     *v5Client
		topic string
		code  byte
	}{
		{abc, "chargers/ABC/status", 0},
		{abc, "chargers/ABC/session", 0},
		{abc, "chargers/ABCD/status", 0x87},
		{abcd, "chargers/ABC/status", 0x87},
		{abcd, "chargers/ABCD/status", 0},
		{abc, "chargers/ABC/statusX", 0x87},
		{abc, "chargers/ABC/status/", 0x87},
		{abc, "chargers/ABC//status", 0x87},
		{abc, "chargers/ABC", 0x87},
	}
	for _, tt := range tests {
		pr, err := tt.c.publish(t, tt.topic, 1, "x")
		if pr == nil || pr.ReasonCode != tt.code {
			t.Errorf("publish %s: %+v %v, want 0x%02x", tt.topic, pr, err, tt.code)
		}
	}
}

func TestPublishWildcardTopicV5(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, nil, nil, rec)
	c := mustV5(t, b.Addr(ListenerTCP), vin1)
	// A wildcard in a topic name is a protocol violation: mochi disconnects
	// with 0x82 before any hook runs.
	_, _ = c.publish(t, "vehicles/+/telemetry", 0, "x")
	c.waitClosed(t)
	if len(rec.all()) != 0 {
		t.Fatal("wildcard publish reached the hook")
	}
}

func TestPublishACLV3(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, nil, nil, rec)
	c := mustV3(t, tcpURL(b), vin1)
	tok := c.Publish("vehicles/"+vin1+"/telemetry", 1, false, []byte("x"))
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("own telemetry: %v", tok.Error())
	}
	if got := rec.next(t); got != "vehicles/"+vin1+"/telemetry" {
		t.Fatalf("hook saw %q", got)
	}
	// Another VIN's telemetry: MQTT 3.1.1 has no negative PUBACK, the
	// client is disconnected.
	c.Publish("vehicles/"+vin2+"/telemetry", 1, false, []byte("x"))
	c.waitLost(t)
	if all := rec.all(); len(all) != 1 {
		t.Fatalf("hook saw %v", all)
	}
	if b.Stats().ACLDeniedPublish.Load() != 1 {
		t.Fatal("denial not counted")
	}
}

func TestSubscribeACLV5(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	c := mustV5(t, addr, vin1)
	filters := []string{
		"#",
		"+/+/+",
		"vehicles/+/cmd/#",
		"vehicles/" + vin2 + "/cmd/#",
		"vehicles/" + vin1 + "/#",
		"vehicles/" + vin1 + "/+",
		"vehicles/" + vin1 + "/telemetry",
		"vehicles/" + vin1 + "/cmd",
		"$SYS/#",
		"vehicles/" + vin1 + "/cmd/#",
		"vehicles/" + vin1 + "/cmd/+",
		"vehicles/" + vin1 + "/cmd/offer",
	}
	want := []byte{0x87, 0x87, 0x87, 0x87, 0x87, 0x87, 0x87, 0x87, 0x87, 1, 1, 1}
	if got := c.subscribe(t, filters...); !slices.Equal(got, want) {
		t.Fatalf("SUBACK reasons\n got % x\nwant % x", got, want)
	}

	abc := mustV5(t, addr, chABC)
	got := abc.subscribe(t, "chargers/ABCD/cmd/#", "chargers/ABC/cmd/#", "chargers/+/cmd/#")
	if !slices.Equal(got, []byte{0x87, 1, 0x87}) {
		t.Fatalf("charger SUBACK % x", got)
	}
}

func TestSubscribeACLV3(t *testing.T) {
	b := startBroker(t, nil, nil)
	c := mustV3(t, tcpURL(b), vin1)
	filters := map[string]byte{
		"#":                                    1,
		"vehicles/+/cmd/#":                     1,
		"vehicles/" + vin2 + "/cmd/#":          1,
		"vehicles/" + vin1 + "/#":              1,
		"$share/g/vehicles/" + vin1 + "/cmd/#": 1,
		"$SYS/#":                               1,
		"vehicles/" + vin1 + "/cmd/#":          1,
	}
	tok := c.SubscribeMultiple(filters, nil)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	res := tok.(interface{ Result() map[string]byte }).Result()
	for f, code := range res {
		want := byte(0x80)
		if f == "vehicles/"+vin1+"/cmd/#" {
			want = 1
		}
		if code != want {
			t.Errorf("SUBACK %s = 0x%02x, want 0x%02x", f, code, want)
		}
	}
	if len(res) != len(filters) {
		t.Fatalf("result %v", res)
	}
}

func TestServerPublishReachesOnlyTarget(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	c1 := mustV5(t, addr, vin1)
	c2 := mustV5(t, addr, vin2)
	if r := c1.subscribe(t, "vehicles/"+vin1+"/cmd/#"); r[0] != 1 {
		t.Fatal(r)
	}
	if r := c2.subscribe(t, "vehicles/"+vin2+"/cmd/#"); r[0] != 1 {
		t.Fatal(r)
	}
	if err := b.Publish("vehicles/"+vin1+"/cmd/feature", []byte("heated-seats:on"), 1); err != nil {
		t.Fatal(err)
	}
	m := c1.next(t)
	if m.Topic != "vehicles/"+vin1+"/cmd/feature" || string(m.Payload) != "heated-seats:on" || m.QoS != 1 {
		t.Fatalf("vin1 got %+v", m)
	}
	// A second command, to vin2: it must be the first thing vin2 receives.
	if err := b.Publish("vehicles/"+vin2+"/cmd/feature", []byte("second"), 2); err != nil {
		t.Fatal(err)
	}
	if m := c2.next(t); string(m.Payload) != "second" {
		t.Fatalf("vin2 received another vehicle's command: %+v", m)
	}
	if err := b.Publish("vehicles/+/cmd/x", nil, 1); err == nil {
		t.Fatal("wildcard server publish accepted")
	}
}

func TestWillRefused(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)

	// v5: CONNACK 0x87.
	_, ca, err := v5Connect(t, addr, vin1, v5Opts{user: vin1, pass: secrets[vin1], keepalive: 30,
		will: &paho.WillMessage{Topic: "vehicles/" + vin2 + "/events", Payload: []byte("gone"), QoS: 1}})
	if err == nil || ca == nil || ca.ReasonCode != 0x87 {
		t.Fatalf("v5 will to other VIN: %+v %v", ca, err)
	}
	// v3.1.1: CONNACK 0x05.
	o := v3Options(tcpURL(b), vin1, vin1, secrets[vin1])
	o.SetWill("vehicles/"+vin2+"/telemetry", "gone", 1, false)
	if _, code, err := v3Connect(t, o); err == nil || code != 5 {
		t.Fatalf("v3 will to other VIN: code %d %v", code, err)
	}
	o = v3Options(tcpURL(b), vin1, vin1, secrets[vin1])
	o.SetWill("vehicles/"+vin1+"/cmd/x", "gone", 1, false)
	if _, code, err := v3Connect(t, o); err == nil || code != 5 {
		t.Fatalf("v3 will to own cmd: code %d %v", code, err)
	}
	if n := b.Stats().RefusedWill.Load(); n != 3 {
		t.Fatalf("RefusedWill = %d", n)
	}
	// A retained Will is refused too (retain is not available): 0x9A for
	// v5, and 0x05 for 3.1.1 where mochi would write the invalid 0x9A.
	_, ca, err = v5Connect(t, addr, vin1, v5Opts{user: vin1, pass: secrets[vin1], keepalive: 30,
		will: &paho.WillMessage{Topic: "vehicles/" + vin1 + "/events", Payload: []byte("gone"), QoS: 1, Retain: true}})
	if err == nil || ca == nil || ca.ReasonCode != 0x9A {
		t.Fatalf("v5 retained will: %+v %v", ca, err)
	}
	o = v3Options(tcpURL(b), vin1, vin1, secrets[vin1])
	o.SetWill("vehicles/"+vin1+"/events", "gone", 1, true)
	if _, code, err := v3Connect(t, o); err == nil || code != 5 {
		t.Fatalf("v3 retained will: code %d %v", code, err)
	}
}

func TestWillAllowedIsDelivered(t *testing.T) {
	b := startBroker(t, nil, nil)
	got := make(chan string, 1)
	if err := b.Server().Subscribe("vehicles/+/events", 1, func(_ *mqttClient, _ subscription, pk mqttPacket) {
		got <- string(pk.Payload)
	}); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, b.Addr(ListenerTCP))
	_, _, err := v5Connect(t, "", vin1, v5Opts{user: vin1, pass: secrets[vin1], keepalive: 30, conn: conn,
		will: &paho.WillMessage{Topic: "vehicles/" + vin1 + "/events", Payload: []byte("offline"), QoS: 1}})
	if err != nil {
		t.Fatal(err)
	}
	// The connection drops without DISCONNECT: the Will is published.
	conn.Close()
	select {
	case p := <-got:
		if p != "offline" {
			t.Fatalf("will payload %q", p)
		}
	case <-time.After(wait):
		t.Fatal("will not published")
	}
}

func TestRateLimitV5(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, nil, func(c *Config) { c.RatePerDevice = 1e-6; c.Burst = 3 }, rec)
	c := mustV5(t, b.Addr(ListenerTCP), vin1)
	topic := "vehicles/" + vin1 + "/telemetry"
	for i := range 3 {
		if pr, err := c.publish(t, topic, 1, "x"); err != nil || pr.ReasonCode != 0 {
			t.Fatalf("publish %d: %+v %v", i, pr, err)
		}
	}
	pr, err := c.publish(t, topic, 1, "x")
	if pr == nil || pr.ReasonCode != 0x97 {
		t.Fatalf("over the limit: %+v %v, want PUBACK 0x97", pr, err)
	}
	// QoS 0 over the limit is dropped silently; a QoS 1 after it proves
	// the QoS 0 message was processed (and not passed on) first.
	if _, err := c.publish(t, topic, 0, "dropped"); err != nil {
		t.Fatal(err)
	}
	if pr, _ := c.publish(t, topic, 1, "x"); pr == nil || pr.ReasonCode != 0x97 {
		t.Fatalf("still over the limit: %+v", pr)
	}
	if n := len(rec.all()); n != 3 {
		t.Fatalf("hook saw %d publishes, want 3", n)
	}
	if n := b.Stats().RateLimited.Load(); n != 3 {
		t.Fatalf("RateLimited = %d", n)
	}
	_ = c.Disconnect(&paho.Disconnect{})
	c.waitClosed(t)
	eventually(t, "rate limiter freed", func() bool { return b.rates.len() == 0 })
}

func TestRateLimitV3Disconnects(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, nil, func(c *Config) { c.RatePerDevice = 1e-6; c.Burst = 2 }, rec)
	c := mustV3(t, tcpURL(b), vin1)
	topic := "vehicles/" + vin1 + "/telemetry"
	for range 2 {
		tok := c.Publish(topic, 1, false, []byte("x"))
		if !tok.WaitTimeout(wait) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	c.Publish(topic, 1, false, []byte("x"))
	c.waitLost(t)
	if n := len(rec.all()); n != 2 {
		t.Fatalf("hook saw %d", n)
	}
	st := b.Stats()
	if st.RateLimited.Load() != 1 || st.RateLimitDisconnects.Load() != 1 {
		t.Fatalf("stats %v", st.Snapshot())
	}
	eventually(t, "rate limiter freed", func() bool { return b.rates.len() == 0 })
}

func TestTopicAliasResolvedBeforeACL(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, nil, nil, rec)
	c := mustV5(t, b.Addr(ListenerTCP), vin1)
	alias := uint16(1)
	topic := "vehicles/" + vin1 + "/telemetry"
	ctx, cancel := ctxWait()
	defer cancel()
	pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("a"),
		Properties: &paho.PublishProperties{TopicAlias: &alias}})
	if err != nil || pr.ReasonCode != 0 {
		t.Fatalf("first aliased publish: %+v %v", pr, err)
	}
	pr, err = c.Publish(ctx, &paho.Publish{QoS: 1, Payload: []byte("b"),
		Properties: &paho.PublishProperties{TopicAlias: &alias}})
	if err != nil || pr.ReasonCode != 0 {
		t.Fatalf("alias-only publish: %+v %v", pr, err)
	}
	if got := rec.all(); !slices.Equal(got, []string{topic, topic}) {
		t.Fatalf("hook saw %v", got)
	}
	// An alias bound to nothing, with an empty topic, is a protocol error:
	// DISCONNECT 0x94 Topic Alias invalid, nothing reaches the hook.
	unknown := uint16(2)
	pr, _ = c.Publish(ctx, &paho.Publish{QoS: 1, Payload: []byte("c"),
		Properties: &paho.PublishProperties{TopicAlias: &unknown}})
	if pr != nil && pr.ReasonCode == 0 {
		t.Fatalf("unbound alias acknowledged: %+v", pr)
	}
	c.waitClosed(t)
	select {
	case d := <-c.disconnect:
		if d.ReasonCode != 0x94 {
			t.Fatalf("DISCONNECT 0x%02x, want 0x94", d.ReasonCode)
		}
	case <-time.After(wait):
		t.Fatal("no DISCONNECT for an unbound alias")
	}
	if got := rec.all(); len(got) != 2 {
		t.Fatalf("hook saw %v", got)
	}
}

func TestExtraHookCannotGrantAccess(t *testing.T) {
	rec := newRecorder()
	rec.grant = true
	b := startBroker(t, nil, nil, rec)
	addr := b.Addr(ListenerTCP)
	if _, ca, err := v5Connect(t, addr, vin1, v5Opts{user: vin1, pass: "wrong", keepalive: 30}); err == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("extra hook granted a connect: %+v %v", ca, err)
	}
	c := mustV5(t, addr, vin1)
	if pr, _ := c.publish(t, "vehicles/"+vin2+"/telemetry", 1, "x"); pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("extra hook granted a publish: %+v", pr)
	}
	if r := c.subscribe(t, "#"); r[0] != 0x87 {
		t.Fatalf("extra hook granted a subscription: % x", r)
	}
}

func TestSessionTakeover(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	c1 := mustV5(t, addr, vin1)
	if pr, err := c1.publish(t, "vehicles/"+vin1+"/events", 1, "x"); err != nil || pr.ReasonCode != 0 {
		t.Fatal(err)
	}
	c2 := mustV5(t, addr, vin1) // takes the session over
	c1.waitClosed(t)
	if pr, err := c2.publish(t, "vehicles/"+vin1+"/events", 1, "x"); err != nil || pr.ReasonCode != 0 {
		t.Fatal(err)
	}
	eventually(t, "one client connected", func() bool { return b.Connected() == 1 })
	if b.rates.len() != 1 {
		t.Fatalf("limiters = %d", b.rates.len())
	}
}

func TestLifecycle(t *testing.T) {
	reg := mustRegistry(t)
	b, err := New(testConfig(), reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.Addr(ListenerTCP) != "" {
		t.Fatal("address before Start")
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start: %v", err)
	}
	if err := b.AddHook(newRecorder(), nil); !errors.Is(err, ErrStarted) {
		t.Fatalf("AddHook after Start: %v", err)
	}
	if b.Addr(ListenerWS) == "" || b.Addr(ListenerTLS) != "" || b.Addr("nope") != "" {
		t.Fatal("addresses wrong")
	}
	mustV5(t, b.Addr(ListenerTCP), vin1) // cleaned up by Close below
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Publish("vehicles/"+vin1+"/cmd/x", nil, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}
	if err := b.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}

	// Close without Start.
	b2, err := New(testConfig(), reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestStartFailsOnBusyPort(t *testing.T) {
	first := startBroker(t, nil, nil)
	cfg := testConfig()
	cfg.WSAddr = first.Addr(ListenerTCP) // taken
	b, err := New(cfg, mustRegistry(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err == nil {
		t.Fatal("Start on a busy port succeeded")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidation(t *testing.T) {
	reg := mustRegistry(t)
	bad := []func(*Config){
		func(c *Config) { c.MaxPacketSize = 100 },
		func(c *Config) { c.TLSAddr = "127.0.0.1:0" },
		func(c *Config) { c.ClientCAFile = "ca.pem" },
		func(c *Config) { c.TCPAddr, c.WSAddr = "", "" },
		func(c *Config) { c.RatePerDevice = -1 },
		func(c *Config) { c.MaxKeepalive = time.Millisecond },
		func(c *Config) { c.Burst = -1 },
		func(c *Config) {
			c.TLSAddr, c.TLSCertFile, c.TLSKeyFile = "127.0.0.1:0", "/nonexistent", "/nonexistent"
		},
	}
	for i, m := range bad {
		cfg := testConfig()
		m(&cfg)
		if _, err := New(cfg, reg, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("case %d: err = %v, want ErrConfig", i, err)
		}
	}
	if _, err := New(testConfig(), nil, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("nil registry: %v", err)
	}
	// Zero numeric fields take the defaults.
	b, err := New(Config{TCPAddr: "127.0.0.1:0"}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	d := DefaultConfig()
	if b.cfg.MaxPacketSize != d.MaxPacketSize || b.cfg.MaxClients != d.MaxClients ||
		b.cfg.MaxConnections != d.MaxClients+d.MaxClients/8+64 || b.cfg.Burst != d.Burst {
		t.Fatalf("defaults not applied: %+v", b.cfg)
	}
	caps := b.Server().Options.Capabilities
	if caps.MaximumPacketSize != 64<<10 || caps.MaximumClientWritesPending != 16 || caps.MaximumInflight != 64 ||
		caps.ReceiveMaximum != 64 || caps.MaximumQos != 1 || caps.RetainAvailable != 0 ||
		caps.SharedSubAvailable != 0 || caps.MaximumSessionExpiryInterval != 86400 ||
		caps.TopicAliasMaximum != TopicAliasMaximum || caps.MinimumProtocolVersion != 4 {
		t.Fatalf("capabilities: %+v", caps)
	}
}
