package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/gateway/app"
	"github.com/telegate/telegate/gateway/config"
	"github.com/telegate/telegate/internal/testenv"
)

const fleetKey = testenv.FleetKey

// defaultTestDate is where the services' injected clock starts unless
// TELEGATE_TEST_DATE says otherwise.
var defaultTestDate = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)

type env struct {
	t       *testing.T
	influx  *testenv.Influx
	gw      *app.App
	cfg     config.Config
	mqttURL string
	simCfg  sim.Config
	logOut  io.Writer
}

type envOpt func(*config.Config)

// startEnv starts a real InfluxDB, provisions vehicles/chargers and starts
// the whole gateway on random loopback ports.
func startEnv(t *testing.T, vehicles, chargers int, opts ...envOpt) *env {
	t.Helper()
	return startEnvLogged(t, nil, vehicles, chargers, opts...)
}

// startEnvLogged is startEnv with the gateway's logs (debug level) written
// to logOut.
func startEnvLogged(t *testing.T, logOut io.Writer, vehicles, chargers int, opts ...envOpt) *env {
	t.Helper()
	e := &env{t: t, influx: testenv.StartInflux(t), logOut: logOut}
	dir := t.TempDir()
	e.simCfg = sim.Config{Vehicles: vehicles, Chargers: chargers, FleetKey: fleetKey}
	entries, err := sim.Provision(e.simCfg, 4)
	if err != nil {
		t.Fatal(err)
	}
	devices := filepath.Join(dir, "devices.yaml")
	if err := sim.WriteRegistry(devices, entries); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.DevicesFile = devices
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.MQTT.TCPAddr = "127.0.0.1:0"
	cfg.MQTT.WSAddr = ""
	cfg.NATS.Embedded.Addr = "127.0.0.1:0"
	cfg.Influx.URL = e.influx.URL
	cfg.Influx.Token, cfg.Influx.QueryToken = e.influx.Token, e.influx.ReadToken
	cfg.Spool.SegmentBytes = 1 << 20
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.Services.SchedulerClock == nil {
		// The feature scheduler's dates never come from the system clock:
		// a fixed date, or TELEGATE_TEST_DATE (make test-dates).
		cfg.Services.SchedulerClock = testenv.Clock(t, defaultTestDate)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e.cfg = cfg
	e.start()
	return e
}

func (e *env) start() {
	e.t.Helper()
	log := testLogger(e.t)
	if e.logOut != nil {
		log = slog.New(slog.NewTextHandler(e.logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e.gw = app.New(e.cfg, log)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := e.gw.Start(ctx); err != nil {
		e.t.Fatalf("gateway start: %v", err)
	}
	gw := e.gw
	e.t.Cleanup(func() { _ = gw.Close() })
	e.mqttURL = "tcp://" + e.gw.Broker().Addr("tcp")
	e.simCfg.Broker = e.mqttURL
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("TELEGATE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// mqtt311 connects a paho 3.1.1 client as device id.
func (e *env) mqtt311(id string) paho.Client {
	e.t.Helper()
	o := paho.NewClientOptions().AddBroker(e.mqttURL).SetClientID(id).SetUsername(id).
		SetPassword(sim.Secret(fleetKey, id)).SetCleanSession(true).SetAutoReconnect(false).
		SetConnectTimeout(10 * time.Second).SetOrderMatters(false)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		e.t.Fatalf("connect %s: %v", id, tok.Error())
	}
	e.t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// eventually polls f until it returns nil or the (generous) deadline passes.
// It bounds waiting for asynchronous effects; it asserts nothing about speed.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

func countIs(t *testing.T, in *testenv.Influx, measurement, field string, since time.Time, want int) func() error {
	return func() error {
		if n := in.Count(t, measurement, field, since); n != want {
			return fmt.Errorf("%s.%s: %d points, want %d", measurement, field, n, want)
		}
		return nil
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
