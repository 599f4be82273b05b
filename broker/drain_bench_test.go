package broker

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/telegate/telegate/broker/registry"
)

// BenchmarkDrain measures how long Drain takes with n connected MQTT
// 3.1.1 devices (real sockets on loopback), until every one is gone.
// Client and server sockets live in this process, so n is bounded by
// half the open-file limit (~9000 of 20000 here).
func BenchmarkDrain(b *testing.B) {
	for _, n := range []int{1000, 5000, 9000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			var devs []registry.Device
			h, err := registry.HashSecret([]byte("s"), 4)
			if err != nil {
				b.Fatal(err)
			}
			for i := range n {
				devs = append(devs, registry.Device{ID: fmt.Sprintf("TGSVS%012d", i), Kind: registry.KindVehicle, SecretHash: h})
			}
			reg, err := registry.New(devs)
			if err != nil {
				b.Fatal(err)
			}
			for range b.N {
				b.StopTimer()
				br := startBroker(b, reg, func(c *Config) { c.WSAddr = ""; c.MaxClients = int64(n) + 16 })
				addr := br.Addr(ListenerTCP)
				conns := make([]net.Conn, 0, n)
				for _, d := range devs {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := c.Write(connectPacket(4, d.ID, d.ID, "s", 300)); err != nil {
						b.Fatal(err)
					}
					if _, err := bufio.NewReader(c).Peek(4); err != nil {
						b.Fatal(err)
					}
					conns = append(conns, c)
				}
				b.StartTimer()
				got, err := br.Drain(context.Background())
				b.StopTimer()
				if err != nil {
					b.Fatalf("Drain = %d, %v", got, err)
				}
				b.ReportMetric(float64(got), "disconnected")
				for _, c := range conns {
					c.Close()
				}
				_ = br.Close()
			}
		})
	}
}
