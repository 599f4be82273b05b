package sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/spool"
)

// JetStreamSource is a Source over a shared durable pull consumer of the
// INGEST stream (natsbus.DeclareIngest): every gateway replica reads the
// same durable, so JetStream spreads the records over the replicas that are
// alive, and the records a dead replica had fetched and not acknowledged
// are redelivered to another after the consumer's AckWait.
//
// Commit acknowledges (commit = ack, after the Processor succeeded);
// Rewind re-offers the fetched, unacknowledged records, and a re-offered
// record's AckWait is extended (InProgress) so that a sink retrying a batch
// against a failing InfluxDB keeps it. Close, after the Runner stopped,
// negatively acknowledges what is still held so that another replica gets
// it at once.
//
// Records' Pos/Next are positions in the source's own read order (Off
// counts fetched messages); Data aliases the message and is valid until it
// is committed.
//
// All methods but Close are for the Runner's goroutine.
type JetStreamSource struct {
	cons  jetstream.Consumer
	group string        // priority group ("" for none)
	wait  time.Duration // one fetch's server-side wait

	// Owned by the reading goroutine.
	msgs []jetstream.Msg // fetched, not yet acknowledged, in order
	base int64           // read-order number of msgs[0]
	read int             // msgs[:read] were handed out since the last Commit/Rewind
}

// NewJetStreamSource reads cons; group is the consumer's priority group
// (natsbus.IngestPriorityGroup for the pinned events consumer, "" for none).
func NewJetStreamSource(cons jetstream.Consumer, group string) *JetStreamSource {
	return &JetStreamSource{cons: cons, group: group, wait: 2 * time.Second}
}

// Read implements Source.
func (s *JetStreamSource) Read(ctx context.Context, dst []spool.Record, max, maxBytes int) ([]spool.Record, error) {
	dst = dst[:0]
	if max < 1 {
		max = 1
	}
	if s.read < len(s.msgs) {
		// Rewound records first, with their AckWait extended.
		end := min(len(s.msgs), s.read+max)
		for i := s.read; i < end; i++ {
			_ = s.msgs[i].InProgress()
			dst = s.record(dst, i)
		}
		s.read = end
		return dst, nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return dst, err
		}
		fctx, cancel := context.WithTimeout(ctx, s.wait)
		opts := []jetstream.FetchOpt{jetstream.FetchContext(fctx)}
		if maxBytes > 0 {
			opts = append(opts, jetstream.FetchMaxBytes(maxBytes))
		}
		if s.group != "" {
			opts = append(opts, jetstream.FetchPriorityGroup(s.group))
		}
		batch, err := s.cons.Fetch(max, opts...)
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return dst, ctx.Err()
			}
			return dst, fmt.Errorf("sink: fetch: %w", err)
		}
		for m := range batch.Messages() {
			s.msgs = append(s.msgs, m)
		}
		cancel()
		if s.read < len(s.msgs) {
			for i := s.read; i < len(s.msgs); i++ {
				dst = s.record(dst, i)
			}
			s.read = len(s.msgs)
			return dst, nil
		}
		if err := batch.Error(); err != nil && !benign(err) {
			if ctx.Err() != nil {
				return dst, ctx.Err()
			}
			return dst, fmt.Errorf("sink: fetch: %w", err)
		}
	}
}

// benign tells the ends of a pull request that only mean "nothing (more)
// for now": its expiry, a request the server completed, no heartbeat (a
// request lost in a reconnect), or the consumer pinned to another replica
// (nats.go forgets the stale pin id; the next request asks afresh).
func benign(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.Canceled) || errors.Is(err, jetstream.ErrNoHeartbeat) ||
		errors.Is(err, jetstream.ErrBatchCompleted) || errors.Is(err, jetstream.ErrPinIDMismatch) ||
		errors.Is(err, jetstream.ErrNoMessages)
}

func (s *JetStreamSource) record(dst []spool.Record, i int) []spool.Record {
	n := s.base + int64(i)
	return append(dst, spool.Record{Pos: spool.Pos{Off: n}, Next: spool.Pos{Off: n + 1}, Data: s.msgs[i].Data()})
}

// Commit implements Source: acknowledge every held record before next.
func (s *JetStreamSource) Commit(next spool.Pos) error {
	k := int(next.Off - s.base)
	k = max(0, min(k, len(s.msgs)))
	for i := 0; i < k; i++ {
		if err := s.msgs[i].Ack(); err != nil {
			// Acks already sent stay sent; retrying the rest is safe
			// (an ack of an acked message is ignored by the server).
			s.msgs = s.msgs[i:]
			s.base += int64(i)
			s.read = max(0, s.read-i)
			return fmt.Errorf("sink: ack: %w", err)
		}
	}
	clear(s.msgs[:k])
	s.msgs = s.msgs[k:]
	s.base += int64(k)
	s.read = max(0, s.read-k)
	return nil
}

// Rewind implements Source.
func (s *JetStreamSource) Rewind() { s.read = 0 }

// Close negatively acknowledges every held record (redelivered at once,
// to whichever replica pulls next). Call it after the Runner returned.
func (s *JetStreamSource) Close() {
	for _, m := range s.msgs {
		_ = m.Nak()
	}
	clear(s.msgs)
	s.msgs, s.read = s.msgs[:0], 0
}
