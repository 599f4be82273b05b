// Package influxsink tails the gateway's spool and writes every record to
// InfluxDB as line protocol, in spool order, committing the spool cursor only
// after InfluxDB accepted the batch. While InfluxDB is unreachable the sink
// retries the same batch with exponential backoff and the spool grows; no
// record is skipped. Replays (after a crash) write the same series and
// timestamps, so they are idempotent.
package influxsink

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/live"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/record"
	"github.com/telegate/telegate/gateway/spool"
)

// ConsumerName is the spool consumer this sink uses.
const ConsumerName = "influx"

// Config of the sink.
type Config struct {
	BatchLines int // max records per write (a diag record may add several lines)
	BatchBytes int // max spool bytes per batch
}

// Writer writes an encoded batch (gateway/influx.Writer).
type Writer interface {
	Write(ctx context.Context, lines []byte) error
}

// Sink is the InfluxDB sink.
type Sink struct {
	cfg  Config
	cons *spool.Consumer
	w    Writer
	m    *metrics.Metrics
	log  *slog.Logger
	enc  encoder
	recs []spool.Record
	now  func() time.Time
}

// New returns a sink reading from cons and writing with w.
func New(cfg Config, cons *spool.Consumer, w Writer, m *metrics.Metrics, log *slog.Logger) *Sink {
	if cfg.BatchLines <= 0 {
		cfg.BatchLines = 5000
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 4 << 20
	}
	if log == nil {
		log = slog.Default()
	}
	for _, name := range measurementNames {
		m.Stored.WithLabelValues(name)
	}
	s := &Sink{cfg: cfg, cons: cons, w: w, m: m, log: log, now: time.Now}
	s.enc.enc.Precision = time.Nanosecond // must match the writer's precision
	return s
}

// SetLive makes the sink publish every telemetry frame it encodes to hub
// (frames reach subscribers just before the batch is written).
func (s *Sink) SetLive(hub *live.Hub) { s.enc.live = hub }

// Run writes batches until ctx is cancelled or the spool is closed. When
// drain is non-nil, cancellation of ctx stops the sink only once the spool
// has no more records available or drain is done (used at shutdown: the
// broker is closed first, then the sink flushes the backlog).
func (s *Sink) Run(ctx context.Context, drain context.Context) error {
	for {
		readCtx := ctx
		var cancel context.CancelFunc = func() {}
		if ctx.Err() != nil {
			if drain == nil || drain.Err() != nil {
				return nil
			}
			readCtx, cancel = context.WithTimeout(drain, 200*time.Millisecond)
		}
		var err error
		s.recs, err = s.cons.Read(readCtx, s.recs, s.cfg.BatchLines, s.cfg.BatchBytes)
		cancel()
		if err != nil {
			if errors.Is(err, spool.ErrClosed) {
				return nil
			}
			if ctx.Err() != nil && (drain == nil || drain.Err() != nil || errors.Is(err, context.DeadlineExceeded)) {
				return nil // drained
			}
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				continue
			}
			return err
		}
		if err := s.writeBatch(ctx, drain); err != nil {
			return nil // stopping with the batch uncommitted: replayed at next start
		}
		if err := s.cons.Commit(s.recs[len(s.recs)-1].Next); err != nil {
			return err
		}
	}
}

// writeBatch encodes s.recs and writes them, retrying until success, a
// permanent error, or shutdown.
func (s *Sink) writeBatch(ctx, drain context.Context) error {
	e := &s.enc
	e.enc.Reset()
	e.invalidUnknown, e.invalidRange = 0, 0
	e.points = [numMeasurements]int{}
	var rec record.Record
	for i := range s.recs {
		if err := record.Parse(s.recs[i].Data, &rec); err != nil {
			s.m.SinkErrors.WithLabelValues("influx", "corrupt_record").Inc()
			s.log.Error("skipping unparseable spool record", "pos", s.recs[i].Pos, "err", err)
			continue
		}
		if err := e.add(&rec); err != nil {
			s.m.SinkErrors.WithLabelValues("influx", "decode").Inc()
			s.log.Error("skipping spool record that no longer decodes", "pos", s.recs[i].Pos, "topic", string(rec.Topic), "err", err)
		}
	}
	oldest := int64(0)
	if len(s.recs) > 0 && record.Parse(s.recs[0].Data, &rec) == nil {
		oldest = rec.RecvNs
	}
	if e.enc.Len() > 0 {
		for attempt := 0; ; attempt++ {
			// Writes run under the drain context: a shutdown lets the
			// write in flight finish instead of failing it.
			wctx := ctx
			if drain != nil {
				wctx = drain
			}
			if wctx.Err() != nil {
				return wctx.Err()
			}
			start := s.now()
			err := s.w.Write(wctx, e.enc.Bytes())
			s.m.InfluxWriteDur.Observe(s.now().Sub(start).Seconds())
			if err == nil {
				s.m.InfluxWrites.WithLabelValues("ok").Inc()
				break
			}
			if errors.Is(err, influx.ErrPermanent) {
				// The server rejected part of the batch (it writes the
				// valid points of a batch and reports the rest). Retrying
				// cannot help: count it loudly and move on.
				s.m.InfluxWrites.WithLabelValues("permanent_error").Inc()
				s.m.SinkErrors.WithLabelValues("influx", "rejected_batch").Inc()
				s.log.Error("InfluxDB rejected batch", "lines", e.enc.Lines(), "err", err)
				break
			}
			s.m.InfluxWrites.WithLabelValues("retry").Inc()
			d := influx.Backoff(attempt)
			if attempt%10 == 0 {
				s.log.Warn("InfluxDB write failed; retrying", "attempt", attempt+1, "backoff", d, "err", err)
			}
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-wctx.Done():
				t.Stop()
			}
		}
	}
	for i, n := range e.points {
		if n > 0 {
			s.m.Stored.WithLabelValues(measurementNames[i]).Add(float64(n))
		}
	}
	s.m.StoredFrames.Add(float64(len(s.recs)))
	s.m.InfluxBatch.Observe(float64(e.enc.Lines()))
	if e.invalidUnknown > 0 {
		s.m.InvalidSignals.WithLabelValues("unknown_id").Add(float64(e.invalidUnknown))
	}
	if e.invalidRange > 0 {
		s.m.InvalidSignals.WithLabelValues("out_of_range").Add(float64(e.invalidRange))
	}
	if oldest > 0 {
		s.m.StoreLatency.Observe(float64(s.now().UnixNano()-oldest) / 1e9)
	}
	return nil
}
