package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/internal/testenv"
)

// BenchmarkIdleConnections opens b.N authenticated, idle MQTT 3.1.1 device
// connections to the gateway process and reports the gateway's resident
// memory per connection and the resulting connections per GiB.
//
// Run with: go test -run '^$' -bench IdleConnections -benchtime 5000x ./internal/e2e/
func BenchmarkIdleConnections(b *testing.B) {
	in := testenv.StartInflux(b)
	gw := testenv.StartGateway(b, in, b.N)
	addr := strings.TrimPrefix(gw.MQTTURL, "tcp://")
	time.Sleep(500 * time.Millisecond)
	rss0 := procRSS(b, gw.PID)
	conns := make([]net.Conn, 0, b.N)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		vin := sim.VIN(sim.DefaultVINPrefix, i)
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		if _, err := c.Write(connectPacket(vin, sim.Secret(fleetKey, vin), 300)); err != nil {
			b.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		ack := make([]byte, 4)
		if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
			b.Fatalf("connack %d: % x %v", i, ack, err)
		}
		conns = append(conns, c)
	}
	b.StopTimer()
	time.Sleep(time.Second) // let per-connection goroutines settle
	rss1 := procRSS(b, gw.PID)
	per := float64(rss1-rss0) / float64(b.N)
	b.ReportMetric(per/1024, "KiB/conn")
	b.ReportMetric(float64(1<<30)/per, "conns/GiB")
	b.Logf("idle: %d connections, gateway RSS %d MiB -> %d MiB", b.N, rss0>>20, rss1>>20)
}

// connectPacket builds an MQTT 3.1.1 CONNECT (clean session, username and
// password) by hand.
func connectPacket(id, password string, keepalive uint16) []byte {
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	var body []byte
	body = append(body, str("MQTT")...)
	body = append(body, 4, 0xC2, byte(keepalive>>8), byte(keepalive)) // level 4; username, password, clean session
	body = append(body, str(id)...)
	body = append(body, str(id)...)
	body = append(body, str(password)...)
	pkt := []byte{0x10}
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
