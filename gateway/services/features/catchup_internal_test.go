package features

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/cluster/lease"
	"github.com/telegate/telegate/internal/testenv"
)

// TestCatchUpLogsTwoLines: after an outage the leased schedule coalesces
// every missed tick; that is one INFO line when it starts and one when the
// schedule is on time again, whatever the number of ticks (make run after a
// night off printed one line per 10 s tick: thousands).
func TestCatchUpLogsTwoLines(t *testing.T) {
	const interval = 10 * time.Second
	t0 := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
	clk := testenv.NewManualClock(t0.Add(5 * time.Hour))
	var buf bytes.Buffer
	s := &Scheduler{
		cfg: Config{Interval: interval, Cluster: lease.Cluster{Clock: clk}},
		log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	missed := int(5 * time.Hour / interval)
	for i := range missed {
		if err := s.scheduledTick(context.Background(), lease.Tick{Index: uint64(i), At: t0.Add(time.Duration(i) * interval)}); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Coalesced(); got != int64(missed) {
		t.Fatalf("coalesced %d ticks, want %d", got, missed)
	}
	s.caughtUp(lease.Tick{Index: uint64(missed), At: t0.Add(time.Duration(missed) * interval)})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "behind schedule") ||
		!strings.Contains(lines[1], "caught up") || !strings.Contains(lines[1], "coalesced=1800") {
		t.Fatalf("catch-up of %d ticks logged %d lines:\n%s", missed, len(lines), buf.String())
	}
	buf.Reset()
	s.caughtUp(lease.Tick{Index: uint64(missed + 1)})
	if buf.Len() != 0 {
		t.Fatalf("a tick on time logged %q", buf.String())
	}
}
