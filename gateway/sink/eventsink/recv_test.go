package eventsink_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/sink/eventsink"
	"github.com/telegate/telegate/gateway/spool"
	"github.com/telegate/telegate/gateway/spool/record"
)

// TestChargingEventCarriesReceiveTime: the charger's session timestamp is
// its own (here three hours old); the event's data carries the gateway's
// receive time from the spool record, which the services decide on.
func TestChargingEventCarriesReceiveTime(t *testing.T) {
	dir := t.TempDir()
	bus, err := natsbus.Open(context.Background(), natsbus.Config{Settings: natsbus.Settings{Embedded: natsbus.EmbeddedSettings{Addr: "127.0.0.1:0", StoreDir: filepath.Join(dir, "nats")}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(dir, "spool"), Consumers: []string{eventsink.ConsumerName}, MaxRecord: 64 << 10, MaxBytes: 1 << 20, SegmentBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	recv := time.Date(2026, 6, 2, 10, 0, 0, 123_000_000, time.UTC)
	device := recv.Add(-3 * time.Hour)
	cs := wire.ChargingSession{Version: wire.Version, Station: wire.Ident("CS-0001"), Seq: 1, TimeMs: device.UnixMilli(), Kind: wire.SessionStarted,
		SessionID: wire.Ident("s1"), Connector: 1, VIN: wire.Ident(vin), PowerW: 11000}
	b, err := cs.MarshalMsg(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Append(record.Append(nil, record.KindPublish, 1, recv.UnixNano(), "chargers/CS-0001/session", "CS-0001", "", b)); err != nil {
		t.Fatal(err)
	}
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
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	oc, err := opsJS(t, bus).OrderedConsumer(context.Background(), natsbus.StreamCharging, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := oc.Next(jetstream.FetchMaxWait(20 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var env natsbus.Envelope[eventsink.ChargingEvent]
	if err := json.Unmarshal(m.Data(), &env); err != nil {
		t.Fatal(err)
	}
	if !env.Time.Equal(device.Truncate(time.Millisecond)) || !env.Data.ReceivedAt.Equal(recv) {
		t.Fatalf("time %v received_at %v, want %v and %v", env.Time, env.Data.ReceivedAt, device, recv)
	}
}
