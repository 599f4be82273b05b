package wire_test

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/telegate/telegate/decoders/internal/reftuple"
	"github.com/telegate/telegate/decoders/reject"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/tinylib/msgp/msgp"
)

// Fuzz targets: `go test ./decoders/wire -run x -fuzz FuzzDecodeTelemetry
// -fuzztime 20s` (one target per run). Properties for every payload type:
//   - Decode never panics, and every error is classified (Reason != "other");
//   - if Decode succeeds, MarshalMsg + Decode yields an equal value and the
//     re-encoding is a fixed point (encoding it again gives the same bytes);
//   - decoding into a value reused from an earlier decode gives the same
//     result as decoding into a fresh one.

func FuzzDecodeTelemetry(f *testing.F)       { fuzzDecode(f, "telemetry") }
func FuzzDecodeDiag(f *testing.F)            { fuzzDecode(f, "diag") }
func FuzzDecodeVehicleEvent(f *testing.F)    { fuzzDecode(f, "event") }
func FuzzDecodeChargingSession(f *testing.F) { fuzzDecode(f, "charging_session") }
func FuzzDecodeChargerStatus(f *testing.F)   { fuzzDecode(f, "charger_status") }
func FuzzDecodeCommand(f *testing.F)         { fuzzDecode(f, "command") }
func FuzzDecodeCommandAck(f *testing.F)      { fuzzDecode(f, "command_ack") }

func fuzzDecode(f *testing.F, name string) {
	c := codecByName(name)
	f.Add(mustMarshal(c.sample()))
	for _, b := range goldenPayloads(f)[name] {
		f.Add(b)
	}
	for _, tc := range malformedCases() {
		if tc.codec == name {
			f.Add(tc.in)
		}
	}
	reused := c.fresh()
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		v := c.fresh()
		err := c.decode(b, v)
		if !bytes.Equal(in, b) {
			t.Fatal("decode modified its input")
		}
		reusedErr := c.decode(b, reused)
		if (err == nil) != (reusedErr == nil) {
			t.Fatalf("fresh decode: %v, reused decode: %v", err, reusedErr)
		}
		if err != nil {
			if reject.FromError(err) == reject.Unclassified {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if !reflect.DeepEqual(normalize(reused), normalize(v)) {
			t.Fatalf("reused decode %+v != fresh decode %+v", reused, v)
		}
		enc1, err := v.MarshalMsg(nil)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		v2 := c.fresh()
		if err := c.decode(enc1, v2); err != nil {
			t.Fatalf("re-encoded payload does not decode: %v\n% x", err, enc1)
		}
		if !reflect.DeepEqual(v2, v) {
			t.Fatalf("round trip changed the value:\n got %+v\nwant %+v", v2, v)
		}
		if enc2 := mustMarshal(v2); !bytes.Equal(enc2, enc1) {
			t.Fatalf("encoding is not a fixed point:\n%x\n%x", enc1, enc2)
		}
	})
}

// FuzzSignalMatchesGenerated checks the hand-written wire.Signal codec
// against msgp's generated code for the same tuple (reftuple.Signal): same
// acceptance (except that wire rejects NaN/Inf), same value, same number of
// bytes consumed, same encoding.
func FuzzSignalMatchesGenerated(f *testing.F) {
	f.Add([]byte{0x92, 0x01, 0xcb, 0x40, 0x55, 0xe0, 0, 0, 0, 0, 0})
	f.Add([]byte{0x92, 0xcd, 0x01, 0x2c, 0xca, 0x3f, 0xc0, 0, 0})
	f.Add([]byte{0x92, 0xd0, 0x05, 0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0x93, 0x01, 0xcb, 0x40, 0x55, 0xe0, 0, 0, 0, 0, 0, 0x01})
	f.Add([]byte{0xdc, 0x00, 0x02, 0x01, 0xcb, 0x40, 0x55, 0xe0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var got wire.Signal
		var ref reftuple.Signal
		restGot, errGot := got.UnmarshalMsg(b)
		restRef, errRef := ref.UnmarshalMsg(b)
		if errRef != nil {
			if errGot == nil {
				t.Fatalf("wire accepts what generated code rejects (%v): % x", errRef, b)
			}
			return
		}
		if math.IsNaN(ref.Value) || math.IsInf(ref.Value, 0) {
			if !errors.Is(errGot, wire.ErrNonFinite) {
				t.Fatalf("non-finite value: got %v, want ErrNonFinite", errGot)
			}
			return
		}
		if errGot != nil {
			t.Fatalf("wire rejects what generated code accepts: %v: % x", errGot, b)
		}
		if got.ID != ref.ID || math.Float64bits(got.Value) != math.Float64bits(ref.Value) || len(restGot) != len(restRef) {
			t.Fatalf("got {%d %v} rest %d, generated {%d %v} rest %d", got.ID, got.Value, len(restGot), ref.ID, ref.Value, len(restRef))
		}
		encGot := mustMarshal(got)
		encRef := mustMarshal(ref)
		if !bytes.Equal(encGot, encRef) {
			t.Fatalf("encodings differ: %x vs %x", encGot, encRef)
		}
	})
}

// FuzzTelemetryMatchesGenerated compares whole-frame decoding with the
// all-generated reference frame.
func FuzzTelemetryMatchesGenerated(f *testing.F) {
	f.Add(mustMarshal(telemetry32()))
	for _, b := range goldenPayloads(f)["telemetry"] {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got wire.TelemetryFrame
		var ref reftuple.TelemetryFrame
		errGot := wire.DecodeTelemetry(b, &got)
		rest, errRef := ref.UnmarshalMsg(b)
		if errGot == nil {
			if errRef != nil || len(rest) != 0 {
				t.Fatalf("wire accepts a frame generated code rejects: %v", errRef)
			}
			if got.Version != ref.Version || got.Seq != ref.Seq || got.TimeMs != ref.TimeMs ||
				!bytes.Equal(got.VIN, ref.VIN) || len(got.Signals) != len(ref.Signals) {
				t.Fatalf("frames differ: %+v vs %+v", got, ref)
			}
			for i := range got.Signals {
				if got.Signals[i].ID != ref.Signals[i].ID || got.Signals[i].Value != ref.Signals[i].Value {
					t.Fatalf("signal %d differs", i)
				}
			}
			return
		}
		if errRef != nil || len(rest) != 0 || ref.Version != wire.Version {
			return // both reject
		}
		for _, s := range ref.Signals {
			if math.IsNaN(s.Value) || math.IsInf(s.Value, 0) {
				return // wire rejects non-finite values on purpose
			}
		}
		t.Fatalf("wire rejects a valid frame that generated code accepts: %v", errGot)
	})
}

func FuzzSignalEncodeMatchesGenerated(f *testing.F) {
	f.Add(uint16(1), 87.5)
	f.Add(uint16(200), -1e300)
	f.Add(uint16(65535), math.Inf(1))
	f.Fuzz(func(t *testing.T, id uint16, v float64) {
		got := mustMarshal(wire.Signal{ID: id, Value: v})
		want := mustMarshal(reftuple.Signal{ID: id, Value: v})
		if !bytes.Equal(got, want) {
			t.Fatalf("wire %x, generated %x", got, want)
		}
		var buf bytes.Buffer
		w := msgp.NewWriter(&buf)
		if err := (wire.Signal{ID: id, Value: v}).EncodeMsg(w); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), want) {
			t.Fatalf("EncodeMsg %x, generated %x", buf.Bytes(), want)
		}
	})
}
