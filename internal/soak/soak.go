// Package soak runs the gateway under load and periodic faults for a
// chosen duration and reports whether any acknowledged frame was lost.
//
// It starts a real InfluxDB (bin/influxd) and the gateway binary as child
// processes, drives them with two kinds of load, and injects faults in
// turn: InfluxDB stopped and restarted, the gateway killed with SIGKILL and
// restarted on the same data directory, and bursts of hostile connections.
//
//   - Verified publishers: vehicles publishing QoS 1 telemetry with
//     sequence numbers 1, 2, 3, ..., each frame resent until acknowledged.
//     At the end every vehicle's stored points must be exactly its
//     acknowledged frames (count and sum of sequence numbers): that is the
//     "lost" figure, which must be 0.
//   - The firmware-sim fleet (vehicles and chargers, all topics) as
//     realistic background load; its acknowledged telemetry frames must
//     all be stored too (checked as a count: stored >= acknowledged).
//
// An exit of the gateway or InfluxDB that the runner did not cause is a
// crash; crashes must be 0. The report also gives the gateway's largest
// resident set size and the largest spool backlog seen on /metrics.
package soak

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/influx/query"
)

// Errors returned by Run.
var (
	// ErrConfig means the Config is unusable.
	ErrConfig = errors.New("soak: invalid config")
	// ErrFailed means the run completed but lost frames or saw crashes.
	ErrFailed = errors.New("soak: acknowledged frames lost or processes crashed")
)

// FleetKey derives the device secrets of the soak fleet.
const FleetKey = "soak-fleet-key"

// VIN prefixes of the two loads (each VIN is prefix + zero-padded index).
const (
	VerifiedPrefix = "TGSVS"
	SimPrefix      = "TGSSK"
)

// Config configures a soak run. Zero fields take the defaults noted.
type Config struct {
	Duration    time.Duration // load and faults; default 2 min
	FaultEvery  time.Duration // one fault per period, in turn; default Duration/8, at least 3 s
	Outage      time.Duration // InfluxDB outage length; default min(FaultEvery/2, 10 s)
	Vehicles    int           // verified publishers; default 10
	Interval    time.Duration // between a verified publisher's frames; default 20 ms
	SimVehicles int           // firmware-sim vehicles; default 20
	SimChargers int           // firmware-sim chargers; default 2
	HostileConn int           // connections per hostile burst; default 200

	GatewayBin string // gateway binary; default <module>/bin/gateway, built if missing
	InfluxdBin string // influxd binary; default $INFLUXD or <module>/bin/influxd
	Dir        string // work directory; default a temporary one, removed at the end
	Logger     *slog.Logger
}

func (c *Config) defaults() error {
	if c.Duration == 0 {
		c.Duration = 2 * time.Minute
	}
	if c.FaultEvery == 0 {
		c.FaultEvery = max(c.Duration/8, 3*time.Second)
	}
	if c.Outage == 0 {
		c.Outage = min(c.FaultEvery/2, 10*time.Second)
	}
	if c.Vehicles == 0 {
		c.Vehicles = 10
	}
	if c.Interval == 0 {
		c.Interval = 20 * time.Millisecond
	}
	if c.SimVehicles == 0 {
		c.SimVehicles = 20
	}
	if c.SimChargers == 0 {
		c.SimChargers = 2
	}
	if c.HostileConn == 0 {
		c.HostileConn = 200
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.Duration < 0 || c.FaultEvery < 0 || c.Outage < 0 || c.Interval < 0:
		return fmt.Errorf("%w: negative duration", ErrConfig)
	case c.Vehicles < 1 || c.SimVehicles < 0 || c.SimChargers < 0 || c.HostileConn < 0:
		return fmt.Errorf("%w: bad counts", ErrConfig)
	case c.Vehicles > 99999 || c.SimVehicles > 99999:
		return fmt.Errorf("%w: too many vehicles", ErrConfig)
	}
	return nil
}

// Report is the outcome of a run.
type Report struct {
	Duration time.Duration

	FramesSent   int64 // verified publishers: publish attempts, resends included
	FramesAcked  int64 // verified publishers: frames acknowledged
	FramesStored int64 // verified publishers: points in InfluxDB
	Lost         int64 // acknowledged verified frames missing from InfluxDB, plus sim shortfall

	SimSent, SimAcked   int64 // firmware-sim publishes (all topics)
	SimTelemetryAcked   int64
	SimTelemetryStored  int64
	SimConnectionLosses int64

	Crashes          int // unexpected gateway or InfluxDB exits
	InfluxOutages    int
	GatewayKills     int
	HostileBursts    int
	HostileConns     int
	MaxGatewayRSS    int64 // bytes
	MaxSpoolPending  int64 // bytes, from telegate_spool_pending_bytes
	GatewayRestarts  int   // after kills and crashes
	VerificationNote string
}

// OK reports whether nothing was lost and nothing crashed.
func (r Report) OK() bool { return r.Lost == 0 && r.Crashes == 0 }

// Print writes the report as an aligned text table.
func (r Report) Print(w io.Writer) {
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	rows := [][2]string{
		{"duration", r.Duration.Round(time.Second).String()},
		{"frames sent (verified, incl. resends)", fmt.Sprint(r.FramesSent)},
		{"frames acknowledged (verified)", fmt.Sprint(r.FramesAcked)},
		{"frames stored (verified, InfluxQL count)", fmt.Sprint(r.FramesStored)},
		{"sim publishes sent / acknowledged", fmt.Sprintf("%d / %d", r.SimSent, r.SimAcked)},
		{"sim telemetry acknowledged / stored", fmt.Sprintf("%d / %d", r.SimTelemetryAcked, r.SimTelemetryStored)},
		{"faults: InfluxDB outages", fmt.Sprint(r.InfluxOutages)},
		{"faults: gateway kill -9", fmt.Sprint(r.GatewayKills)},
		{"faults: hostile bursts (connections)", fmt.Sprintf("%d (%d)", r.HostileBursts, r.HostileConns)},
		{"max gateway RSS", mib(r.MaxGatewayRSS)},
		{"max spool pending", mib(r.MaxSpoolPending)},
		{"LOST", fmt.Sprint(r.Lost)},
		{"CRASHES", fmt.Sprint(r.Crashes)},
	}
	fmt.Fprintln(w, "soak report")
	for _, row := range rows {
		fmt.Fprintf(w, "  %-40s %s\n", row[0], row[1])
	}
	if r.VerificationNote != "" {
		fmt.Fprintf(w, "  note: %s\n", r.VerificationNote)
	}
	if r.OK() {
		fmt.Fprintln(w, "  result: PASS (0 lost, 0 crashes)")
	} else {
		fmt.Fprintln(w, "  result: FAIL")
	}
}

// Run performs a soak run. It returns the report and, when frames were
// lost or a process crashed, an error wrapping ErrFailed; other errors mean
// the run could not be carried out.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.defaults(); err != nil {
		return Report{}, err
	}
	log := cfg.Logger
	root, rootErr := moduleRoot()
	if cfg.InfluxdBin == "" {
		cfg.InfluxdBin = os.Getenv("INFLUXD")
		if cfg.InfluxdBin == "" && rootErr == nil {
			cfg.InfluxdBin = filepath.Join(root, "bin", "influxd")
		}
	}
	if _, err := os.Stat(cfg.InfluxdBin); err != nil {
		return Report{}, fmt.Errorf("%w: influxd %q: %w (run `make influxd`)", ErrConfig, cfg.InfluxdBin, err)
	}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "telegate-soak-")
		if err != nil {
			return Report{}, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	if cfg.GatewayBin == "" {
		if rootErr != nil {
			return Report{}, rootErr
		}
		cfg.GatewayBin = filepath.Join(dir, "gateway")
		log.Info("building the gateway", "out", cfg.GatewayBin)
		cmd := exec.Command("go", "build", "-o", cfg.GatewayBin, "./cmd/gateway")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return Report{}, fmt.Errorf("soak: build gateway: %w\n%s", err, out)
		}
	}

	// Devices: the verified publishers and the sim fleet, one registry.
	verified, err := sim.Provision(sim.Config{Vehicles: cfg.Vehicles, VINPrefix: VerifiedPrefix, FleetKey: FleetKey}, 4)
	if err != nil {
		return Report{}, err
	}
	simCfg := sim.Config{Vehicles: cfg.SimVehicles, Chargers: cfg.SimChargers, VINPrefix: SimPrefix, FleetKey: FleetKey}
	var simDevices []sim.DeviceEntry
	if cfg.SimVehicles+cfg.SimChargers > 0 {
		if simDevices, err = sim.Provision(simCfg, 4); err != nil {
			return Report{}, err
		}
	}
	devicesFile := filepath.Join(dir, "devices.yaml")
	if err := sim.WriteRegistry(devicesFile, append(verified, simDevices...)); err != nil {
		return Report{}, err
	}

	// Processes.
	influxDir := filepath.Join(dir, "influx")
	if err := os.MkdirAll(influxDir, 0o700); err != nil {
		return Report{}, err
	}
	in, influxURL, err := newInflux(cfg.InfluxdBin, influxDir)
	if err != nil {
		return Report{}, err
	}
	if err := in.start(ctx); err != nil {
		return Report{}, err
	}
	defer in.halt(syscall.SIGTERM)
	// Authentication is on (influx.ServerEnv): admin, gateway writer and
	// read-only users, kept in a 0600 file the gateway reads.
	credsFile := filepath.Join(influxDir, "credentials.json")
	creds, err := influx.LoadOrCreateCredentials(credsFile, "telemetry")
	if err != nil {
		return Report{}, fmt.Errorf("soak: %w", err)
	}
	if err := influx.SetupAuth(ctx, influxURL, creds); err != nil {
		return Report{}, fmt.Errorf("soak: users and database: %w", err)
	}
	gw, mqttAddr, httpAddr, err := newGateway(cfg.GatewayBin, dir, devicesFile, influxURL, credsFile)
	if err != nil {
		return Report{}, err
	}
	var rep Report
	var restarts atomic.Int64
	gw.onCrash = func(err error) {
		log.Error("gateway exited unexpectedly: restarting", "error", err, "log", gw.logPath)
		if err := gw.start(context.Background()); err != nil {
			log.Error("gateway restart after crash failed", "error", err)
			return
		}
		restarts.Add(1)
	}
	in.onCrash = func(err error) { log.Error("influxd exited unexpectedly", "error", err, "log", in.logPath) }
	if err := gw.start(ctx); err != nil {
		return Report{}, err
	}
	defer gw.halt(syscall.SIGINT)
	log.Info("soak started", "duration", cfg.Duration, "fault_every", cfg.FaultEvery, "dir", dir,
		"mqtt", mqttAddr, "http", httpAddr, "influx", influxURL)

	// Sampling: RSS and spool backlog.
	began := time.Now()
	sampleStop := make(chan struct{})
	var sampleWG sync.WaitGroup
	var maxRSS, maxPending atomic.Int64
	sampleWG.Go(func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sampleStop:
				return
			case <-t.C:
			}
			if r := rssBytes(gw.pid()); r > maxRSS.Load() {
				maxRSS.Store(r)
			}
			if p, err := scrapeMetric("http://"+httpAddr+"/metrics", "telegate_spool_pending_bytes"); err == nil && int64(p) > maxPending.Load() {
				maxPending.Store(int64(p))
			}
		}
	})

	// Load.
	vins := make([]string, cfg.Vehicles)
	for i := range vins {
		vins[i] = sim.VIN(VerifiedPrefix, i+1)
	}
	pubs := startPublishers("tcp://"+mqttAddr, FleetKey, vins, cfg.Interval)
	var fleet *sim.Fleet
	simDone := make(chan error, 1)
	if cfg.SimVehicles+cfg.SimChargers > 0 {
		simCfg.Broker = "tcp://" + mqttAddr
		simCfg.TelemetryInterval = 200 * time.Millisecond
		simCfg.DiagInterval = 5 * time.Second
		simCfg.Duration = cfg.Duration
		simCfg.MaxReconnect = time.Second
		simCfg.DrainTimeout = 30 * time.Second
		simCfg.ChargeEvery = 10 * time.Second
		simCfg.Logger = slog.New(slog.DiscardHandler)
		if fleet, err = sim.New(simCfg); err != nil {
			return Report{}, err
		}
		go func() { simDone <- fleet.Run(ctx) }()
	} else {
		simDone <- nil
	}

	// Faults, in turn, until the duration is over, and each kind at least
	// once even when a slow machine makes one fault outlast the duration
	// (a short soak must still exercise every fault).
	const kinds = 3
	deadline := time.Now().Add(cfg.Duration)
	for n := 0; ; n++ {
		if n >= kinds && time.Until(deadline) <= 0 {
			break
		}
		wait := max(0, min(cfg.FaultEvery, time.Until(deadline)))
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(wait):
		}
		switch n % kinds {
		case 0:
			log.Info("fault: InfluxDB outage", "length", cfg.Outage)
			in.halt(syscall.SIGTERM)
			time.Sleep(cfg.Outage)
			if err := in.start(ctx); err != nil {
				return rep, err
			}
			rep.InfluxOutages++
		case 1:
			log.Info("fault: gateway kill -9")
			gw.halt(syscall.SIGKILL)
			if err := gw.start(ctx); err != nil {
				return rep, err
			}
			rep.GatewayKills++
			restarts.Add(1)
		case 2:
			made := hostileBurst(mqttAddr, cfg.HostileConn)
			log.Info("fault: hostile connections", "connections", made)
			rep.HostileBursts++
			rep.HostileConns += made
		}
	}

	// Stop the load, then verify.
	pubs.finish()
	simErr := <-simDone
	if simErr != nil && !errors.Is(simErr, sim.ErrUnacked) {
		log.Warn("sim fleet ended with an error", "error", simErr)
	}
	close(sampleStop)
	sampleWG.Wait()
	rep.Duration = time.Since(began)
	rep.FramesSent = pubs.sent.Load()
	rep.FramesAcked = pubs.totalAcked()
	rep.MaxGatewayRSS = maxRSS.Load()
	rep.MaxSpoolPending = maxPending.Load()
	rep.GatewayRestarts = int(restarts.Load())
	if fleet != nil {
		s := fleet.Summary()
		rep.SimSent, rep.SimAcked = s.Sent, s.Acked
		rep.SimTelemetryAcked = s.Topics["telemetry"].Acked
		rep.SimConnectionLosses = s.ConnectionLosses
		fleet.Close()
	}
	log.Info("load stopped, verifying", "acked", rep.FramesAcked)
	if err := verify(ctx, influxURL, creds.Reader.Token(), pubs, began, &rep); err != nil {
		return rep, err
	}
	rep.Crashes = gw.crashCount() + in.crashCount()
	if !rep.OK() {
		return rep, ErrFailed
	}
	return rep, nil
}

// verify waits (bounded) for InfluxDB to hold every acknowledged frame,
// then computes the verified and sim figures and rep.Lost.
func verify(ctx context.Context, url, token string, pubs *publishers, began time.Time, rep *Report) error {
	r := query.New(query.Config{URL: url, Database: "telemetry", RetentionPolicy: "autogen", Token: token,
		Client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute}})
	defer r.Close()
	// fn(seq) per vehicle whose VIN starts with prefix (InfluxQL: count, sum).
	perVIN := func(prefix string, since time.Time, fn string) (map[string]int64, error) {
		q := fmt.Sprintf(`SELECT %s("seq") FROM "telemetry" WHERE time >= %s AND "vin" =~ %s GROUP BY "vin"`,
			fn, query.Time(since.Truncate(time.Second)), query.Prefix(prefix))
		series, err := r.Series(ctx, q)
		if err != nil {
			return nil, err
		}
		out := map[string]int64{}
		for _, se := range series {
			for _, row := range se.Rows() {
				if f, ok := query.Float(row[fn]); ok {
					out[se.Tags["vin"]] = int64(f)
				}
			}
		}
		return out, nil
	}

	want := map[string]int64{}
	for i, vin := range pubs.vins {
		want[vin] = pubs.acked[i].Load()
	}
	since := pubs.base.Add(-time.Minute)
	deadline := time.Now().Add(3 * time.Minute)
	var counts, sums map[string]int64
	for {
		var err error
		counts, err = perVIN(VerifiedPrefix, since, "count")
		if err == nil {
			complete := true
			for vin, n := range want {
				complete = complete && counts[vin] >= n
			}
			if complete {
				break
			}
		}
		if time.Now().After(deadline) {
			rep.VerificationNote = "InfluxDB did not catch up within 3 min of the end"
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	sums, err := perVIN(VerifiedPrefix, since, "sum")
	if err != nil {
		return fmt.Errorf("soak: influxql sum: %w", err)
	}
	for vin, n := range want {
		rep.FramesStored += counts[vin]
		missing := max(0, n-counts[vin])
		if missing == 0 && sums[vin] != n*(n+1)/2 {
			missing = 1 // a duplicate hides a gap: at least one frame is missing
		}
		rep.Lost += missing
	}

	// The sim fleet's telemetry, as a total count since the run began.
	if rep.SimTelemetryAcked > 0 {
		for {
			c, err := perVIN(SimPrefix, began.Add(-time.Hour), "count")
			if err != nil {
				return fmt.Errorf("soak: flux count: %w", err)
			}
			var total int64
			for _, n := range c {
				total += n
			}
			rep.SimTelemetryStored = total
			if total >= rep.SimTelemetryAcked || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		rep.Lost += max(0, rep.SimTelemetryAcked-rep.SimTelemetryStored)
	}
	return nil
}

// scrapeMetric reads one unlabelled sample from a Prometheus text endpoint.
func scrapeMetric(url, name string) (float64, error) {
	hc := http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("soak: metric %s not found", name)
}
