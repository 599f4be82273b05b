package e2e

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/internal/testenv"
)

// Cold admission: a freshly started gateway (empty credential cache) admits
// b.N devices that all connect at once, as after a failover moves a dead
// replica's fleet to it. Connections come from 8 loopback source addresses
// (127.0.0.2 to 127.0.0.9) through 128 concurrent dialers; each sends an MQTT
// 3.1.1 CONNECT and waits for CONNACK 0x00. Reported: devices admitted per
// second and the time 100,000 devices would take at that rate.
//
// The machine this runs on caps open files at 20,000 per process (and the
// benchmark process holds one end of every connection), so b.N stays below
// that; the admission rate does not depend on how many are already held.
//
//	go test -run '^$' -bench ColdAdmission -benchtime 15000x ./internal/e2e/
func BenchmarkColdAdmissionMachineHash(b *testing.B) { benchColdAdmission(b, -1) }

// BenchmarkColdAdmissionBcrypt10 is the same with bcrypt cost 10 device
// hashes (wave 1's registries); run it with a small -benchtime (200x).
func BenchmarkColdAdmissionBcrypt10(b *testing.B) { benchColdAdmission(b, 10) }

func benchColdAdmission(b *testing.B, cost int) {
	in := testenv.StartInflux(b)
	gw := testenv.StartGateway(b, in, b.N, testenv.GatewayOptions{SecretCost: cost,
		ExtraCfg: "" /* defaults: mqtt.max_clients 100000 */})
	addr := strings.TrimPrefix(gw.MQTTURL, "tcp://")
	_, port, _ := net.SplitHostPort(addr)
	conns := make([]net.Conn, b.N)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var (
		next   atomic.Int64
		failed atomic.Int64
		first  atomic.Value
		wg     sync.WaitGroup
	)
	b.ResetTimer()
	start := time.Now()
	for w := range 128 {
		wg.Go(func() {
			d := net.Dialer{Timeout: 30 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+w%8))}}
			for {
				i := int(next.Add(1))
				if i > b.N {
					return
				}
				vin := sim.VIN(sim.DefaultVINPrefix, i)
				c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", port))
				if err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, fmt.Sprintf("dial %d: %v", i, err))
					continue
				}
				conns[i-1] = c
				_ = c.SetDeadline(time.Now().Add(120 * time.Second))
				ack := make([]byte, 4)
				if _, err := c.Write(connectPacket(vin, sim.Secret(testenv.FleetKey, vin), 600)); err == nil {
					_, _ = io.ReadFull(c, ack) // a short read fails the ack check below
				}
				if ack[0] != 0x20 || ack[3] != 0 {
					failed.Add(1)
					first.CompareAndSwap(nil, fmt.Sprintf("connack %d: % x", i, ack))
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d devices not admitted; first: %v", n, b.N, first.Load())
	}
	rate := float64(b.N) / el.Seconds()
	b.ReportMetric(rate, "devices/s")
	b.ReportMetric(100_000/rate, "s/100k")
	b.Logf("cold admission: %d devices in %v (%.0f/s; 100,000 would take %.1f s)", b.N, el.Round(time.Millisecond), rate, 100_000/rate)
}
