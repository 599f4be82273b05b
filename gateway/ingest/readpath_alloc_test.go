package ingest_test

import (
	"bytes"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/spool"
	"github.com/telegate/telegate/gateway/spool/record"
)

// TestHeldReadPathAllocatesNothing extends TestHeldPathAllocatesNothing to
// the whole path of a frame over a real socket: a 3.1.1 device's QoS 1
// PUBLISH from the bytes on the wire to its PUBACK (the listener's Conn,
// mochi's read loop, ReadFixedHeader, ReadPacket, PublishDecode, the
// hooks, the ingest hook's spool append, the commit and the held PUBACK).
// The count is of the whole process (the spool's committer and the PUBACK
// writer included), per frame, in steady state.
func TestHeldReadPathAllocatesNothing(t *testing.T) {
	heldModes(t, func(t *testing.T, async bool) {
		f := newHeldFixture(t, async)
		close(f.g.gate)
		c := connect311(t, f.addr)
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		const runs = 300
		all := publishes(runs + 1)
		var pkts [][]byte
		for len(all) > 0 {
			n := 2 + int(all[1]) // remaining length < 128 here
			if all[1] >= 0x80 {
				t.Fatal("publish over 127 bytes")
			}
			pkts, all = append(pkts, all[:n]), all[n:]
		}
		ack := make([]byte, 4)
		i := 0
		frame := func() {
			if _, err := c.Write(pkts[i]); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, ack); err != nil {
				t.Fatal(err)
			}
			i++
			if ack[0] != 0x40 || int(ack[2])<<8|int(ack[3]) != i {
				t.Fatalf("PUBACK % x for publish %d", ack, i)
			}
		}
		frame() // the connection's first publish sets up its held PUBACKs
		// sync.Pool drops a quarter of what it is given under the race
		// detector: the count is only meaningful without it.
		if n := testing.AllocsPerRun(runs-1, frame); n != 0 && !raceEnabled {
			t.Errorf("%v allocations per QoS 1 frame, wire to PUBACK", n)
		}
		// Every record holds its own frame: the bodies that served the
		// next packets had been copied into the spool first.
		topic := []byte("vehicles/" + vin + "/telemetry")
		ctx, cancel := contextWithTimeout(10 * time.Second)
		defer cancel()
		var buf []spool.Record
		got := 0
		for got < len(pkts) {
			var err error
			if buf, err = f.cons.Read(ctx, buf, 100, 1<<20); err != nil {
				t.Fatalf("spool read after %d publish records: %v", got, err)
			}
			for _, r := range buf {
				var rec record.Record
				if err := record.Parse(r.Data, &rec); err != nil {
					t.Fatal(err)
				}
				if rec.Kind != record.KindPublish {
					continue
				}
				p := pkts[got]
				if want := p[2+2+len(topic)+2:]; !bytes.Equal(rec.Topic, topic) || !bytes.Equal(rec.Payload, want) {
					t.Fatalf("record %d: topic %q payload % x, want %q % x", got, rec.Topic, rec.Payload, topic, want)
				}
				got++
			}
		}
		if got != len(pkts) {
			t.Fatalf("%d publish records, want %d", got, len(pkts))
		}
	})
}

// BenchmarkHeldReadPath is TestHeldReadPathAllocatesNothing's frame as a
// benchmark, one frame in flight (sync mode: the reader waits for the
// commit), on a spool that does not fsync so that ns/op is the CPU path.
func BenchmarkHeldReadPath(b *testing.B) {
	f := newHeldFixtureSpool(b, slog.New(slog.DiscardHandler), false, spool.Options{NoSync: true})
	close(f.g.gate)
	c := connect311(b, f.addr)
	_ = c.SetDeadline(time.Time{})
	const ring = 1000
	all := publishes(ring)
	var pkts [][]byte
	for len(all) > 0 {
		n := 2 + int(all[1])
		pkts, all = append(pkts, all[:n]), all[n:]
	}
	ack := make([]byte, 4)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.Write(pkts[i%ring]); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, ack); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
