// Package app wires the gateway. Start brings the components up in data-flow
// order, so that nothing is accepted before the place it goes to exists:
//
//  1. local influxd (influx.local.enabled), InfluxDB credentials, the
//     database (create_database; bounded, a failure only warns) and the
//     InfluxDB writer;
//  2. the spool (replays what a previous run left);
//  3. the NATS bus (embedded server, or a connection to an external one);
//  4. the device registry;
//  5. the sinks (InfluxDB with the live hub, events to NATS), running;
//  6. the broker with the ingest hook: MQTT listeners open here;
//  7. services, dashboard, OCPP (each if enabled; they mount on the HTTP
//     mux, OCPP opens its own listener);
//  8. the HTTP operations listener; then the gateway is ready.
//
// Close stops them in the order that keeps the delivery guarantee (nothing
// acknowledged is lost; what is not yet stored stays in the spool):
//
//  1. device-facing ingress: the broker (MQTT listeners and clients), then
//     OCPP, the dashboard and the services;
//  2. the spool is synced, the sinks drain it into InfluxDB and NATS
//     (bounded by DrainTimeout) and stop;
//  3. the HTTP listener (it serves /metrics and /readyz during the drain);
//  4. the spool, the InfluxDB writer, the components' NATS connections, the
//     NATS bus (drained), the local influxd.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/telegate/telegate/broker"
	"github.com/telegate/telegate/broker/registry"
	"github.com/telegate/telegate/gateway/cluster/presence"
	"github.com/telegate/telegate/gateway/config"
	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/influx/localserver"
	"github.com/telegate/telegate/gateway/ingest"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/sink"
	"github.com/telegate/telegate/gateway/sink/eventsink"
	"github.com/telegate/telegate/gateway/sink/influxsink"
	"github.com/telegate/telegate/gateway/sink/live"
	"github.com/telegate/telegate/gateway/spool"
)

// DrainTimeout bounds how long shutdown waits for the sinks to flush the
// spool. Whatever is left stays in the spool and is replayed at next start.
const DrainTimeout = 20 * time.Second

// App is a running gateway.
type App struct {
	cfg      config.Config
	log      *slog.Logger
	reg      *prometheus.Registry
	m        *metrics.Metrics
	proc     *localserver.Server
	writer   *influx.Writer
	spool    *spool.Spool
	bus      *natsbus.Bus
	devices  *registry.Registry
	broker   *broker.Broker
	isink    *influxsink.Sink
	esink    *eventsink.Sink
	http     *http.Server
	mux      *http.ServeMux
	live     *live.Hub
	ext      extensions
	natsc    natsClients
	httpLn   net.Listener
	sinkStop context.CancelFunc
	drain    context.CancelFunc
	sinkWG   sync.WaitGroup
	// jsSources are the influx and events sinks' JetStream sources in the
	// jetstream durability mode (nil otherwise); set by Start, closed by
	// the sink goroutines when their runner returns.
	jsSources [2]*sink.JetStreamSource
	once      sync.Once
	ready     chan struct{}
	presence  *presence.Presence // session claims across replicas
	replica   string             // this process's replica id (presence)
	reloadNC  *natsbus.Client    // the broker role's connection (presence claims, reload requests)
}

// New prepares a gateway for cfg (validated by config.Load; New does not
// check it again) and its metrics registry; Start brings it up.
func New(cfg config.Config, log *slog.Logger) *App {
	if log == nil {
		log = slog.Default()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &App{cfg: cfg, log: log, reg: reg, m: metrics.New(reg), ready: make(chan struct{})}
}

// Start starts every component in the order of the package comment. On
// error, whatever was started is stopped (Close).
func (a *App) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	c := a.cfg
	// 1. InfluxDB: local server, credentials, database, writer.
	if c.Influx.Local.Enabled {
		a.proc, err = localserver.Start(ctx, c.Influx.Local.ServerConfig(c.Influx.Database), a.log)
		if err != nil {
			return err
		}
	}
	if err := a.resolveInfluxAuth(); err != nil {
		return err
	}
	if a.ext.influxAuth.ep.CreateDatabase {
		if err := a.ensureDatabase(ctx); err != nil {
			return err
		}
	}
	a.writer, err = influx.NewWriter(influx.Config{URL: c.Influx.URL, Token: a.ext.influxAuth.write,
		Org: a.ext.influxAuth.ep.WriteOrg, Bucket: a.ext.influxAuth.ep.WriteBucket, Timeout: c.Influx.Timeout, Precision: time.Nanosecond}, a.log)
	if err != nil {
		return fmt.Errorf("influx writer: %w", err)
	}
	// 2. Spool.
	so := c.Spool.Options()
	so.Dir = filepath.Join(c.DataDir, "spool")
	so.Consumers = []string{influxsink.ConsumerName, eventsink.ConsumerName}
	so.MaxRecord = int(c.MQTT.MaxPacketSize) + 4096
	so.Logger = a.log.With("component", "spool")
	a.spool, err = spool.Open(so)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	// 3. NATS bus.
	nc := natsbus.Config{Settings: c.NATS, Ingest: a.ingestStream()}
	if nc.Embedded.StoreDir == "" {
		nc.Embedded.StoreDir = filepath.Join(c.DataDir, "nats")
	}
	a.bus, err = natsbus.Open(ctx, nc,
		a.log.With("component", "nats"))
	if err != nil {
		return err
	}
	// 4. Device registry.
	a.devices, err = registry.Load(c.DevicesFile)
	if err != nil {
		return fmt.Errorf("device registry: %w", err)
	}
	// Parsing a large registry leaves its YAML garbage behind (about
	// 250 MiB for 100,000 devices), which would stay in RSS until the
	// first collection, up to two minutes later: return it now, once.
	debug.FreeOSMemory()

	// 5. Sinks, running from here on.
	icons, econs, err := a.sinkSources(ctx)
	if err != nil {
		return err
	}
	events, err := a.natsClient(natsbus.RoleEvents)
	if err != nil {
		return err
	}
	kv, err := events.JetStream().KeyValue(ctx, natsbus.BucketDTCState)
	if err != nil {
		return fmt.Errorf("dtc state bucket: %w", err)
	}
	icfg := influxsink.Config{Settings: c.Influx.Settings}
	if a.ext.influxAuth.ep.CreateDatabase {
		icfg.EnsureDB = a.createDatabase
	}
	a.isink = influxsink.New(icfg, icons, a.writer, a.m, a.log.With("component", "influxsink"))
	a.live = live.New()
	a.isink.SetLive(a.live)
	a.esink = eventsink.New(econs, events, eventsink.KVStore{KV: kv}, a.deviceKind, a.m, a.log.With("component", "eventsink"))
	sinkCtx, sinkStop := context.WithCancel(context.Background())
	drainCtx, drain := context.WithCancel(context.Background())
	a.sinkStop, a.drain = sinkStop, drain
	if a.jsDurable() {
		// Shared consumers: what this replica leaves is another's work,
		// so there is no drain; what it holds is handed back (Nak).
		a.runSink("influx", func() error { defer a.jsSources[0].Close(); return a.isink.Run(sinkCtx, nil) })
		a.runSink("events", func() error { defer a.jsSources[1].Close(); return a.esink.Run(sinkCtx, nil) })
	} else {
		a.runSink("influx", func() error { return a.isink.Run(sinkCtx, drainCtx) })
		a.runSink("events", func() error { return a.esink.Run(sinkCtx, drainCtx) })
	}

	// 6. Broker with the ingest hook; its listeners open at broker.Start.
	a.broker, err = broker.New(c.MQTT, a.devices, a.log.With("component", "broker"))
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	durable, err := a.durable()
	if err != nil {
		return err
	}
	hook := ingest.New(durable, ingest.NewValidator(c.Ingest.MinTime(), c.Ingest.MaxClockSkew, nil), a.m,
		a.broker.Logger().With("component", "ingest")) // rejections rate-limited per device
	hook.SetServer(a.broker.Server())
	hook.SetDeviceCheck(a.broker.Allowed) // no Will stored for a revoked device
	if err := a.broker.AddHook(hook, nil); err != nil {
		return fmt.Errorf("ingest hook: %w", err)
	}
	if err := a.startPresence(ctx); err != nil {
		return err
	}
	a.registerGauges()
	a.mux = http.NewServeMux()
	if err := a.broker.Start(); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	// 7. Services, dashboard, OCPP.
	if c.Services.Enabled {
		if err := a.startServices(ctx); err != nil {
			return fmt.Errorf("services: %w", err)
		}
	}
	if c.Dashboard.Enabled {
		if err := a.startDashboard(ctx); err != nil {
			return fmt.Errorf("dashboard: %w", err)
		}
	}
	if c.OCPP.Enabled {
		if err := a.startOCPP(); err != nil {
			return fmt.Errorf("ocpp: %w", err)
		}
	}
	// 8. HTTP operations listener.
	if err := a.startHTTP(); err != nil {
		return err
	}
	close(a.ready)
	a.log.Info("gateway started", "mqtt", a.broker.Addr("tcp"), "ws", a.broker.Addr("ws"), "http", a.HTTPAddr(),
		"nats", a.bus.URL(), "influx", c.Influx.URL, "bucket", c.Influx.Bucket())
	return nil
}

func (a *App) runSink(name string, run func() error) {
	a.sinkWG.Add(1)
	go func() {
		defer a.sinkWG.Done()
		if err := run(); err != nil {
			a.log.Error("sink stopped", "sink", name, "err", err)
		}
	}()
}

// ensureDatabase creates the InfluxDB database once at start-up, bounded to
// a few seconds. InfluxDB being down must not delay ingestion: frames spool
// until it is reachable, and the sink creates the database when a write
// reports that it is missing.
func (a *App) ensureDatabase(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.createDatabase(cctx); err != nil {
		a.log.Warn("InfluxDB database not ensured at start-up; the sink retries when InfluxDB answers", "err", err)
	}
	return nil
}

func (a *App) deviceKind(id string) string {
	if d, ok := a.devices.Lookup(id); ok {
		return string(d.Kind)
	}
	return "vehicle"
}

// ReloadDevices re-reads the device registry file. Removed, disabled,
// rotated or kind-changed devices are disconnected at once; others keep
// their sessions.
//
// The other replicas sharing this NATS are then told to reload theirs
// (presence.RequestReload, a put into the sessions bucket they watch, so a
// replica disconnected at that moment gets it on reconnect): each reads
// its own devices_file, so the file must be the same everywhere (shared
// volume or config management).
func (a *App) ReloadDevices() error {
	if a.broker == nil {
		return nil
	}
	err := a.reloadLocal()
	if err == nil && a.presence != nil {
		err = a.presence.RequestReload(context.Background())
	}
	return err
}

func (a *App) reloadLocal() error {
	err := a.broker.Reload()
	a.ocppRevalidate()
	return err
}

// Live is the hub of freshly stored telemetry frames.
func (a *App) Live() *live.Hub { return a.live }

// Broker is the embedded broker (for tests and the services).
func (a *App) Broker() *broker.Broker { return a.broker }

// Bus is the NATS bus.
func (a *App) Bus() *natsbus.Bus { return a.bus }

// Spool is the durable spool.
func (a *App) Spool() *spool.Spool { return a.spool }

// Metrics are the gateway's metrics.
func (a *App) Metrics() *metrics.Metrics { return a.m }

// Registry is the Prometheus registry.
func (a *App) Registry() *prometheus.Registry { return a.reg }

// Run starts the gateway, blocks until ctx is cancelled, then shuts down.
func (a *App) Run(ctx context.Context) error {
	if err := a.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return a.Close()
}

// Close shuts down in the order of the package comment: ingress (broker,
// OCPP, dashboard, services), spool sync and sink drain (bounded by
// DrainTimeout), HTTP, spool, InfluxDB writer, NATS connections and bus,
// local influxd. Safe to call more than once.
func (a *App) Close() error {
	var errs []error
	a.once.Do(func() {
		a.log.Info("gateway shutting down")
		if a.broker != nil {
			errs = append(errs, a.broker.Close())
		}
		if a.presence != nil {
			a.presence.Close()
		}
		a.closeOCPP()
		a.closeDashboard()
		a.closeServices()
		if a.spool != nil {
			errs = append(errs, a.spool.Sync())
		}
		if a.sinkStop != nil {
			t := time.AfterFunc(DrainTimeout, a.drain)
			a.sinkStop()
			a.sinkWG.Wait()
			t.Stop()
			a.drain()
		}
		if a.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			errs = append(errs, a.http.Shutdown(ctx))
			cancel()
		}
		if a.spool != nil {
			errs = append(errs, a.spool.Close())
		}
		if a.writer != nil {
			a.writer.Close()
		}
		a.closeNATSClients()
		if a.bus != nil {
			errs = append(errs, a.bus.Close())
		}
		if a.proc != nil {
			a.proc.Stop()
		}
		a.log.Info("gateway stopped")
	})
	return errors.Join(errs...)
}
