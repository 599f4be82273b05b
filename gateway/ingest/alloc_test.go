package ingest

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/ingest/topics"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/spool"
)

type nopPipe struct{}

func (nopPipe) AppendTicket([]byte) (uint64, error) { return 1, nil }
func (nopPipe) WaitTicket(uint64, time.Time) error  { return nil }
func (nopPipe) Append([]byte) error                 { return nil }
func (nopPipe) AppendAsync([]byte) error            { return nil }

// TestHeldPathAllocatesNothing: per QoS 1 frame, the ingest side of the
// pipelined path (validate + encode the record, append it to the real
// spool, hold its PUBACK, release the held PUBACKs) allocates nothing.
func TestHeldPathAllocatesNothing(t *testing.T) {
	const vin = "TGSVS000000000001"
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), Consumers: []string{"c"}, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	h := New(FromSpool(sp, time.Second), NewValidator(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Hour, nil),
		metrics.New(prometheus.NewRegistry()), nil)
	fr := wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident(vin), Seq: 1, TimeMs: time.Now().UnixMilli()}
	for i := range 36 {
		fr.Signals = append(fr.Signals, wire.Signal{ID: catalog.Speed + uint16(i%4), Value: 42})
	}
	payload, _ := fr.MarshalMsg(nil)
	topic := "vehicles/" + vin + "/telemetry"
	class, id, ok := topics.Parse(topic)
	if !ok {
		t.Fatal("topic")
	}
	buf := make([]byte, 0, 2048)
	if n := testing.AllocsPerRun(200, func() {
		rec, dead := h.encode(buf[:0], class, id, vin, topic, payload, 1, 1)
		if dead {
			t.Fatal("frame dead-lettered")
		}
		if _, err := h.pipe.AppendTicket(rec); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per validate+encode+append", n)
	}

	h.pipe = nopPipe{}
	q := &heldAcks{h: h, acks: make([]byte, 0, 64)}
	out := make([]byte, 0, 64)
	now := time.Now()
	if n := testing.AllocsPerRun(200, func() {
		q.add(1, 7, now)
		q.add(1, 8, now)
		var err error
		if out, err = q.Flush(out[:0]); err != nil || len(out) != 8 {
			t.Fatalf("flush: %d bytes, %v", len(out), err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per hold+release", n)
	}
	// The notified path: the PUBACKs of the commits that finished leave,
	// in order, the newer ones stay held.
	tk := uint64(1)
	if n := testing.AllocsPerRun(200, func() {
		q.add(tk, 7, now)
		q.add(tk+1, 8, now)
		q.mu.Lock()
		q.done = tk
		q.mu.Unlock()
		var err error
		if out, err = q.Release(out[:0]); err != nil || len(out) != 4 || out[3] != 7 {
			t.Fatalf("release: % x, %v", out, err)
		}
		q.mu.Lock()
		q.done = tk + 1
		q.mu.Unlock()
		if out, err = q.Release(out[:0]); err != nil || len(out) != 4 || out[3] != 8 {
			t.Fatalf("release: % x, %v", out, err)
		}
		tk += 2
	}); n != 0 {
		t.Fatalf("%v allocations per hold+notified release", n)
	}
}
