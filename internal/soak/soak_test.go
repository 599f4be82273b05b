package soak

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/telegate/telegate/internal/testenv"
)

// TestSoakShort runs the soak runner for 20 s (TELEGATE_LONG=1: 2 min) with
// every fault at least once, so that the runner does not rot: no frame
// lost, no crash.
func TestSoakShort(t *testing.T) {
	testenv.RequireInfluxd(t)
	cfg := Config{
		Duration:    20 * time.Second,
		FaultEvery:  4 * time.Second,
		Outage:      2 * time.Second,
		Vehicles:    4,
		SimVehicles: 4,
		SimChargers: 1,
		HostileConn: 100,
		GatewayBin:  testenv.GatewayBinary(t),
		Dir:         t.TempDir(),
		Logger:      slog.New(slog.DiscardHandler),
	}
	if os.Getenv("TELEGATE_LONG") != "" {
		cfg.Duration, cfg.FaultEvery, cfg.Outage = 2*time.Minute, 10*time.Second, 5*time.Second
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	rep, err := Run(context.Background(), cfg)
	var sb strings.Builder
	rep.Print(&sb)
	t.Log("\n" + sb.String())
	if err != nil {
		t.Fatal(err)
	}
	if rep.InfluxOutages == 0 || rep.GatewayKills == 0 || rep.HostileBursts == 0 {
		t.Fatalf("not every fault injected: %+v", rep)
	}
	if rep.FramesAcked == 0 || rep.SimTelemetryAcked == 0 {
		t.Fatalf("no load: %+v", rep)
	}
}
