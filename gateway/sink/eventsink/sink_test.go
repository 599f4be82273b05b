package eventsink_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/sink/eventsink"
	"github.com/telegate/telegate/gateway/spool"
	"github.com/telegate/telegate/gateway/spool/record"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const vin = "TGSVS000000000001"

func diag(seq uint64, codes ...uint16) []byte {
	d := wire.DiagReport{Version: wire.Version, VIN: wire.Ident(vin), Seq: seq, TimeMs: 1_767_225_600_000 + int64(seq)*1000}
	for _, c := range codes {
		d.DTCs = append(d.DTCs, wire.DTCEntry{Code: c, Status: wire.DTCConfirmed})
	}
	b, _ := d.MarshalMsg(nil)
	return record.Append(nil, record.KindPublish, 1, 1, "vehicles/"+vin+"/diag", vin, "", b)
}

// runUntil runs a fresh sink over the spool until the DTC stream holds want
// messages (or the bounded wait ends), then stops it.
// eventsClient is the event sink's own connection (natsbus.RoleEvents).
func eventsClient(t *testing.T, bus *natsbus.Bus) *natsbus.Client {
	t.Helper()
	c, err := bus.Client(natsbus.RoleEvents)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// opsByBus caches each bus's full-rights connection for the tests' own
// reads (one per bus, closed by the first test's Cleanup that opened it).
var opsByBus sync.Map // *natsbus.Bus -> *natsbus.Client

// opsJS is a full-rights JetStream context on bus (the operator's user): what
// the test itself reads, never what the sink runs on.
func opsJS(t *testing.T, bus *natsbus.Bus) jetstream.JetStream {
	t.Helper()
	if c, ok := opsByBus.Load(bus); ok {
		return c.(*natsbus.Client).JetStream()
	}
	c, err := bus.Client(natsbus.RoleOps)
	if err != nil {
		t.Fatal(err)
	}
	opsByBus.Store(bus, c)
	t.Cleanup(func() { opsByBus.Delete(bus); c.Close() })
	return c.JetStream()
}

func runUntil(t *testing.T, sp *spool.Spool, bus *natsbus.Bus, want uint64) {
	t.Helper()
	cons, err := sp.Consumer(eventsink.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	ev := eventsClient(t, bus) // the sink's own user, as in the gateway
	kv, err := ev.JetStream().KeyValue(context.Background(), natsbus.BucketDTCState)
	if err != nil {
		t.Fatal(err)
	}
	s := eventsink.New(cons, ev, eventsink.KVStore{KV: kv}, nil, metrics.New(prometheus.NewRegistry()), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, nil) }()
	deadline := time.Now().Add(30 * time.Second)
	for streamMsgs(t, bus) < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// Let the sink commit (and process anything beyond want) before stopping.
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func streamMsgs(t *testing.T, bus *natsbus.Bus) uint64 {
	s, err := opsJS(t, bus).Stream(context.Background(), "DTC")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestDTCStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	bus, err := natsbus.Open(context.Background(), natsbus.Config{Settings: natsbus.Settings{Embedded: natsbus.EmbeddedSettings{Addr: "127.0.0.1:0", StoreDir: filepath.Join(dir, "nats")}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	open := func() *spool.Spool {
		sp, err := spool.Open(spool.Options{Dir: filepath.Join(dir, "spool"), Consumers: []string{eventsink.ConsumerName}, MaxRecord: 64 << 10, MaxBytes: 1 << 20, SegmentBytes: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		return sp
	}
	sp := open()
	for _, r := range [][]byte{diag(1, 0x0301), diag(2, 0x0301, 0x0420)} {
		if _, err := sp.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	runUntil(t, sp, bus, 2) // raised P0301, raised P0420
	sp.Close()

	// "Restart": a new spool handle and a new sink with an empty cache. The
	// next report still holds both codes: nothing must be raised again.
	sp = open()
	defer sp.Close()
	if _, err := sp.Append(diag(3, 0x0301, 0x0420)); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Append(diag(4, 0x0420)); err != nil { // P0301 cleared
		t.Fatal(err)
	}
	runUntil(t, sp, bus, 3)
	if n := streamMsgs(t, bus); n != 3 {
		t.Fatalf("DTC stream has %d events, want 3 (raised, raised, cleared)", n)
	}
	cons, err := opsJS(t, bus).OrderedConsumer(context.Background(), "DTC", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 3 {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var env natsbus.Event
		if err := json.Unmarshal(m.Data(), &env); err != nil {
			t.Fatal(err)
		}
		got = append(got, env.Type+":"+m.Subject())
	}
	want := []string{"dtc.raised:telemetry.dtc.raised." + vin, "dtc.raised:telemetry.dtc.raised." + vin, "dtc.cleared:telemetry.dtc.cleared." + vin}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %v, want %v", got, want)
		}
	}
}

// TestDTCCacheNotTrustedAcrossBatches: a vehicle's reports handled by
// replica A, then B, then A again (it reconnected twice). A must diff its
// second report against the state B saved, not against its own earlier
// view: the code B already raised is not raised again.
func TestDTCCacheNotTrustedAcrossBatches(t *testing.T) {
	dir := t.TempDir()
	bus, err := natsbus.Open(context.Background(), natsbus.Config{Settings: natsbus.Settings{Embedded: natsbus.EmbeddedSettings{Addr: "127.0.0.1:0", StoreDir: filepath.Join(dir, "nats")}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	open := func(name string) *spool.Spool {
		sp, err := spool.Open(spool.Options{Dir: filepath.Join(dir, name), Consumers: []string{eventsink.ConsumerName}, MaxRecord: 64 << 10, MaxBytes: 1 << 20, SegmentBytes: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sp.Close() })
		return sp
	}
	ev := eventsClient(t, bus) // the sink's own user, as in the gateway
	kv, err := ev.JetStream().KeyValue(context.Background(), natsbus.BucketDTCState)
	if err != nil {
		t.Fatal(err)
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("never: %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	storedSeq := func() uint64 {
		st, err := eventsink.KVStore{KV: kv}.Load(context.Background(), vin)
		if err != nil {
			t.Fatal(err)
		}
		return st.Seq
	}

	// Replica A's sink runs throughout.
	spA := open("spool-a")
	cons, err := spA.Consumer(eventsink.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	a := eventsink.New(cons, ev, eventsink.KVStore{KV: kv}, nil, metrics.New(prometheus.NewRegistry()), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	if _, err := spA.Append(diag(1, 0x0301)); err != nil {
		t.Fatal(err)
	}
	wait("A saved report 1", func() bool { return storedSeq() == 1 })

	// Report 2 on replica B: P0420 raised there.
	spB := open("spool-b")
	if _, err := spB.Append(diag(2, 0x0301, 0x0420)); err != nil {
		t.Fatal(err)
	}
	runUntil(t, spB, bus, 2)
	wait("B saved report 2", func() bool { return storedSeq() == 2 })

	// Report 3 back on A, same codes as report 2: no event (an unchanged
	// state is not saved); report 4 clears P0301 and is saved.
	for _, r := range [][]byte{diag(3, 0x0301, 0x0420), diag(4, 0x0420)} {
		if _, err := spA.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	wait("A saved report 4", func() bool { return storedSeq() == 4 })
	if n := streamMsgs(t, bus); n != 3 {
		t.Fatalf("DTC stream has %d events, want 3 (P0301 raised on A, P0420 raised on B, P0301 cleared on A): A diffed against its stale view", n)
	}
}
