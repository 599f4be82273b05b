package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/spool/record"
)

// ErrBadRecord is returned by the JetStream hand-off for a record it cannot
// parse (a bug: the hook only hands it records it encoded).
var ErrBadRecord = errors.New("ingest: unparseable record")

// AsyncPublisher is a JetStream context's asynchronous publish
// (jetstream.JetStream).
type AsyncPublisher interface {
	PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

// JetStreamConfig configures FromJetStream.
type JetStreamConfig struct {
	// AckTimeout bounds how long a QoS 1 publish waits for JetStream's
	// acknowledgement (spool.ack_timeout; 0: 5 s). Past it the publish is
	// refused like a stalled spool (ErrSpoolTimeout).
	AckTimeout time.Duration
	// StallWait is how long an append waits for room when the publisher
	// already has its maximum of unacknowledged publishes in flight
	// (jetstream.WithPublishAsyncMaxPending); past it the append is
	// refused as ErrSpoolFull (default 50 ms).
	StallWait time.Duration
}

// FromJetStream is the durable hand-off of the "jetstream" durability mode:
// the same record bytes the spool would store are published to the
// replicated INGEST stream (natsbus.SubjectIngest of the device) with
// PublishMsgAsync, so the appends of all clients are pipelined on one
// connection, many per round trip. Append (QoS 1) returns once JetStream
// acknowledged the message, which a replicated stream does only after a
// quorum of its replicas stored it; AppendAsync (QoS 0, Wills, connectivity)
// does not wait.
//
// A QoS 1 append carries a Nats-Msg-Id derived from the record without its
// receive time (JetStreamMsgID): a device that resends a publish whose
// PUBACK it did not get is deduplicated by the stream within the duplicate
// window. The in-flight bound is the publisher's maximum of pending async
// publishes; a full window, or a full stream (DiscardNew), is ErrSpoolFull.
func FromJetStream(pub AsyncPublisher, cfg JetStreamConfig) Spool {
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.StallWait <= 0 {
		cfg.StallWait = 50 * time.Millisecond
	}
	return &jsDurable{pub: pub, cfg: cfg}
}

type jsDurable struct {
	pub AsyncPublisher
	cfg JetStreamConfig
}

// Append implements Spool: publish and wait for the stream's ack.
func (d *jsDurable) Append(rec []byte) error {
	var r record.Record
	if err := record.Parse(rec, &r); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	// rec is the hook's pooled buffer: the message needs its own copy,
	// since nats.go keeps it for a possible retry until the ack.
	m := &nats.Msg{Subject: natsbus.SubjectIngest(r.Client), Data: append([]byte(nil), rec...)}
	f, err := d.pub.PublishMsgAsync(m, jetstream.WithMsgID(JetStreamMsgID(rec, &r)), jetstream.WithStallWait(d.cfg.StallWait))
	if err != nil {
		return mapJSErr(err)
	}
	t := time.NewTimer(d.cfg.AckTimeout)
	defer t.Stop()
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return mapJSErr(err)
	case <-t.C:
		return fmt.Errorf("%w: no JetStream ack within %s", ErrSpoolTimeout, d.cfg.AckTimeout)
	}
}

// AppendAsync implements Spool: publish without waiting (no message id: a
// QoS 0 publish is never resent).
func (d *jsDurable) AppendAsync(rec []byte) error {
	var r record.Record
	if err := record.Parse(rec, &r); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRecord, err)
	}
	m := &nats.Msg{Subject: natsbus.SubjectIngest(r.Client), Data: append([]byte(nil), rec...)}
	_, err := d.pub.PublishMsgAsync(m, jetstream.WithStallWait(d.cfg.StallWait))
	return mapJSErr(err)
}

// JetStreamMsgID is the Nats-Msg-Id of a QoS 1 record: the device id and a
// SHA-256 (first 16 bytes) of everything in the record except its QoS and
// receive time, i.e. of (kind, topic, device, dead-letter reason, payload).
// A resend of the same publish has the same id whatever its packet id
// (clients reuse packet ids as soon as one is acknowledged, and may pick a
// new one for a resend after reconnecting), and two different frames of a
// device differ in their payload (sequence number, timestamp).
func JetStreamMsgID(rec []byte, r *record.Record) string {
	h := sha256.New()
	h.Write(rec[:1])
	h.Write(rec[10:])
	var sum [sha256.Size]byte
	tok := natsbus.Token(string(r.Client))
	id := make([]byte, 0, len(tok)+1+32)
	id = append(id, tok...)
	id = append(id, '.')
	id = hex.AppendEncode(id, h.Sum(sum[:0])[:16])
	return string(id)
}

// jsErrStreamStoreFailed is nats-server's JSStreamStoreFailedF, the answer
// to an append into a full DiscardNew stream.
const jsErrStreamStoreFailed jetstream.ErrorCode = 10077

// mapJSErr maps publish errors onto the hook's reasons: no room (the
// in-flight window, or a full stream) is ErrSpoolFull; anything else
// (disconnected, no quorum, timeout inside nats.go) is returned as is and
// answered like a failing spool (0x80).
func mapJSErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
		return fmt.Errorf("%w: %w", ErrSpoolFull, err)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrStreamStoreFailed {
		// "maximum bytes/messages exceeded": the stream is full (DiscardNew).
		return fmt.Errorf("%w: %w", ErrSpoolFull, err)
	}
	return err
}
