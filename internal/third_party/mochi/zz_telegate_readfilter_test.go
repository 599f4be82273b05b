// SPDX-License-Identifier: MIT

package mqtt

import (
	"slices"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Patched by telegate (see README.md in this directory): a hook may
// implement PacketReadFilter to have its OnPacketRead called only for the
// packet types it wants; the others are not copied into and out of it.

// filterHook is an eventHook whose OnPacketRead wants only some packet
// types; it counts the WantsPacketRead calls.
type filterHook struct {
	*eventHook
	types []byte
	asked int
}

func (h *filterHook) WantsPacketRead(t byte) bool {
	h.asked++
	return slices.Contains(h.types, t)
}

func TestTelegatePacketReadFilter(t *testing.T) {
	var log []string
	h := newTelegateHooks()
	policy := &filterHook{eventHook: &eventHook{id: "policy", events: []byte{OnPacketRead}, log: &log}, types: []byte{packets.Publish}}
	plain := &eventHook{id: "plain", events: []byte{OnPacketRead}, log: &log} // no filter: sees everything (upstream)
	ingest := &filterHook{eventHook: &eventHook{id: "ingest", events: []byte{OnPacketRead}, log: &log}, types: []byte{packets.Disconnect}}
	other := &filterHook{eventHook: &eventHook{id: "other", events: []byte{OnPublish}, log: &log}} // no OnPacketRead
	for _, hk := range []Hook{policy, plain, ingest, other} {
		if err := h.Add(hk, nil); err != nil {
			t.Fatal(err)
		}
	}
	if other.asked != 0 {
		t.Fatalf("filter of a hook without OnPacketRead asked %d times", other.asked)
	}
	for _, tc := range []struct {
		typ  byte
		want []string
	}{
		{packets.Publish, []string{"policy:read", "plain:read"}},
		{packets.Disconnect, []string{"plain:read", "ingest:read"}},
		{packets.Pingreq, []string{"plain:read"}},
	} {
		log = nil
		if _, err := h.OnPacketRead(&Client{}, packets.Packet{FixedHeader: packets.FixedHeader{Type: tc.typ}}); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(log, tc.want) {
			t.Fatalf("type %d: calls %v, want %v", tc.typ, log, tc.want)
		}
	}
	if !h.WantsPacketRead(packets.Pingreq) {
		t.Fatal("WantsPacketRead(PINGREQ) = false with an unfiltered hook")
	}
	// Asked once per packet type per table build (one per Add after it).
	if policy.asked != 16*4 || ingest.asked != 16*2 {
		t.Fatalf("filters asked %d and %d times, want %d and %d", policy.asked, ingest.asked, 16*4, 16*2)
	}
}

// With only filtered hooks, a packet type no hook wants is not passed to
// Hooks.OnPacketRead at all by Client.ReadPacket.
func TestTelegatePacketReadFilterSkipsReadPacketHooks(t *testing.T) {
	var log []string
	cl, r, _ := newTestClient()
	defer cl.Stop(errClientStop)
	ingest := &filterHook{eventHook: &eventHook{id: "ingest", events: []byte{OnPacketRead}, log: &log}, types: []byte{packets.Disconnect}}
	if err := cl.ops.hooks.Add(ingest, nil); err != nil {
		t.Fatal(err)
	}
	if cl.ops.hooks.WantsPacketRead(packets.Pingreq) || !cl.ops.hooks.WantsPacketRead(packets.Disconnect) {
		t.Fatal("WantsPacketRead does not follow the filter")
	}
	for _, tc := range []struct {
		raw  []byte
		want []string
	}{
		{[]byte{packets.Pingreq << 4, 0}, nil},
		{[]byte{packets.Disconnect << 4, 0}, []string{"ingest:read"}},
	} {
		log = nil
		go func() { _, _ = r.Write(tc.raw) }()
		fh := new(packets.FixedHeader)
		if err := cl.ReadFixedHeader(fh); err != nil {
			t.Fatal(err)
		}
		pk, err := cl.ReadPacket(fh)
		if err != nil || pk.FixedHeader.Type != tc.raw[0]>>4 {
			t.Fatalf("ReadPacket: %v, type %d", err, pk.FixedHeader.Type)
		}
		if !slices.Equal(log, tc.want) {
			t.Fatalf("type %d: hook calls %v, want %v", tc.raw[0]>>4, log, tc.want)
		}
	}
}
