package influxsink

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/influx"
)

// TestRetryAfterHonoured: InfluxDB (a real HTTP server on loopback standing
// in for its answers, through the real writer) answers a write with 429
// Retry-After: 7, then 503 Retry-After: 3600, then 503 without the header,
// then 429 Retry-After: 0, then stores it. The sink waits 7 s, then the cap
// (influx.RetryAfterMax, 60 s), then its own backoff twice (a Retry-After
// shorter than the backoff never shortens it), and stores every frame.
// The waits are read from an injected Sleep, not timed.
func TestRetryAfterHonoured(t *testing.T) {
	answers := []struct {
		status     int
		retryAfter string
	}{
		{http.StatusTooManyRequests, "7"},
		{http.StatusServiceUnavailable, "3600"},
		{http.StatusServiceUnavailable, ""},
		{http.StatusTooManyRequests, "0"},
	}
	srv := newWriteServer(t, nil)
	srv.hook = func(_ *http.Request, _ int) int {
		srv.mu.Lock()
		n := srv.requests
		srv.mu.Unlock()
		if n <= len(answers) {
			return answers[n-1].status
		}
		return http.StatusNoContent
	}
	srv.retryAfter = func(n, _ int) string {
		if n <= len(answers) {
			return answers[n-1].retryAfter
		}
		return ""
	}
	const linger = 3 * time.Millisecond
	var mu sync.Mutex
	var waits []time.Duration
	cfg := Config{Settings: Settings{BatchLines: testFrames, Linger: linger},
		Sleep: func(ctx context.Context, d time.Duration) bool {
			if d != linger {
				mu.Lock()
				waits = append(waits, d)
				mu.Unlock()
			}
			return ctx.Err() == nil
		}}
	sp, _, s, _, _ := concurrentSink(t, srv, 1, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil) }()
	waitFor(t, "every frame stored", func() bool { return srv.count() == testFrames && sp.Stats().Consumers[0].LagRecords == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(waits) != len(answers) {
		t.Fatalf("waits %v, want %d (one per failed write)", waits, len(answers))
	}
	if waits[0] != 7*time.Second {
		t.Errorf("after 429 Retry-After: 7 waited %v, want 7s", waits[0])
	}
	if waits[1] != influx.RetryAfterMax {
		t.Errorf("after 503 Retry-After: 3600 waited %v, want the cap %v", waits[1], influx.RetryAfterMax)
	}
	// Attempts 2 and 3: the sink's own jittered backoff, steps 400 and 800 ms.
	if waits[2] < 200*time.Millisecond || waits[2] > 400*time.Millisecond {
		t.Errorf("after 503 without Retry-After waited %v, want the backoff (200-400ms)", waits[2])
	}
	if waits[3] < 400*time.Millisecond || waits[3] > 800*time.Millisecond {
		t.Errorf("after 429 Retry-After: 0 waited %v, want the backoff (400-800ms), never less", waits[3])
	}
}
