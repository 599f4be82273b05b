package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/gateway/influx/query"
	"github.com/telegate/telegate/internal/testenv"
)

// BenchmarkEndToEndQoS1 drives the real gateway binary (a separate process,
// so its CPU can be read from /proc) with the fleet simulator publishing
// b.N QoS 1 telemetry frames as fast as acknowledgements allow, into a real
// InfluxDB, and reports:
//
//	frames/s         acked frames per second, measured until the last one is queryable
//	gw-cpu-µs/frame  gateway user+system CPU per frame
//	lost             acked frames missing from InfluxDB (must be 0)
//	p50/p99-ms       publish → queryable latency of probe frames sent during the load
//
// Run with: go test -run '^$' -bench EndToEnd -benchtime 30000x ./internal/e2e/ (make bench)
// Fleets come from TELEGATE_BENCH_VEHICLES (comma-separated, default
// "50,200,500@10,500@10/250ms"): N vehicles publishing as fast as PUBACKs
// allow, or N@HZ vehicles each paced at HZ frames per second (a nominal
// load, for latency below saturation); a "/DURATION" suffix runs the
// gateway with mqtt.read_batch DURATION. Each runs as a sub-benchmark with
// its own InfluxDB and gateway.
func BenchmarkEndToEndQoS1(b *testing.B) {
	sizes := os.Getenv("TELEGATE_BENCH_VEHICLES")
	if sizes == "" {
		sizes = "50,200,500@10,500@10/250ms"
	}
	for _, f := range strings.Split(sizes, ",") {
		f, batchs, batched := strings.Cut(strings.TrimSpace(f), "/")
		ns, hzs, paced := strings.Cut(f, "@")
		n, err := strconv.Atoi(ns)
		hz := 0
		if paced {
			hz, _ = strconv.Atoi(hzs)
		}
		var batch time.Duration
		if batched {
			batch, _ = time.ParseDuration(batchs)
		}
		if err != nil || n < 1 || (paced && hz < 1) || (batched && batch <= 0) {
			b.Fatalf("TELEGATE_BENCH_VEHICLES: bad fleet %q", f)
		}
		name := fmt.Sprintf("vehicles=%d", n)
		if paced {
			name += fmt.Sprintf("/%dHz", hz)
		}
		var o testenv.GatewayOptions
		if batched {
			name += "/read_batch=" + batch.String()
			o.MQTTCfg = ", read_batch: " + batch.String()
		}
		b.Run(name, func(b *testing.B) { benchEndToEnd(b, n, hz, o) })
	}
}

// BenchmarkEndToEndDurability is EndToEndQoS1 (saturating fleet of
// TELEGATE_BENCH_DURABILITY_VEHICLES, default 200) once per durability
// mode, side by side (docs/benchmarks.md):
//
//	spool          PUBACK after the local spool's fsync (group commit)
//	jetstream-R1   PUBACK after the gateway's embedded single-node JetStream
//	               stored the record (INGEST stream, R1; NATS runs inside
//	               the gateway process, so its CPU is in gw-cpu-µs/frame)
//	jetstream-R3   PUBACK after a quorum of a real 3-node cluster stored it
//	               (in the benchmark's process: gw-cpu-µs/frame excludes
//	               the NATS servers, nats-cpu-µs/frame is the test process)
func BenchmarkEndToEndDurability(b *testing.B) {
	n := 200
	if v, err := strconv.Atoi(os.Getenv("TELEGATE_BENCH_DURABILITY_VEHICLES")); err == nil && v > 0 {
		n = v
	}
	js := "ingest: {durability: jetstream, stream_max_bytes: 256MiB}\n"
	b.Run("mode=spool", func(b *testing.B) { benchEndToEnd(b, n, 0) })
	b.Run("mode=jetstream-R1", func(b *testing.B) {
		benchEndToEnd(b, n, 0, testenv.GatewayOptions{ExtraCfg: js})
	})
	b.Run("mode=jetstream-R3", func(b *testing.B) {
		cl := testenv.StartNATSCluster(b, 3)
		benchEndToEnd(b, n, 0, testenv.GatewayOptions{ExtraCfg: js, NATSURL: cl.URLs(), NATSUser: cl.User,
			NATSPassword: cl.Password, NATSReplicas: 3})
	})
}

func benchEndToEnd(b *testing.B, vehicles, hz int, opts ...testenv.GatewayOptions) {
	in := testenv.StartInflux(b)
	// TELEGATE_BENCH_GATEWAY_CFG: YAML appended to the gateway's
	// configuration, e.g. "spool: {sync_delay: 1ms}".
	var o testenv.GatewayOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	o.ExtraCfg += os.Getenv("TELEGATE_BENCH_GATEWAY_CFG")
	// TELEGATE_BENCH_MQTT_CFG: appended to the gateway's mqtt mapping,
	// e.g. ", read_batch: 250ms".
	o.MQTTCfg += os.Getenv("TELEGATE_BENCH_MQTT_CFG")
	o.Pprof = o.Pprof || os.Getenv("TELEGATE_BENCH_CPUPROFILE") != ""
	// TELEGATE_BENCH_GATEWAY_ENV: space-separated variables for the gateway
	// process only, e.g. "GOMAXPROCS=1 GOGC=200".
	o.Env = append(o.Env, strings.Fields(os.Getenv("TELEGATE_BENCH_GATEWAY_ENV"))...)
	gw := testenv.StartGateway(b, in, vehicles, o)
	external := o.NATSURL != ""

	interval := time.Millisecond // saturating: the PUBACK window paces the fleet
	if hz > 0 {
		interval = time.Second / time.Duration(hz)
	}
	cfg := sim.Config{Broker: gw.MQTTURL, Vehicles: vehicles, FleetKey: fleetKey, Frames: b.N,
		TelemetryInterval: interval, DiagInterval: time.Hour, InflightPerDevice: 16, Seed: 1,
		Logger: quietLogger()}
	fleet, err := sim.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	probeVIN := sim.VIN(sim.DefaultVINPrefix, vehicles+1)
	probe := connectProbe(b, gw.MQTTURL, probeVIN)

	start := time.Now().Add(-time.Minute)
	cpu0, self0 := procCPU(b, gw.PID), procCPU(b, os.Getpid())
	b.ResetTimer()
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var lat []time.Duration
	var wg sync.WaitGroup
	stopProbe := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		lat = runProbes(b, in, probe, probeVIN, stopProbe)
	}()
	// TELEGATE_BENCH_CPUPROFILE: write a 10 s CPU profile of the gateway,
	// taken 3 s into the load, to this file.
	profDone := make(chan struct{})
	if path := os.Getenv("TELEGATE_BENCH_CPUPROFILE"); path != "" && b.N > 1 {
		go func() {
			defer close(profDone)
			time.Sleep(3 * time.Second)
			if err := fetchProfile(gw.HTTPAddr, path, 10); err != nil {
				b.Logf("cpu profile: %v", err)
			}
		}()
	} else {
		close(profDone)
	}
	if err := fleet.Run(ctx); err != nil {
		b.Fatal(err)
	}
	<-profDone
	s := fleet.Summary()
	acked := int(s.Topics["telemetry"].Acked)
	// Wait until every acked frame is queryable.
	deadline := time.Now().Add(10 * time.Minute)
	stored := 0
	for time.Now().Before(deadline) {
		stored = in.Count(b, "telemetry", "seq", start) - probesStored(b, in, probeVIN, start)
		if stored >= acked {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(t0)
	close(stopProbe)
	wg.Wait()
	b.StopTimer()
	cpu := procCPU(b, gw.PID) - cpu0
	if external {
		// The in-process NATS cluster (plus the simulator and probes).
		self := procCPU(b, os.Getpid()) - self0
		b.ReportMetric(float64(self.Microseconds())/float64(max(acked, 1)), "nats-cpu-µs/frame")
	}
	slices.Sort(lat)
	b.ReportMetric(float64(acked)/elapsed.Seconds(), "frames/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(max(acked, 1)), "gw-cpu-µs/frame")
	b.ReportMetric(float64(acked-stored), "lost")
	if len(lat) > 0 {
		b.ReportMetric(float64(pct(lat, 50).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(pct(lat, 99).Microseconds())/1000, "p99-ms")
	}
	if recs, commits := scrapeMetric(b, gw.HTTPAddr, "telegate_spool_appended_records_total"),
		scrapeMetric(b, gw.HTTPAddr, "telegate_spool_group_commits_total"); commits > 0 {
		b.ReportMetric(recs/commits, "records/commit")
	}
	b.ReportMetric(float64(s.Latency.P50.Microseconds())/1000, "puback-p50-ms")
	b.ReportMetric(float64(s.Latency.P99.Microseconds())/1000, "puback-p99-ms")
	b.Logf("e2e: vehicles=%d sent=%d acked=%d stored=%d errors=%d elapsed=%s probes=%d gateway-cpu=%s",
		vehicles, s.Topics["telemetry"].Sent, acked, stored, s.Errors, elapsed.Round(time.Millisecond), len(lat), cpu)
	if stored != acked {
		b.Fatalf("lost %d acknowledged frames", acked-stored)
	}
}

func pct(d []time.Duration, p int) time.Duration {
	return d[min(len(d)-1, len(d)*p/100)]
}

// procCPU returns user+system CPU time of pid (Linux /proc).
func procCPU(b testing.TB, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which is in parentheses).
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func connectProbe(b testing.TB, url, vin string) paho.Client {
	o := paho.NewClientOptions().AddBroker(url).SetClientID(vin).SetUsername(vin).
		SetPassword(sim.Secret(fleetKey, vin)).SetCleanSession(true).SetAutoReconnect(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		b.Fatalf("probe connect: %v", tok.Error())
	}
	b.Cleanup(func() { c.Disconnect(100) })
	return c
}

// runProbes publishes a probe frame every 100 ms and measures the time until
// an InfluxQL query finds it.
func runProbes(b testing.TB, in *testenv.Influx, c paho.Client, vin string, stop <-chan struct{}) []time.Duration {
	var out []time.Duration
	for seq := uint64(1); ; seq++ {
		select {
		case <-stop:
			return out
		case <-time.After(100 * time.Millisecond):
		}
		sent := time.Now()
		tok := c.Publish("vehicles/"+vin+"/telemetry", 1, false, telemetryFrame(vin, seq, sent))
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			continue
		}
		q := fmt.Sprintf(`SELECT count("seq") FROM "telemetry" WHERE time >= %s AND "vin" = %s AND "seq" = %d`,
			query.Time(sent.Add(-time.Second)), query.String(vin), seq)
		for time.Since(sent) < time.Minute {
			if rows := in.Query(b, q); len(rows) > 0 {
				out = append(out, time.Since(sent))
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
}

func probesStored(b testing.TB, in *testenv.Influx, vin string, start time.Time) int {
	q := fmt.Sprintf(`SELECT count("seq") FROM "telemetry" WHERE time >= %s AND "vin" = %s`,
		query.Time(start), query.String(vin))
	rows := in.Query(b, q)
	if len(rows) == 0 {
		return 0
	}
	n, _ := rows[0]["_value"].(int64)
	return int(n)
}

// scrapeMetric returns the value of the unlabelled metric name from the
// gateway's /metrics (0 if absent).
func scrapeMetric(b testing.TB, httpAddr, name string) float64 {
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		b.Logf("metrics: %v", err)
		return 0
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// fetchProfile writes a CPU profile of secs seconds from the gateway's
// /debug/pprof to path.
func fetchProfile(httpAddr, path string, secs int) error {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", httpAddr, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o600)
}
