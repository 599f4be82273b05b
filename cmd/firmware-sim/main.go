// Command firmware-sim simulates a fleet of connected cars and EV chargers
// publishing to the telematics gateway over MQTT.
//
//	firmware-sim run       [flags]  run the fleet until interrupted (or -duration / -frames)
//	firmware-sim load      [flags]  bounded load run with a progress line and a summary;
//	                                exits 1 if fewer publishes were acked than sent
//	firmware-sim provision [flags]  write the device registry (bcrypt hashes of the secrets)
//
// Every flag can also be set from the environment as FLEETSIM_<FLAG>, with
// dashes as underscores (FLEETSIM_BROKER, FLEETSIM_FLEET_KEY, ...); a flag on
// the command line wins. Prefer FLEETSIM_FLEET_KEY over -fleet-key: command
// lines are visible to other users of the machine.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	simocpp "github.com/telegate/telegate/firmware-sim/ocpp"
	"github.com/telegate/telegate/firmware-sim/sim"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

const usage = `usage: firmware-sim <run|load|provision> [flags]
  run        run the fleet until interrupted, -duration or -frames
  load       bounded load run (needs -duration or -frames), progress on stderr,
             summary on stdout, exit status 1 if acked < sent
  provision  write the gateway's device registry (-out devices.yaml)
Run "firmware-sim <command> -h" for the flags. Flags may also be set as
FLEETSIM_<FLAG> environment variables (e.g. FLEETSIM_FLEET_KEY).
`

// run executes the command line and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = runFleet(args[1:], false, stdout, stderr)
	case "load":
		err = runFleet(args[1:], true, stdout, stderr)
	case "provision":
		err = provision(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "firmware-sim: unknown command %q\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "firmware-sim: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "firmware-sim: %v\n", err)
		return 1
	}
}

var (
	errUsage   = errors.New("usage")
	errUnacked = errors.New("load: fewer publishes acked than sent")
)

// fleetFlags binds the flags of run and load to a Config.
type fleetFlags struct {
	cfg      sim.Config
	ocpp     simocpp.FleetConfig
	qos      uint
	refuse   string
	caFile   string
	logLevel string
	logJSON  bool
}

func (ff *fleetFlags) register(fs *flag.FlagSet, load bool) {
	c := &ff.cfg
	interval := sim.DefaultTelemetryInterval
	if load {
		interval = 20 * time.Millisecond
	}
	fs.Var(&brokerFlag{list: &c.Brokers}, "broker",
		"broker URL (tcp://, ssl://, ws://, wss://); several gateway replicas as a comma-separated list or a repeated flag (default "+sim.DefaultBroker+")")
	fs.IntVar(&c.Vehicles, "vehicles", 10, "number of vehicles")
	fs.IntVar(&c.Chargers, "chargers", 2, "number of charging stations")
	fs.StringVar(&c.VINPrefix, "vin-prefix", sim.DefaultVINPrefix, "VIN prefix (VINs are zero-padded to 17 characters)")
	fs.StringVar(&c.StationPrefix, "station-prefix", sim.DefaultStationPrefix, "station id prefix (CS -> CS-0001)")
	fs.StringVar(&c.FleetKey, "fleet-key", "", "fleet key deriving the device secrets (prefer FLEETSIM_FLEET_KEY)")
	fs.DurationVar(&c.TelemetryInterval, "interval", interval, "telemetry interval per vehicle")
	fs.DurationVar(&c.DiagInterval, "diag-interval", sim.DefaultDiagInterval, "diagnostics report interval per vehicle")
	fs.IntVar(&c.SignalsPerFrame, "signals", sim.NumSignals, "signals per telemetry frame (1..36; fewer rotate)")
	fs.UintVar(&ff.qos, "qos", sim.DefaultQoS, "publish QoS (0 or 1)")
	fs.DurationVar(&c.Duration, "duration", 0, "stop after this long (0 = until interrupted)")
	fs.IntVar(&c.Frames, "frames", 0, "stop after this many telemetry frames in total (0 = unlimited)")
	fs.Int64Var(&c.Seed, "seed", 1, "random seed (the fleet is deterministic per seed)")
	fs.Float64Var(&c.DTCProbability, "dtc-prob", 0.05, "chance per diag report to raise a new DTC")
	fs.DurationVar(&c.ChargeEvery, "charge-every", sim.DefaultChargeEvery, "mean idle time between a charger's sessions")
	fs.DurationVar(&c.SessionInterval, "session-interval", sim.DefaultSessionInterval, "charging session meter update interval")
	fs.Float64Var(&c.ChargeSpeedup, "charge-speedup", 1, "simulated charging seconds per wall-clock second")
	fs.Float64Var(&c.TimeScale, "time-scale", 1, "simulated driving seconds per wall-clock second")
	fs.StringVar(&ff.refuse, "refuse", "", "comma-separated command names the vehicles reject")
	fs.Float64Var(&c.RefuseProbability, "refuse-prob", 0, "chance that a vehicle rejects any command")
	fs.BoolVar(&c.ShareLocation, "share-location", false, "add positions to ignition events and send location events")
	fs.IntVar(&c.ConnectRate, "connect-rate", sim.DefaultConnectRate, "max new connections per second")
	fs.IntVar(&c.InflightPerDevice, "inflight", sim.DefaultInflightPerDevice, "max unacked QoS 1 publishes per device")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", sim.DefaultConnectTimeout, "MQTT connect timeout")
	fs.DurationVar(&c.MaxReconnect, "max-reconnect", sim.DefaultMaxReconnect, "max reconnect backoff")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", sim.DefaultDrainTimeout, "how long to wait for outstanding acks at the end")
	fs.StringVar(&ff.ocpp.URL, "ocpp-url", simocpp.DefaultURL, "OCPP central system URL (ws:// or wss://; the station id is appended)")
	fs.IntVar(&ff.ocpp.V16, "ocpp16", 0, "number of OCPP 1.6J charging stations")
	fs.IntVar(&ff.ocpp.V201, "ocpp201", 0, "number of OCPP 2.0.1 charging stations (numbered after the 1.6J ones)")
	fs.StringVar(&ff.ocpp.Prefix, "ocpp-prefix", simocpp.DefaultPrefix, "OCPP station id prefix (OCPP -> OCPP-0001)")
	fs.StringVar(&ff.caFile, "ca-file", "", "PEM CA bundle for ssl:// and wss:// brokers (default: system roots)")
	fs.StringVar(&ff.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&ff.logJSON, "log-json", false, "log JSON instead of text")
}

// brokerFlag collects -broker URLs: comma-separated, the flag repeatable.
type brokerFlag struct {
	list *[]string // the Config's Brokers, owned by the flag set while parsing
}

func (b *brokerFlag) String() string {
	if b.list == nil {
		return ""
	}
	return strings.Join(*b.list, ",")
}

func (b *brokerFlag) Set(v string) error {
	for _, u := range strings.Split(v, ",") {
		if u = strings.TrimSpace(u); u != "" {
			*b.list = append(*b.list, u)
		}
	}
	return nil
}

// config finishes the Config after parsing.
func (ff *fleetFlags) config(stderr io.Writer) (sim.Config, error) {
	c := ff.cfg
	switch ff.qos {
	case 0:
		c.QoSZero = true
	case 1:
		c.QoS = 1
	default:
		return c, fmt.Errorf("%w: -qos %d: want 0 or 1", errUsage, ff.qos)
	}
	for _, n := range strings.Split(ff.refuse, ",") {
		if n = strings.TrimSpace(n); n != "" {
			c.RefuseCommands = append(c.RefuseCommands, n)
		}
	}
	if ff.caFile != "" {
		pem, err := os.ReadFile(ff.caFile)
		if err != nil {
			return c, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return c, fmt.Errorf("%w: -ca-file %s: no PEM certificates", errUsage, ff.caFile)
		}
		c.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(ff.logLevel)); err != nil {
		return c, fmt.Errorf("%w: -log-level: %w", errUsage, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	if ff.logJSON {
		c.Logger = slog.New(slog.NewJSONHandler(stderr, opts))
	} else {
		c.Logger = slog.New(slog.NewTextHandler(stderr, opts))
	}
	if ff.ocpp.V16 < 0 || ff.ocpp.V201 < 0 {
		return c, fmt.Errorf("%w: -ocpp16/-ocpp201 must be >= 0", errUsage)
	}
	// OCPP stations share the fleet key, seed, session pacing and CA; the
	// fleet's Plug & Charge contract ids (sim.ContractID, bound to the
	// owners in customers.yaml) are the id tags their drivers present.
	o := &ff.ocpp
	o.FleetKey, o.Seed, o.ChargeEvery, o.MeterInterval, o.ChargeSpeedup = c.FleetKey, c.Seed, c.ChargeEvery, c.SessionInterval, c.ChargeSpeedup
	o.TLS, o.Log = c.TLS, c.Logger
	for i := range c.Vehicles {
		o.IDTags = append(o.IDTags, sim.ContractID(c.FleetKey, sim.VIN(c.VINPrefix, i+1)))
	}
	return c, nil
}

// parse parses args, then fills every flag not given on the command line
// from FLEETSIM_<NAME> if set.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := "FLEETSIM_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && !given[f.Name] && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%w: %s: %w", errUsage, env, e)
			}
		}
	})
	return err
}

func runFleet(args []string, load bool, stdout, stderr io.Writer) error {
	name := "run"
	if load {
		name = "load"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var ff fleetFlags
	ff.register(fs, load)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := ff.config(stderr)
	if err != nil {
		return err
	}
	if load {
		if cfg.Duration == 0 && cfg.Frames == 0 {
			return fmt.Errorf("%w: load needs -duration or -frames", errUsage)
		}
		cfg.Progress = func(s sim.Summary) { fmt.Fprintln(stderr, progressLine(s)) }
	}
	f, err := sim.New(cfg)
	if err != nil {
		return err
	}
	defer f.Close()
	stations, err := simocpp.NewFleet(ff.ocpp)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal kills the process
	}()
	ocppCtx, ocppStop := context.WithCancel(ctx)
	ocppDone := make(chan struct{})
	go func() {
		defer close(ocppDone)
		simocpp.RunAll(ocppCtx, stations)
	}()
	runErr := f.Run(ctx)
	ocppStop() // stations stop their running transactions before they disconnect
	<-ocppDone
	s := f.Summary()
	if load {
		printSummary(stdout, s)
		if runErr == nil && s.Acked < s.Sent {
			runErr = fmt.Errorf("%w: sent %d, acked %d", errUnacked, s.Sent, s.Acked)
		}
	}
	return runErr
}

func progressLine(s sim.Summary) string {
	return fmt.Sprintf("%6.1fs conn %d/%d sent %d acked %d errors %d frames %d rate %.0f/s ack p50 %v p99 %v",
		s.Elapsed.Seconds(), s.Connected, s.Vehicles+s.Chargers, s.Sent, s.Acked, s.Errors, s.Frames, s.Rate,
		s.Latency.P50, s.Latency.P99)
}

func printSummary(w io.Writer, s sim.Summary) {
	fmt.Fprintf(w, "elapsed      %v\n", s.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "devices      %d vehicles, %d chargers (connects %d, reconnects %d)\n",
		s.Vehicles, s.Chargers, s.Connects, s.Reconnects)
	fmt.Fprintf(w, "sent         %d\n", s.Sent)
	fmt.Fprintf(w, "acked        %d\n", s.Acked)
	fmt.Fprintf(w, "errors       %d (publish %d, unacked %d, connect %d, connection lost %d, bad commands %d)\n",
		s.Errors, s.PublishErrors, s.Unacked, s.ConnectErrors, s.ConnectionLosses, s.BadCommands)
	fmt.Fprintf(w, "frames       %d telemetry frames, %.1f frames/s acked\n", s.Frames, s.Rate)
	fmt.Fprintf(w, "ack latency  p50 %v  p95 %v  p99 %v  max %v (%d samples)\n",
		s.Latency.P50, s.Latency.P95, s.Latency.P99, s.Latency.Max, s.Latency.Count)
	for _, k := range []string{"telemetry", "diag", "events", "cmd-ack", "session", "status"} {
		t := s.Topics[k]
		fmt.Fprintf(w, "  %-10s sent %d acked %d failed %d\n", k, t.Sent, t.Acked, t.Failed)
	}
}

func provision(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("provision", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg sim.Config
	var cost int
	var out string
	fs.IntVar(&cfg.Vehicles, "vehicles", 10, "number of vehicles")
	fs.IntVar(&cfg.Chargers, "chargers", 2, "number of charging stations")
	fs.StringVar(&cfg.VINPrefix, "vin-prefix", sim.DefaultVINPrefix, "VIN prefix")
	fs.StringVar(&cfg.StationPrefix, "station-prefix", sim.DefaultStationPrefix, "station id prefix")
	fs.StringVar(&cfg.FleetKey, "fleet-key", "", "fleet key deriving the device secrets (prefer FLEETSIM_FLEET_KEY)")
	var v16, v201 int
	var ocppPrefix string
	fs.IntVar(&v16, "ocpp16", 0, "number of OCPP 1.6J charging stations")
	fs.IntVar(&v201, "ocpp201", 0, "number of OCPP 2.0.1 charging stations")
	fs.StringVar(&ocppPrefix, "ocpp-prefix", simocpp.DefaultPrefix, "OCPP station id prefix")
	fs.IntVar(&cost, "cost", 0, "0: machine-secret hash (default, fast to verify); 4..31: bcrypt at that cost")
	fs.StringVar(&out, "out", "devices.yaml", "registry file to write")
	if err := parse(fs, args); err != nil {
		return err
	}
	start := time.Now()
	entries, err := sim.Provision(cfg, cost)
	if err != nil {
		return err
	}
	if v16 < 0 || v201 < 0 {
		return fmt.Errorf("%w: -ocpp16/-ocpp201 must be >= 0", errUsage)
	}
	if v16+v201 > 0 {
		// OCPP stations are chargers in the same registry (basic-auth
		// password = the same derived secret).
		oc := sim.Config{FleetKey: cfg.FleetKey, Chargers: v16 + v201, StationPrefix: ocppPrefix, VINPrefix: cfg.VINPrefix}
		more, err := sim.Provision(oc, cost)
		if err != nil {
			return err
		}
		entries = append(entries, more...)
	}
	if err := sim.WriteRegistry(out, entries); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d devices to %s in %v\n", len(entries), out, time.Since(start).Round(time.Millisecond))
	return nil
}
