package faults

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/ingest"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/spool/record"
	"github.com/telegate/telegate/internal/testenv"
)

// TestJetStreamDurableNodeStop appends QoS 1 records through the hook's
// JetStream hand-off (ingest.FromJetStream) into an R3 INGEST stream on a
// real 3-node cluster, like devices that resend until acknowledged, and
// stops the stream's leader half-way. Every acknowledged record must be in
// the stream exactly once per (device, seq): nothing acked lost (quorum
// 2/3), no duplicate from a resend (Nats-Msg-Id).
func TestJetStreamDurableNodeStop(t *testing.T) {
	cl := testenv.StartNATSCluster(t, 3)
	js := cl.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := natsbus.DeclareIngest(ctx, js, natsbus.IngestStream{Replicas: 3, MaxBytes: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	// The publisher's own connection, like the gateway's ingest role.
	pubJS, err := jetstream.New(cl.Connect(t, 1), jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		t.Fatal(err)
	}
	d := ingest.FromJetStream(pubJS, ingest.JetStreamConfig{AckTimeout: 2 * time.Second})

	devices, perDevice := 8, pick(150, 3000)
	var acked, refused atomic.Int64
	var wg sync.WaitGroup
	for dev := 0; dev < devices; dev++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := fmt.Sprintf("VIN%014d", dev)
			topic := "vehicles/" + client + "/telemetry"
			for seq := 1; seq <= perDevice; seq++ {
				payload := []byte("seq=" + strconv.Itoa(seq))
				for {
					// A fresh receive time per attempt, as the hook stamps it.
					rec := record.Append(nil, record.KindPublish, 1, time.Now().UnixNano(), topic, client, "", payload)
					if err := d.Append(rec); err == nil {
						break
					}
					refused.Add(1) // the device resends
					time.Sleep(20 * time.Millisecond)
				}
				acked.Add(1)
			}
		}()
	}
	total := int64(devices * perDevice)
	for acked.Load() < total/2 {
		time.Sleep(5 * time.Millisecond)
	}
	leader := streamLeader(t, ctx, cl, js)
	cl.Stop(leader)
	t.Logf("stopped node %d (stream leader) at %d of %d acked", leader, acked.Load(), total)
	wg.Wait()
	cl.Restart(leader)

	got := readIngest(t, ctx, cl.JetStream(t, (leader+1)%3), int(total))
	for dev := 0; dev < devices; dev++ {
		client := fmt.Sprintf("VIN%014d", dev)
		if n := len(got[client]); n != perDevice {
			t.Fatalf("%s: %d distinct frames stored, want %d", client, n, perDevice)
		}
	}
	t.Logf("%d records acked across a leader stop, all stored once; %d refused appends resent", total, refused.Load())
}

// streamLeader is the index of the node leading the INGEST stream.
func streamLeader(t *testing.T, ctx context.Context, cl *testenv.NATSCluster, js jetstream.JetStream) int {
	t.Helper()
	s, err := js.Stream(ctx, natsbus.StreamIngest)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		t.Fatalf("stream info: %v", err)
	}
	for i := 0; i < 3; i++ {
		if srv := cl.Server(i); srv != nil && srv.Name() == info.Cluster.Leader {
			return i
		}
	}
	t.Fatalf("leader %q not found", info.Cluster.Leader)
	return -1
}

// readIngest reads every record of INGEST through its influx consumer
// (acknowledging) and returns, per device, how often each payload was
// stored; it fails on a duplicate or when want records do not arrive.
func readIngest(t *testing.T, ctx context.Context, js jetstream.JetStream, want int) map[string]map[string]int {
	t.Helper()
	cons, err := js.Consumer(ctx, natsbus.StreamIngest, natsbus.ConsumerIngestInflux)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]int{}
	n := 0
	deadline := time.Now().Add(time.Minute)
	for n < want && time.Now().Before(deadline) {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			var r record.Record
			if err := record.Parse(m.Data(), &r); err != nil {
				t.Fatal(err)
			}
			c, p := string(r.Client), string(r.Payload)
			if got[c] == nil {
				got[c] = map[string]int{}
			}
			got[c][p]++
			if got[c][p] > 1 {
				t.Fatalf("%s %s stored twice", c, p)
			}
			n++
			_ = m.Ack()
		}
	}
	// Anything more would be a duplicate.
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(500*time.Millisecond))
	if err == nil {
		for m := range batch.Messages() {
			t.Fatalf("extra record beyond %d: %q", want, strings.TrimSpace(string(m.Data())))
		}
	}
	if n != want {
		t.Fatalf("read %d records, want %d", n, want)
	}
	return got
}

// jsGateway starts a gateway replica in the jetstream durability mode
// against the cluster (R3 streams) and in; each call is another replica
// (its own data directory and ports).
func jsGateway(t *testing.T, in *testenv.Influx, cl *testenv.NATSCluster, vehicles int) *testenv.Gateway {
	t.Helper()
	return testenv.StartGateway(t, in, vehicles, testenv.GatewayOptions{
		NATSURL: cl.URLs(), NATSUser: cl.User, NATSPassword: cl.Password, NATSReplicas: 3,
		ExtraCfg: "ingest: {durability: jetstream, stream_max_bytes: 64MiB, ack_wait: 3s}\n",
	})
}

// TestJetStreamReplicaKill9 runs two gateway replicas in the jetstream
// durability mode on a real 3-node NATS cluster and a real InfluxDB, with
// devices connected to replica A (B is their failover address). A is
// SIGKILLed under load: the devices move to B, which also runs the shared
// sink consumers and gets A's unacknowledged records redelivered. Every
// acknowledged frame must be in InfluxDB, exactly once per (vin, seq):
// count and sum of seq per vehicle.
func TestJetStreamReplicaKill9(t *testing.T) {
	cl := testenv.StartNATSCluster(t, 3)
	in := testenv.StartInflux(t)
	vehicles := 10
	a := jsGateway(t, in, cl, vehicles)
	b := jsGateway(t, in, cl, vehicles)
	l := startLoadURLs(t, []string{a.MQTTURL, b.MQTTURL}, vehicles, pick(300, 3000), 3*time.Millisecond)
	for l.acked.Load() < int64(l.total()/3) {
		time.Sleep(10 * time.Millisecond)
	}
	a.Kill()
	t.Logf("replica A killed at %d of %d acked", l.acked.Load(), l.total())
	l.wait(t, 2*time.Minute)
	l.waitStored(t, in, 2*time.Minute)
	checkIngestUsed(t, cl, l.total())
	t.Logf("replica A kill -9: %d frames acked, all stored exactly once via replica B, 0 lost, %d resends", l.total(), l.resends.Load())
}

// TestJetStreamGatewayNATSNodeStop stops the INGEST stream's leader node
// of the 3-node cluster while a gateway in the jetstream mode is under
// load, and restarts it: publishes keep being acknowledged by the quorum
// of the two others, and every acknowledged frame is stored exactly once.
func TestJetStreamGatewayNATSNodeStop(t *testing.T) {
	cl := testenv.StartNATSCluster(t, 3)
	in := testenv.StartInflux(t)
	gw := jsGateway(t, in, cl, 10)
	l := startLoad(t, gw.MQTTURL, 10, pick(300, 3000), 3*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for l.acked.Load() < int64(l.total()/3) {
		time.Sleep(10 * time.Millisecond)
	}
	leader := streamLeader(t, ctx, cl, cl.JetStream(t))
	cl.Stop(leader)
	stoppedAt := l.acked.Load()
	for l.acked.Load() < stoppedAt+int64(l.total()/5) && l.acked.Load() < int64(l.total()) {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("INGEST leader node %d stopped at %d acked; %d acked while it was down", leader, stoppedAt, l.acked.Load()-stoppedAt)
	cl.Restart(leader)
	l.wait(t, 2*time.Minute)
	l.waitStored(t, in, 2*time.Minute)
	checkIngestUsed(t, cl, l.total())
	t.Logf("NATS node stop under load: %d frames acked, all stored exactly once, 0 lost, %d resends", l.total(), l.resends.Load())
}

// checkIngestUsed asserts that the frames went through the INGEST stream
// (at least n appended) and that both sink consumers acknowledged all of it.
func checkIngestUsed(t *testing.T, cl *testenv.NATSCluster, n int) {
	t.Helper()
	// The events consumer moves to a live replica after its pin expires
	// (ack_wait, at least 5 s, without a pull) and the dead one's records after ack_wait.
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	js := cl.JetStream(t)
	s, err := js.Stream(ctx, natsbus.StreamIngest)
	if err != nil {
		t.Fatal(err)
	}
	var last jetstream.StreamState
	for {
		info, err := s.Info(ctx)
		if err == nil {
			last = info.State
			if last.LastSeq >= uint64(n) && last.Msgs == 0 {
				return
			}
		}
		if ctx.Err() != nil {
			for _, name := range []string{natsbus.ConsumerIngestInflux, natsbus.ConsumerIngestEvents} {
				if c, err := s.Consumer(context.Background(), name); err == nil {
					ci, _ := c.Info(context.Background())
					t.Logf("consumer %s: %+v", name, ci)
				}
			}
			t.Fatalf("INGEST: %+v (want ≥ %d appended, none left)", last, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestJetStreamDurableFullStream fills a small INGEST stream that no sink
// drains: once it is full, QoS 1 appends are refused with ErrSpoolFull
// (the hook answers MQTT 5 with PUBACK 0x97 and disconnects a 3.1.1
// client, as for a full spool), never acknowledged and dropped; a resend
// of an already stored record is still acknowledged (deduplicated).
func TestJetStreamDurableFullStream(t *testing.T) {
	cl := testenv.StartNATSCluster(t, 1)
	js := cl.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := natsbus.DeclareIngest(ctx, js, natsbus.IngestStream{Replicas: 1, MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	d := ingest.FromJetStream(js, ingest.JetStreamConfig{AckTimeout: 5 * time.Second})
	payload := make([]byte, 4096)
	var first []byte
	for seq := 1; ; seq++ {
		copy(payload, fmt.Sprintf("seq=%08d", seq))
		rec := record.Append(nil, record.KindPublish, 1, int64(seq), "vehicles/V1/telemetry", "V1", "", payload)
		if seq == 1 {
			first = rec
		}
		err := d.Append(rec)
		if err == nil {
			if seq > 1000 {
				t.Fatal("1 MiB stream took 1000 records of 4 KiB")
			}
			continue
		}
		if !errors.Is(err, ingest.ErrSpoolFull) {
			t.Fatalf("record %d: %v, want ErrSpoolFull", seq, err)
		}
		t.Logf("stream full after %d records: %v", seq-1, err)
		break
	}
	if err := d.Append(first); err != nil {
		t.Fatalf("resend of a stored record: %v, want acknowledged (duplicate)", err)
	}
}
