package broker

import (
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"golang.org/x/time/rate"

	"github.com/telegate/telegate/broker/acl"
)

// connState is the broker's state for one connection (one *mqtt.Client),
// from its established session (OnSessionEstablished) to its disconnect,
// kept in the client's Ext slot (connOf: one atomic load) instead of
// broker-wide locks and maps on every packet. Owned by connstate.go.
type connState struct {
	handoff handoff // Drain bookkeeping (drain.go); has its own lock

	// The caches below are owned by the client's read goroutine: mochi
	// calls OnPacketRead, the publish ACL check, OnPublish and
	// OnPacketProcessed of a (non-inline) client there, one packet at a
	// time. Each holds the result of a pure function of its key.

	// validTopic is the last topic name mqtt.IsValidFilter accepted for
	// publishing ("" when none: the empty topic is never cached).
	validTopic string
	// pubTopic is the last topic the device ACL allowed this device to
	// publish to, under registry generation pubGen (0: none). A Reload
	// bumps the generation, so a device disabled or changed since is
	// checked again (and denied) on its next publish.
	pubTopic string
	pubGen   uint64
	// lim is the device's limiter from Broker.rates, valid while the
	// limiters' epoch is limEpoch (0: none): the epoch grows whenever a
	// limiter is dropped, after which the map is asked again.
	lim      *rate.Limiter
	limEpoch uint64
}

// connOf returns cl's state, or nil if cl is not tracked (inline client,
// not yet established, or gone). The state lives in the client's own
// slot (mochi Client.Ext, an atomic.Value holding a *connState): one
// atomic load, safe from any goroutine, instead of a map lookup hashing
// the client pointer on every hook call.
func (b *Broker) connOf(cl *mqtt.Client) *connState {
	st, _ := cl.Ext.Load().(*connState)
	return st
}

// connFor returns cl's state, creating it if needed. It may race with
// itself (the client's read goroutine establishing the session against
// Drain): the first state stored wins and both callers get it.
func (b *Broker) connFor(cl *mqtt.Client) *connState {
	for {
		old := cl.Ext.Load()
		if st, _ := old.(*connState); st != nil {
			return st
		}
		st := &connState{}
		if cl.Ext.CompareAndSwap(old, st) {
			return st
		}
	}
}

// dropConn forgets cl's state (on disconnect): a typed nil, as Client.Ext
// holds *connState values only. A takeover's new connection is a new
// *mqtt.Client with its own, empty slot.
func (b *Broker) dropConn(cl *mqtt.Client) {
	cl.Ext.Store((*connState)(nil))
}

// validPublishTopic is mqtt.IsValidFilter(topic, true), remembered for the
// client's last topic.
func (st *connState) validPublishTopic(topic string) bool {
	if st != nil && topic != "" && topic == st.validTopic {
		return true
	}
	if !mqtt.IsValidFilter(topic, true) {
		return false
	}
	if st != nil {
		// A copy: topic may point into a packet body the broker reuses for
		// the next packet (mochi Options.ReuseIgnoredPublishBody), whose
		// bytes would then change under the cached string.
		st.validTopic = strings.Clone(topic)
	}
	return true
}

// canPublish reports whether device id may publish to topic: registered,
// enabled, and acl.CanPublish. An allowed topic is remembered under the
// registry generation read before the lookup (registry.Generation).
func (b *Broker) canPublish(st *connState, id, topic string) bool {
	gen := b.reg.Generation()
	if st != nil && st.pubGen == gen && topic == st.pubTopic {
		return true
	}
	d, ok := b.reg.Lookup(id)
	if !ok || d.Disabled || !acl.CanPublish(d.Kind, d.ID, topic) {
		return false
	}
	if st != nil {
		st.pubTopic, st.pubGen = strings.Clone(topic), gen // a copy: see validPublishTopic
	}
	return true
}

// limiter returns device id's token bucket (Broker.rates), remembered in
// st while no limiter is dropped: the same one rates.get(id) would return.
func (b *Broker) limiter(st *connState, id string) *rate.Limiter {
	if st == nil {
		return b.rates.get(id)
	}
	epoch := b.rates.epoch.Load()
	if st.lim != nil && st.limEpoch == epoch {
		return st.lim
	}
	// The epoch is read before the map: a limiter dropped after this read
	// bumps it, and the next publish asks the map again.
	st.lim, st.limEpoch = b.rates.get(id), epoch
	return st.lim
}
