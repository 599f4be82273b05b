package svc_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/internal/svctest"
)

// TestNewConsumerSeesMessagesFromStartup: a "new only" consumer created
// after a message was published (but after the process started) still gets
// it; an existing durable keeps its position across a restart.
func TestNewConsumerSeesMessagesFromStartup(t *testing.T) {
	bus := svctest.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := svctest.Ops(t, bus).JetStream() // a test durable: no role has it
	if _, err := js.Publish(ctx, "charging.session.started.CS-0001", []byte("early")); err != nil {
		t.Fatal(err)
	}
	spec := svc.ConsumerSpec{Stream: "CHARGING", Durable: "t-new", Filter: "charging.session.started.>", New: true}
	var got atomic.Int32
	run := func() {
		cctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- svc.Consume(cctx, js, spec, svctest.Logger(), func(context.Context, jetstream.Msg) error {
				got.Add(1)
				return nil
			})
		}()
		svctest.Eventually(t, "consumer processed", func() error {
			info, err := js.Consumer(ctx, "CHARGING", "t-new")
			if err != nil {
				return err
			}
			ci, err := info.Info(ctx)
			if err != nil {
				return err
			}
			if ci.NumPending != 0 || ci.NumAckPending != 0 {
				return context.DeadlineExceeded
			}
			return nil
		})
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	run()
	if got.Load() != 1 {
		t.Fatalf("first run processed %d messages, want the early one", got.Load())
	}
	if _, err := js.Publish(ctx, "charging.session.started.CS-0001", []byte("later")); err != nil {
		t.Fatal(err)
	}
	run() // restart: the durable resumes, the early message is not replayed
	if got.Load() != 2 {
		t.Fatalf("after restart %d messages processed, want 2", got.Load())
	}
}
