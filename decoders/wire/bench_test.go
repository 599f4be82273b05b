package wire_test

import (
	"testing"

	"github.com/telegate/telegate/decoders/internal/mapform"
	"github.com/telegate/telegate/decoders/internal/reftuple"
	"github.com/telegate/telegate/decoders/wire"
)

// BenchmarkDecodeTelemetry32 is the figure the product brief asks for: a
// 32-signal frame decoded into a reused frame (tuple form, this package).
func BenchmarkDecodeTelemetry32(b *testing.B) {
	buf := mustMarshal(telemetry32())
	var f wire.TelemetryFrame
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if err := wire.DecodeTelemetry(buf, &f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeTelemetry32MapForm decodes the same content encoded as a
// generic msgp map-form struct (field names as keys), for comparison.
func BenchmarkDecodeTelemetry32MapForm(b *testing.B) {
	src := telemetry32()
	m := mapform.TelemetryFrame{Version: src.Version, VIN: []byte(src.VIN), Seq: src.Seq, TimeMs: src.TimeMs}
	for _, s := range src.Signals {
		m.Signals = append(m.Signals, mapform.Signal{ID: s.ID, Value: s.Value})
	}
	buf := mustMarshal(&m)
	var f mapform.TelemetryFrame
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.UnmarshalMsg(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeTelemetry32Generated decodes the same bytes with the
// all-generated tuple code (no hand-written Signal fast path, no version
// check, no validation): what DecodeTelemetry cost before the fast path.
func BenchmarkDecodeTelemetry32Generated(b *testing.B) {
	buf := mustMarshal(telemetry32())
	var f reftuple.TelemetryFrame
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.UnmarshalMsg(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeTelemetry32(b *testing.B) {
	f := telemetry32()
	buf := make([]byte, 0, f.Msgsize())
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = f.MarshalMsg(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkDecodeDiag: 3 DTCs and 4 freeze-frame signals, reused report.
func BenchmarkDecodeDiag(b *testing.B) {
	buf := mustMarshal(sampleDiag())
	var d wire.DiagReport
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if err := wire.DecodeDiag(buf, &d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeChargingSession(b *testing.B) {
	buf := mustMarshal(sampleSession())
	var s wire.ChargingSession
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if err := wire.DecodeChargingSession(buf, &s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeTelemetry32Generated: the all-generated encoder, for
// comparison with BenchmarkEncodeTelemetry32.
func BenchmarkEncodeTelemetry32Generated(b *testing.B) {
	src := telemetry32()
	f := reftuple.TelemetryFrame{Version: src.Version, VIN: src.VIN, Seq: src.Seq, TimeMs: src.TimeMs}
	for _, s := range src.Signals {
		f.Signals = append(f.Signals, reftuple.Signal{ID: s.ID, Value: s.Value})
	}
	buf := make([]byte, 0, f.Msgsize())
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = f.MarshalMsg(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}
