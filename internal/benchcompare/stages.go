package benchcompare

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"
)

// Stage is one row of a CPU profile's per-stage breakdown.
type Stage struct {
	Name string
	CPU  time.Duration
}

// stageRules classify a sample by the frames of its stack: the first rule
// with a frame containing one of its substrings wins, so the order
// resolves overlaps (the sinks' re-decoding of a record counts as decode,
// a signal check while encoding counts as encoding).
var stageRules = []struct {
	name string
	any  []string
}{
	{"sink cursor commits (fsync)", []string{"spool.(*Consumer).Commit"}},
	{"event sink (NATS JetStream, embedded server)", []string{"gateway/eventsink.", "sink/eventsink.", "gateway/natsbus.", "nats-io/nats-server", "nats-io/nats.go"}},
	{"GC", []string{"runtime.gcBgMarkWorker", "runtime.gcAssistAlloc", "runtime.bgsweep", "runtime.bgscavenge"}},
	// Before the spool: held PUBACKs are also written from the spool's
	// notifier goroutine (spool.(*Spool).notifyLoop → Conn.ReleaseHeld).
	{"PUBACK write", []string{"(*Client).WritePacket", "listener.(*Conn).writeHeldLocked", "listener.(*Conn).ReleaseHeld", "listener.(*Conn).releaseBlocking"}},
	{"spool append and fsync", []string{"spool.(*Spool)", "spool.fdatasync"}},
	{"decode (msgpack)", []string{"decoders/wire."}},
	{"validation", []string{"gateway/ingest.(*Validator)"}},
	{"spool read (influx sink)", []string{"spool.(*Consumer)"}},
	{"line-protocol encoding", []string{"gateway/influxsink.(*encoder)", "sink/influxsink.(*encoder)", "gateway/influx.(*Encoder)"}},
	{"HTTP write to InfluxDB", []string{"gateway/influx.(*Writer)", "net/http."}},
	{"broker packet handling (mochi, listener, ingest hook)", []string{"mochi-mqtt/server", "telegate/broker/", "gateway/ingest."}},
}

// Stages classifies the samples of `go tool pprof -traces` output and
// returns one Stage per rule (in rule order) plus "other", and the total.
func Stages(traces io.Reader) ([]Stage, time.Duration, error) {
	out := make([]Stage, len(stageRules)+1)
	for i, r := range stageRules {
		out[i].Name = r.name
	}
	out[len(stageRules)].Name = "other (scheduler, runtime, idle syscalls)"
	var total, value time.Duration
	var stack []string
	flush := func() {
		if value == 0 {
			return
		}
		i := classify(stack)
		out[i].CPU += value
		total += value
		value, stack = 0, stack[:0]
	}
	sc := bufio.NewScanner(traces)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	inTraces := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----------+") {
			flush()
			inTraces = true
			continue
		}
		if !inTraces || strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		if !strings.HasPrefix(line, " ") || len(f) == 0 {
			continue
		}
		if value == 0 && strings.HasSuffix(f[0], ":") {
			continue // a pprof label of the sample ("stream:  VEHICLE", set by nats-server)
		}
		if len(f) >= 2 && value == 0 {
			d, err := time.ParseDuration(strings.Replace(f[0], "µs", "us", 1))
			if err != nil {
				return nil, 0, fmt.Errorf("benchcompare: traces: bad value %q", f[0])
			}
			value = d
			stack = append(stack, f[1])
			continue
		}
		stack = append(stack, f[0])
	}
	flush()
	return out, total, sc.Err()
}

func classify(stack []string) int {
	for i, r := range stageRules {
		for _, fr := range stack {
			for _, s := range r.any {
				if strings.Contains(fr, s) {
					return i
				}
			}
		}
	}
	return len(stageRules)
}

// ProfileStages runs `go tool pprof -traces` on a CPU profile of binary.
func ProfileStages(goTool, binary, profile string) ([]Stage, time.Duration, error) {
	cmd := exec.Command(goTool, "tool", "pprof", "-traces", binary, profile)
	out, err := cmd.Output()
	if err != nil {
		return nil, 0, fmt.Errorf("%w: go tool pprof: %w", ErrTool, err)
	}
	return Stages(strings.NewReader(string(out)))
}

// WriteStages prints a breakdown as a Markdown table.
func WriteStages(w io.Writer, st []Stage, total time.Duration) {
	fmt.Fprintf(w, "| stage | CPU share |\n| --- | ---: |\n")
	for _, s := range st {
		fmt.Fprintf(w, "| %s | %.1f %% |\n", s.Name, 100*s.CPU.Seconds()/max(total.Seconds(), 1e-9))
	}
	fmt.Fprintf(w, "| total sampled | %v |\n", total)
}
