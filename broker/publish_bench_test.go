package broker

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telegate/telegate/broker/registry"
)

// ingestLike is an extra hook with the ingest hook's events
// (gateway/ingest.Hook.Provides) doing no work: the benchmarks below
// measure the broker's dispatch and policy path, not the durable append.
type ingestLike struct {
	mqtt.HookBase
	n int // publishes seen; written on the client's read goroutine only
}

func (h *ingestLike) ID() string { return "bench-ingest" }

func (h *ingestLike) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnSessionEstablished || b == mqtt.OnDisconnect ||
		b == mqtt.OnWillSent || b == mqtt.OnPacketRead
}

func (h *ingestLike) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	h.n++
	return pk, nil
}

// benchFleet returns n vehicles sharing one secret ("s").
func benchFleet(b *testing.B, n int) (*registry.Registry, []registry.Device) {
	b.Helper()
	h, err := registry.HashSecret([]byte("s"), 4)
	if err != nil {
		b.Fatal(err)
	}
	devs := make([]registry.Device, n)
	for i := range devs {
		devs[i] = registry.Device{ID: fmt.Sprintf("TGSVS%012d", i+1), Kind: registry.KindVehicle, SecretHash: h}
	}
	reg, err := registry.New(devs)
	if err != nil {
		b.Fatal(err)
	}
	return reg, devs
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPublishQoS1 drives real QoS 1 publishes (MQTT 3.1.1, 64-byte
// payload) over loopback sockets through the broker with its policy hook
// (identity, ACL, rate limit with a rate that never refuses, drain
// tracking) and an ingest-like extra hook: each of `devices` raw clients
// keeps one PUBLISH in flight, as the paced fleet benchmark does. ns/op is
// wall time per acknowledged publish; cpu-ns/op is the process's CPU time
// per publish (broker and the raw clients, whose share is two syscalls).
func BenchmarkPublishQoS1(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			reg, devs := benchFleet(b, n)
			br := startBroker(b, reg, func(c *Config) {
				c.WSAddr = ""
				c.RatePerDevice = 1e9 // exercised, never refuses
				c.Burst = 1000
			}, &ingestLike{})
			addr := br.Addr(ListenerTCP)
			type dev struct {
				c   net.Conn
				r   *bufio.Reader
				pub []byte
			}
			ds := make([]dev, n)
			for i, d := range devs {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Write(connectPacket(4, d.ID, d.ID, "s", 300)); err != nil {
					b.Fatal(err)
				}
				r := bufio.NewReader(c)
				ack := make([]byte, 4)
				if _, err := io.ReadFull(r, ack); err != nil || ack[3] != 0 {
					b.Fatalf("CONNACK %x: %v", ack, err)
				}
				ds[i] = dev{c, r, publishPacket("vehicles/"+d.ID+"/telemetry", 1, 1, string(make([]byte, 64)))}
			}
			var wg sync.WaitGroup
			errs := make(chan error, n)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := range ds {
				per := b.N / n
				if i < b.N%n {
					per++
				}
				wg.Add(1)
				go func(d dev, per int) {
					defer wg.Done()
					ack := make([]byte, 4)
					for range per {
						if _, err := d.c.Write(d.pub); err != nil {
							errs <- err
							return
						}
						if _, err := io.ReadFull(d.r, ack); err != nil {
							errs <- err
							return
						}
						if ack[0] != 0x40 {
							errs <- fmt.Errorf("want PUBACK, got %x", ack)
							return
						}
					}
				}(ds[i], per)
			}
			wg.Wait()
			cpu := cpuTime() - cpu0
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkPolicyPublishPath calls the policy hook's per-PUBLISH methods
// (OnPacketRead, OnACLCheck, OnPublish, OnPacketProcessed) in mochi's order
// for a connected client, without the socket: the broker's own share of a
// publish's CPU.
func BenchmarkPolicyPublishPath(b *testing.B) {
	reg, devs := benchFleet(b, 1)
	br := startBroker(b, reg, func(c *Config) {
		c.WSAddr = ""
		c.RatePerDevice = 1e9
		c.Burst = 1000
	})
	c, err := net.Dial("tcp", br.Addr(ListenerTCP))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	id := devs[0].ID
	if _, err := c.Write(connectPacket(4, id, id, "s", 300)); err != nil {
		b.Fatal(err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || ack[3] != 0 {
		b.Fatalf("CONNACK %x: %v", ack, err)
	}
	cl, ok := br.server.Clients.Get(id)
	if !ok {
		b.Fatal("client not found")
	}
	h := &policy{b: br}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   "vehicles/" + id + "/telemetry",
		PacketID:    1,
		Payload:     make([]byte, 64),
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		p, err := h.OnPacketRead(cl, pk)
		if err != nil {
			b.Fatal(err)
		}
		if !h.OnACLCheck(cl, p.TopicName, true) {
			b.Fatal("denied")
		}
		if p, err = h.OnPublish(cl, p); err != nil {
			b.Fatal(err)
		}
		h.OnPacketProcessed(cl, p, nil)
	}
}
