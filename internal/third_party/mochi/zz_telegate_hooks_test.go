// SPDX-License-Identifier: MIT

package mqtt

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Patched by telegate (see README.md in this directory): Hooks dispatches
// each event to a per-event list built when a hook is added, instead of
// asking every hook's Provides on every call.

// eventHook provides the events in its set and records its calls.
type eventHook struct {
	HookBase
	id       string
	events   []byte
	mu       sync.Mutex
	provides int // Provides calls
	log      *[]string
}

func (h *eventHook) ID() string { return h.id }

func (h *eventHook) Provides(b byte) bool {
	h.mu.Lock()
	h.provides++
	h.mu.Unlock()
	return slices.Contains(h.events, b)
}

func (h *eventHook) rec(ev string) { *h.log = append(*h.log, h.id+":"+ev) }

func (h *eventHook) OnPacketRead(cl *Client, pk packets.Packet) (packets.Packet, error) {
	h.rec("read")
	return pk, nil
}

func (h *eventHook) OnPublish(cl *Client, pk packets.Packet) (packets.Packet, error) {
	h.rec("publish")
	return pk, nil
}

func (h *eventHook) OnACLCheck(cl *Client, topic string, write bool) bool {
	h.rec("acl")
	return false
}

func (h *eventHook) OnPacketProcessed(cl *Client, pk packets.Packet, err error) { h.rec("processed") }

func newTelegateHooks() *Hooks { return &Hooks{Log: slog.New(slog.NewTextHandler(io.Discard, nil))} }

func TestTelegateHookDispatchOnlyProvidedInOrder(t *testing.T) {
	var log []string
	h := newTelegateHooks()
	a := &eventHook{id: "a", events: []byte{OnPublish}, log: &log}
	b := &eventHook{id: "b", events: []byte{OnPacketRead, OnPublish, OnACLCheck}, log: &log}
	for _, hk := range []Hook{a, b} {
		if err := h.Add(hk, nil); err != nil {
			t.Fatal(err)
		}
	}
	cl := &Client{}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}}
	_, _ = h.OnPacketRead(cl, pk)
	_ = h.OnACLCheck(cl, "t", true)
	_, _ = h.OnPublish(cl, pk)
	h.OnPacketProcessed(cl, pk, nil)
	want := []string{"b:read", "b:acl", "a:publish", "b:publish"}
	if !slices.Equal(log, want) {
		t.Fatalf("calls = %v, want %v", log, want)
	}

	// A hook added later takes part, after the earlier ones.
	log = log[:0]
	c := &eventHook{id: "c", events: []byte{OnPublish, OnPacketProcessed}, log: &log}
	if err := h.Add(c, nil); err != nil {
		t.Fatal(err)
	}
	_, _ = h.OnPublish(cl, pk)
	h.OnPacketProcessed(cl, pk, nil)
	want = []string{"a:publish", "b:publish", "c:publish", "c:processed"}
	if !slices.Equal(log, want) {
		t.Fatalf("calls after adding c = %v, want %v", log, want)
	}
}

func TestTelegateHookProvidesAskedOnlyWhenAdded(t *testing.T) {
	var log []string
	h := newTelegateHooks()
	a := &eventHook{id: "a", events: []byte{OnPublish}, log: &log}
	if err := h.Add(a, nil); err != nil {
		t.Fatal(err)
	}
	asked := a.provides
	if asked != numHookEvents {
		t.Fatalf("Provides asked %d times at Add, want once per event (%d)", asked, numHookEvents)
	}
	cl := &Client{}
	for i := 0; i < 10; i++ {
		_, _ = h.OnPublish(cl, packets.Packet{})
		_, _ = h.OnPacketRead(cl, packets.Packet{})
		_ = h.Provides(OnPublish, OnConnect)
	}
	if a.provides != asked || len(log) != 10 {
		t.Fatalf("Provides asked %d more times, %d publishes seen", a.provides-asked, len(log))
	}
}

func TestTelegateHooksProvidesAggregate(t *testing.T) {
	h := newTelegateHooks()
	if h.Provides(OnPublish) {
		t.Fatal("no hooks: Provides(OnPublish) = true")
	}
	var log []string
	if err := h.Add(&eventHook{id: "a", events: []byte{OnPublish, 200}, log: &log}, nil); err != nil {
		t.Fatal(err)
	}
	switch {
	case !h.Provides(OnConnect, OnPublish):
		t.Fatal("Provides(OnConnect, OnPublish) = false")
	case h.Provides(OnConnect, StoredClients):
		t.Fatal("Provides(OnConnect, StoredClients) = true")
	case !h.Provides(200): // outside the table: the hooks are asked
		t.Fatal("Provides(200) = false")
	}
}

// BenchmarkTelegateHooksPublish runs the hook dispatch of one inbound QoS 1
// PUBLISH with the gateway's hook set: a policy-like hook providing ten
// events, then two extra hooks (ingest: 5 events, presence: 2).
// With filtered=true the policy and ingest hooks implement
// PacketReadFilter as the gateway's do (PUBLISH and DISCONNECT only).
func BenchmarkTelegateHooksPublish(b *testing.B) {
	for _, filtered := range []bool{false, true} {
		b.Run(fmt.Sprintf("filtered=%v", filtered), func(b *testing.B) { benchHooksPublish(b, filtered) })
	}
}

func benchHooksPublish(b *testing.B, filtered bool) {
	var log []string
	h := newTelegateHooks()
	for i, hk := range []*eventHook{
		{id: "policy", events: []byte{OnConnect, OnConnectAuthenticate, OnSessionEstablished, OnACLCheck,
			OnPacketRead, OnPacketEncode, OnPublish, OnPacketProcessed, OnDisconnect, OnSubscribe}},
		{id: "ingest", events: []byte{OnPublish, OnSessionEstablished, OnDisconnect, OnWillSent, OnPacketRead}},
		{id: "presence", events: []byte{OnSessionEstablished, OnDisconnect}},
	} {
		hk.log = &log
		var add Hook = &benchHook{hk}
		if filtered && i < 2 {
			add = &filteredBenchHook{benchHook{hk}, []byte{packets.Publish, packets.Disconnect}[i]}
		}
		if err := h.Add(add, nil); err != nil {
			b.Fatal(err)
		}
	}
	cl := &Client{}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "t"}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, _ := h.OnPacketRead(cl, pk)
		_ = h.OnACLCheck(cl, p.TopicName, true)
		p, _ = h.OnPublish(cl, p)
		h.OnPublished(cl, p)
		a := h.OnPacketEncode(cl, ack)
		h.OnPacketSent(cl, a, nil)
		h.OnPacketProcessed(cl, p, nil)
	}
}

// filteredBenchHook is a benchHook whose OnPacketRead wants one packet type.
type filteredBenchHook struct {
	benchHook
	want byte
}

func (h *filteredBenchHook) WantsPacketRead(t byte) bool { return t == h.want }

// benchHook is an eventHook whose handlers record nothing.
type benchHook struct{ *eventHook }

func (h *benchHook) Provides(b byte) bool { return slices.Contains(h.events, b) }

func (h *benchHook) OnPacketRead(cl *Client, pk packets.Packet) (packets.Packet, error) {
	return pk, nil
}

func (h *benchHook) OnPublish(cl *Client, pk packets.Packet) (packets.Packet, error) {
	return pk, nil
}

func (h *benchHook) OnACLCheck(cl *Client, topic string, write bool) bool { return true }

func (h *benchHook) OnPacketProcessed(cl *Client, pk packets.Packet, err error) {}
