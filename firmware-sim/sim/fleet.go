package sim

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Fleet runs simulated vehicles and chargers against a broker. Create it
// with New, run it once with Run, read counters with Summary at any time.
type Fleet struct {
	cfg      Config
	log      *slog.Logger
	vins     []string
	stations []string
	limiter  *limiter
	stats    stats

	frames atomic.Int64 // telemetry frames reserved (Config.Frames budget)
	// teleSeq is each vehicle's last telemetry sequence number published
	// (frames are numbered 1, 2, ...), by VIN; the map is built by New and
	// never changes, each counter is written by its vehicle's loop.
	teleSeq map[string]*atomic.Uint64

	stopOnce sync.Once
	stop     chan struct{} // closed: stop producing, drain
	abort    chan struct{} // closed: stop waiting for acks

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{} // closed when Run returns
	begin   time.Time
	end     time.Time
}

// New validates cfg, applies defaults and returns a fleet ready to Run.
func New(cfg Config) (*Fleet, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	f := &Fleet{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "firmware-sim"),
		limiter: newLimiter(cfg.ConnectRate),
		stop:    make(chan struct{}),
		abort:   make(chan struct{}),
		done:    make(chan struct{}),
	}
	f.vins, f.stations = deviceIDs(cfg)
	f.teleSeq = make(map[string]*atomic.Uint64, len(f.vins))
	for _, vin := range f.vins {
		f.teleSeq[vin] = new(atomic.Uint64)
	}
	return f, nil
}

// Config returns the fleet's configuration with defaults applied.
func (f *Fleet) Config() Config { return f.cfg }

// VINs returns the vehicles' VINs.
func (f *Fleet) VINs() []string { return append([]string(nil), f.vins...) }

// Stations returns the charging stations' ids.
func (f *Fleet) Stations() []string { return append([]string(nil), f.stations...) }

// Run connects every device (at most Config.ConnectRate new connections
// per second), publishes until Config.Duration has elapsed, Config.Frames
// telemetry frames have been sent, ctx is cancelled or Close is called;
// then it stops publishing, waits up to Config.DrainTimeout for outstanding
// acks and disconnects every device cleanly. It returns nil on a normal
// stop, ErrUnacked if publishes were still unacknowledged at the end,
// ErrAlreadyRun on a second call and ErrClosed after Close.
func (f *Fleet) Run(ctx context.Context) error {
	f.mu.Lock()
	switch {
	case f.closed:
		f.mu.Unlock()
		return ErrClosed
	case f.started:
		f.mu.Unlock()
		return ErrAlreadyRun
	}
	f.started = true
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.cancel = cancel
	f.begin = time.Now()
	f.mu.Unlock()
	defer close(f.done)

	cfg := &f.cfg
	f.log.Info("fleet starting", "brokers", cfg.Brokers, "vehicles", cfg.Vehicles, "chargers", cfg.Chargers,
		"telemetry_interval", cfg.TelemetryInterval, "qos", cfg.qos(), "frames", cfg.Frames, "duration", cfg.Duration)

	var bg sync.WaitGroup
	watchDone := make(chan struct{})
	bg.Go(func() { f.watch(ctx, watchDone) })
	if cfg.Progress != nil {
		bg.Go(func() { f.progress(watchDone) })
	}

	var devices sync.WaitGroup
	for i, vin := range f.vins {
		v := newVehicle(f, i, vin)
		devices.Go(v.collect)
		devices.Go(v.run)
	}
	for i, st := range f.stations {
		c := newCharger(f, i, st, f.vins)
		devices.Go(c.collect)
		devices.Go(c.run)
	}
	devices.Wait()

	f.mu.Lock()
	f.end = time.Now()
	f.mu.Unlock()
	f.triggerStop()
	close(watchDone)
	bg.Wait()

	sum := f.Summary()
	f.log.Info("fleet stopped", "elapsed", sum.Elapsed.Round(time.Millisecond), "sent", sum.Sent, "acked", sum.Acked,
		"errors", sum.Errors, "unacked", sum.Unacked, "rate", fmt.Sprintf("%.1f", sum.Rate),
		"p50", sum.Latency.P50, "p99", sum.Latency.P99)
	if sum.Unacked > 0 {
		return fmt.Errorf("%w: %d", ErrUnacked, sum.Unacked)
	}
	return nil
}

// watch turns ctx cancellation and the duration limit into a stop, and the
// stop into an abort after the drain timeout.
func (f *Fleet) watch(ctx context.Context, done <-chan struct{}) {
	var limit <-chan time.Time
	if f.cfg.Duration > 0 {
		t := time.NewTimer(f.cfg.Duration)
		defer t.Stop()
		limit = t.C
	}
	select {
	case <-ctx.Done():
		f.log.Info("stopping: context done")
	case <-limit:
		f.log.Info("stopping: duration reached")
	case <-f.stop:
	case <-done:
	}
	f.triggerStop()
	t := time.NewTimer(f.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-t.C:
		f.log.Warn("drain timeout: giving up on outstanding acks")
	case <-done:
	}
	close(f.abort)
}

func (f *Fleet) progress(done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			f.cfg.Progress(f.Summary())
		case <-done:
			return
		}
	}
}

func (f *Fleet) triggerStop() { f.stopOnce.Do(func() { close(f.stop) }) }

// reserveFrame takes one frame from the Frames budget.
func (f *Fleet) reserveFrame() (int64, bool) {
	n := f.frames.Add(1)
	if f.cfg.Frames > 0 && n > int64(f.cfg.Frames) {
		return n, false
	}
	return n, true
}

// frameDone is called after frame n was published; the last frame of the
// budget stops the fleet.
func (f *Fleet) frameDone(n int64) {
	if f.cfg.Frames > 0 && n == int64(f.cfg.Frames) {
		f.log.Info("stopping: frame budget reached", "frames", n)
		f.triggerStop()
	}
}

// Summary returns a snapshot of the fleet's counters. It is safe to call at
// any time, concurrently with Run.
func (f *Fleet) Summary() Summary {
	f.mu.Lock()
	var elapsed time.Duration
	switch {
	case !f.end.IsZero():
		elapsed = f.end.Sub(f.begin)
	case !f.begin.IsZero():
		elapsed = time.Since(f.begin)
	}
	f.mu.Unlock()
	return f.stats.summary(elapsed, f.cfg.Vehicles, f.cfg.Chargers)
}

// TelemetrySent returns, per VIN, how many telemetry frames the vehicle has
// published: its frames carry the sequence numbers 1..n. Once Run has
// returned with nil (nothing unacknowledged) and Summary reports no
// publish error, every one of them was acknowledged by a broker, which
// lets a test check exactly what a sink stored.
func (f *Fleet) TelemetrySent() map[string]uint64 {
	out := make(map[string]uint64, len(f.teleSeq))
	for vin, n := range f.teleSeq {
		out[vin] = n.Load()
	}
	return out
}

// Close stops a running fleet (like cancelling Run's context) and waits for
// Run to return. It is idempotent; after Close, Run returns ErrClosed.
func (f *Fleet) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	cancel, started := f.cancel, f.started
	f.mu.Unlock()
	if started {
		cancel()
		<-f.done
	}
	return nil
}
