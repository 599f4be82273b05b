package broker

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// Read batching (Config.ReadBatch, broker/listener/batch.go) through the
// whole broker: every QoS 1 frame is acknowledged and delivered, for a
// device with one frame in flight and for one that pipelines, over TCP and
// TLS. The listener's tests drive the batching itself with a hand-fired
// tick; these use the real clock.

func readBatchOn(c *Config) { c.ReadBatch = 20 * time.Millisecond }

func TestReadBatchOneInFlightDeviceV5(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, nil, readBatchOn, rec)
	c := mustV5(t, b.Addr(ListenerTCP), vin1)
	const n = 20
	for i := range n {
		pr, err := c.publish(t, "vehicles/"+vin1+"/telemetry", 1, fmt.Sprint(i))
		if err != nil || pr.ReasonCode != 0 {
			t.Fatalf("publish %d: %+v %v", i, pr, err)
		}
	}
	for range n {
		rec.next(t)
	}
}

func TestReadBatchPipelinedDevice311(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, nil, readBatchOn, rec)
	c, r := rawConnect(t, b.Addr(ListenerTCP), vin1)
	const bursts, per = 5, 4
	id := uint16(0)
	for range bursts {
		var burst []byte
		for range per {
			id++
			burst = append(burst, publishPacket("vehicles/"+vin1+"/telemetry", 1, id, "x")...)
		}
		if _, err := c.Write(burst); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond) // past a tick: the next burst waits in the socket
	}
	for i := range bursts * per {
		want := []byte{0x40, 0x02, 0, byte(i + 1)}
		if got := readN(t, r, 4); !bytes.Equal(got, want) {
			t.Fatalf("PUBACK %d = %x, want %x", i, got, want)
		}
		rec.next(t)
	}
	eventually(t, "batched reads counted", func() bool {
		st := b.Stats().Snapshot()
		return st["batched_reads"] > 0 && st["batched_publishes"] > 0
	})
}

// TestReadBatchOverTLS: an MQTT 5 device pipelining bursts of QoS 1
// frames over TLS (raw bytes: each frame its own TLS record). Every frame
// gets its PUBACK, in order. (It used paho with 40
// concurrent Publish calls, which interleave the parts of packets over
// TLS: the guard then closed the connection for a "CONNACK" from the
// client, with or without batching.)
func TestReadBatchOverTLS(t *testing.T) {
	e := startTLSBroker(t, nil, readBatchOn)
	cfg := &tls.Config{RootCAs: e.serverCA, MinVersion: tls.VersionTLS12}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", e.b.Addr(ListenerTLS), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(connectPacket(5, vin1, vin1, secretOf(vin1), 30)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	readPacketRaw(t, r, 0x20, 0)
	const bursts, per = 5, 8
	id := uint16(0)
	for range bursts {
		for range per {
			id++
			if _, err := c.Write(publishPacketV5("vehicles/"+vin1+"/telemetry", 1, id, fmt.Sprint(id))); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(25 * time.Millisecond) // past a tick: the next burst waits in the socket
	}
	for i := range bursts * per {
		body := readPacketRaw(t, r, 0x40, 0)
		if len(body) < 2 || int(body[0])<<8|int(body[1]) != i+1 || (len(body) > 2 && body[2] != 0) {
			t.Fatalf("PUBACK %d = %x", i+1, body)
		}
	}
	if st := e.b.Stats().Snapshot(); st["batched_reads"] == 0 || st["protocol_violations"] != 0 {
		t.Fatalf("batched reads %d, protocol violations %d", st["batched_reads"], st["protocol_violations"])
	}
}

func TestReadBatchConfig(t *testing.T) {
	for _, d := range []time.Duration{-time.Millisecond, 2 * time.Second} {
		cfg := testConfig()
		cfg.ReadBatch = d
		if _, err := New(cfg, mustRegistry(t), testLogger(t)); err == nil {
			t.Fatalf("ReadBatch %v accepted", d)
		}
	}
}

// With read batching the frames a device sent during a tick reach the
// rate limiter at once: a device publishing at RatePerDevice, evenly,
// brings RatePerDevice × ReadBatch frames in one read. A Burst below that
// (plus the frame that starts the round) would rate-limit, and close (3.1.1),
// a device that keeps to the rate: refused.
func TestReadBatchBurstCoversATick(t *testing.T) {
	cfg := testConfig()
	cfg.RatePerDevice, cfg.Burst, cfg.ReadBatch = 20, 2, 250*time.Millisecond // 5 frames per tick
	if _, err := New(cfg, mustRegistry(t), testLogger(t)); !errors.Is(err, ErrConfig) {
		t.Fatalf("Burst 2 with 5 frames per tick: %v, want ErrConfig", err)
	}
	cfg = testConfig()
	cfg.RatePerDevice, cfg.Burst, cfg.ReadBatch = 20, 6, 250*time.Millisecond
	b, err := New(cfg, mustRegistry(t), testLogger(t))
	if err != nil {
		t.Fatalf("Burst 6 with 5 frames per tick: %v", err)
	}
	_ = b.Close()
	cfg = testConfig()
	cfg.ReadBatch = time.Second // the defaults allow any ReadBatch
	if b, err = New(cfg, mustRegistry(t), testLogger(t)); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	_ = b.Close()
}

// TestReadBatchDrainEndsWithFIN: a draining broker sends an MQTT 5 device
// DISCONNECT 0x9C with the Server Reference and closes the connection
// while the device's last frame waits unread in the socket for the batch
// tick. The connection must end with FIN, not a reset: a device stack that
// drops what it received on a reset would lose the DISCONNECT and its
// Server Reference. (It was reset: Linux resets a socket closed with
// unread data.)
func TestReadBatchDrainEndsWithFIN(t *testing.T) {
	b := startBroker(t, nil, func(c *Config) {
		c.ServerReference = testServerRef
		c.ReadBatch = time.Second // the second frame waits for the tick while Drain runs
	})
	c, r := rawConnectV5(t, b.Addr(ListenerTCP), vin1)
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(publishPacketV5(tele1, 1, 1, "1")); err != nil {
		t.Fatal(err)
	}
	readPacketRaw(t, r, 0x40, 0) // the reader now waits for the tick
	if _, err := c.Write(publishPacketV5(tele1, 1, 2, "2")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := ctxWait()
	defer cancel()
	if _, err := b.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	disc := readPacketRaw(t, r, 0xE0, 0)
	if len(disc) < 2 || disc[0] != 0x9C || serverReference(disc[2:]) != testServerRef {
		t.Fatalf("DISCONNECT body = %x, want 0x9C with the server reference", disc)
	}
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Fatalf("after the DISCONNECT: %x, %v; want the end of the stream", rest, err)
	}
}
