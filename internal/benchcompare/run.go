package benchcompare

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"
)

// Options of a comparison run. Zero values take the defaults of the issue's
// load: 20 clients × 10,000 frames, 64 in flight per client.
type Options struct {
	Influxd, Mosquitto, MosquittoPasswd, Telegraf, Gateway string // binaries

	Clients  int // publishing devices
	Frames   int // frames per device
	Inflight int // QoS 1 publishes awaiting PUBACK per device
	// Rate, if > 0, paces every device at Rate frames per second (the
	// issue's paced load: 500 devices at 10 Hz); 0 saturates.
	Rate float64

	Batch               int // lines per InfluxDB write (direct writer and Telegraf)
	DirectWriters       int // concurrent direct writers
	TelegrafUndelivered int // mqtt_consumer max_undelivered_messages

	// Pipelines to run, any of "direct", "telegraf", "gateway" (all when
	// nil), "gateway-batched" (the gateway with read batching), and "floor" / "floor-epoll" (ServeFloor, ServeFloorEpoll:
	// need FloorFromSelf).
	Pipelines []string
	// FloorFromSelf: this program serves the floor pipeline when run
	// with -FloorFlag (cmd/bench-compare does).
	FloorFromSelf bool
	// GatewayLinger, if > 0, is the gateway's influx.linger (its default
	// otherwise).
	GatewayLinger time.Duration
	// GatewayReadBatch is the gateway's mqtt.read_batch in the
	// "gateway-batched" pipeline (DefaultReadBatch when 0); the "gateway"
	// pipeline runs with the default (off).
	GatewayReadBatch time.Duration
	// CPUProfile, if set, is where a CPU profile of the gateway taken
	// during its run is written (enables http.pprof); ProfileSeconds long.
	CPUProfile     string
	ProfileSeconds int
	// Dir for data and logs; "" = a temporary directory, removed unless
	// KeepDir.
	Dir     string
	KeepDir bool
	// Log receives progress lines (nil: discarded).
	Log io.Writer

	workDir string
}

func (o *Options) defaults() {
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&o.Clients, 20)
	def(&o.Frames, 10000)
	def(&o.Inflight, 64)
	def(&o.Batch, 5000)
	def(&o.DirectWriters, 2)
	def(&o.TelegrafUndelivered, 10000)
	def(&o.ProfileSeconds, 10)
	if o.GatewayReadBatch <= 0 {
		o.GatewayReadBatch = DefaultReadBatch
	}
	if o.Pipelines == nil {
		o.Pipelines = []string{"direct", "telegraf", "gateway"}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// Result of one pipeline.
type Result struct {
	Pipeline string
	Sent     int64 // frames (points) offered
	Acked    int64 // PUBACKed (direct: acknowledged by the write API)
	Stored   int64 // queryable in InfluxDB at the end
	Elapsed  time.Duration
	// CPU over the run, in clock ticks converted to time.
	PipelineCPU, InfluxCPU, LoadCPU time.Duration
	// ProcCPU is PipelineCPU per process, in the pipeline's order
	// (Mosquitto, then Telegraf).
	ProcCPU []time.Duration
	// OtherCores is the average number of cores busy with work outside
	// this run (machine busy time minus the run's processes).
	OtherCores float64
	Err        error
}

// FramesPerSec is stored frames per second.
func (r Result) FramesPerSec() float64 { return float64(r.Stored) / r.Elapsed.Seconds() }

// Lost is sent − stored.
func (r Result) Lost() int64 { return r.Sent - r.Stored }

func perFrame(d time.Duration, n int64) float64 {
	return float64(d.Microseconds()) / float64(max(n, 1))
}

// ErrMissing: a binary the run needs is not there.
var ErrMissing = errors.New("benchcompare: binary missing")

// Missing returns the binaries of o's pipelines that do not exist.
func (o Options) Missing() []string {
	o.defaults()
	need := []string{o.Influxd}
	for _, p := range o.Pipelines {
		switch p {
		case "telegraf":
			need = append(need, o.Mosquitto, o.MosquittoPasswd, o.Telegraf)
		case "gateway", "gateway-batched":
			need = append(need, o.Gateway)
		}
	}
	var out []string
	for _, b := range need {
		if fi, err := os.Stat(b); b == "" || err != nil || fi.IsDir() {
			out = append(out, b)
		}
	}
	return out
}

// Run starts InfluxDB and runs the chosen pipelines one after the other
// against it.
func Run(ctx context.Context, o Options) ([]Result, error) {
	o.defaults()
	if m := o.Missing(); len(m) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrMissing, strings.Join(m, ", "))
	}
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "bench-compare-")
		if err != nil {
			return nil, err
		}
		dir = d
		if !o.KeepDir {
			defer os.RemoveAll(dir)
		}
	}
	o.workDir = dir
	logf := func(format string, a ...any) { fmt.Fprintf(o.Log, "bench-compare: "+format+"\n", a...) }

	in, err := startInflux(o.Influxd, filepath.Join(dir, "influxdb"))
	if err != nil {
		return nil, err
	}
	defer in.stop()
	for _, db := range []string{DBDirect, DBTelegraf, DBGateway, DBGatewayBatched} {
		if err := in.createDB(db); err != nil {
			return nil, err
		}
	}
	logf("influxd ready at %s (dir %s)", in.url, dir)
	devs := devices(o.Clients)
	var out []Result
	for _, p := range o.Pipelines {
		var r Result
		switch p {
		case "direct":
			r = runDirect(ctx, o, in, devs[:o.Clients])
		case "telegraf":
			r = runAlternative(ctx, o, in, devs)
		case "gateway":
			r = runGateway(ctx, o, in, devs, 0)
		case "gateway-batched":
			r = runGateway(ctx, o, in, devs, o.GatewayReadBatch)
		case "floor", "floor-epoll":
			r = runFloor(o, devs, p == "floor-epoll")
		default:
			return out, fmt.Errorf("benchcompare: unknown pipeline %q", p)
		}
		logf("%s: sent=%d acked=%d stored=%d elapsed=%v err=%v", r.Pipeline, r.Sent, r.Acked, r.Stored, r.Elapsed.Round(time.Millisecond), r.Err)
		out = append(out, r)
	}
	return out, nil
}

// meter snapshots CPU of the run's processes and of the machine.
type meter struct {
	pipeline []int
	influx   int // 0: none
	t0       time.Time
	p0, i0   int64
	s0, m0   int64
	procs0   []int64 // per pipeline process
}

func startMeter(influxPID int, pipeline ...int) *meter {
	m := &meter{pipeline: pipeline, influx: influxPID}
	m.p0, m.i0, m.s0, m.m0, m.procs0 = m.read()
	m.t0 = time.Now()
	return m
}

func (m *meter) read() (pipe, infl, self, machine int64, procs []int64) {
	for _, pid := range m.pipeline {
		t, _ := cpuTicks(pid)
		pipe += t
		procs = append(procs, t)
	}
	if m.influx > 0 {
		infl, _ = cpuTicks(m.influx)
	}
	self, _ = cpuTicks(0)
	machine, _ = machineBusyTicks()
	return
}

// stop fills r's CPU figures for the time since start.
func (m *meter) stop(r *Result, end time.Time) {
	p, i, s, mc, procs := m.read()
	tick := func(n int64) time.Duration { return time.Duration(n) * time.Second / userHZ }
	r.PipelineCPU, r.InfluxCPU, r.LoadCPU = tick(p-m.p0), tick(i-m.i0), tick(s-m.s0)
	r.ProcCPU = r.ProcCPU[:0]
	for k := range procs {
		r.ProcCPU = append(r.ProcCPU, tick(procs[k]-m.procs0[k]))
	}
	r.Elapsed = end.Sub(m.t0)
	wall := time.Since(m.t0).Seconds() // the machine counters ran until now
	other := tick((mc - m.m0) - (p - m.p0) - (i - m.i0) - (s - m.s0))
	r.OtherCores = max(other.Seconds()/wall, 0)
}

func runDirect(ctx context.Context, o Options, in *influxServer, devs []device) Result {
	r := Result{Pipeline: "InfluxDB direct write", Sent: int64(o.Clients * o.Frames)}
	vins := make([]string, len(devs))
	for i, d := range devs {
		vins[i] = d.id
	}
	m := startMeter(in.pid())
	r.Acked, r.Err = in.directWrite(ctx, DBDirect, vins, o.Frames, o.Batch, o.DirectWriters, time.Now().UnixMilli()-int64(o.Frames)-60_000)
	end := time.Now()
	m.stop(&r, end)
	r.Stored, _, _ = in.waitStored(DBDirect, "-", r.Acked, 100*time.Millisecond, 5*time.Second)
	return r
}

// drive runs the load against addr and waits until DB holds every
// acknowledged frame, after a warm-up frame from the probe device (the last
// of devs) proved the pipeline end to end.
func drive(o Options, in *influxServer, db, addr string, devs []device, json bool, pids ...int) Result {
	var r Result
	probe := devs[len(devs)-1]
	// Warm-up: one frame from the probe, queryable before timing starts.
	warm := runLoad(addr, []device{probe}, 1, 1, 0, json, time.Now().UnixMilli()-60_000, func() {})
	if warm.Err != nil {
		r.Err = fmt.Errorf("warm-up: %w", warm.Err)
		return r
	}
	deadline := time.Now().Add(time.Minute)
	for {
		rows, err := in.query(db, fmt.Sprintf(`SELECT count("seq") FROM "telemetry" WHERE "vin" = '%s'`, probe.id))
		if err == nil && len(rows) > 0 {
			break
		}
		if time.Now().After(deadline) {
			r.Err = fmt.Errorf("warm-up frame not stored within a minute: %w", err)
			return r
		}
		time.Sleep(100 * time.Millisecond)
	}
	var m *meter
	base := time.Now().UnixMilli() - int64(o.Frames) - 60_000
	load := runLoad(addr, devs[:len(devs)-1], o.Frames, o.Inflight, o.Rate, json, base, func() { m = startMeter(in.pid(), pids...) })
	r.Sent, r.Acked, r.Err = load.Sent, load.Acked, load.Err
	if m == nil {
		return r
	}
	var at time.Time
	var err error
	r.Stored, at, err = in.waitStored(db, probe.id, r.Sent, 200*time.Millisecond, 30*time.Second)
	r.Err = errors.Join(r.Err, err)
	m.stop(&r, at)
	return r
}

func runAlternative(ctx context.Context, o Options, in *influxServer, devs []device) Result {
	// Its own directory under the system temp dir: mosquitto may run as
	// its own user, who cannot traverse a 0700 work directory.
	mdir, err := os.MkdirTemp("", "bench-compare-mosquitto-")
	if err != nil {
		return Result{Pipeline: "Mosquitto + Telegraf", Err: err}
	}
	defer os.RemoveAll(mdir)
	alt, err := startAlternative(o, mdir, in.url, in.writers[DBTelegraf], devs)
	if err != nil {
		return Result{Pipeline: "Mosquitto + Telegraf", Err: err}
	}
	defer alt.stop()
	r := drive(o, in, DBTelegraf, alt.mqttAddr, devs, true, alt.pids()...)
	r.Pipeline = "Mosquitto + Telegraf"
	if len(r.ProcCPU) == 2 {
		fmt.Fprintf(o.Log, "bench-compare: alternative: Mosquitto %.1f µs/frame, Telegraf %.1f µs/frame\n",
			perFrame(r.ProcCPU[0], r.Stored), perFrame(r.ProcCPU[1], r.Stored))
	}
	return r
}

// DefaultReadBatch is the gateway-batched pipeline's mqtt.read_batch.
const DefaultReadBatch = 250 * time.Millisecond

// runGateway runs the gateway, with mqtt.read_batch readBatch (0: off).
// Each run has a database of its own.
func runGateway(ctx context.Context, o Options, in *influxServer, devs []device, readBatch time.Duration) Result {
	name, sub, db := "telegate gateway", "gateway", DBGateway
	if readBatch > 0 {
		name, sub, db = fmt.Sprintf("telegate gateway, read_batch %v", readBatch), "gateway-batched", DBGatewayBatched
	}
	gw, err := startGateway(o, filepath.Join(o.workDir, sub), in.url, in.writers[db], devs, db, readBatch)
	if err != nil {
		return Result{Pipeline: name, Err: err}
	}
	defer gw.stop()
	profErr := make(chan error, 1)
	if o.CPUProfile != "" {
		pctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			time.Sleep(3 * time.Second) // past warm-up and connects
			profErr <- gw.cpuProfile(pctx, o.CPUProfile, o.ProfileSeconds)
		}()
	}
	r := drive(o, in, db, gw.mqttAddr, devs, false, gw.pid())
	r.Pipeline = name
	if sum, n := gw.metric("telegate_influx_batch_lines_sum"), gw.metric("telegate_influx_batch_lines_count"); n > 0 {
		fmt.Fprintf(o.Log, "bench-compare: gateway: %.0f InfluxDB writes, %.0f lines per write on average\n", n, sum/n)
	}
	if sum := gw.metric("telegate_influx_write_seconds_sum"); sum > 0 && r.Elapsed > 0 {
		fmt.Fprintf(o.Log, "bench-compare: gateway: InfluxDB writes took %.1f s in all, %.2f in flight on average over the run\n", sum, sum/r.Elapsed.Seconds())
	}
	if recs, syncs := gw.metric("telegate_spool_appended_records_total"), gw.metric("telegate_spool_group_commits_total"); syncs > 0 {
		fmt.Fprintf(o.Log, "bench-compare: gateway: %.0f spool group commits, %.1f records per commit\n", syncs, recs/syncs)
	}
	if frames, waits := gw.metric(`telegate_spool_appends_total{qos="1"}`), gw.metric("telegate_spool_append_seconds_count"); waits > 0 {
		fmt.Fprintf(o.Log, "bench-compare: gateway: %.0f QoS 1 frames, %.1f per commit wait (PUBACK release)\n", frames, frames/waits)
	}
	if o.CPUProfile != "" {
		r.Err = errors.Join(r.Err, <-profErr)
	}
	return r
}

// WriteTable prints the results as one Markdown table.
func WriteTable(w io.Writer, rs []Result, o Options) error {
	o.defaults()
	rows := [][]string{
		{"pipeline", "frames/s stored", "pipeline CPU µs/frame", "InfluxDB CPU µs/frame", "sent", "stored", "lost", "load gen CPU µs/frame", "other load (cores)"},
		{"---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"},
	}
	for _, r := range rs {
		pipeCPU := fmt.Sprintf("%.1f", perFrame(r.PipelineCPU, r.Stored))
		if r.Pipeline == "InfluxDB direct write" {
			pipeCPU = "–"
		}
		infCPU := fmt.Sprintf("%.1f", perFrame(r.InfluxCPU, r.Stored))
		if strings.HasPrefix(r.Pipeline, "floor:") {
			infCPU = "–" // stores nothing
		}
		rows = append(rows, []string{r.Pipeline, fmt.Sprintf("%.0f", r.FramesPerSec()), pipeCPU,
			infCPU, fmt.Sprint(r.Sent), fmt.Sprint(r.Stored),
			fmt.Sprint(r.Lost()), fmt.Sprintf("%.1f", perFrame(r.LoadCPU, r.Stored)), fmt.Sprintf("%.2f", r.OtherCores)})
	}
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		b.WriteString("|")
		for i, c := range row {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i == 0 {
				b.WriteString(" " + c + pad + " |")
			} else {
				b.WriteString(" " + pad + c + " |")
			}
		}
		b.WriteString("\n")
	}
	pace := fmt.Sprintf("%d in flight per client", o.Inflight)
	if o.Rate > 0 {
		pace = fmt.Sprintf("paced at %g frames/s per client (%g frames/s in all)", o.Rate, o.Rate*float64(o.Clients))
	}
	fmt.Fprintf(&b, "\nload: %d clients × %d frames of %d signals, QoS 1, %s; InfluxDB batches of %d lines\n",
		o.Clients, o.Frames, Signals, pace, o.Batch)
	for _, r := range rs {
		if r.Err != nil {
			fmt.Fprintf(&b, "%s: error: %v\n", r.Pipeline, r.Err)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
