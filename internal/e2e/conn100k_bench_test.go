package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/telegate/telegate/internal/testenv"
)

// One process can hold at most 20,000 open files on this machine (hard
// limit), so 100,000 connections need several gateway processes and
// several client processes. BenchmarkIdleConnections100k uses the product's
// own scale-out for that: K gateway replicas on one 3-node NATS JetStream
// cluster (docs/scaling.md), each holding its share, and one client child
// process per replica (this test binary re-executed as
// TestHelperIdleClients).

// idleClientsEnv carries a client child's assignment:
// "addr,first,count,srcFirst" (broker host:port, first device number,
// device count, first loopback source offset). Unset, TestHelperIdleClients
// is skipped.
const idleClientsEnv = "TELEGATE_IDLE_CLIENTS"

// Lines a client child writes on stdout.
const (
	idleReadyLine  = "idle-clients: ready "
	idleFailedLine = "idle-clients: failed: "
)

// scavengePause is the wait after forced GCs before RSS is read: the
// runtime's background scavenger returns freed pages to the OS over
// seconds (measured: a replica at 281 MiB RSS right after the GC that
// freed 215 MiB of heap was at 77 MiB ten seconds later).
const scavengePause = 15 * time.Second

// Per-replica cap: the 20,000-file limit less the gateway's own
// descriptors, and the client child's.
const maxConnsPerProcess = 19_000

var (
	errIdleClientsEnv = errors.New("bench: bad " + idleClientsEnv)
	errIdleClients    = errors.New("bench: idle client child failed")
)

// BenchmarkIdleConnections100k holds TELEGATE_BENCH_IDLE_TOTAL (default
// 100,000) authenticated, idle MQTT 3.1.1 device connections over
// TELEGATE_BENCH_IDLE_REPLICAS (default 6) gateway replicas, separate
// processes on one 3-node NATS JetStream cluster (in this process, R3) and
// one InfluxDB, all sharing one registry of machine-secret hashes. Each
// replica gets an equal share of the devices from its own client child
// process, which dials from 8 loopback source addresses of its own
// (127.0.0.2-9 for the first, 127.0.0.10-17 for the second, ...),
// checks CONNACK 0x00 and holds the connections idle (keepalive 600 s).
//
// Reported: total connections held (each replica's
// telegate_mqtt_clients_connected), the replicas' total RSS before any
// device connected, after, and after three forced GC cycles in every
// replica; RSS, Go heap and stacks per connection; the total and the
// growth in GiB (the target: 100,000 in <= 3 GiB), and what one process
// would hold (one replica's baseline plus the growth). b.N is ignored (run
// with -benchtime 1x).
//
//	go test -run '^$' -bench IdleConnections100k -benchtime 1x -timeout 45m ./internal/e2e/
func BenchmarkIdleConnections100k(b *testing.B) {
	total := envInt(b, "TELEGATE_BENCH_IDLE_TOTAL", 100_000)
	k := envInt(b, "TELEGATE_BENCH_IDLE_REPLICAS", 6)
	if k < 1 || k > 30 || total < k {
		b.Fatalf("need 1..30 replicas and at least one connection each: %d replicas, %d connections", k, total)
	}
	share := (total + k - 1) / k
	if share > maxConnsPerProcess {
		b.Fatalf("%d connections over %d replicas is %d per process, over the %d one process can hold here: add replicas",
			total, k, share, maxConnsPerProcess)
	}

	cl := testenv.StartNATSCluster(b, 3)
	in := testenv.StartInflux(b)
	t0 := time.Now()
	devices := testenv.WriteRegistry(b, b.TempDir(), total, -1)
	b.Logf("registry: %d devices (machine-secret hashes) provisioned and written in %v", total+1, time.Since(t0).Round(time.Millisecond))
	gws := make([]*testenv.Gateway, k)
	for i := range gws {
		gws[i] = testenv.StartGateway(b, in, total, testenv.GatewayOptions{
			NATSURL: cl.URLs(i % cl.Size()), NATSUser: cl.User, NATSPassword: cl.Password, NATSReplicas: 3,
			DevicesFile: devices, Pprof: true,
		})
	}
	b.Logf("%d replicas started in %v", k, time.Since(t0).Round(time.Millisecond))
	// Baseline: a replica that just parsed the 100,000-device registry
	// holds ~250 MiB of YAML garbage until its first GC (an idle process
	// collects at the runtime's 2-minute forced GC), and the freed pages
	// stay resident until the background scavenger returns them, some
	// seconds later. Measured after three GCs and a scavenge pause.
	for _, gw := range gws {
		gatewayGC(b, gw, 3)
	}
	time.Sleep(scavengePause)
	m0 := make([]gatewayMem, k)
	for i, gw := range gws {
		m0[i] = readGatewayMem(b, gw)
	}

	avail0 := memAvailable(b)
	b.ResetTimer()
	tc := time.Now()
	kids := make([]*idleClients, k)
	for i, gw := range gws {
		first := i*share + 1
		n := min(share, total-i*share)
		kids[i] = startIdleClients(b, strings.TrimPrefix(gw.MQTTURL, "tcp://"), first, n, 8*i)
	}
	held := 0
	for i, kid := range kids {
		n, err := kid.wait(15 * time.Minute)
		if err != nil {
			b.Fatalf("replica %d: %v", i, err)
		}
		held += n
	}
	connectTime := time.Since(tc)
	b.StopTimer()
	b.Logf("%d connections admitted in %v (%.0f CONNECTs/s over %d replicas)", held, connectTime.Round(time.Millisecond),
		float64(held)/connectTime.Seconds(), k)

	time.Sleep(3 * time.Second) // let per-connection goroutines settle
	m1 := make([]gatewayMem, k)
	for i, gw := range gws {
		m1[i] = readGatewayMem(b, gw)
	}
	// Steady state, as in BenchmarkIdleConnections: three GC cycles.
	for _, gw := range gws {
		gatewayGC(b, gw, 3)
	}
	time.Sleep(scavengePause)
	m2 := make([]gatewayMem, k)
	for i, gw := range gws {
		m2[i] = readGatewayMem(b, gw)
	}

	var s0, s1, s2 gatewayMem
	clients := 0.0
	var tbl strings.Builder
	tbl.WriteString("| replica | connections | RSS before | RSS after connect | RSS after 3 GCs | growth per conn (after GCs) | heap before / after GCs | stacks after GCs | goroutines | open fds |\n")
	tbl.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i := range gws {
		s0 = addMem(s0, m0[i])
		s1 = addMem(s1, m1[i])
		s2 = addMem(s2, m2[i])
		clients += m2[i].clients
		memRow(&tbl, strconv.Itoa(i+1), m0[i], m1[i], m2[i])
	}
	memRow(&tbl, fmt.Sprintf("all %d", k), s0, s1, s2)
	if int(clients) != held {
		b.Fatalf("the replicas hold %.0f connections, the clients %d", clients, held)
	}

	hostUsed := float64(avail0 - memAvailable(b))
	var clientRSS int64
	for _, kid := range kids {
		clientRSS += procRSS(b, kid.cmd.Process.Pid)
	}
	const gib = 1 << 30
	n := float64(held)
	per, perGC := (s1.rss-s0.rss)/n, (s2.rss-s0.rss)/n
	base := s0.rss / float64(k)
	b.ReportMetric(n, "conns")
	b.ReportMetric(float64(k), "replicas")
	b.ReportMetric(base/(1<<20), "MiB-base/replica")
	b.ReportMetric(per/1024, "KiB-rss/conn")
	b.ReportMetric(perGC/1024, "KiB-rss/conn-gc")
	b.ReportMetric((s2.heapInuse-s0.heapInuse)/n/1024, "KiB-heap/conn-gc")
	b.ReportMetric((s2.stackInuse-s0.stackInuse)/n/1024, "KiB-stack/conn-gc")
	b.ReportMetric((s2.goroutines-s0.goroutines)/n, "goroutines/conn")
	b.ReportMetric((s1.rss-s0.rss)/gib, "GiB-growth")
	b.ReportMetric((s2.rss-s0.rss)/gib, "GiB-growth-gc")
	b.ReportMetric(s1.rss/gib, "GiB-total")
	b.ReportMetric(s2.rss/gib, "GiB-total-gc")
	b.ReportMetric((base+s2.rss-s0.rss)/gib, "GiB-one-process-gc")
	fits := func(v float64) string {
		if v <= 3*gib {
			return "fits in 3 GiB"
		}
		return "does NOT fit in 3 GiB"
	}
	b.Logf("%d idle connections on %d replicas (%d per replica): RSS growth %.2f GiB (%.1f KiB/conn), after 3 GCs %.2f GiB (%.1f KiB/conn): %s",
		held, k, share, (s1.rss-s0.rss)/gib, per/1024, (s2.rss-s0.rss)/gib, perGC/1024, fits(s2.rss-s0.rss))
	b.Logf("total RSS of the %d replicas: %.2f GiB before connections (%.0f MiB each), %.2f GiB after, %.2f GiB after 3 GCs: %s",
		k, s0.rss/gib, base/(1<<20), s1.rss/gib, s2.rss/gib, fits(s2.rss))
	b.Logf("one process at this cost (one baseline + growth after 3 GCs): %.2f GiB; client children hold %.0f MiB RSS in all; the host's MemAvailable dropped %.2f GiB (both ends' processes and kernel socket memory)",
		(base+s2.rss-s0.rss)/gib, float64(clientRSS)/(1<<20), hostUsed/gib)
	b.Logf("replicas (run with -v to see this table whole):\n%s", tbl.String())
}

// memRow writes one replica's (or the sum's) row of the table.
func memRow(w io.Writer, name string, m0, m1, m2 gatewayMem) {
	const mib = 1 << 20
	fmt.Fprintf(w, "| %s | %.0f | %.0f MiB | %.0f MiB | %.0f MiB | %.1f KiB | %.0f / %.0f MiB | %.0f MiB | %.0f | %.0f |\n",
		name, m2.clients, m0.rss/mib, m1.rss/mib, m2.rss/mib, (m2.rss-m0.rss)/max(m2.clients, 1)/1024,
		m0.heapInuse/mib, m2.heapInuse/mib, m2.stackInuse/mib, m2.goroutines, m2.fds)
}

// memAvailable is the host's MemAvailable (/proc/meminfo) in bytes.
func memAvailable(b *testing.B) int64 {
	b.Helper()
	raw, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		b.Fatal(err)
	}
	for l := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(l, "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no MemAvailable in /proc/meminfo")
	return 0
}

func addMem(a, m gatewayMem) gatewayMem {
	a.rss += m.rss
	a.heapInuse += m.heapInuse
	a.stackInuse += m.stackInuse
	a.goSys += m.goSys
	a.goroutines += m.goroutines
	a.fds += m.fds
	a.clients += m.clients
	return a
}

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return n
}

// idleClients is a client child process holding idle device connections.
type idleClients struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // stdout lines; closed at EOF
	done  chan struct{}
}

// startIdleClients re-executes this test binary as TestHelperIdleClients
// for devices first..first+n-1 against the broker at addr, dialling from
// 127.0.0.(2+srcFirst) to 127.0.0.(9+srcFirst). The child stops (closing
// its connections) when its stdin closes; t.Cleanup does that, and kills it
// if it does not exit.
func startIdleClients(b *testing.B, addr string, first, n, srcFirst int) *idleClients {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperIdleClients$", "-test.bench=^$", "-test.timeout=0")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%d,%d", idleClientsEnv, addr, first, n, srcFirst))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &idleClients{cmd: cmd, stdin: stdin, lines: make(chan string, 16), done: make(chan struct{})}
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			c.lines <- s.Text()
		}
		close(c.lines)
		_ = cmd.Wait()
		close(c.done)
	}()
	b.Cleanup(func() {
		stdin.Close()
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// wait returns the number of connections the child holds once it reports
// ready.
func (c *idleClients) wait(timeout time.Duration) (int, error) {
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				return 0, fmt.Errorf("%w: exited before ready", errIdleClients)
			}
			if v, ok := strings.CutPrefix(l, idleReadyLine); ok {
				return strconv.Atoi(v)
			}
			if v, ok := strings.CutPrefix(l, idleFailedLine); ok {
				return 0, fmt.Errorf("%w: %s", errIdleClients, v)
			}
		case <-deadline:
			return 0, fmt.Errorf("%w: not ready after %v", errIdleClients, timeout)
		}
	}
}

// TestHelperIdleClients is the client child of
// BenchmarkIdleConnections100k, not a test: without TELEGATE_IDLE_CLIENTS
// it is skipped. It connects its devices, writes "idle-clients: ready <n>"
// and holds them idle until stdin closes.
func TestHelperIdleClients(t *testing.T) {
	spec := os.Getenv(idleClientsEnv)
	if spec == "" {
		t.Skip("helper process of BenchmarkIdleConnections100k")
	}
	addr, first, n, srcFirst, err := parseIdleClients(spec)
	if err != nil {
		fmt.Println(idleFailedLine + err.Error())
		t.Fatal(err)
	}
	conns, err := dialDevices(addr, first, n, loopbackSources(srcFirst, 8), func(net.Conn, string) error { return nil })
	if err != nil {
		fmt.Println(idleFailedLine + err.Error())
		t.Fatal(err)
	}
	defer closeAll(conns)
	fmt.Printf("%s%d\n", idleReadyLine, len(conns))
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
}

func parseIdleClients(spec string) (addr string, first, n, srcFirst int, err error) {
	f := strings.Split(spec, ",")
	if len(f) != 4 {
		return "", 0, 0, 0, fmt.Errorf("%w: %q", errIdleClientsEnv, spec)
	}
	var nums [3]int
	for i, s := range f[1:] {
		if nums[i], err = strconv.Atoi(s); err != nil {
			return "", 0, 0, 0, fmt.Errorf("%w: %q", errIdleClientsEnv, spec)
		}
	}
	if nums[0] < 1 || nums[1] < 1 || nums[1] > maxConnsPerProcess || nums[2] < 0 || nums[2]+8 > 253 {
		return "", 0, 0, 0, fmt.Errorf("%w: %q", errIdleClientsEnv, spec)
	}
	return f[0], nums[0], nums[1], nums[2], nil
}
