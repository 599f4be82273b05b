package svc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ProcessStart is when this process started; "new only" consumers created
// for the first time start there. It is deliberately the system clock, not
// an injected svc.Clock: it is compared with the times the NATS server
// stamps on stored messages (its own system clock), and says nothing about
// dates, so a test that pins the services' clock to another date must not
// move it.
var ProcessStart = time.Now()

// ConsumerSpec describes a durable JetStream consumer a service processes.
type ConsumerSpec struct {
	Stream  string
	Durable string
	Filter  string
	// New: on first creation, start with messages published since this
	// process started (ProcessStart) instead of the whole stream. Using the
	// process start, not the moment the consumer happens to be created,
	// means nothing published while the services were starting is missed.
	New bool
	// MaxAckPending bounds unacknowledged messages (default 256).
	MaxAckPending int
}

// Consume processes the consumer's messages one at a time with h until ctx
// ends. h's nil error acks the message; an error wrapping ErrInvalid
// terminates it (poison message, logged); any other error redelivers it
// after a short delay.
func Consume(ctx context.Context, js jetstream.JetStream, spec ConsumerSpec, log *slog.Logger, h func(context.Context, jetstream.Msg) error) error {
	if spec.MaxAckPending == 0 {
		spec.MaxAckPending = 256
	}
	cfg := jetstream.ConsumerConfig{
		Durable: spec.Durable, FilterSubject: spec.Filter, AckPolicy: jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy, AckWait: 30 * time.Second, MaxAckPending: spec.MaxAckPending, MaxDeliver: -1,
	}
	if existing, err := js.Consumer(ctx, spec.Stream, spec.Durable); err == nil {
		// The starting point of an existing durable cannot change: keep it.
		info := existing.CachedInfo()
		cfg.DeliverPolicy, cfg.OptStartTime = info.Config.DeliverPolicy, info.Config.OptStartTime
	} else if spec.New {
		start := ProcessStart
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, spec.Stream, cfg)
	if err != nil {
		return fmt.Errorf("consumer %s/%s: %w", spec.Stream, spec.Durable, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		err := h(ctx, m)
		switch {
		case err == nil:
			_ = m.Ack()
		case errors.Is(err, ErrInvalid):
			log.Warn("dropping invalid message", "consumer", spec.Durable, "subject", m.Subject(), "err", err)
			_ = m.Term()
		default:
			if ctx.Err() == nil {
				log.Warn("message will be redelivered", "consumer", spec.Durable, "subject", m.Subject(), "err", err)
			}
			_ = m.NakWithDelay(time.Second)
		}
	}, jetstream.PullMaxMessages(64))
	if err != nil {
		return fmt.Errorf("consume %s/%s: %w", spec.Stream, spec.Durable, err)
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
	return nil
}

// Group runs long-running functions and waits for them on Close.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger
	n      int
	errs   chan error
	once   sync.Once
}

// NewGroup returns a Group whose functions get a context cancelled by Close.
func NewGroup(log *slog.Logger) *Group {
	ctx, cancel := context.WithCancel(context.Background())
	return &Group{ctx: ctx, cancel: cancel, log: log, errs: make(chan error, 64)}
}

// Go runs f(ctx) in a goroutine; an error is logged. Call Go before Close,
// from one goroutine.
func (g *Group) Go(name string, f func(context.Context) error) {
	g.n++
	go func() {
		err := f(g.ctx)
		if err != nil && g.ctx.Err() == nil {
			g.log.Error("service component stopped", "component", name, "err", err)
		}
		g.errs <- err
	}()
}

// Close cancels the functions and waits for them. Idempotent.
func (g *Group) Close() {
	g.once.Do(func() {
		g.cancel()
		for ; g.n > 0; g.n-- {
			<-g.errs //nolint:errcheck // Go logged each error already
		}
	})
}
