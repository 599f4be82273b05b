package broker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// ErrDrainTimeout is returned by Drain when clients were still connected
// when its context ended; they were then closed without waiting further.
var ErrDrainTimeout = errors.New("broker: drain did not finish in time")

// drainState is the broker's draining switch. The per-client publish
// hand-off tracking that lets Drain close a connection only between two
// publishes is each connection's connState.handoff (connstate.go). Owned
// by drain.go.
type drainState struct {
	on atomic.Bool // Drain was called; set once, before Drain visits the clients
}

// handoff tracks one client's publish being handed to the hooks (ingest
// waits for the durable append before mochi writes the PUBACK).
type handoff struct {
	mu      sync.Mutex  // guards busy and pending
	busy    bool        // a PUBLISH is between OnPacketRead and OnPacketProcessed
	pending bool        // Drain asked to disconnect it once the publish is done
	ended   atomic.Bool // the drain disconnect was sent (once per client)
}

// Draining reports whether Drain was called.
func (b *Broker) Draining() bool {
	return b.drain.on.Load()
}

// Drain takes the replica out of service: new CONNECTs are refused (MQTT
// 5: CONNACK 0x9C Use another server with Config.ServerReference; 3.1.1:
// CONNACK 0x03 Server unavailable), then every connected client is
// disconnected (MQTT 5: DISCONNECT 0x9C with the Server Reference; 3.1.1:
// the connection is closed). A client in the middle of a publish hand-off
// is disconnected only after that publish was processed, so its PUBACK
// (written after the durable append) goes out first; a PUBLISH read after
// draining started is not processed (never acknowledged: the device sends
// it again to another replica).
//
// Drain returns the number of connections it ended once no client is
// connected, or ErrDrainTimeout when ctx ends first (the rest are then
// closed at once). The listeners stay open so that a device reaching this
// replica is told to use another one; Close ends them.
func (b *Broker) Drain(ctx context.Context) (int, error) {
	// Counted by disconnectForDrain: a session established while the
	// drain starts is ended by trackClient, possibly before the loop below
	// sees it (then already closed); it is one this drain ended too.
	start := b.stats.Drained.Load()
	b.drain.on.Store(true)
	if b.seamDrainStarted != nil {
		b.seamDrainStarted()
	}
	b.log.Info("draining: refusing new connections, disconnecting clients", "connected", b.Connected())
	for _, cl := range b.server.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		h := b.handoffFor(cl)
		h.mu.Lock()
		if h.busy {
			h.pending = true // OnPacketProcessed disconnects it
		} else {
			b.disconnectForDrain(cl, h)
		}
		h.mu.Unlock()
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for b.Connected() > 0 {
		select {
		case <-ctx.Done():
			forced := 0
			for _, cl := range b.server.Clients.GetAll() {
				if !cl.Net.Inline && !cl.Closed() {
					cl.Stop(packets.ErrUseAnotherServer)
					forced++
				}
			}
			n := int(b.stats.Drained.Load()-start) + forced
			b.log.Warn("drain timed out; remaining clients closed", "disconnected", n)
			return n, ErrDrainTimeout
		case <-tick.C:
		}
	}
	n := int(b.stats.Drained.Load() - start)
	b.log.Info("drained", "disconnected", n)
	return n, nil
}

// disconnectForDrain ends cl with 0x9C Use another server: MQTT 5 clients
// get a DISCONNECT carrying the Server Reference, 3.1.1 clients (which
// have no server DISCONNECT) are closed.
func (b *Broker) disconnectForDrain(cl *mqtt.Client, h *handoff) {
	if !h.ended.CompareAndSwap(false, true) {
		return
	}
	b.stats.Drained.Add(1)
	if cl.Properties.ProtocolVersion == 5 {
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Disconnect},
			ReasonCode:  packets.ErrUseAnotherServer.Code,
			Properties: packets.Properties{
				ReasonString:    packets.ErrUseAnotherServer.Reason,
				ServerReference: b.cfg.ServerReference,
			},
		})
	}
	cl.Stop(packets.ErrUseAnotherServer)
}

// handoffOf returns cl's hand-off record, or nil if cl is not tracked.
func (b *Broker) handoffOf(cl *mqtt.Client) *handoff {
	if st := b.connOf(cl); st != nil {
		return &st.handoff
	}
	return nil
}

// handoffFor returns cl's hand-off record, creating it if needed.
func (b *Broker) handoffFor(cl *mqtt.Client) *handoff {
	return &b.connFor(cl).handoff
}

// trackClient starts the hand-off tracking of an established session.
func (b *Broker) trackClient(cl *mqtt.Client) {
	h := b.handoffFor(cl)
	if b.Draining() {
		// Established (CONNACK sent) while Drain was starting.
		b.disconnectForDrain(cl, h)
	}
}

func (b *Broker) untrackClient(cl *mqtt.Client) {
	b.dropConn(cl)
}

// beginPublish marks cl (state st, nil if untracked) busy with a publish;
// false when draining (the publish must not be processed and the client is
// disconnected). No broker-wide lock: the draining switch is read under
// the client's own hand-off lock, and Drain sets it before it takes that
// lock, so either this publish sees it or Drain sees the publish busy.
func (b *Broker) beginPublish(st *connState) bool {
	if st == nil {
		return !b.drain.on.Load()
	}
	h := &st.handoff
	h.mu.Lock()
	defer h.mu.Unlock()
	if b.drain.on.Load() {
		return false
	}
	h.busy = true
	return true
}

// endPublish clears the busy mark of cl (state st, nil if untracked) and
// runs a disconnect Drain deferred.
func (b *Broker) endPublish(cl *mqtt.Client, st *connState) {
	if st == nil {
		return
	}
	h := &st.handoff
	h.mu.Lock()
	defer h.mu.Unlock()
	h.busy = false
	if h.pending {
		h.pending = false
		b.disconnectForDrain(cl, h)
	}
}

// refuseDraining answers a CONNECT during a drain: CONNACK 0x9C Use
// another server with the Server Reference (MQTT 5) or 0x03 Server
// unavailable (3.1.1), then closes the connection.
func (b *Broker) refuseDraining(cl *mqtt.Client) {
	b.stats.RefusedDraining.Add(1)
	var props *packets.Properties
	if cl.Properties.ProtocolVersion == 5 {
		props = &packets.Properties{ServerReference: b.cfg.ServerReference}
	}
	_ = b.server.SendConnack(cl, packets.ErrUseAnotherServer, false, props)
	cl.Stop(packets.ErrUseAnotherServer)
}

// TakeOver ends cl because the same device established a newer session on
// another replica (gateway/cluster/presence), as a single broker does on
// a session takeover: MQTT 5 clients receive DISCONNECT 0x8E Session taken
// over, 3.1.1 clients are closed (policy.OnPacketEncode). The session
// state kept here (subscriptions, queued messages) is discarded: the
// device's session now lives on the other replica.
func (b *Broker) TakeOver(cl *mqtt.Client) {
	if cl == nil || cl.Net.Inline {
		return
	}
	b.stats.TakenOver.Add(1)
	b.log.Info("session taken over by another replica", "client", cl.ID, "remote", cl.Net.Remote)
	if !cl.Closed() {
		_ = b.server.DisconnectClient(cl, packets.ErrSessionTakenOver)
	}
	b.forget(cl.ID, cl)
	b.discardSession(cl)
}
