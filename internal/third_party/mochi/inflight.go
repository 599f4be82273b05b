// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Inflight is a map of InflightMessage keyed on packet id.
type Inflight struct {
	sync.RWMutex
	internal            map[uint16]packets.Packet // internal contains the inflight packets
	receiveQuota        int32                     // remaining inbound qos quota for flow control
	sendQuota           int32                     // remaining outbound qos quota for flow control
	maximumReceiveQuota int32                     // maximum allowed receive quota
	maximumSendQuota    int32                     // maximum allowed send quota
	// telegate: order and seq, guarded by the mutex: the insertion number
	// of each packet id, so that GetAll returns (and a resumed session
	// resends) the messages in the order they were first stored.
	order map[uint16]uint64
	seq   uint64
	// telegate: held, guarded by the mutex: the ids of outbound publishes
	// stored but not yet sent because the client's Receive Maximum was
	// used up. Upstream marked them with Expiry -1, which lost their
	// Message Expiry ([MQTT-3.3.2-6]); GetAll(true) still returns an
	// entry with Expiry < 0 (upstream's tests build them so).
	held map[uint16]struct{}
}

// NewInflights returns a new instance of an Inflight packets map.
func NewInflights() *Inflight {
	return &Inflight{
		internal: map[uint16]packets.Packet{},
	}
}

// Set adds or updates an inflight packet by packet id.
func (i *Inflight) Set(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()

	_, ok := i.internal[m.PacketID]
	i.internal[m.PacketID] = m
	if !ok {
		i.noteLocked(m.PacketID)
	}
	return !ok
}

// noteLocked numbers a newly stored packet id (telegate); i is locked.
func (i *Inflight) noteLocked(id uint16) {
	if i.order == nil {
		i.order = map[uint16]uint64{}
	}
	i.seq++
	i.order[id] = i.seq
}

// Get returns an inflight packet by packet id.
func (i *Inflight) Get(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if m, ok := i.internal[id]; ok {
		return m, true
	}

	return packets.Packet{}, false
}

// Len returns the size of the inflight messages map.
func (i *Inflight) Len() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.internal)
}

// Clone returns a new instance of Inflight with the same message data.
// This is used when transferring inflights from a taken-over session.
func (i *Inflight) Clone() *Inflight {
	c := NewInflights()
	i.RLock()
	defer i.RUnlock()
	for k, v := range i.internal {
		c.internal[k] = v
	}
	if i.order != nil {
		c.order = make(map[uint16]uint64, len(i.order))
		for k, v := range i.order {
			c.order[k] = v
		}
	}
	c.seq = i.seq
	if len(i.held) > 0 {
		c.held = make(map[uint16]struct{}, len(i.held))
		for k := range i.held {
			c.held[k] = struct{}{}
		}
	}
	return c
}

// GetAll returns all the inflight messages.
func (i *Inflight) GetAll(immediate bool) []packets.Packet {
	i.RLock()
	defer i.RUnlock()
	return i.getAll(immediate)
}

// getAll is GetAll for a caller that holds the lock (telegate patch).
func (i *Inflight) getAll(immediate bool) []packets.Packet {
	m := []packets.Packet{}
	for _, v := range i.internal {
		if !immediate || v.Expiry < 0 || i.isHeldLocked(v.PacketID) {
			m = append(m, v)
		}
	}

	// telegate: in the order stored (upstream sorted on the creation
	// second truncated to 16 bits with an unstable sort: messages of one
	// second came back in map order, and the order flipped every 18 h),
	// so that a resumed session receives its messages in the order they
	// were published ([MQTT-4.6.0-6]).
	sort.Slice(m, func(a, b int) bool {
		return i.order[m[a].PacketID] < i.order[m[b].PacketID]
	})

	return m
}

// isHeldLocked reports whether id is held (telegate); i is locked.
func (i *Inflight) isHeldLocked(id uint16) bool {
	_, ok := i.held[id]
	return ok
}

// SetHeld stores outbound publish m as held: not sent, waiting for send
// quota; it keeps its Expiry (telegate). Returns true if the id was new.
func (i *Inflight) SetHeld(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()

	_, ok := i.internal[m.PacketID]
	i.internal[m.PacketID] = m
	if !ok {
		i.noteLocked(m.PacketID)
	}
	if i.held == nil {
		i.held = map[uint16]struct{}{}
	}
	i.held[m.PacketID] = struct{}{}
	return !ok
}

// IsHeld reports whether the publish with packet id id is held (telegate).
func (i *Inflight) IsHeld(id uint16) bool {
	i.RLock()
	defer i.RUnlock()
	return i.isHeldLocked(id)
}

// Release ends the hold of the publish with packet id id, which is about
// to be sent: it stays inflight until the client acknowledges it
// (telegate). It returns false if id is no longer stored (acknowledged,
// expired or dropped meanwhile).
func (i *Inflight) Release(id uint16) (packets.Packet, bool) {
	i.Lock()
	defer i.Unlock()
	delete(i.held, id)
	pk, ok := i.internal[id]
	if ok && pk.Expiry < 0 {
		pk.Expiry = 0 // upstream's marker, from a test fixture
		i.internal[id] = pk
	}
	return pk, ok
}

// hasHeld reports whether a publish is held (telegate): marked held, or
// with upstream's marker Expiry < 0 (test fixtures).
func (i *Inflight) hasHeld() bool {
	i.RLock()
	defer i.RUnlock()
	if len(i.held) > 0 {
		return true
	}
	for _, v := range i.internal {
		if v.Expiry < 0 {
			return true
		}
	}
	return false
}

// deleteAcked removes the entry with packet id id if the client's
// acknowledgement of type ack (PUBACK or PUBCOMP) ends it: a QoS 1
// publish sent to the client (not held) for a PUBACK, the server's PUBREL
// for a PUBCOMP (telegate). Returns true if it deleted it: only then was
// a send-quota slot taken, to be given back. Upstream deleted any entry
// with that id (a held publish, never sent; the server's answer to the
// client's own QoS 2 flow) and gave quota back for it, or for a PUBCOMP
// for no entry at all: the device could raise its quota past what it had
// acknowledged and get more publishes at once than its Receive Maximum.
func (i *Inflight) deleteAcked(id uint16, ack byte) bool {
	i.Lock()
	defer i.Unlock()
	pk, ok := i.internal[id]
	switch {
	case !ok || i.isHeldLocked(id):
		return false
	case ack == packets.Puback && (pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos != 1):
		return false
	case ack == packets.Pubcomp && pk.FixedHeader.Type != packets.Pubrel:
		return false
	}
	delete(i.internal, id)
	delete(i.order, id)
	return true
}

// deleteHeld removes the publish with packet id id only if it is still
// held: never sent, so it holds no send quota (telegate). Atomic with
// Release, so a publish released (about to be sent) at the same moment
// is kept. Returns true if it deleted it.
func (i *Inflight) deleteHeld(id uint16) bool {
	i.Lock()
	defer i.Unlock()
	if !i.isHeldLocked(id) {
		return false
	}
	delete(i.internal, id)
	delete(i.order, id)
	delete(i.held, id)
	return true
}

// NextImmediate returns the next inflight packet which is indicated to be sent immediately.
// This typically occurs when the quota has been exhausted, and we need to wait until new quota
// is free to continue sending.
func (i *Inflight) NextImmediate() (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	m := i.getAll(true) // telegate: was GetAll, a second RLock (deadlock with a waiting writer)
	if len(m) > 0 {
		return m[0], true
	}

	return packets.Packet{}, false
}

// telegate: the map is keyed by packet id alone, but it holds two
// independent numberings (MQTT 5 2.2.1, MQTT 3.1.1 2.3.1: "Client and
// Server pairs can participate in concurrent message exchanges using the
// same Packet Identifiers"): the server's QoS 1/2 publishes to the client
// (entries of type Publish, then Pubrel after the client's PUBREC) and the
// server's answers to the client's QoS 1/2 publishes (Puback, Pubrec,
// Pubcomp). A flow of one side must not replace or delete an entry of the
// other: setInbound and deleteInbound leave outbound entries alone.

// isOutbound reports whether an inflight entry belongs to a flow the
// server started: its PUBLISH to the client, awaiting PUBACK or PUBREC, or
// its PUBREL, awaiting PUBCOMP. Every other entry (the server's PUBACK,
// PUBREC or PUBCOMP to the client) is inbound.
func isOutbound(pk packets.Packet) bool {
	return pk.FixedHeader.Type == packets.Publish || pk.FixedHeader.Type == packets.Pubrel
}

// setInbound stores m, the server's answer to a client's PUBLISH or PUBREL,
// unless an outbound entry holds its packet id (then the outbound entry is
// kept and m is not stored). stored: m was stored; added: the id was free.
func (i *Inflight) setInbound(m packets.Packet) (stored, added bool) {
	i.Lock()
	defer i.Unlock()

	old, ok := i.internal[m.PacketID]
	if ok && isOutbound(old) {
		return false, false
	}
	i.internal[m.PacketID] = m
	if !ok {
		i.noteLocked(m.PacketID)
	}
	return true, !ok
}

// deleteInbound removes the entry with packet id id if it is an inbound
// one. Returns true if it did.
func (i *Inflight) deleteInbound(id uint16) bool {
	i.Lock()
	defer i.Unlock()

	if m, ok := i.internal[id]; !ok || isOutbound(m) {
		return false
	}
	delete(i.internal, id)
	delete(i.order, id)
	return true
}

// Delete removes an in-flight message from the map. Returns true if the message existed.
func (i *Inflight) Delete(id uint16) bool {
	i.Lock()
	defer i.Unlock()

	_, ok := i.internal[id]
	delete(i.internal, id)
	delete(i.order, id)
	delete(i.held, id)

	return ok
}

// TakeRecieveQuota reduces the receive quota by 1.
func (i *Inflight) DecreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) > 0 {
		atomic.AddInt32(&i.receiveQuota, -1)
	}
}

// TakeRecieveQuota increases the receive quota by 1.
func (i *Inflight) IncreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) < atomic.LoadInt32(&i.maximumReceiveQuota) {
		atomic.AddInt32(&i.receiveQuota, 1)
	}
}

// ResetReceiveQuota resets the receive quota to the maximum allowed value.
func (i *Inflight) ResetReceiveQuota(n int32) {
	atomic.StoreInt32(&i.receiveQuota, n)
	atomic.StoreInt32(&i.maximumReceiveQuota, n)
}

// DecreaseSendQuota reduces the send quota by 1.
// telegate: compare-and-swap, as IncreaseSendQuota: the client's read
// goroutine gives quota back while a publisher takes it; upstream's load
// then add could step past 0 or the maximum.
func (i *Inflight) DecreaseSendQuota() {
	for {
		q := atomic.LoadInt32(&i.sendQuota)
		if q <= 0 || atomic.CompareAndSwapInt32(&i.sendQuota, q, q-1) {
			return
		}
	}
}

// IncreaseSendQuota increases the send quota by 1.
func (i *Inflight) IncreaseSendQuota() {
	for {
		q := atomic.LoadInt32(&i.sendQuota)
		if q >= atomic.LoadInt32(&i.maximumSendQuota) || atomic.CompareAndSwapInt32(&i.sendQuota, q, q+1) {
			return
		}
	}
}

// ResetSendQuota resets the send quota to the maximum allowed value.
func (i *Inflight) ResetSendQuota(n int32) {
	atomic.StoreInt32(&i.sendQuota, n)
	atomic.StoreInt32(&i.maximumSendQuota, n)
}
