package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/internal/testenv"
)

// This machine caps open files at 20,000 per process (hard limit, cannot be
// raised without CAP_SYS_RESOURCE). The gateway holds one fd per connection
// plus ~60 of its own (listeners, spool segments, embedded NATS store,
// InfluxDB client); the benchmark process holds the client end of every
// connection. One gateway process is therefore measured at up to 19,000
// connections here; BenchmarkIdleConnections100k (conn100k_bench_test.go)
// holds 100,000 over several replicas and client processes.

// BenchmarkIdleConnections opens b.N authenticated, idle MQTT 3.1.1 device
// connections (machine-secret hashes, the product's default) to the gateway
// process from 8 loopback source addresses (127.0.0.2-9) and reports the
// gateway's resident memory per connection, the Go heap and goroutine stacks
// per connection (from the gateway's own /metrics), goroutines per
// connection, the resulting connections per GiB, and the RSS 100,000
// connections would take at that per-connection cost.
//
//	go test -run '^$' -bench 'IdleConnections$' -benchtime 19000x -timeout 30m ./internal/e2e/
func BenchmarkIdleConnections(b *testing.B) {
	in := testenv.StartInflux(b)
	gw := testenv.StartGateway(b, in, b.N, testenv.GatewayOptions{SecretCost: -1, Pprof: true})
	time.Sleep(time.Second)
	gatewayGC(b, gw, 3)
	m0 := readGatewayMem(b, gw)
	b.ResetTimer()
	conns := dialFleet(b, gw, b.N, func(c net.Conn, vin string) error { return nil })
	b.StopTimer()
	defer closeAll(conns)
	time.Sleep(3 * time.Second) // let per-connection goroutines settle
	m1 := readGatewayMem(b, gw)
	reportMem(b, "idle", b.N, m0, m1)
	if f := os.Getenv("TELEGATE_BENCH_HEAPPROFILE"); f != "" {
		saveHeapProfile(b, gw, f)
	}
	// Steady state: a running gateway collects at least every 2 minutes
	// (the runtime's forced GC) and each cycle halves a parked goroutine's
	// oversized stack (grown during CONNECT handling). Three cycles, then
	// the same figures again.
	gatewayGC(b, gw, 3)
	time.Sleep(3 * time.Second)
	m2 := readGatewayMem(b, gw)
	b.Logf("after 3 GC cycles: RSS %.1f KiB/conn, heap %.1f KiB/conn, stacks %.1f KiB/conn",
		(m2.rss-m0.rss)/float64(b.N)/1024, (m2.heapInuse-m0.heapInuse)/float64(b.N)/1024, (m2.stackInuse-m0.stackInuse)/float64(b.N)/1024)
	b.ReportMetric((m2.rss-m0.rss)/float64(b.N)/1024, "KiB-rss/conn-gc")
	b.ReportMetric((m2.stackInuse-m0.stackInuse)/float64(b.N)/1024, "KiB-stack/conn-gc")
}

// BenchmarkActiveVehicles holds N device connections, each subscribed to
// vehicles/{vin}/cmd/# at QoS 1 and publishing one valid telemetry frame
// (wire format, 4 signals, under 100 bytes) per second at QoS 1, spread evenly
// over the second. After a warm-up it measures, over a fixed window: the
// gateway's RSS per active vehicle (growth over the gateway's RSS before
// any device connected), Go heap and stacks per vehicle, the gateway's CPU
// (cores used and µs per frame) and PUBACK latency p50/p99 as seen by the
// devices. The client is one goroutine per connection with hand-built
// packets on raw sockets (so its own cost stays small); it shares the 2
// cores with the gateway and InfluxDB.
//
// Fleets come from TELEGATE_BENCH_ACTIVE (comma-separated, default
// "2000,10000"); b.N is ignored (run with -benchtime 1x).
//
//	go test -run '^$' -bench ActiveVehicles -benchtime 1x -timeout 30m ./internal/e2e/
func BenchmarkActiveVehicles(b *testing.B) {
	sizes := os.Getenv("TELEGATE_BENCH_ACTIVE")
	if sizes == "" {
		sizes = "2000,10000"
	}
	for _, f := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 19_000 {
			b.Fatalf("TELEGATE_BENCH_ACTIVE: bad fleet %q (1..19000)", f)
		}
		b.Run(fmt.Sprintf("vehicles=%d", n), func(b *testing.B) { benchActive(b, n) })
	}
}

const (
	activeWarmup = 20 * time.Second
	activeWindow = 30 * time.Second
)

func benchActive(b *testing.B, vehicles int) {
	in := testenv.StartInflux(b)
	gw := testenv.StartGateway(b, in, vehicles, testenv.GatewayOptions{SecretCost: -1})
	time.Sleep(time.Second)
	m0 := readGatewayMem(b, gw)

	// Subscribe each device to its command topic before it starts
	// publishing.
	conns := dialFleet(b, gw, vehicles, func(c net.Conn, vin string) error {
		if _, err := c.Write(subscribePkt(1, "vehicles/"+vin+"/cmd/#", 1)); err != nil {
			return err
		}
		typ, body, err := readPacket(bufio.NewReaderSize(c, 64))
		if err != nil {
			return err
		}
		if typ != 0x90 || len(body) != 3 || body[2] != 1 {
			return fmt.Errorf("%w: suback % x % x", errBench, typ, body)
		}
		return nil
	})
	defer closeAll(conns)

	var (
		stop     = make(chan struct{})
		measure  atomic.Bool
		acked    atomic.Int64
		failed   atomic.Int64
		firstErr atomic.Value
		mu       sync.Mutex
		lat      []time.Duration // guarded by mu
		wg       sync.WaitGroup
	)
	t0 := time.Now()
	for i, c := range conns {
		vin := sim.VIN(sim.DefaultVINPrefix, i+1)
		offset := time.Duration(i) * time.Second / time.Duration(vehicles)
		wg.Go(func() {
			var mine []time.Duration
			defer func() {
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
			r := bufio.NewReaderSize(c, 64)
			topic := "vehicles/" + vin + "/telemetry"
			next := t0.Add(offset)
			for seq := uint64(1); ; seq++ {
				select {
				case <-stop:
					return
				case <-time.After(time.Until(next)):
				}
				next = next.Add(time.Second)
				pid := uint16(seq%65535) + 1
				sent := time.Now()
				_ = c.SetDeadline(sent.Add(60 * time.Second))
				if _, err := c.Write(publishPkt(topic, pid, activeFrame(vin, seq, sent))); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%s publish: %v", vin, err))
					return
				}
				for {
					typ, body, err := readPacket(r)
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, fmt.Sprintf("%s read: %v", vin, err))
						return
					}
					if typ == 0x40 && len(body) == 2 && uint16(body[0])<<8|uint16(body[1]) == pid {
						break
					}
				}
				if measure.Load() {
					mine = append(mine, time.Since(sent))
					acked.Add(1)
				}
			}
		})
	}
	time.Sleep(activeWarmup)
	cpu0 := procCPU(b, gw.PID)
	w0 := time.Now()
	measure.Store(true)
	b.ResetTimer()
	time.Sleep(activeWindow)
	measure.Store(false)
	b.StopTimer()
	el := time.Since(w0)
	cpu := procCPU(b, gw.PID) - cpu0
	m1 := readGatewayMem(b, gw)
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d vehicles failed; first: %v", n, vehicles, firstErr.Load())
	}
	n := acked.Load()
	slices.Sort(lat)
	reportMem(b, "active", vehicles, m0, m1)
	b.ReportMetric(float64(n)/el.Seconds(), "frames/s")
	b.ReportMetric(cpu.Seconds()/el.Seconds(), "gw-cores")
	b.ReportMetric(float64(cpu.Microseconds())/float64(max(n, 1)), "gw-cpu-µs/frame")
	if len(lat) > 0 {
		b.ReportMetric(float64(pct(lat, 50).Microseconds())/1000, "puback-p50-ms")
		b.ReportMetric(float64(pct(lat, 99).Microseconds())/1000, "puback-p99-ms")
	}
	b.Logf("active: %d vehicles at 1 Hz, %d frames acked in %v (%.0f/s), gateway CPU %v (%.2f cores)",
		vehicles, n, el.Round(time.Millisecond), float64(n)/el.Seconds(), cpu, cpu.Seconds()/el.Seconds())
}

// gatewayGC runs n garbage collections in the gateway process (pprof's
// heap profile with gc=1).
func gatewayGC(b *testing.B, gw *testenv.Gateway, n int) {
	b.Helper()
	for range n {
		resp, err := http.Get("http://" + gw.HTTPAddr + "/debug/pprof/heap?gc=1")
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("pprof heap: status %d", resp.StatusCode)
		}
	}
}

// saveHeapProfile writes the gateway's heap profile (go tool pprof) to file.
func saveHeapProfile(b *testing.B, gw *testenv.Gateway, file string) {
	b.Helper()
	resp, err := http.Get("http://" + gw.HTTPAddr + "/debug/pprof/heap")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		b.Fatal(err)
	}
}

var (
	errBench       = errors.New("bench: unexpected packet")
	errNotAdmitted = errors.New("bench: devices not connected")
)

// dialFleet connects devices 1..n through 64 concurrent dialers spread over
// 8 loopback source addresses (127.0.0.2-9; one source address would run
// out of ephemeral ports long before 100,000), each sending CONNECT
// (keepalive 600 s) and waiting for CONNACK 0x00, then runs after on the
// connection. It fails the benchmark if any device is not admitted.
func dialFleet(b *testing.B, gw *testenv.Gateway, n int, after func(c net.Conn, vin string) error) []net.Conn {
	b.Helper()
	conns, err := dialDevices(strings.TrimPrefix(gw.MQTTURL, "tcp://"), 1, n, loopbackSources(0, 8), after)
	if err != nil {
		b.Fatal(err)
	}
	return conns
}

// loopbackSources returns n loopback source addresses starting at
// 127.0.0.(2+first).
func loopbackSources(first, n int) []net.IP {
	ips := make([]net.IP, n)
	for i := range ips {
		ips[i] = net.IPv4(127, 0, 0, byte(2+first+i))
	}
	return ips
}

// dialDevices connects devices first..first+n-1 to the broker at addr
// (host:port) through 64 concurrent dialers spread over the source
// addresses srcs, each sending CONNECT (keepalive 600 s) with the device's
// real secret and waiting for CONNACK 0x00, then runs after on the
// connection. If any device is not admitted it closes every connection and
// returns an error naming the first failure.
func dialDevices(addr string, first, n int, srcs []net.IP, after func(c net.Conn, vin string) error) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var (
		next   atomic.Int64
		failed atomic.Int64
		firstE atomic.Value
		wg     sync.WaitGroup
	)
	for w := range 64 {
		wg.Go(func() {
			d := net.Dialer{Timeout: 30 * time.Second, LocalAddr: &net.TCPAddr{IP: srcs[w%len(srcs)]}}
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				vin := sim.VIN(sim.DefaultVINPrefix, first+i)
				c, err := d.Dial("tcp", addr)
				if err == nil {
					conns[i] = c
					_ = c.SetDeadline(time.Now().Add(120 * time.Second))
					ack := make([]byte, 4)
					if _, err = c.Write(connectPacket(vin, sim.Secret(testenv.FleetKey, vin), 600)); err == nil {
						_, err = io.ReadFull(c, ack)
					}
					if err == nil && (ack[0] != 0x20 || ack[3] != 0) {
						err = fmt.Errorf("%w: connack % x", errBench, ack)
					}
					if err == nil {
						err = after(c, vin)
					}
					_ = c.SetDeadline(time.Time{})
				}
				if err != nil {
					failed.Add(1)
					firstE.CompareAndSwap(nil, fmt.Sprintf("device %d: %v", first+i, err))
				}
			}
		})
	}
	wg.Wait()
	if k := failed.Load(); k > 0 {
		closeAll(conns)
		return nil, fmt.Errorf("%w: %d of %d; first: %v", errNotAdmitted, k, n, firstE.Load())
	}
	return conns, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// gatewayMem is a snapshot of the gateway process's memory: RSS from /proc,
// the rest from the Go runtime metrics on its /metrics.
type gatewayMem struct {
	rss, heapInuse, stackInuse, goSys float64
	goroutines, fds, clients          float64
}

func readGatewayMem(b *testing.B, gw *testenv.Gateway) gatewayMem {
	b.Helper()
	m := gatewayMem{rss: float64(procRSS(b, gw.PID))}
	resp, err := http.Get("http://" + gw.HTTPAddr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		name, val, ok := strings.Cut(s.Text(), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			m.heapInuse = v
		case "go_memstats_stack_inuse_bytes":
			m.stackInuse = v
		case "go_memstats_sys_bytes":
			m.goSys = v
		case "go_goroutines":
			m.goroutines = v
		case "process_open_fds":
			m.fds = v
		case "telegate_mqtt_clients_connected":
			m.clients = v
		}
	}
	return m
}

func reportMem(b *testing.B, kind string, n int, m0, m1 gatewayMem) {
	per := (m1.rss - m0.rss) / float64(n)
	b.ReportMetric(per/1024, "KiB-rss/conn")
	b.ReportMetric((m1.heapInuse-m0.heapInuse)/float64(n)/1024, "KiB-heap/conn")
	b.ReportMetric((m1.stackInuse-m0.stackInuse)/float64(n)/1024, "KiB-stack/conn")
	b.ReportMetric((m1.goroutines-m0.goroutines)/float64(n), "goroutines/conn")
	b.ReportMetric(float64(1<<30)/per, "conns/GiB")
	b.ReportMetric((m0.rss+100_000*per)/(1<<30), "GiB@100k")
	b.Logf("%s: %d connections; gateway RSS %.0f -> %.0f MiB, heap in use %.0f -> %.0f MiB, stacks %.0f -> %.0f MiB, Go sys %.0f -> %.0f MiB, goroutines %.0f -> %.0f, open fds %.0f -> %.0f",
		kind, n, m0.rss/(1<<20), m1.rss/(1<<20), m0.heapInuse/(1<<20), m1.heapInuse/(1<<20),
		m0.stackInuse/(1<<20), m1.stackInuse/(1<<20), m0.goSys/(1<<20), m1.goSys/(1<<20), m0.goroutines, m1.goroutines, m0.fds, m1.fds)
}

// connectPacket builds an MQTT 3.1.1 CONNECT (clean session, username and
// password) by hand.
func connectPacket(id, password string, keepalive uint16) []byte {
	var body []byte
	body = append(body, mqttStr("MQTT")...)
	body = append(body, 4, 0xC2, byte(keepalive>>8), byte(keepalive)) // level 4; username, password, clean session
	body = append(body, mqttStr(id)...)
	body = append(body, mqttStr(id)...)
	body = append(body, mqttStr(password)...)
	return mqttPacket(0x10, body)
}

// subscribePkt builds an MQTT 3.1.1 SUBSCRIBE for one filter.
func subscribePkt(pid uint16, filter string, qos byte) []byte {
	body := []byte{byte(pid >> 8), byte(pid)}
	body = append(body, mqttStr(filter)...)
	return mqttPacket(0x82, append(body, qos))
}

// publishPkt builds an MQTT 3.1.1 QoS 1 PUBLISH.
func publishPkt(topic string, pid uint16, payload []byte) []byte {
	body := mqttStr(topic)
	body = append(body, byte(pid>>8), byte(pid))
	return mqttPacket(0x32, append(body, payload...))
}

func mqttStr(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func mqttPacket(first byte, body []byte) []byte {
	pkt := []byte{first}
	n := len(body)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		pkt = append(pkt, d)
		if n == 0 {
			break
		}
	}
	return append(pkt, body...)
}

// readPacket reads one MQTT packet: its type byte (flags included) and body.
func readPacket(r *bufio.Reader) (byte, []byte, error) {
	typ, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		d, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		mul *= 128
		if d&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, fmt.Errorf("%w: remaining length", errBench)
		}
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return typ, body, err
}

// procRSS returns the resident set size of pid in bytes.
func procRSS(b testing.TB, pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// activeFrame is a valid telemetry frame of an active vehicle: four known
// signals, all in range (nothing skipped or rejected by the decoder).
func activeFrame(vin string, seq uint64, ts time.Time) []byte {
	f := wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident(vin), Seq: seq, TimeMs: ts.UnixMilli()}
	f.Signals = append(f.Signals,
		wire.Signal{ID: catalog.Speed, Value: float64(seq % 130)},
		wire.Signal{ID: catalog.TractionSoC, Value: 80 - float64(seq%600)/10},
		wire.Signal{ID: catalog.IsMoving, Value: 1},
		wire.Signal{ID: catalog.CurrentGear, Value: 3},
	)
	out, err := f.MarshalMsg(nil)
	if err != nil {
		panic(err)
	}
	return out
}
