package ingest

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telegate/telegate/broker/listener"
	"github.com/telegate/telegate/gateway/ingest/topics"
	"github.com/telegate/telegate/gateway/spool"
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

// AsyncPipeliner is a Pipeliner that can also tell when a commit has
// finished, so that a connection's reader need not wait for it: the spool's
// notifier goroutine writes the held PUBACKs (listener.AsyncHeld).
type AsyncPipeliner interface {
	Pipeliner
	// NotifyTicket arranges for n.Durable to be called once the commit
	// of t has finished, or with an error wrapping ErrTimeout once the
	// ack timeout (counted from appended) has passed. false: the commit
	// has already finished (nothing registered).
	NotifyTicket(t uint64, appended time.Time, n spool.Notifier) bool
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
	lc *listener.Conn

	mu     sync.Mutex // guards the fields below: OnPublish adds, Flush and Release take
	ticket uint64     // newest ticket held
	since  time.Time  // when the oldest held record was appended
	acks   []byte     // encoded PUBACKs, 4 bytes each
	marks  []heldMark // one per ticket among the held PUBACKs, oldest first
	noted  uint64     // newest ticket registered with NotifyTicket
	done   uint64     // newest ticket whose commit succeeded (Durable)
	err    error      // a failed or late commit (Durable): the held PUBACKs are refused
}

// heldMark ends the held PUBACKs of one ticket.
type heldMark struct {
	t     uint64
	end   int       // offset in acks after this ticket's PUBACKs
	since time.Time // when its first record was appended
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
	if k := len(q.marks); k == 0 || q.marks[k-1].t != t {
		q.marks = append(q.marks, heldMark{t: t, since: now})
	}
	q.marks[len(q.marks)-1].end = len(q.acks)
	return len(q.acks) >= 4*maxHeldAcks
}

// Flush implements listener.Held: it waits for the newest ticket and
// releases every held PUBACK.
func (q *heldAcks) Flush(dst []byte) ([]byte, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.acks) == 0 {
		return dst, nil
	}
	if q.err != nil {
		return dst, q.refuseLocked(q.err)
	}
	n := len(q.acks) / 4
	err := q.h.pipe.WaitTicket(q.ticket, q.since)
	q.h.m.AppendDur.Observe(time.Since(q.since).Seconds())
	if err != nil {
		return dst, q.refuseLocked(err)
	}
	q.h.spooled[1].Add(float64(n))
	dst = append(dst, q.acks...)
	q.acks = q.acks[:0]
	q.marks = q.marks[:0]
	return dst, nil
}

// refuseLocked drops every held PUBACK and disconnects the client.
func (q *heldAcks) refuseLocked(err error) error {
	n := len(q.acks) / 4
	q.acks = q.acks[:0]
	q.marks = q.marks[:0]
	q.err = nil
	q.h.refuseHeld(q.cl, n, err)
	return err
}

// Later implements listener.AsyncHeld: the spool's notifier calls Durable
// once the newest held ticket's commit has finished.
func (q *heldAcks) Later() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.h.async == nil:
		return false // the reader flushes (Flush)
	case len(q.acks) == 0 || q.noted >= q.ticket:
		return true
	case q.done >= q.ticket:
		return false // durable already: the reader writes them now
	case !q.h.async.NotifyTicket(q.ticket, q.since, q):
		return false
	}
	q.noted = q.ticket
	return true
}

// Durable implements spool.Notifier (via NotifyTicket): it records the
// outcome of t's commit and has the connection write what it releases.
func (q *heldAcks) Durable(t spool.Ticket, err error) {
	q.mu.Lock()
	switch {
	case err == nil:
		q.done = max(q.done, uint64(t))
	case len(q.marks) > 0 && q.marks[0].t <= uint64(t) && q.err == nil:
		// Held PUBACKs depend on this commit: refuse them.
		q.err = mapSpoolErr(err)
	}
	q.mu.Unlock()
	q.lc.ReleaseHeld()
}

// Release implements listener.AsyncHeld: it releases, without waiting, the
// held PUBACKs whose commit has succeeded (a prefix, in publish order), or
// refuses them all after a failed or late commit.
func (q *heldAcks) Release(dst []byte) ([]byte, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.acks) == 0 {
		return dst, nil
	}
	if q.err != nil {
		return dst, q.refuseLocked(q.err)
	}
	k := 0
	for k < len(q.marks) && q.marks[k].t <= q.done {
		k++
	}
	if k == 0 {
		return dst, nil
	}
	end := q.marks[k-1].end
	q.h.m.AppendDur.Observe(time.Since(q.since).Seconds())
	q.h.spooled[1].Add(float64(end / 4))
	dst = append(dst, q.acks[:end]...)
	q.acks = q.acks[:copy(q.acks, q.acks[end:])]
	q.marks = q.marks[:copy(q.marks, q.marks[k:])]
	for i := range q.marks {
		q.marks[i].end -= end
	}
	if len(q.marks) > 0 {
		q.since = q.marks[0].since
	}
	return dst, nil
}

// publishHeld is OnPublish for a QoS 1 publish of an MQTT 3.1.1 client on
// a listener connection: append without waiting, hold the PUBACK.
func (h *Hook) publishHeld(cl *mqtt.Client, lc *listener.Conn, pk packets.Packet, class topics.Class, id string) (packets.Packet, error) {
	q, _ := lc.Held().(*heldAcks)
	if q == nil {
		q = &heldAcks{h: h, cl: cl, lc: lc, acks: make([]byte, 0, 64), marks: make([]heldMark, 0, 4)}
		lc.SetHeld(q)
	}
	// One clock read per frame: the record's receive time is also when
	// the held PUBACK's wait starts (heldAcks.since, from which the ack
	// timeout and the append duration count, as they count from before
	// Append on the path that waits in OnPublish).
	now := time.Now()
	bp := h.bufs.Get().(*[]byte)
	rec, _ := h.encode((*bp)[:0], class, id, cl.ID, pk.TopicName, pk.Payload, 1, now.UnixNano())
	t, err := h.pipe.AppendTicket(rec)
	*bp = rec
	h.bufs.Put(bp)
	if err != nil {
		return h.refuse(cl, pk, false, err)
	}
	if q.add(t, pk.PacketID, now) {
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
