package ingest

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telegate/telegate/broker/listener"
	"github.com/telegate/telegate/gateway/ingest/topics"
)

// Pipeliner is implemented by a Spool that lets a connection's QoS 1
// publishes share group commits: the hook appends each publish without
// waiting and holds its PUBACK back in the connection (listener.Held) until
// the commit of the newest one has finished. See heldAcks.
type Pipeliner interface {
	// AppendTicket writes rec and returns the ticket of the group commit
	// that makes it durable.
	AppendTicket(rec []byte) (uint64, error)
	// WaitTicket returns once the commit of t has finished (nil: every
	// record appended up to t is durable). appended is when the oldest
	// record waited for was appended: spool.ack_timeout counts from there.
	// Errors as for Spool.Append.
	WaitTicket(t uint64, appended time.Time) error
}

// heldAcks holds the PUBACKs of one MQTT 3.1.1 connection's QoS 1
// publishes whose group commit is still running. mochi's read loop keeps
// reading the packets it has already buffered meanwhile; before it would
// block on the socket (or before anything else is written to the
// connection) the listener calls Flush, which waits once for the newest
// ticket and releases every held PUBACK in one write(2). A PUBACK therefore
// still leaves only after its frame is fsynced, in the order of the
// publishes, and a connection costs no extra goroutine.
//
// The PUBACK of MQTT 3.1.1 is always the 4 bytes 0x40 0x02 id; MQTT 5
// clients (reason codes, properties) keep the path where OnPublish waits.
type heldAcks struct {
	h  *Hook
	cl *mqtt.Client

	mu     sync.Mutex // guards the fields below: OnPublish adds, Flush takes
	ticket uint64     // newest ticket held
	since  time.Time  // when the oldest held record was appended
	acks   []byte     // encoded PUBACKs, 4 bytes each
}

// maxHeldAcks bounds the PUBACKs one connection holds: beyond it OnPublish
// flushes them itself (the client ignores its window or the socket buffer
// holds many small publishes).
const maxHeldAcks = 256

// add holds the PUBACK of packet id, covered by ticket t. It reports
// whether the connection holds enough to flush now.
func (q *heldAcks) add(t uint64, id uint16, now time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.acks) == 0 {
		q.since = now
	}
	q.ticket = t
	q.acks = append(q.acks, byte(packets.Puback<<4), 2, byte(id>>8), byte(id))
	return len(q.acks) >= 4*maxHeldAcks
}

// Flush implements listener.Held.
func (q *heldAcks) Flush(dst []byte) ([]byte, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.acks) == 0 {
		return dst, nil
	}
	n := len(q.acks) / 4
	err := q.h.pipe.WaitTicket(q.ticket, q.since)
	q.h.m.AppendDur.Observe(time.Since(q.since).Seconds())
	if err != nil {
		q.acks = q.acks[:0]
		q.h.refuseHeld(q.cl, n, err)
		return dst, err
	}
	q.h.spooled[1].Add(float64(n))
	dst = append(dst, q.acks...)
	q.acks = q.acks[:0]
	return dst, nil
}

// publishHeld is OnPublish for a QoS 1 publish of an MQTT 3.1.1 client on
// a listener connection: append without waiting, hold the PUBACK.
func (h *Hook) publishHeld(cl *mqtt.Client, lc *listener.Conn, pk packets.Packet, class topics.Class, id string) (packets.Packet, error) {
	q, _ := lc.Held().(*heldAcks)
	if q == nil {
		q = &heldAcks{h: h, cl: cl, acks: make([]byte, 0, 64)}
		lc.SetHeld(q)
	}
	bp := h.bufs.Get().(*[]byte)
	rec, _ := h.encode((*bp)[:0], class, id, cl.ID, pk.TopicName, pk.Payload, 1)
	t, err := h.pipe.AppendTicket(rec)
	*bp = rec
	h.bufs.Put(bp)
	if err != nil {
		return h.refuse(cl, pk, false, err)
	}
	if q.add(t, pk.PacketID, time.Now()) {
		if _, err := lc.Write(nil); err != nil {
			return pk, packets.ErrRejectPacket
		}
	}
	// Not an error: the PUBACK is held in the connection (heldAcks), and
	// nothing subscribes to ingest topics.
	return heldPacket(pk), nil
}

// heldPacket is what OnPublish returns for a publish whose PUBACK is held:
// mochi must neither acknowledge nor forward it. ErrRejectPacket would do
// that too, but mochi's Hooks.OnPublish then logs the rejection at Debug
// level with the packet among the arguments, which copies the ~800-byte
// packet to the heap for every frame whatever the log level. Returned as a
// QoS 0 publish marked Ignore, mochi's processPublish (v2.7.9) sends no
// PUBACK, keeps no inflight state, stores no retained message and forwards
// it to nobody (publishToSubscribers returns at once for Ignore).
// TestHeldPubacksWaitForCommitAndLeaveTogether fails if mochi acknowledged
// it, TestHeldPublishIsNotLoggedAsRejected if the rejection were logged.
func heldPacket(pk packets.Packet) packets.Packet {
	pk.FixedHeader.Qos = 0
	pk.FixedHeader.Retain = false
	pk.Ignore = true
	return pk
}

// refuseHeld counts and logs n held publishes that will not be
// acknowledged, and disconnects the 3.1.1 client without acks: it resends
// them after reconnecting.
func (h *Hook) refuseHeld(cl *mqtt.Client, n int, err error) {
	reason, code := refusal(err)
	h.m.Refused.WithLabelValues(reason).Add(float64(n))
	h.log.Warn("refusing QoS 1 publishes from 3.1.1 client: disconnecting", "client", cl.ID, "reason", reason, "publishes", n)
	cl.Stop(code)
}
