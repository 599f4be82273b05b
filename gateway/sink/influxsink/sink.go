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
	// 16 MiB; InfluxDB 1.8 refuses bodies over 25 MB with 413). Records past
	// the cap go into the next write. The default holds a full default
	// batch (5 000 frames of 32 signals, about 9.5 MB), so that reads are
	// not split into a full and a small write.
	MaxBodyBytes int
	// EnsureDB, if set, is called when a write reports that the database
	// does not exist (e.g. InfluxDB was down at start-up, or was wiped).
	EnsureDB func(ctx context.Context) error
	// Sleep waits d or until ctx ends (false then): the runner's retry
	// and linger waits. Default sink.Sleep; tests inject a fake.
	Sleep func(ctx context.Context, d time.Duration) bool
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
// it, keeping up to WriteConcurrency writes in flight (sink.Pipeline). Its
// state is owned by the runner's goroutine, except each in-flight batch's
// written, which its write goroutine owns until it sends on res.
type processor struct {
	cfg Config
	w   Writer
	m   *metrics.Metrics
	log *slog.Logger
	now func() time.Time

	// Batches accepted and not yet reported by Done, oldest first: the
	// ring's count slots from head. A batch stays encoded until it is
	// done, so that a retry neither re-encodes (metrics, live frames) nor
	// rewrites what InfluxDB already stored.
	slots       []*batch
	head, count int
	// replay: an error was reported (or Reset called), so the runner
	// rewinds and offers the kept batches again from the oldest; each is
	// dropped only then, never by Done (the read position is before it).
	replay bool
	// done is the end of the newest batch written with every earlier one;
	// doneNew: it advanced since the last Done.
	done    spool.Pos
	doneNew bool
}

// Batch states.
const (
	stateInFlight = iota + 1 // a write goroutine owns it
	stateDone                // written
	stateFailed              // the last write failed (err); written bytes stay written
)

// batch is one encoded write: records [start, next), n of them.
type batch struct {
	enc         encoder // its line buffer is reused (Reset keeps capacity)
	start, next spool.Pos
	n           int
	written     int // body bytes stored; owned by the write in flight
	oldestNs    int64
	state       int
	err         error      // when stateFailed
	res         chan error // the write goroutine's result (capacity 1)
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
		cfg.MaxBodyBytes = 16 << 20
	}
	if log == nil {
		log = slog.Default()
	}
	for _, name := range measurementNames {
		m.Stored.WithLabelValues(name)
	}
	if cfg.WriteConcurrency <= 0 {
		cfg.WriteConcurrency = d.WriteConcurrency
	}
	if cfg.Linger <= 0 {
		cfg.Linger = d.Linger
	}
	p := &processor{cfg: cfg, w: w, m: m, log: log, now: time.Now, slots: make([]*batch, cfg.WriteConcurrency)}
	for i := range p.slots {
		b := &batch{res: make(chan error, 1)}
		b.enc.enc.Precision = time.Nanosecond // must match the writer's precision
		p.slots[i] = b
	}
	r := sink.NewRunner(sink.Config{Name: ConsumerName, BatchRecords: cfg.BatchLines, BatchBytes: int(cfg.BatchBytes), CommitInterval: sink.DefaultCommitInterval,
		Linger: cfg.Linger, LingerRecords: cfg.BatchLines, Sleep: cfg.Sleep}, cons, p, m, log)
	return &Sink{Runner: r, p: p}
}

// SetLive makes the sink publish every telemetry frame it encodes to hub
// (frames reach subscribers just before the batch is written).
func (s *Sink) SetLive(hub *live.Hub) {
	for _, b := range s.p.slots {
		b.enc.live = hub
	}
}

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

// Reset implements sink.Processor: it waits for the writes in flight. The
// encoded batches stay: they are reused only when Process is offered the
// same records again (checked by position), so a retry neither re-encodes
// nor rewrites what was stored.
func (p *processor) Reset() {
	p.waitAll()
	p.replay = p.count > 0
}

// Process implements sink.Processor: encode (once per batch) and start the
// writes, returning how many records they cover: all of recs (split into
// several batches at the body cap), or one kept batch offered again. With
// WriteConcurrency 1 the writes are done when Process returns; otherwise
// Process returns once the last batch has a write slot, and reports a
// failed earlier batch as its error (after waiting for every write in
// flight): the runner offers the records from the cursor again, and the
// batches kept here are retried, in order, one at a time, before anything
// new is written.
func (p *processor) Process(ctx context.Context, recs []spool.Record) (int, error) {
	p.collect()
	if p.count > 0 {
		if b := p.at(0); recs[0].Pos == b.start && len(recs) >= b.n && recs[b.n-1].Next == b.next {
			return p.retry(ctx, b) // offered again: the oldest batch
		}
		if p.replay || recs[0].Pos != p.at(p.count-1).next {
			// Offered from elsewhere (a cursor commit failed, or a
			// shorter read): forget the kept batches and encode afresh;
			// rewrites are idempotent.
			p.waitAll()
			p.dropAll()
		}
	}
	for i := 0; i < p.count; i++ {
		if b := p.at(i); b.state == stateFailed {
			return 0, p.fail(b.err)
		}
	}
	// Records past the body cap go into the next batch (and write slot),
	// so that every record offered is accepted.
	total := 0
	for total < len(recs) {
		for p.count == len(p.slots) {
			b := p.at(0)
			p.wait(b)
			if b.state == stateFailed {
				return 0, p.fail(b.err)
			}
			p.pop()
		}
		b := p.at(p.count)
		p.count++
		total += p.encode(b, recs[total:])
		if len(p.slots) == 1 {
			if err := p.write(ctx, b); err != nil {
				b.state, b.err = stateFailed, err
				return 0, p.fail(err)
			}
			b.state = stateDone
			continue
		}
		b.state = stateInFlight
		go func() { b.res <- p.write(ctx, b) }()
	}
	return total, nil
}

// retry handles the oldest kept batch offered again: written already
// (done), or written again from where its last write stopped. Newer
// writes in flight finish first, so batches are retried in order.
func (p *processor) retry(ctx context.Context, b *batch) (int, error) {
	p.waitAll()
	if b.state == stateFailed {
		if err := p.write(ctx, b); err != nil {
			b.err = err
			return 0, p.fail(err)
		}
		b.state = stateDone
	}
	n := b.n
	p.pop()
	p.replay = p.replay && p.count > 0
	return n, nil
}

// fail waits for every write in flight and returns err, which makes the
// runner rewind and offer the kept batches again.
func (p *processor) fail(err error) error {
	p.waitAll()
	p.replay = true
	return err
}

// at returns the i-th batch from the oldest (i < len(slots)).
func (p *processor) at(i int) *batch { return p.slots[(p.head+i)%len(p.slots)] }

// wait waits for b's write if it is in flight and records its result.
func (p *processor) wait(b *batch) {
	if b.state == stateInFlight {
		p.finish(b, <-b.res)
	}
}

func (p *processor) finish(b *batch, err error) {
	if err != nil {
		b.state, b.err = stateFailed, err
	} else {
		b.state = stateDone
	}
}

// collect records the results of the writes that finished, without
// waiting.
func (p *processor) collect() {
	for i := 0; i < p.count; i++ {
		if b := p.at(i); b.state == stateInFlight {
			select {
			case err := <-b.res:
				p.finish(b, err)
			default:
			}
		}
	}
}

// waitAll waits for every write in flight.
func (p *processor) waitAll() {
	for i := 0; i < p.count; i++ {
		p.wait(p.at(i))
	}
}

// pop drops the oldest batch (done) and advances done past it.
func (p *processor) pop() {
	b := p.at(0)
	p.done, p.doneNew = b.next, true
	b.state, b.err = 0, nil
	p.head = (p.head + 1) % len(p.slots)
	p.count--
}

// dropAll forgets every kept batch (none in flight).
func (p *processor) dropAll() {
	p.replay = false
	for p.count > 0 {
		b := p.at(0)
		b.state, b.err = 0, nil
		p.head = (p.head + 1) % len(p.slots)
		p.count--
	}
}

// Done implements sink.Pipeline.
func (p *processor) Done() (spool.Pos, bool) {
	p.collect()
	for !p.replay && p.count > 0 && p.at(0).state == stateDone {
		p.pop()
	}
	ok := p.doneNew
	p.doneNew = false
	return p.done, ok
}

// Busy implements sink.Pipeline.
func (p *processor) Busy() bool { return p.count > 0 }

// Wait implements sink.Pipeline.
func (p *processor) Wait() error {
	p.waitAll()
	for i := 0; i < p.count; i++ {
		if b := p.at(i); b.state == stateFailed {
			return p.fail(b.err)
		}
	}
	return nil
}

// encode encodes recs into b's line buffer until MaxBodyBytes is reached
// and returns how many records it consumed (at least one).
func (p *processor) encode(b *batch, recs []spool.Record) int {
	e := &b.enc
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
	b.start, b.next, b.n, b.written = recs[0].Pos, recs[n-1].Next, n, 0
	b.oldestNs = 0
	if record.Parse(recs[0].Data, &rec) == nil {
		b.oldestNs = rec.RecvNs
	}
	return n
}

// write sends the rest of b's encoded batch; a retryable error is returned
// for the runner to back off and call again. It may run on its own
// goroutine: it touches only b's written, the metrics and the writer.
func (p *processor) write(ctx context.Context, b *batch) error {
	e := &b.enc
	if body := e.enc.Bytes(); b.written < len(body) {
		if err := p.writeLines(ctx, b, body[b.written:], b.written); err != nil {
			return err
		}
	}
	for i, n := range e.points {
		if n > 0 {
			p.m.Stored.WithLabelValues(measurementNames[i]).Add(float64(n))
		}
	}
	p.m.StoredFrames.Add(float64(b.n))
	p.m.InfluxBatch.Observe(float64(e.enc.Lines()))
	if e.invalidUnknown > 0 {
		p.m.InvalidSignals.WithLabelValues("unknown_id").Add(float64(e.invalidUnknown))
	}
	if e.invalidRange > 0 {
		p.m.InvalidSignals.WithLabelValues("out_of_range").Add(float64(e.invalidRange))
	}
	if b.oldestNs > 0 {
		p.m.StoreLatency.Observe(float64(p.now().UnixNano()-b.oldestNs) / 1e9)
	}
	return nil
}

// writeLines writes lines (complete line-protocol lines starting at byte
// off of b's body) and advances b.written past what InfluxDB stored.
// Retryable errors are returned. A 413 splits the body in two halves at a
// line boundary. A lone line the server still refuses, or a partial write
// (InfluxDB stores the valid lines of a 400 batch), is a permanent error:
// counted, logged and skipped, since retrying cannot help.
func (p *processor) writeLines(ctx context.Context, b *batch, lines []byte, off int) error {
	start := p.now()
	err := p.w.Write(ctx, lines)
	p.m.InfluxWriteDur.Observe(p.now().Sub(start).Seconds())
	switch {
	case err == nil:
		p.m.InfluxWrites.WithLabelValues("ok").Inc()
	case errors.Is(err, influx.ErrTooLarge):
		p.m.InfluxWrites.WithLabelValues("too_large").Inc()
		if mid := splitPoint(lines); mid > 0 {
			if err := p.writeLines(ctx, b, lines[:mid], off); err != nil {
				return err
			}
			return p.writeLines(ctx, b, lines[mid:], off+mid)
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
	b.written = off + len(lines)
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
