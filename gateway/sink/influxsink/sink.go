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
	"time"

	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/sink"
	"github.com/telegate/telegate/gateway/sink/live"
	"github.com/telegate/telegate/gateway/spool"
	"github.com/telegate/telegate/gateway/spool/record"
)

// ConsumerName is the spool consumer this sink uses.
const ConsumerName = "influx"

// Config of the sink.
type Config struct {
	Settings
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

// Sink is the InfluxDB sink: a sink.Runner over the Processor below.
type Sink struct {
	*sink.Runner
	p *processor
}

// processor encodes a batch of spool records as line protocol and writes
// it. Its state is owned by the runner's goroutine.
type processor struct {
	cfg Config
	w   Writer
	m   *metrics.Metrics
	log *slog.Logger
	enc encoder
	now func() time.Time

	// The encoded batch in flight, kept across retries so that a retry
	// neither re-encodes (metrics, live frames) nor rewrites what InfluxDB
	// already stored: it covers records up to next (n of them), and the
	// first written bytes of the body are stored.
	pending      bool
	next         spool.Pos
	n            int
	written      int
	batchRecords int
	oldestNs     int64
}

// New returns a sink reading from cons and writing with w.
func New(cfg Config, cons sink.Source, w Writer, m *metrics.Metrics, log *slog.Logger) *Sink {
	d := DefaultSettings()
	if cfg.BatchLines <= 0 {
		cfg.BatchLines = d.BatchLines
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = d.BatchBytes
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
	p := &processor{cfg: cfg, w: w, m: m, log: log, now: time.Now}
	p.enc.enc.Precision = time.Nanosecond // must match the writer's precision
	r := sink.NewRunner(sink.Config{Name: ConsumerName, BatchRecords: cfg.BatchLines, BatchBytes: int(cfg.BatchBytes), CommitInterval: sink.DefaultCommitInterval,
		Linger: sink.DefaultLinger, LingerRecords: sink.DefaultLingerRecords}, cons, p, m, log)
	return &Sink{Runner: r, p: p}
}

// SetLive makes the sink publish every telemetry frame it encodes to hub
// (frames reach subscribers just before the batch is written).
func (s *Sink) SetLive(hub *live.Hub) { s.p.enc.live = hub }

// Run writes batches until ctx is cancelled or the spool is closed; then,
// when drain is non-nil, drains the backlog until nothing more is available
// or drain is done (sink.Runner.Run and Drain). Errors are retried with
// backoff, never skipped.
func (s *Sink) Run(ctx, drain context.Context) error {
	if err := s.Runner.Run(ctx); err != nil || drain == nil {
		return err
	}
	return s.Drain(drain)
}

// Reset implements sink.Processor. The encoded batch in flight stays: it
// is reused only when Process is offered the same records again (checked by
// position), so a retry neither re-encodes nor rewrites what was stored.
func (p *processor) Reset() {}

// Process implements sink.Processor: encode (once per batch) and write,
// returning how many records the write covered.
func (p *processor) Process(ctx context.Context, recs []spool.Record) (int, error) {
	if !p.pending || len(recs) < p.n || recs[p.n-1].Next != p.next {
		p.n = p.encode(recs)
		p.next, p.written, p.pending = recs[p.n-1].Next, 0, true
	}
	if err := p.write(ctx); err != nil {
		return 0, err
	}
	p.pending = false
	return p.n, nil
}

// encode encodes recs into the line buffer until MaxBodyBytes is reached
// and returns how many records it consumed (at least one).
func (p *processor) encode(recs []spool.Record) int {
	e := &p.enc
	e.enc.Reset()
	e.invalidUnknown, e.invalidRange = 0, 0
	e.points = [numMeasurements]int{}
	var rec record.Record
	n := 0
	for i := range recs {
		if i > 0 && e.enc.Len() >= p.cfg.MaxBodyBytes {
			break
		}
		n = i + 1
		if err := record.Parse(recs[i].Data, &rec); err != nil {
			p.m.SinkErrors.WithLabelValues(ConsumerName, "corrupt_record").Inc()
			p.log.Error("skipping unparseable spool record", "pos", recs[i].Pos, "err", err)
			continue
		}
		if err := e.add(&rec); err != nil {
			p.m.SinkErrors.WithLabelValues(ConsumerName, "decode").Inc()
			p.log.Error("skipping spool record that no longer decodes", "pos", recs[i].Pos, "topic", string(rec.Topic), "err", err)
		}
	}
	p.batchRecords = n
	p.oldestNs = 0
	if record.Parse(recs[0].Data, &rec) == nil {
		p.oldestNs = rec.RecvNs
	}
	return n
}

// write sends the rest of the encoded batch; a retryable error is returned
// for the runner to back off and call again.
func (p *processor) write(ctx context.Context) error {
	e := &p.enc
	if body := e.enc.Bytes(); p.written < len(body) {
		if err := p.writeLines(ctx, body[p.written:], p.written); err != nil {
			return err
		}
	}
	for i, n := range e.points {
		if n > 0 {
			p.m.Stored.WithLabelValues(measurementNames[i]).Add(float64(n))
		}
	}
	p.m.StoredFrames.Add(float64(p.batchRecords))
	p.m.InfluxBatch.Observe(float64(e.enc.Lines()))
	if e.invalidUnknown > 0 {
		p.m.InvalidSignals.WithLabelValues("unknown_id").Add(float64(e.invalidUnknown))
	}
	if e.invalidRange > 0 {
		p.m.InvalidSignals.WithLabelValues("out_of_range").Add(float64(e.invalidRange))
	}
	if p.oldestNs > 0 {
		p.m.StoreLatency.Observe(float64(p.now().UnixNano()-p.oldestNs) / 1e9)
	}
	return nil
}

// writeLines writes lines (complete line-protocol lines starting at byte
// off of the body) and advances p.written past what InfluxDB stored.
// Retryable errors are returned. A 413 splits the body in two halves at a
// line boundary. A lone line the server still refuses, or a partial write
// (InfluxDB stores the valid lines of a 400 batch), is a permanent error:
// counted, logged and skipped, since retrying cannot help.
func (p *processor) writeLines(ctx context.Context, lines []byte, off int) error {
	start := p.now()
	err := p.w.Write(ctx, lines)
	p.m.InfluxWriteDur.Observe(p.now().Sub(start).Seconds())
	switch {
	case err == nil:
		p.m.InfluxWrites.WithLabelValues("ok").Inc()
	case errors.Is(err, influx.ErrTooLarge):
		p.m.InfluxWrites.WithLabelValues("too_large").Inc()
		if mid := splitPoint(lines); mid > 0 {
			if err := p.writeLines(ctx, lines[:mid], off); err != nil {
				return err
			}
			return p.writeLines(ctx, lines[mid:], off+mid)
		}
		p.m.SinkErrors.WithLabelValues(ConsumerName, "line_too_large").Inc()
		p.log.Error("InfluxDB refuses a single line as too large; skipping it", "bytes", len(lines), "err", err)
	case errors.Is(err, influx.ErrPermanent):
		p.m.InfluxWrites.WithLabelValues("permanent_error").Inc()
		p.m.SinkErrors.WithLabelValues(ConsumerName, "rejected_batch").Inc()
		p.log.Error("InfluxDB rejected part of a batch", "bytes", len(lines), "err", err)
	case ctx.Err() != nil:
		return ctx.Err() // stopping: the runner abandons the batch
	default:
		p.m.InfluxWrites.WithLabelValues("retry").Inc()
		var we *influx.WriteError
		if p.cfg.EnsureDB != nil && errors.As(err, &we) && we.StatusCode == 404 {
			if derr := p.cfg.EnsureDB(ctx); derr != nil {
				p.log.Warn("creating the InfluxDB database failed", "err", derr)
			}
		}
		return err
	}
	p.written = off + len(lines)
	return nil
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
