package broker

import (
	"errors"
	"testing"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telegate/telegate/broker/registry"
)

// trackedClient returns the mochi client of a connected device once its
// connection state exists (OnSessionEstablished).
func trackedClient(t *testing.T, b *Broker, id string) (*mqtt.Client, *connState) {
	t.Helper()
	var cl *mqtt.Client
	eventually(t, id+" tracked", func() bool {
		c, ok := b.server.Clients.Get(id)
		if ok && b.connOf(c) != nil {
			cl = c
			return true
		}
		return false
	})
	return cl, b.connOf(cl)
}

// The remembered publish verdict is dropped when the registry is reloaded:
// a device disabled by a reload is refused on its next publish even if its
// session has not been ended yet (here the registry is reloaded behind the
// broker's back, so nothing kicks the session).
func TestPublishACLCacheFollowsRegistryReload(t *testing.T) {
	devs := testDevices(t)
	reg, path := testRegistryFile(t, devs)
	rec := newRecorder()
	b := startBroker(t, reg, nil, rec)
	c, r := rawConnect(t, b.Addr(ListenerTCP), vin1)
	_, st := trackedClient(t, b, vin1)
	topic := "vehicles/" + vin1 + "/telemetry"
	for i := range 2 {
		if _, err := c.Write(publishPacket(topic, 1, uint16(i+1), "x")); err != nil {
			t.Fatal(err)
		}
		if got := readN(t, r, 4); got[0] != 0x40 {
			t.Fatalf("publish %d: got %x, want PUBACK", i, got)
		}
	}
	for range 2 {
		if rec.next(t) != topic {
			t.Fatal("publishes not passed on")
		}
	}
	if st.pubTopic != topic || st.pubGen != reg.Generation() {
		t.Fatalf("verdict not remembered: %q gen %d (registry %d)", st.pubTopic, st.pubGen, reg.Generation())
	}

	for i := range devs {
		if devs[i].ID == vin1 {
			devs[i].Disabled = true
		}
	}
	if err := registry.Write(path, devs); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Reload(); err != nil {
		t.Fatal(err)
	}
	// ACL-denied QoS 1 from a 3.1.1 client: mochi disconnects it (no
	// PUBACK), and the hook never sees the publish.
	if _, err := c.Write(publishPacket(topic, 1, 3, "x")); err != nil {
		t.Fatal(err)
	}
	if got := waitEOF(t, c); len(got) != 0 {
		t.Fatalf("disabled device's publish answered %x", got)
	}
	if n := b.Stats().ACLDeniedPublish.Load(); n != 1 {
		t.Fatalf("ACLDeniedPublish = %d, want 1", n)
	}
	if got := rec.all(); len(got) != 2 {
		t.Fatalf("hook saw %v, want the 2 publishes before the reload", got)
	}
}

// The verdict is remembered for one topic only: another topic is checked.
func TestPublishACLCacheIsPerTopic(t *testing.T) {
	b := startBroker(t, nil, nil)
	_, _ = rawConnect(t, b.Addr(ListenerTCP), vin1)
	cl, st := trackedClient(t, b, vin1)
	h := &policy{b: b}
	own := "vehicles/" + vin1 + "/telemetry"
	for _, tc := range []struct {
		topic string
		want  bool
	}{
		{own, true},
		{own, true},
		{"vehicles/" + vin2 + "/telemetry", false},
		{"vehicles/" + vin1 + "/cmd/x", false},
		{"vehicles/" + vin1 + "/events", true},
		{own, true},
	} {
		if got := h.OnACLCheck(cl, tc.topic, true); got != tc.want {
			t.Fatalf("OnACLCheck(%q) = %v, want %v", tc.topic, got, tc.want)
		}
	}
	if st.pubTopic != own {
		t.Fatalf("remembered %q, want %q", st.pubTopic, own)
	}
	// Subscriptions and deliveries (read checks) are never answered from
	// the publish verdict.
	if h.OnACLCheck(cl, own, false) {
		t.Fatal("read check of a publish topic allowed")
	}
}

// The limiter a connection remembers is the one the broker's map holds:
// once that limiter is dropped (as on a panic's clean-up or a discarded
// session), the next publish uses the map's new one, as before the cache.
func TestLimiterCacheFollowsDroppedLimiter(t *testing.T) {
	b := startBroker(t, nil, func(c *Config) { c.RatePerDevice = 1e-6; c.Burst = 2 })
	_, _ = rawConnect(t, b.Addr(ListenerTCP), vin1)
	cl, st := trackedClient(t, b, vin1)
	h := &policy{b: b}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "vehicles/" + vin1 + "/telemetry"}
	publish := func() error { _, err := h.OnPublish(cl, pk); return err }
	for i := range 2 {
		if err := publish(); err != nil {
			t.Fatalf("publish %d within burst: %v", i, err)
		}
	}
	if err := publish(); !errors.Is(err, packets.ErrRejectPacket) {
		t.Fatalf("publish over the limit: %v, want ErrRejectPacket", err)
	}
	b.rates.release(vin1, false)
	if err := publish(); err != nil {
		t.Fatalf("publish after the limiter was dropped: %v (stale limiter)", err)
	}
	if b.rates.len() != 1 || b.rates.get(vin1) != st.lim {
		t.Fatalf("connection uses a limiter the map does not hold (%d in map)", b.rates.len())
	}
	if n := b.Stats().RateLimited.Load(); n != 1 {
		t.Fatalf("RateLimited = %d, want 1", n)
	}
}

// The remembered valid topic does not let an invalid one through.
func TestValidTopicCache(t *testing.T) {
	b := startBroker(t, nil, nil)
	_, _ = rawConnect(t, b.Addr(ListenerTCP), vin1)
	cl, st := trackedClient(t, b, vin1)
	h := &policy{b: b}
	pub := func(topic string) error {
		_, err := h.OnPacketRead(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic})
		if err == nil {
			h.OnPacketProcessed(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}}, nil)
		}
		return err
	}
	own := "vehicles/" + vin1 + "/telemetry"
	for _, tc := range []struct {
		topic string
		ok    bool
	}{{own, true}, {own, true}, {"$SYS/x", false}, {"vehicles/+/telemetry", false}, {own, true}} {
		if err := pub(tc.topic); (err == nil) != tc.ok {
			t.Fatalf("OnPacketRead(%q) = %v, want ok=%v", tc.topic, err, tc.ok)
		}
	}
	if st.validTopic != own || st.handoff.busy {
		t.Fatalf("validTopic %q busy %v", st.validTopic, st.handoff.busy)
	}
}

// The caches keep their own copy of a topic: with
// ReuseIgnoredPublishBody, pk.TopicName points into a packet body that the
// next packet overwrites. A cached string sharing those bytes would then
// equal any topic of the same length at the same place, and a device could
// publish to another vehicle's topic, or to a wildcard, unchecked.
func TestTopicCachesCopyTheTopic(t *testing.T) {
	b := startBroker(t, nil, nil)
	_, _ = rawConnect(t, b.Addr(ListenerTCP), vin1)
	cl, st := trackedClient(t, b, vin1)
	h := &policy{b: b}
	body := []byte("vehicles/" + vin1 + "/telemetry") // the reused packet body
	topic := func() string { return unsafe.String(&body[0], len(body)) }
	if !h.OnACLCheck(cl, topic(), true) || !st.validPublishTopic(topic()) {
		t.Fatal("own telemetry topic refused")
	}
	other := "vehicles/" + vin2 + "/telemetry"
	if len(other) != len(body) {
		t.Fatalf("test needs VINs of one length")
	}
	copy(body, other) // the next packet lands in the same bytes
	if h.OnACLCheck(cl, topic(), true) {
		t.Fatal("publish to another vehicle's topic allowed from the cache")
	}
	wild := []byte("vehicles/" + vin1 + "/telemetry")
	wild[len("vehicles/")] = '+'
	copy(body, wild)
	if st.validPublishTopic(topic()) {
		t.Fatal("wildcard topic name accepted from the cache")
	}
}

// The connection state lives in the mochi client's own slot (Client.Ext),
// not in a broker-wide map: a session takeover's new *mqtt.Client gets a
// fresh state, the replaced client's state is dropped when it disconnects,
// and so is the new one's.
func TestConnStateInClientSlot(t *testing.T) {
	b := startBroker(t, nil, nil)
	c1, _ := rawConnect(t, b.Addr(ListenerTCP), vin1)
	old, st1 := trackedClient(t, b, vin1)
	if v, _ := old.Ext.Load().(*connState); v != st1 || st1 == nil {
		t.Fatalf("Ext holds %v, want the connection's state %p", old.Ext.Load(), st1)
	}
	c2, _ := rawConnect(t, b.Addr(ListenerTCP), vin1) // takeover
	waitEOF(t, c1)
	var cl *mqtt.Client
	eventually(t, "new connection tracked", func() bool {
		c, ok := b.server.Clients.Get(vin1)
		if ok && c != old && b.connOf(c) != nil {
			cl = c
			return true
		}
		return false
	})
	if st2 := b.connOf(cl); st2 == st1 {
		t.Fatal("takeover's new client shares the old client's state")
	}
	eventually(t, "old client's state dropped", func() bool { return b.connOf(old) == nil })
	_ = c2.Close()
	eventually(t, "new client's state dropped", func() bool { return b.connOf(cl) == nil })
}

// connFor called at once from several goroutines (the read goroutine
// establishing the session, Drain) creates one state, which all get.
func TestConnForCreatesOneState(t *testing.T) {
	b := &Broker{}
	for range 50 {
		cl := &mqtt.Client{}
		if b.connOf(cl) != nil {
			t.Fatal("fresh client has a state")
		}
		got := make(chan *connState, 4)
		for range 4 {
			go func() { got <- b.connFor(cl) }()
		}
		first := <-got
		for range 3 {
			if st := <-got; st != first {
				t.Fatal("connFor created two states for one client")
			}
		}
		b.dropConn(cl)
		if b.connOf(cl) != nil {
			t.Fatal("dropped state still found")
		}
		if st := b.connFor(cl); st == nil || st == first {
			t.Fatal("connFor after dropConn did not create a new state")
		}
	}
}
