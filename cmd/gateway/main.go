// Command gateway runs the telegate ingestion gateway: embedded MQTT broker,
// decoders, durable spool, InfluxDB and NATS sinks. See README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/telegate/telegate/gateway/app"
	"github.com/telegate/telegate/gateway/config"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	var sets multiFlag
	cfgPath := flag.String("config", "", "YAML config file (see deploy/gateway.sample.yaml); empty: defaults")
	flag.Var(&sets, "set", "override a config key: -set influx.url=http://host:8086 (repeatable)")
	keys := flag.Bool("keys", false, "list every config key and exit")
	flag.Parse()
	if *keys {
		fmt.Println(strings.Join(config.Keys(), "\n"))
		return
	}
	cfg, err := config.Load(*cfgPath, os.Environ(), sets)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(2)
	}
	log := newLogger(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	gw := app.New(cfg, log)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := gw.ReloadDevices(); err != nil {
				log.Error("device registry reload failed; keeping the previous one", "err", err)
			} else {
				log.Info("device registry reloaded", "file", cfg.DevicesFile)
			}
		}
	}()
	// SIGUSR1: drain for a rolling upgrade (docs/operations.md).
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			dctx, cancel := context.WithTimeout(ctx, cfg.Spool.AckTimeout+30*time.Second)
			n, err := gw.Drain(dctx)
			cancel()
			if err != nil {
				log.Warn("drain did not complete; remaining devices were closed", "disconnected", n, "err", err)
			} else {
				log.Info("drained: no device connected; stop this replica now", "disconnected", n)
			}
		}
	}()
	if err := gw.Run(ctx); err != nil {
		log.Error("gateway failed", "err", err)
		os.Exit(1)
	}
}

func newLogger(cfg config.Config) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
