// Command bench-compare measures the gateway side by side with Mosquitto +
// Telegraf on one InfluxDB under one load and prints one Markdown table
// (`make bench-compare`; package internal/benchcompare; docs/benchmarks.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/telegate/telegate/internal/benchcompare"
)

func main() {
	var o benchcompare.Options
	var pipelines string
	flag.StringVar(&o.Influxd, "influxd", "bin/influxd", "InfluxDB 1.8 server binary")
	flag.StringVar(&o.Mosquitto, "mosquitto", "bin/mosquitto", "Mosquitto broker binary")
	flag.StringVar(&o.MosquittoPasswd, "mosquitto-passwd", "bin/mosquitto_passwd", "mosquitto_passwd binary")
	flag.StringVar(&o.Telegraf, "telegraf", "bin/telegraf", "Telegraf binary")
	flag.StringVar(&o.Gateway, "gateway", "bin/gateway", "gateway binary")
	flag.IntVar(&o.Clients, "clients", 20, "publishing devices")
	flag.IntVar(&o.Frames, "frames", 10000, "frames per device")
	flag.IntVar(&o.Inflight, "inflight", 64, "QoS 1 publishes in flight per device")
	flag.Float64Var(&o.Rate, "rate", 0, "frames per second per device (0: as fast as the window allows; the paced load is -clients 500 -rate 10)")
	flag.DurationVar(&o.GatewayLinger, "gateway-linger", 0, "the gateway's influx.linger (0: its default)")
	flag.DurationVar(&o.GatewayReadBatch, "gateway-read-batch", benchcompare.DefaultReadBatch, "the gateway's mqtt.read_batch in the gateway-batched pipeline")
	var floorAddr string
	flag.StringVar(&floorAddr, benchcompare.FloorFlag, "", "internal: serve the floor pipeline on this address")
	flag.IntVar(&o.Batch, "batch", 5000, "lines per InfluxDB write (direct writer, Telegraf)")
	flag.IntVar(&o.DirectWriters, "direct-writers", 2, "concurrent direct writers")
	flag.IntVar(&o.TelegrafUndelivered, "telegraf-undelivered", 10000, "Telegraf mqtt_consumer max_undelivered_messages")
	flag.StringVar(&pipelines, "pipelines", "direct,telegraf,gateway", "pipelines to run, in order: direct, telegraf, gateway, gateway-batched, floor, floor-epoll")
	flag.StringVar(&o.CPUProfile, "gateway-cpuprofile", "", "write a CPU profile of the gateway taken during its run here")
	flag.IntVar(&o.ProfileSeconds, "profile-seconds", 10, "length of the gateway CPU profile")
	flag.StringVar(&o.Dir, "dir", "", "data and log directory (default: a temporary one, removed)")
	flag.BoolVar(&o.KeepDir, "keep", false, "keep the temporary directory")
	flag.Parse()
	if floorAddr != "" {
		err := benchcompare.ServeFloorFlag(floorAddr)
		fmt.Fprintln(os.Stderr, "bench-compare: floor:", err)
		os.Exit(1)
	}
	o.FloorFromSelf = true
	o.Pipelines = strings.Split(pipelines, ",")
	o.Log = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rs, err := benchcompare.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-compare:", err)
		os.Exit(1)
	}
	if err := benchcompare.WriteTable(os.Stdout, rs, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-compare:", err)
		os.Exit(1)
	}
	if o.CPUProfile != "" {
		st, total, err := benchcompare.ProfileStages("go", o.Gateway, o.CPUProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench-compare:", err)
			os.Exit(1)
		}
		fmt.Printf("\ngateway CPU by stage (%s, %d s during the run):\n\n", o.CPUProfile, o.ProfileSeconds)
		benchcompare.WriteStages(os.Stdout, st, total)
	}
	for _, r := range rs {
		if r.Err != nil || r.Lost() != 0 {
			os.Exit(1)
		}
	}
}
