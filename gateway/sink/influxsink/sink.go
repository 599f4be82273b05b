// Package influxsink tails the gateway's spool and writes every record to
// InfluxDB as line protocol, in spool order, committing the spool cursor only
// after InfluxDB accepted the batch. While InfluxDB is unreachable the sink
// retries the same batch with exponential backoff and the spool grows; no
// record is skipped. Replays (after a crash) write the same series and
// timestamps, so they are idempotent.
package influxsink

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/sink/live"
	"github.com/telegate/telegate/gateway/spool"
	"github.com/telegate/telegate/gateway/spool/record"
)

// ConsumerName is the spool consumer this sink uses.
const ConsumerName = "influx"

// Config of the sink.
type Config struct {
	BatchLines int // max records per read (a diag record may add several lines)
	BatchBytes int // max spool bytes per read
	// MaxBodyBytes caps the encoded line protocol of one write (default
	// 8 MiB; InfluxDB 1.8 refuses bodies over 25 MB with 413). Records past
	// the cap are re-read for the next write.
	MaxBodyBytes int
	// EnsureDB, if set, is called when a write reports that the database
	// does not exist (e.g. InfluxDB was down at start-up, or was wiped).
	EnsureDB func(ctx context.Context) error
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

	health       atomic.Pointer[error]
	batchRecords int
	oldestNs     int64
}

// New returns a sink reading from cons and writing with w.
func New(cfg Config, cons *spool.Consumer, w Writer, m *metrics.Metrics, log *slog.Logger) *Sink {
	if cfg.BatchLines <= 0 {
		cfg.BatchLines = 5000
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 4 << 20
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 8 << 20
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

// Health is nil while the sink makes progress, or the persistent error it
// is currently retrying (spool read or cursor commit failures), for /readyz.
func (s *Sink) Health() error {
	if e := s.health.Load(); e != nil {
		return *e
	}
	return nil
}

func (s *Sink) setHealth(err error) {
	if err == nil {
		s.health.Store(nil)
		return
	}
	s.health.Store(&err)
}

// Run writes batches until ctx is cancelled or the spool is closed. When
// drain is non-nil, cancellation of ctx stops the sink only once the spool
// has no more records available or drain is done (used at shutdown: the
// broker is closed first, then the sink flushes the backlog). Errors are
// retried with backoff, never skipped: Run returns only when stopping.
func (s *Sink) Run(ctx context.Context, drain context.Context) error {
	for attempt := 0; ; {
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
			// Corrupt spool or I/O error: report, back off, try again.
			s.m.SinkErrors.WithLabelValues("influx", "spool_read").Inc()
			s.setHealth(err)
			if attempt%10 == 0 {
				s.log.Error("spool read failed; retrying", "attempt", attempt+1, "err", err)
			}
			attempt++
			if !sleep(ctx, influx.Backoff(attempt)) {
				return nil
			}
			continue
		}
		n := s.encode()
		if err := s.write(ctx, drain); err != nil {
			return nil // stopping with the batch uncommitted: replayed at next start
		}
		if !s.commit(ctx, drain, s.recs[n-1].Next) {
			return nil
		}
		if n < len(s.recs) {
			s.cons.Rewind() // the rest did not fit in this write: read it again
		}
		s.setHealth(nil)
		attempt = 0
	}
}

// commit persists the cursor, retrying transient failures (the cursor file
// is double-buffered, so a retry is safe). false: stopping.
func (s *Sink) commit(ctx, drain context.Context, next spool.Pos) bool {
	for attempt := 0; ; attempt++ {
		err := s.cons.Commit(next)
		if err == nil {
			return true
		}
		if errors.Is(err, spool.ErrClosed) {
			return false
		}
		s.m.SinkErrors.WithLabelValues("influx", "commit").Inc()
		s.setHealth(err)
		if attempt%10 == 0 {
			s.log.Error("spool cursor commit failed; retrying", "attempt", attempt+1, "err", err)
		}
		active := ctx
		if drain != nil {
			active = drain
		}
		if !sleep(active, influx.Backoff(attempt)) {
			return false
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// encode encodes s.recs into the line buffer until MaxBodyBytes is reached
// and returns how many records it consumed (at least one).
func (s *Sink) encode() int {
	e := &s.enc
	e.enc.Reset()
	e.invalidUnknown, e.invalidRange = 0, 0
	e.points = [numMeasurements]int{}
	var rec record.Record
	n := 0
	for i := range s.recs {
		if i > 0 && e.enc.Len() >= s.cfg.MaxBodyBytes {
			break
		}
		n = i + 1
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
	s.batchRecords = n
	if record.Parse(s.recs[0].Data, &rec) == nil {
		s.oldestNs = rec.RecvNs
	}
	return n
}

// write sends the encoded batch, retrying until it is stored, or stopping.
func (s *Sink) write(ctx, drain context.Context) error {
	e := &s.enc
	if e.enc.Len() > 0 {
		if err := s.writeLines(ctx, drain, e.enc.Bytes()); err != nil {
			return err
		}
	}
	for i, n := range e.points {
		if n > 0 {
			s.m.Stored.WithLabelValues(measurementNames[i]).Add(float64(n))
		}
	}
	s.m.StoredFrames.Add(float64(s.batchRecords))
	s.m.InfluxBatch.Observe(float64(e.enc.Lines()))
	if e.invalidUnknown > 0 {
		s.m.InvalidSignals.WithLabelValues("unknown_id").Add(float64(e.invalidUnknown))
	}
	if e.invalidRange > 0 {
		s.m.InvalidSignals.WithLabelValues("out_of_range").Add(float64(e.invalidRange))
	}
	if s.oldestNs > 0 {
		s.m.StoreLatency.Observe(float64(s.now().UnixNano()-s.oldestNs) / 1e9)
	}
	return nil
}

// writeLines writes lines (complete line-protocol lines), retrying
// retryable errors with backoff. A 413 splits the body in two halves at a
// line boundary. A lone line the server still refuses, or a partial write
// (InfluxDB stores the valid lines of a 400 batch), is counted and logged:
// retrying cannot help.
func (s *Sink) writeLines(ctx, drain context.Context, lines []byte) error {
	for attempt := 0; ; attempt++ {
		// Writes run under the drain context: a shutdown lets the write in
		// flight finish instead of failing it.
		wctx := ctx
		if drain != nil {
			wctx = drain
		}
		if wctx.Err() != nil {
			return wctx.Err()
		}
		start := s.now()
		err := s.w.Write(wctx, lines)
		s.m.InfluxWriteDur.Observe(s.now().Sub(start).Seconds())
		if err == nil {
			s.m.InfluxWrites.WithLabelValues("ok").Inc()
			return nil
		}
		if errors.Is(err, influx.ErrTooLarge) {
			s.m.InfluxWrites.WithLabelValues("too_large").Inc()
			if mid := splitPoint(lines); mid > 0 {
				if err := s.writeLines(ctx, drain, lines[:mid]); err != nil {
					return err
				}
				return s.writeLines(ctx, drain, lines[mid:])
			}
			s.m.SinkErrors.WithLabelValues("influx", "line_too_large").Inc()
			s.log.Error("InfluxDB refuses a single line as too large; skipping it", "bytes", len(lines), "err", err)
			return nil
		}
		if errors.Is(err, influx.ErrPermanent) {
			s.m.InfluxWrites.WithLabelValues("permanent_error").Inc()
			s.m.SinkErrors.WithLabelValues("influx", "rejected_batch").Inc()
			s.log.Error("InfluxDB rejected part of a batch", "bytes", len(lines), "err", err)
			return nil
		}
		s.m.InfluxWrites.WithLabelValues("retry").Inc()
		var we *influx.WriteError
		if s.cfg.EnsureDB != nil && errors.As(err, &we) && we.StatusCode == 404 {
			if derr := s.cfg.EnsureDB(wctx); derr != nil {
				s.log.Warn("creating the InfluxDB database failed", "err", derr)
			}
		}
		d := influx.Backoff(attempt)
		if attempt%10 == 0 {
			s.log.Warn("InfluxDB write failed; retrying", "attempt", attempt+1, "backoff", d, "err", err)
		}
		if !sleep(wctx, d) {
			return wctx.Err()
		}
	}
}

// splitPoint returns the index just after the newline closest to the middle
// of lines, or 0 if lines holds a single line.
func splitPoint(lines []byte) int {
	half := len(lines) / 2
	if i := bytes.IndexByte(lines[half:], '\n'); i >= 0 && half+i+1 < len(lines) {
		return half + i + 1
	}
	if i := bytes.LastIndexByte(lines[:half], '\n'); i >= 0 {
		return i + 1
	}
	return 0
}
