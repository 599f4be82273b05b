package influxsink

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/reject"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/sink/live"
	"github.com/telegate/telegate/gateway/spool/record"
)

var update = flag.Bool("update", false, "rewrite testdata/influxsink golden files")

const goldenDir = "../../../testdata/influxsink"

// TestGoldenLines encodes the decoder golden payloads (testdata/decoders) as
// spool records and compares the line protocol with testdata/influxsink.
func TestGoldenLines(t *testing.T) {
	cases := []struct{ name, payload, topic string }{
		{"telemetry", "telemetry", "vehicles/%s/telemetry"},
		{"telemetry_compact", "telemetry_compact", "vehicles/%s/telemetry"},
		{"diag", "diag", "vehicles/%s/diag"},
		{"event", "event", "vehicles/%s/events"},
		{"charging_session", "charging_session", "chargers/%s/session"},
		{"charger_status", "charger_status", "chargers/%s/status"},
		{"command_ack", "command_ack", "vehicles/%s/cmd-ack"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			payload, err := os.ReadFile(filepath.Join("../../../testdata/decoders", c.payload+".msgpack"))
			if err != nil {
				t.Fatal(err)
			}
			topic := bytes.Replace([]byte(c.topic), []byte("%s"), []byte("ID"), 1)
			rec := record.Append(nil, record.KindPublish, 1, 1_700_000_000_123_456_789, string(topic), "ID", "", payload)
			check(t, c.name, rec)
		})
	}
	t.Run("connectivity", func(t *testing.T) {
		rec := record.Append(nil, record.KindConnect, 0, 1_700_000_000_123_456_789, "", "TGSVS000000000001", "", nil)
		rec = append(rec[:0:0], rec...)
		check(t, "connect", rec)
	})
	t.Run("dead_letter", func(t *testing.T) {
		rec := record.Append(nil, record.KindDeadLetter, 1, 1_700_000_000_123_456_789, "vehicles/TGSVS000000000001/telemetry",
			"TGSVS000000000001", `wire: decode: "quoted", and \ escaped`, []byte{1, 2, 3})
		check(t, "dead_letter", rec) // a free-text reason from an older release: unclassified
	})
	t.Run("dead_letter_labeled", func(t *testing.T) {
		reason := reject.AppendReason(nil, reject.IntForFloat,
			"element 4 (signals), entry 3, element 1 (value): f64 expected, got a MessagePack integer; encode it as float64")
		rec := record.Append(nil, record.KindDeadLetter, 1, 1_700_000_000_123_456_789, "vehicles/TGSVS000000000001/telemetry",
			"TGSVS000000000001", string(reason), []byte{1, 2, 3})
		check(t, "dead_letter_labeled", rec)
	})
}

func check(t *testing.T, name string, rec []byte) {
	t.Helper()
	var e encoder
	e.enc.Precision = time.Nanosecond
	var r record.Record
	if err := record.Parse(rec, &r); err != nil {
		t.Fatal(err)
	}
	if err := e.add(&r); err != nil {
		t.Fatal(err)
	}
	got := e.enc.Bytes()
	path := filepath.Join(goldenDir, name+".lp")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./gateway/sink/influxsink -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("line protocol differs from %s:\n got: %s\nwant: %s", path, got, want)
	}
}

func TestReplayIsIdempotent(t *testing.T) {
	payload, err := os.ReadFile("../../../testdata/decoders/telemetry.msgpack")
	if err != nil {
		t.Fatal(err)
	}
	// The same frame received at two different times encodes identically:
	// the point's timestamp comes from the frame, not from the receive time.
	a := record.Append(nil, record.KindPublish, 1, 1, "vehicles/X/telemetry", "X", "", payload)
	b := record.Append(nil, record.KindPublish, 1, 999_999_999, "vehicles/X/telemetry", "X", "", payload)
	var ea, eb encoder
	var ra, rb record.Record
	_ = record.Parse(a, &ra)
	_ = record.Parse(b, &rb)
	if err := ea.add(&ra); err != nil {
		t.Fatal(err)
	}
	if err := eb.add(&rb); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ea.enc.Bytes(), eb.enc.Bytes()) {
		t.Fatal("replay of the same frame encodes differently")
	}
}

func TestEncodeTelemetryNoAlloc(t *testing.T) {
	payload, err := os.ReadFile("../../../testdata/decoders/telemetry.msgpack")
	if err != nil {
		t.Fatal(err)
	}
	rec := record.Append(nil, record.KindPublish, 1, 1, "vehicles/X/telemetry", "X", "", payload)
	var e encoder
	e.live = live.New() // no subscribers: nothing copied
	var r record.Record
	n := testing.AllocsPerRun(200, func() {
		e.enc.Reset()
		_ = record.Parse(rec, &r)
		if err := e.add(&r); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocs per telemetry record", n)
	}
}

func BenchmarkEncodeTelemetryRecord(b *testing.B) {
	payload, err := os.ReadFile("../../../testdata/decoders/telemetry.msgpack")
	if err != nil {
		b.Fatal(err)
	}
	rec := record.Append(nil, record.KindPublish, 1, 1, "vehicles/X/telemetry", "X", "", payload)
	var e encoder
	var r record.Record
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		e.enc.Reset()
		_ = record.Parse(rec, &r)
		_ = e.add(&r)
	}
}

var _ = wire.Version

// TestSignalKeysCoverTheCatalog: every catalog signal has a prepared key, and
// a signal is written exactly as the string-keyed methods write its path.
func TestSignalKeysCoverTheCatalog(t *testing.T) {
	for _, d := range catalog.All() {
		for _, v := range []float64{d.Min, d.Max, (d.Min + d.Max) / 2, d.Min + (d.Max-d.Min)*0.3371} {
			if !d.Valid(v) {
				continue
			}
			var e encoder
			e.enc.Measurement("m")
			e.signal(wire.Signal{ID: d.ID, Value: v})
			var ref influx.Encoder
			ref.Measurement("m")
			switch d.Type {
			case catalog.Int:
				ref.FieldInt(d.Path, int64(v))
			case catalog.Bool:
				ref.FieldBool(d.Path, v != 0)
			default:
				ref.FieldFloat(d.Path, v)
			}
			if !e.enc.EndUnixNano(1) || !ref.EndUnixNano(1) {
				t.Fatalf("signal %d (%s) = %v: no line", d.ID, d.Path, v)
			}
			if got, want := string(e.enc.Bytes()), string(ref.Bytes()); got != want {
				t.Fatalf("signal %d = %v: %q, want %q", d.ID, v, got, want)
			}
		}
	}
}
