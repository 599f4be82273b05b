package broker

import (
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/system"

	"github.com/telegate/telegate/broker/listener"
)

// Stats are the broker's counters. Every field is safe for concurrent use
// and only ever increases (except Listener.Open, a gauge). The gateway
// exports them to Prometheus; Snapshot gives them stable names.
type Stats struct {
	// ConnectsAccepted counts sessions established (CONNACK success sent).
	ConnectsAccepted atomic.Uint64
	// Connect refusals by reason. AuthFailures is their sum.
	RefusedUnknownDevice    atomic.Uint64 // client id not in the registry
	RefusedBadSecret        atomic.Uint64 // wrong or missing password, or client certificate expired since the handshake
	RefusedDisabled         atomic.Uint64 // device disabled in the registry
	RefusedIdentityMismatch atomic.Uint64 // client id != username, or != certificate CN
	RefusedWill             atomic.Uint64 // Will topic outside the device's publish ACL
	RefusedFull             atomic.Uint64 // MaxClients sessions connected (0x89 / 0x03)
	AuthFailures            atomic.Uint64
	// RefusedDraining counts CONNECTs refused while draining (0x9C / 0x03);
	// they are not authentication failures.
	RefusedDraining atomic.Uint64
	// Drained counts connections ended by Drain; TakenOver the sessions
	// ended because the device connected to another replica (TakeOver).
	Drained   atomic.Uint64
	TakenOver atomic.Uint64

	// ACL denials (publish topics; subscription filters and deliveries).
	ACLDeniedPublish   atomic.Uint64
	ACLDeniedSubscribe atomic.Uint64

	// RateLimited counts publishes over the per-device rate (dropped, or
	// refused with PUBACK 0x97); RateLimitDisconnects the MQTT 3.1.1
	// clients disconnected for exceeding it with QoS 1.
	RateLimited          atomic.Uint64
	RateLimitDisconnects atomic.Uint64

	// QoS2Refused counts QoS 2 publishes refused (QoS 2 is not offered:
	// MQTT 5 DISCONNECT 0x9B, 3.1.1 connection closed).
	QoS2Refused atomic.Uint64
	// RetainRefused counts MQTT 5 publishes with the retain flag
	// (DISCONNECT 0x9A; Retain Available is 0).
	RetainRefused atomic.Uint64

	// LogSuppressed counts log lines dropped by the per-client log rate
	// limit (see logfilter.go).
	LogSuppressed atomic.Uint64

	// Revoked counts live or stored sessions ended by Reload.
	Revoked atomic.Uint64

	// Listener holds socket-level counters: sockets accepted, refused at
	// the connection cap, closed for not sending CONNECT in time, recovered
	// panics, and currently open sockets.
	Listener listener.Stats

	info *system.Info // mochi's counters, for messages_dropped; nil until New
}

// MessagesDropped returns the number of messages mochi dropped because a
// client's outbound queue (MaxClientWritesPending) was full: a device that
// does not read its socket loses messages instead of growing the queue.
func (s *Stats) MessagesDropped() uint64 {
	if s.info == nil {
		return 0
	}
	return uint64(max(0, atomic.LoadInt64(&s.info.MessagesDropped)))
}

// InflightDropped returns the number of QoS 1 messages to devices that
// mochi dropped because the device already had MaxInflight unacknowledged.
func (s *Stats) InflightDropped() uint64 {
	if s.info == nil {
		return 0
	}
	return uint64(max(0, atomic.LoadInt64(&s.info.InflightDropped)))
}

// Snapshot returns the current value of every counter keyed by a stable
// metric-style name.
func (s *Stats) Snapshot() map[string]uint64 {
	return map[string]uint64{
		"connects_accepted":                  s.ConnectsAccepted.Load(),
		"connects_refused_unknown_device":    s.RefusedUnknownDevice.Load(),
		"connects_refused_bad_secret":        s.RefusedBadSecret.Load(),
		"connects_refused_disabled":          s.RefusedDisabled.Load(),
		"connects_refused_identity_mismatch": s.RefusedIdentityMismatch.Load(),
		"connects_refused_will":              s.RefusedWill.Load(),
		"connects_refused_full":              s.RefusedFull.Load(),
		"auth_failures":                      s.AuthFailures.Load(),
		"acl_denied_publish":                 s.ACLDeniedPublish.Load(),
		"acl_denied_subscribe":               s.ACLDeniedSubscribe.Load(),
		"rate_limited_publishes":             s.RateLimited.Load(),
		"rate_limit_disconnects":             s.RateLimitDisconnects.Load(),
		"qos2_refused":                       s.QoS2Refused.Load(),
		"retain_refused":                     s.RetainRefused.Load(),
		"log_lines_suppressed":               s.LogSuppressed.Load(),
		"packets_too_large":                  s.Listener.TooLarge.Load(),
		"sessions_revoked":                   s.Revoked.Load(),
		"sockets_accepted":                   s.Listener.Accepted.Load(),
		"sockets_refused_limit":              s.Listener.Refused.Load(),
		"connect_timeouts":                   s.Listener.ConnectTimeouts.Load(),
		"recovered_panics":                   s.Listener.Panics.Load(),
		"protocol_violations":                s.Listener.ProtocolViolations.Load(),
		"batched_reads":                      s.Listener.BatchedReads.Load(),
		"batched_publishes":                  s.Listener.BatchedPublishes.Load(),
		"batch_backoffs":                     s.Listener.BatchBackoffs.Load(),
		"sockets_open":                       uint64(max(0, s.Listener.Open.Load())),
		"messages_dropped":                   s.MessagesDropped(),
		"inflight_dropped":                   s.InflightDropped(),
	}
}
