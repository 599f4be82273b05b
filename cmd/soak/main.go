// Command soak runs the gateway under load and periodic faults (InfluxDB
// outages, kill -9 of the gateway, hostile connections) for a chosen
// duration, then prints a report and exits non-zero if any acknowledged
// frame was lost or a process crashed. `make soak` runs it; see
// docs/reliability.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/telegate/telegate/internal/soak"
)

func main() {
	var cfg soak.Config
	flag.DurationVar(&cfg.Duration, "duration", 0, "how long to run load and faults (default 2m)")
	flag.DurationVar(&cfg.FaultEvery, "fault-every", 0, "one fault per period, in turn (default duration/8, at least 3s)")
	flag.DurationVar(&cfg.Outage, "outage", 0, "InfluxDB outage length (default min(fault-every/2, 10s))")
	flag.IntVar(&cfg.Vehicles, "vehicles", 0, "verified publishers (default 10)")
	flag.IntVar(&cfg.SimVehicles, "sim-vehicles", 0, "firmware-sim vehicles (default 20)")
	flag.IntVar(&cfg.SimChargers, "sim-chargers", 0, "firmware-sim chargers (default 2)")
	flag.IntVar(&cfg.HostileConn, "hostile", 0, "connections per hostile burst (default 200)")
	flag.StringVar(&cfg.GatewayBin, "gateway", "", "gateway binary (default: build it)")
	flag.StringVar(&cfg.InfluxdBin, "influxd", "", "influxd binary (default $INFLUXD or bin/influxd)")
	flag.StringVar(&cfg.Dir, "dir", "", "work directory, kept afterwards (default: a temporary one, removed)")
	flag.Parse()
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := soak.Run(ctx, cfg)
	if err != nil && !errors.Is(err, soak.ErrFailed) {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	rep.Print(os.Stdout)
	if err != nil {
		os.Exit(1)
	}
}
