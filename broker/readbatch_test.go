package broker

import (
	"bytes"
	"crypto/tls"
	"fmt"
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

func TestReadBatchOverTLS(t *testing.T) {
	e := startTLSBroker(t, nil, readBatchOn)
	cfg := &tls.Config{RootCAs: e.serverCA, MinVersion: tls.VersionTLS12}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", e.b.Addr(ListenerTLS), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, ca, err := v5Connect(t, "", vin1, v5Opts{user: vin1, pass: secrets[vin1], keepalive: 30, conn: conn})
	if err != nil {
		t.Fatalf("connect: %+v %v", ca, err)
	}
	done := make(chan error, 40)
	for i := range 40 {
		go func() {
			pr, err := c.publish(t, "vehicles/"+vin1+"/telemetry", 1, fmt.Sprint(i))
			if err == nil && pr.ReasonCode != 0 {
				err = fmt.Errorf("reason %#x", pr.ReasonCode)
			}
			done <- err
		}()
		if i%8 == 7 {
			time.Sleep(25 * time.Millisecond)
		}
	}
	for range 40 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
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
