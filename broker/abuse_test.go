package broker

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Resource abuse: many silent sockets, a connect storm, a QoS 1 flood and
// a subscriber that never reads. Every test asserts outcomes and memory,
// never durations; waits are bounded only to turn a hang into a failure.

// TestSilentSocketsClosed opens 1 000 TCP sockets that never send CONNECT:
// every one is closed by the broker at the connect timeout and counted.
// The timeout leaves the final, legitimate CONNECT seconds to arrive.
func TestSilentSocketsClosed(t *testing.T) {
	const n = 1000
	b := startBroker(t, nil, func(c *Config) { c.ConnectTimeout = 2 * time.Second })
	addr := b.Addr(ListenerTCP)
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				c, err := net.DialTimeout("tcp", addr, wait)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every socket sees EOF from the broker (not our read guard).
	var closed atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				c := conns[i]
				_ = c.SetReadDeadline(time.Now().Add(3 * wait))
				if got, err := io.ReadAll(c); err == nil && len(got) == 0 {
					closed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	st := b.Stats()
	t.Logf("%d silent sockets: %d closed by the broker, connect_timeouts=%d, sockets_open=%d",
		n, closed.Load(), st.Listener.ConnectTimeouts.Load(), st.Listener.Open.Load())
	if closed.Load() != n {
		t.Fatalf("%d of %d silent sockets closed", closed.Load(), n)
	}
	eventually(t, "every timeout counted", func() bool {
		return st.Listener.ConnectTimeouts.Load() == n && st.Listener.Open.Load() == 0
	})
	mustV5(t, addr, vin1)
}

// TestConnectStormDoesNotStarveEstablished runs 500 concurrent CONNECTs
// (a third with wrong secrets, a third for unknown devices, a third valid)
// while an established client keeps publishing QoS 1: each of its
// publishes is acknowledged and it is never disconnected.
func TestConnectStormDoesNotStarveEstablished(t *testing.T) {
	const storm = 500
	// The established client publishes back to back: no rate limit here.
	b := startBroker(t, nil, func(c *Config) { c.RatePerDevice, c.Burst = 1e6, 1e6 })
	addr := b.Addr(ListenerTCP)
	c := mustV5(t, addr, vin1)

	stop := make(chan struct{})
	var acked atomic.Int64
	pubErr := make(chan error, 1)
	var pubWG sync.WaitGroup
	pubWG.Go(func() {
		for {
			pr, err := c.publish(t, "vehicles/"+vin1+"/telemetry", 1, "frame")
			if err != nil || pr.ReasonCode != 0 {
				pubErr <- fmt.Errorf("publish during the storm: %+v %w", pr, err)
				return
			}
			acked.Add(1)
			select {
			case <-stop:
				return
			default:
			}
		}
	})

	var refused, accepted atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range storm {
		wg.Go(func() {
			id, pass := vin2, "wrong-"+fmt.Sprint(i)
			switch i % 3 {
			case 1:
				id, pass = fmt.Sprintf("TGSVS0000000%05d", 20000+i), "whatever"
			case 2:
				id, pass = chABCD, secrets[chABCD]
			}
			<-start
			nc, err := net.DialTimeout("tcp", addr, wait)
			if err != nil {
				return
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(3 * wait))
			if _, err := nc.Write(connectPacket(4, id, id, pass, 30)); err != nil {
				return
			}
			ack := make([]byte, 4)
			if _, err := io.ReadFull(nc, ack); err != nil {
				return
			}
			if ack[3] == 0 {
				accepted.Add(1)
			} else {
				refused.Add(1)
			}
		})
	}
	before := acked.Load()
	close(start)
	wg.Wait()
	during := acked.Load() - before
	close(stop)
	pubWG.Wait()
	select {
	case err := <-pubErr:
		t.Fatal(err)
	default:
	}
	select {
	case <-c.Done():
		t.Fatal("established client was disconnected by the storm")
	default:
	}
	st := b.Stats()
	t.Logf("storm of %d connects: %d accepted, %d refused (auth_failures=%d); established client: %d PUBACKs during the storm",
		storm, accepted.Load(), refused.Load(), st.AuthFailures.Load(), during)
	if refused.Load() < storm*2/3-5 || st.AuthFailures.Load() < uint64(storm*2/3) {
		t.Fatalf("refusals: %d seen, %d counted", refused.Load(), st.AuthFailures.Load())
	}
	if pr, err := c.publish(t, "vehicles/"+vin1+"/telemetry", 1, "after"); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("after the storm: %+v %v", pr, err)
	}
}

// TestQoS1FloodDoesNotStarveOthers: one client writes thousands of QoS 1
// publishes without ever reading its PUBACKs (far beyond Receive Maximum);
// another client's QoS 1 publishes are still acknowledged.
func TestQoS1FloodDoesNotStarveOthers(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, nil, func(c *Config) { c.RatePerDevice, c.Burst = 1e6, 1e6 }, rec)
	addr := b.Addr(ListenerTCP)
	flooder, _ := rawConnectV5(t, addr, vin2)
	const flood = 5000
	var fw sync.WaitGroup
	fw.Go(func() {
		for i := range flood {
			id := uint16(i%65535 + 1)
			if _, err := flooder.Write(publishPacketV5("vehicles/"+vin2+"/telemetry", 1, id, strings.Repeat("x", 200))); err != nil {
				return // the broker or the test closed it
			}
		}
	})
	c := mustV5(t, addr, vin1)
	for i := range 50 {
		if pr, err := c.publish(t, "vehicles/"+vin1+"/telemetry", 1, "ok"); err != nil || pr.ReasonCode != 0 {
			t.Fatalf("publish %d while another client floods: %+v %v", i, pr, err)
		}
	}
	flooder.Close()
	fw.Wait()
	seen := 0
	for _, tp := range rec.all() {
		if tp == "vehicles/"+vin2+"/telemetry" {
			seen++
		}
	}
	t.Logf("flooder sent up to %d QoS 1 publishes without reading; %d reached the hook before its socket backed up; the other client got 50 of 50 PUBACKs", flood, seen)
}

// publishPacketV5 builds a v5 PUBLISH with no properties.
func publishPacketV5(topic string, qos byte, id uint16, payload string) []byte {
	body := encStr(topic)
	if qos > 0 {
		body = append(body, byte(id>>8), byte(id))
	}
	body = append(body, 0)
	return packet(0x30|qos<<1, append(body, payload...))
}

// TestSlowSubscriberBounded: a device subscribes to its commands and never
// reads its socket. The broker keeps at most MaxClientWritesPending packets
// queued and MaxInflight QoS 1 messages for it, drops and counts the rest,
// its heap stays bounded, and other devices keep receiving their commands.
func TestSlowSubscriberBounded(t *testing.T) {
	b := startBroker(t, nil, nil)
	addr := b.Addr(ListenerTCP)
	// The stuck device: subscribed, then never reads again.
	stuck, r := rawConnect(t, addr, vin1)
	if _, err := stuck.Write(subscribePacket(1, "vehicles/"+vin1+"/cmd/#")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, r, 5); got[0] != 0x90 || got[4] != 1 {
		t.Fatalf("SUBACK %x", got)
	}
	healthy := mustV5(t, addr, vin2)
	if rc := healthy.subscribe(t, "vehicles/"+vin2+"/cmd/#"); rc[0] != 1 {
		t.Fatal(rc)
	}

	before := heapInUse()
	const n, size = 20000, 4 << 10 // 80 MiB offered to the stuck device
	payload := []byte(strings.Repeat("c", size))
	for i := range n {
		if err := b.Publish("vehicles/"+vin1+"/cmd/x", payload, byte(i%2)); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 0 {
			if err := b.Publish("vehicles/"+vin2+"/cmd/x", []byte(fmt.Sprint(i)), 1); err != nil {
				t.Fatal(err)
			}
			if m := healthy.next(t); string(m.Payload) != fmt.Sprint(i) {
				t.Fatalf("healthy device got %q", m.Payload)
			}
		}
	}
	after := heapInUse()
	st := b.Stats()
	grew := int64(after) - int64(before)
	t.Logf("%d × %d B commands to a device that never reads: heap %+.1f MiB, messages_dropped=%d, inflight_dropped=%d",
		n, size, float64(grew)/(1<<20), st.MessagesDropped(), st.InflightDropped())
	if st.MessagesDropped()+st.InflightDropped() == 0 {
		t.Fatal("nothing dropped: the queue is not bounded")
	}
	if grew > 16<<20 {
		t.Fatalf("heap grew by %d MiB for one stuck subscriber", grew>>20)
	}
	stuck.Close()
	eventually(t, "stuck device gone", func() bool { return b.Connected() == 1 })
}
