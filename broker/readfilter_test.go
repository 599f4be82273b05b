package broker

import (
	"slices"
	"sync"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// readHook records the packet types its OnPacketRead sees; with filter
// set it implements mqtt.PacketReadFilter (wants only those types).
type readHook struct {
	mqtt.HookBase
	id     string
	mu     sync.Mutex
	seen   []byte
	filter []byte
}

func (h *readHook) ID() string           { return h.id }
func (h *readHook) Provides(b byte) bool { return b == mqtt.OnPacketRead }

func (h *readHook) OnPacketRead(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	h.mu.Lock()
	h.seen = append(h.seen, pk.FixedHeader.Type)
	h.mu.Unlock()
	return pk, nil
}

func (h *readHook) types() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.seen)
}

type filteredReadHook struct{ *readHook }

func (h filteredReadHook) WantsPacketRead(t byte) bool { return slices.Contains(h.filter, t) }

// A hook added with AddHook keeps its mqtt.PacketReadFilter through the
// broker's extraHook wrapper: it sees only the packet types it asked for
// (the ingest hook: DISCONNECT, not every PUBLISH), while a hook without
// the filter sees every packet, and the policy still checks each PUBLISH.
func TestAddHookKeepsPacketReadFilter(t *testing.T) {
	plain := &readHook{id: "plain"}
	filtered := filteredReadHook{&readHook{id: "filtered", filter: []byte{packets.Disconnect}}}
	b := startBroker(t, nil, nil, plain, filtered)
	c, r := rawConnect(t, b.Addr(ListenerTCP), vin1)
	trackedClient(t, b, vin1)
	if _, err := c.Write(publishPacket("vehicles/"+vin1+"/telemetry", 1, 1, "x")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, r, 4); got[0] != 0x40 {
		t.Fatalf("got %x, want PUBACK", got)
	}
	// A publish the policy refuses (invalid topic): the policy, which
	// wants PUBLISH only, still sees it.
	if _, err := c.Write(publishPacket("$SYS/x", 1, 2, "x")); err != nil {
		t.Fatal(err)
	}
	waitEOF(t, c)
	c2, _ := rawConnect(t, b.Addr(ListenerTCP), vin2)
	if _, err := c2.Write([]byte{packets.Disconnect << 4, 0}); err != nil {
		t.Fatal(err)
	}
	waitEOF(t, c2)
	eventually(t, "DISCONNECT read", func() bool { return len(filtered.types()) == 1 })
	if got := filtered.types(); !slices.Equal(got, []byte{packets.Disconnect}) {
		t.Fatalf("filtered hook saw types %v, want only DISCONNECT", got)
	}
	// The refused PUBLISH stops at the policy (added first).
	want := []byte{packets.Connect, packets.Publish, packets.Connect, packets.Disconnect}
	if got := plain.types(); !slices.Equal(got, want) {
		t.Fatalf("unfiltered hook saw types %v, want %v", got, want)
	}
	if n := b.Stats().ACLDeniedPublish.Load(); n != 1 {
		t.Fatalf("ACLDeniedPublish = %d, want 1 (policy skipped the PUBLISH?)", n)
	}
}
