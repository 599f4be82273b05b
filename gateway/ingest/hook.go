// Package ingest is the gateway's MQTT ingest hook: it validates device
// payloads and hands every accepted publish to the durable spool before the
// broker acknowledges it.
//
// Delivery contract (docs/reliability.md):
//   - QoS 1: OnPublish returns only once the record is fsynced (group
//     commit); only then does mochi write the PUBACK. If the spool is full or
//     failing, an MQTT 5 client gets PUBACK 0x97 (quota exceeded) / 0x80 and a
//     3.1.1 client (which has no negative PUBACK) is disconnected without an
//     ack, so it resends after reconnecting. Nothing is acknowledged and lost.
//   - QoS 0: appended without waiting for the fsync; dropped (and counted) when
//     the spool is full.
//   - QoS 1 waits at most spool.ack_timeout for its group commit (a stalled
//     disk): then it is refused like a full spool, with 0x80 for MQTT 5.
//   - Malformed payloads are written to the spool as dead letters (durable for
//     QoS 1) with their rejection label (decoders/reject) and refused with
//     PUBACK 0x99 (payload format invalid, reject.PubackCode) for MQTT 5; a
//     3.1.1 client gets a normal PUBACK because the frame was durably
//     dead-lettered.
package ingest

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegate/telegate/broker/listener"
	"github.com/telegate/telegate/decoders/reject"
	"github.com/telegate/telegate/gateway/ingest/topics"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/spool/record"
)

// Errors a Spool implementation wraps so the hook can pick the reason code.
var (
	ErrSpoolFull   = errors.New("ingest: spool full")
	ErrSpoolClosed = errors.New("ingest: spool closed")
	// ErrSpoolTimeout: the durable append did not complete within
	// spool.ack_timeout (stalled disk). The publish is refused, not acked.
	ErrSpoolTimeout = errors.New("ingest: spool append timed out")
)

// Spool is the durable log (gateway/spool behind an adapter).
type Spool interface {
	// Append returns once rec is durable (fsynced).
	Append(rec []byte) error
	// AppendAsync returns once rec is written; it is fsynced by the next group commit.
	AppendAsync(rec []byte) error
}

// Hook is a mochi hook. Register it after the broker's auth/ACL hooks.
type Hook struct {
	mqtt.HookBase
	spool Spool
	pipe  Pipeliner      // spool's, when it has one: 3.1.1 QoS 1 PUBACKs are held (heldAcks)
	async AsyncPipeliner // pipe, when it can notify: held PUBACKs are written without the reader waiting
	val   *Validator
	m     *metrics.Metrics
	log   *slog.Logger
	bufs  sync.Pool
	srv   *mqtt.Server
	// allowed re-checks a device at Will time (SetDeviceCheck, before the
	// broker serves; read-only after); nil: no re-check.
	allowed func(id string) bool
	// Pre-resolved counters: no label lookup on the hot path.
	received, decoded [topics.NumClasses]prometheus.Counter
	spooled           [2]prometheus.Counter
}

// SetServer lets the hook tell a session takeover from a real disconnect.
func (h *Hook) SetServer(s *mqtt.Server) { h.srv = s }

// SetDeviceCheck sets the check OnWillSent applies to a device when its
// Will is sent (broker.Broker.Allowed): the Will of a device removed or
// disabled since it connected (revoked while its Will waited out a Will
// Delay, or revoked and therefore disconnected) is dropped, not stored.
func (h *Hook) SetDeviceCheck(allowed func(id string) bool) { h.allowed = allowed }

// New returns the ingest hook. log should be the broker's filtered logger
// (broker.Broker.Logger): the hook logs one line per rejected payload with
// a "client" attribute, and that filter rate-limits such lines per client
// and counts the ones it drops.
func New(sp Spool, val *Validator, m *metrics.Metrics, log *slog.Logger) *Hook {
	if log == nil {
		log = slog.Default()
	}
	h := &Hook{spool: sp, val: val, m: m, log: log}
	h.pipe, _ = sp.(Pipeliner)
	h.async, _ = sp.(AsyncPipeliner)
	h.bufs.New = func() any { b := make([]byte, 0, 2048); return &b }
	for _, c := range topics.Classes() {
		h.received[c] = m.Received.WithLabelValues(c.String())
		h.decoded[c] = m.Decoded.WithLabelValues(c.String())
	}
	h.spooled[0], h.spooled[1] = m.Spooled.WithLabelValues("0"), m.Spooled.WithLabelValues("1")
	return h
}

// ID implements mqtt.Hook.
func (h *Hook) ID() string { return "telegate-ingest" }

// Provides implements mqtt.Hook.
func (h *Hook) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnSessionEstablished || b == mqtt.OnDisconnect || b == mqtt.OnWillSent ||
		b == mqtt.OnPacketRead
}

// WantsPacketRead implements mqtt.PacketReadFilter: OnPacketRead acts on
// DISCONNECT only, so mochi does not call it (and copy the packet in and
// out) for every PUBLISH.
func (h *Hook) WantsPacketRead(t byte) bool { return t == packets.Disconnect }

// OnPacketRead releases the held PUBACKs (heldAcks) before mochi handles a
// DISCONNECT, which closes the connection without writing anything: a
// client that disconnects right after its publishes still gets the PUBACKs
// of those that are durable.
func (h *Hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Disconnect {
		if lc, ok := cl.Net.Conn.(*listener.Conn); ok && lc.Held() != nil {
			_, _ = lc.Write(nil)
		}
	}
	return pk, nil
}

// OnWillSent ingests a device's Will message (e.g. an "offline" event on
// vehicles/{vin}/events). mochi publishes Wills to subscribers without
// calling OnPublish, so without this they would never be stored. The broker
// only accepts Wills on the device's own publish topics (checked at
// CONNECT). There is no PUBACK for a Will: it is validated, dead-lettered if
// malformed, and appended without waiting for the fsync.
func (h *Hook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	class, id, ok := topics.Parse(pk.TopicName)
	if !ok {
		return
	}
	if h.allowed != nil && !h.allowed(cl.ID) {
		h.m.Dropped.WithLabelValues("will_revoked").Inc()
		h.log.Info("Will of a revoked device dropped", "client", cl.ID, "topic", pk.TopicName)
		return
	}
	rec, _ := h.encode(nil, class, id, cl.ID, pk.TopicName, pk.Payload, 0, time.Now().UnixNano())
	if err := h.spool.AppendAsync(rec); err != nil {
		h.m.Dropped.WithLabelValues("will_not_spooled").Inc()
		h.log.Warn("Will message not spooled", "client", cl.ID, "err", err)
		return
	}
	h.spooled[0].Inc()
}

// OnPublish validates and spools an ingest publish. See the package comment
// for the contract.
func (h *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the gateway's own commands to vehicles
	}
	class, id, ok := topics.Parse(pk.TopicName)
	if !ok {
		return pk, nil // not an ingest topic (the ACL already allowed it)
	}
	qos := pk.FixedHeader.Qos
	v5 := cl.Properties.ProtocolVersion == 5
	if qos == 1 && !v5 && h.pipe != nil {
		if lc, ok := cl.Net.Conn.(*listener.Conn); ok {
			return h.publishHeld(cl, lc, pk, class, id)
		}
	}

	bp := h.bufs.Get().(*[]byte)
	rec, deadLetter := h.encode((*bp)[:0], class, id, cl.ID, pk.TopicName, pk.Payload, qos, time.Now().UnixNano())
	var err error
	if qos == 0 {
		err = h.spool.AppendAsync(rec)
	} else {
		start := time.Now()
		err = h.spool.Append(rec)
		h.m.AppendDur.Observe(time.Since(start).Seconds())
	}
	*bp = rec
	h.bufs.Put(bp)

	if err != nil {
		return h.refuse(cl, pk, v5, err)
	}
	h.spooled[min(qos, 1)].Inc()
	if deadLetter && v5 && qos > 0 {
		return pk, packets.ErrPayloadFormatInvalid // reject.PubackCode
	}
	return pk, nil
}

// encode counts the publish, validates its payload and appends its spool
// record to dst: a publish record, or a dead letter whose reason is the
// rejection label and detail (reject.AppendReason) when the payload is
// invalid (deadLetter true). The same label is the metric's reason.
// recvNs is the record's receive time (Unix ns).
func (h *Hook) encode(dst []byte, class topics.Class, id, client, topic string, payload []byte, qos byte, recvNs int64) (rec []byte, deadLetter bool) {
	h.received[class].Inc()
	kind := record.KindPublish
	var reason string
	if label, err := h.val.Validate(class, id, payload); err != nil {
		kind, reason = record.KindDeadLetter, string(reject.AppendReason(nil, label, reject.Detail(err)))
		h.m.DeadLettered.WithLabelValues(class.String(), label.String()).Inc()
		// One line per rejection, never payload bytes; rate-limited per
		// client by the broker's log filter (broker.Logger, logfilter.go).
		h.log.Info("payload rejected", "client", client, "topic", topic, "size", len(payload), "label", label.String())
	} else {
		h.decoded[class].Inc()
	}
	return record.Append(dst, kind, qos, recvNs, topic, client, reason, payload), kind == record.KindDeadLetter
}

// refusal is the metric reason and the MQTT 5 reason code for a spool error.
func refusal(err error) (reason string, code packets.Code) {
	reason, code = "spool_error", packets.ErrUnspecifiedError
	if errors.Is(err, ErrSpoolFull) {
		reason, code = "spool_full", packets.ErrQuotaExceeded
	} else if errors.Is(err, ErrSpoolClosed) {
		// 0x8B as DISCONNECT, never as PUBACK (not a PUBACK reason code);
		// unacked, the publish is resent to the next server.
		reason, code = "shutting_down", packets.ErrServerShuttingDown
	} else if errors.Is(err, ErrSpoolTimeout) {
		reason = "spool_timeout"
	}
	return reason, code
}

func (h *Hook) refuse(cl *mqtt.Client, pk packets.Packet, v5 bool, err error) (packets.Packet, error) {
	reason, code := refusal(err)
	if pk.FixedHeader.Qos == 0 {
		h.m.Dropped.WithLabelValues(reason).Inc()
		return pk, packets.ErrRejectPacket
	}
	h.m.Refused.WithLabelValues(reason).Inc()
	if v5 && code == packets.ErrServerShuttingDown && h.srv != nil {
		_ = h.srv.DisconnectClient(cl, code) // DISCONNECT 0x8B, no PUBACK
		return pk, packets.ErrRejectPacket
	}
	if v5 {
		return pk, code // PUBACK with the reason code, nothing forwarded
	}
	// MQTT 3.1.1 has no negative PUBACK: drop the connection without acking;
	// the device resends the publish after reconnecting.
	h.log.Warn("refusing QoS 1 publish from 3.1.1 client: disconnecting", "client", cl.ID, "reason", reason)
	cl.Stop(code)
	return pk, packets.ErrRejectPacket
}

// OnSessionEstablished records a device connect.
func (h *Hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.connectivity(cl, record.KindConnect)
}

// OnDisconnect records a device disconnect.
func (h *Hook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if h.srv != nil {
		if cur, ok := h.srv.Clients.Get(cl.ID); ok && cur != cl && !cur.Closed() {
			return // taken over by a newer connection of the same device
		}
	}
	h.connectivity(cl, record.KindDisconnect)
}

func (h *Hook) connectivity(cl *mqtt.Client, kind record.Kind) {
	if cl.Net.Inline || cl.ID == "" {
		return
	}
	rec := record.Append(nil, kind, 0, time.Now().UnixNano(), "", cl.ID, "", nil)
	if err := h.spool.AppendAsync(rec); err != nil {
		h.m.Dropped.WithLabelValues("connectivity_event").Inc()
		h.log.Warn("connectivity event not spooled", "client", cl.ID, "err", err)
	}
}
