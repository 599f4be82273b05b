package wire_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/tinylib/msgp/msgp"
)

func TestZeroAllocDecode(t *testing.T) {
	frame := mustMarshal(telemetry32())
	var f wire.TelemetryFrame
	if err := wire.DecodeTelemetry(frame, &f); err != nil { // grow buffers once
		t.Fatal(err)
	}
	if len(f.Signals) != 32 {
		t.Fatalf("decoded %d signals", len(f.Signals))
	}
	if n := testing.AllocsPerRun(200, func() {
		if err := wire.DecodeTelemetry(frame, &f); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("DecodeTelemetry (32 signals, reused frame): %v allocs/op, want 0", n)
	}

	diag := mustMarshal(sampleDiag())
	var d wire.DiagReport
	if err := wire.DecodeDiag(diag, &d); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(200, func() {
		if err := wire.DecodeDiag(diag, &d); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("DecodeDiag (reused report): %v allocs/op, want 0", n)
	}

	ev := mustMarshal(sampleEvent())
	ss := mustMarshal(sampleSession())
	st := mustMarshal(sampleChargerStatus())
	var e wire.VehicleEvent
	var s wire.ChargingSession
	var c wire.ChargerStatus
	decodeAll := func() {
		if err := wire.DecodeVehicleEvent(ev, &e); err != nil {
			t.Fatal(err)
		}
		if err := wire.DecodeChargingSession(ss, &s); err != nil {
			t.Fatal(err)
		}
		if err := wire.DecodeChargerStatus(st, &c); err != nil {
			t.Fatal(err)
		}
	}
	decodeAll()
	if n := testing.AllocsPerRun(200, decodeAll); n != 0 {
		t.Errorf("DecodeVehicleEvent/ChargingSession/ChargerStatus (reused): %v allocs/op, want 0", n)
	}
}

func TestZeroAllocEncode(t *testing.T) {
	f := telemetry32()
	buf := make([]byte, 0, f.Msgsize())
	if n := testing.AllocsPerRun(200, func() {
		var err error
		buf, err = f.MarshalMsg(buf[:0])
		if err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("TelemetryFrame.MarshalMsg into a sized buffer: %v allocs/op, want 0", n)
	}
}

// TestDecodeReusesAndDoesNotAlias: a reused value gets exactly the new
// content (no stale signals), and decoded identifiers do not alias the input.
func TestDecodeReusesAndDoesNotAlias(t *testing.T) {
	var f wire.TelemetryFrame
	big := mustMarshal(telemetry32())
	if err := wire.DecodeTelemetry(big, &f); err != nil {
		t.Fatal(err)
	}
	small := telemetry32()
	small.VIN = wire.Ident("SHORTVIN")
	small.Signals = small.Signals[:2]
	in := mustMarshal(small)
	if err := wire.DecodeTelemetry(in, &f); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&f, small) {
		t.Fatalf("reused decode = %+v, want %+v", f, small)
	}
	for i := range in {
		in[i] = 0xEE
	}
	if string(f.VIN) != "SHORTVIN" || f.Signals[1] != small.Signals[1] {
		t.Fatal("decoded value aliases the input buffer")
	}
}

// TestStreamCodecs: the io.Reader/Writer (EncodeMsg/DecodeMsg) methods agree
// with the []byte ones for every payload type.
func TestStreamCodecs(t *testing.T) {
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			v := c.sample()
			want := mustMarshal(v)
			var buf bytes.Buffer
			w := msgp.NewWriter(&buf)
			if err := v.EncodeMsg(w); err != nil {
				t.Fatal(err)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("EncodeMsg = %x\nMarshalMsg = %x", buf.Bytes(), want)
			}
			got := c.fresh()
			if err := got.DecodeMsg(msgp.NewReader(bytes.NewReader(want))); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, v) {
				t.Fatalf("DecodeMsg = %+v, want %+v", got, v)
			}
		})
	}
}

func TestIdent(t *testing.T) {
	long := wire.Ident(strings.Repeat("x", wire.MaxIdentLen+1))
	if _, err := long.MarshalMsg(nil); !errors.Is(err, wire.ErrIdentTooLong) {
		t.Errorf("MarshalMsg(too long) = %v", err)
	}
	if err := long.EncodeMsg(msgp.NewWriter(&bytes.Buffer{})); !errors.Is(err, wire.ErrIdentTooLong) {
		t.Errorf("EncodeMsg(too long) = %v", err)
	}
	var id wire.Ident
	if err := id.UnmarshalText(long); !errors.Is(err, wire.ErrIdentTooLong) {
		t.Errorf("UnmarshalText(too long) = %v", err)
	}
	if err := id.UnmarshalText([]byte("VIN1")); err != nil || id.String() != "VIN1" {
		t.Errorf("UnmarshalText = %q, %v", id, err)
	}
	j, err := json.Marshal(struct{ VIN wire.Ident }{wire.Ident(sampleVIN)})
	if err != nil || string(j) != `{"VIN":"`+sampleVIN+`"}` {
		t.Errorf("JSON = %s, %v", j, err)
	}

	// Stream decoding checks the declared length before reading or
	// allocating: a 4 GiB declaration fails fast.
	huge := []byte{0xdb, 0xff, 0xff, 0xff, 0xff, 'a'}
	if err := id.DecodeMsg(msgp.NewReader(bytes.NewReader(huge))); !errors.Is(err, wire.ErrIdentTooLong) {
		t.Errorf("DecodeMsg(4 GiB str) = %v", err)
	}
	hugeBin := []byte{0xc6, 0xff, 0xff, 0xff, 0xff, 'a'}
	if err := id.DecodeMsg(msgp.NewReader(bytes.NewReader(hugeBin))); !errors.Is(err, wire.ErrIdentTooLong) {
		t.Errorf("DecodeMsg(4 GiB bin) = %v", err)
	}
	bin := msgp.AppendBytes(nil, []byte("BINVIN"))
	if err := id.DecodeMsg(msgp.NewReader(bytes.NewReader(bin))); err != nil || string(id) != "BINVIN" {
		t.Errorf("DecodeMsg(bin) = %q, %v", id, err)
	}
	if err := id.DecodeMsg(msgp.NewReader(bytes.NewReader([]byte{0xa5, 'a', 'b'}))); err == nil {
		t.Error("DecodeMsg(truncated) succeeded")
	}
	if _, err := id.UnmarshalMsg([]byte{0xa5, 'a', 'b'}); !errors.Is(err, msgp.ErrShortBytes) {
		t.Errorf("UnmarshalMsg(truncated fixstr) = %v", err)
	}
}

func TestSignalStreamRejectsNonFinite(t *testing.T) {
	b := enc(nil).arr(2).u(1).raw(0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1) // a NaN
	var s wire.Signal
	if err := s.DecodeMsg(msgp.NewReader(bytes.NewReader(b))); !errors.Is(err, wire.ErrNonFinite) {
		t.Fatalf("DecodeMsg(NaN) = %v", err)
	}
	if _, err := s.UnmarshalMsg(b); !errors.Is(err, wire.ErrNonFinite) {
		t.Fatalf("UnmarshalMsg(NaN) = %v", err)
	}
}
