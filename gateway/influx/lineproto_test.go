package influx

import (
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ts is 2015-06-11T20:46:02Z, the line protocol reference's example time.
var ts = time.Unix(1434055562, 0)

// line encodes one line with a float field v=1 after calling build, and
// returns the output.
func line(build func(e *Encoder)) string {
	var e Encoder
	build(&e)
	e.End(ts)
	return string(e.Bytes())
}

// TestEncoderSpecialCharacters follows the "Special characters" table of the
// InfluxDB 1.8 line protocol reference.
func TestEncoderSpecialCharacters(t *testing.T) {
	tests := []struct {
		name  string
		build func(e *Encoder)
		want  string
	}{
		{"plain", func(e *Encoder) {
			e.Measurement("cpu")
			e.TagString("host", "server01")
			e.FieldFloat("value", 0.64)
		}, "cpu,host=server01 value=0.64 1434055562000\n"},
		{"measurement space", func(e *Encoder) {
			e.Measurement("my measurement")
			e.FieldInt("v", 1)
		}, `my\ measurement v=1i 1434055562000` + "\n"},
		{"measurement comma, equals not escaped", func(e *Encoder) {
			e.Measurement("a,b=c")
			e.FieldInt("v", 1)
		}, `a\,b=c v=1i 1434055562000` + "\n"},
		{"measurement quotes not escaped", func(e *Encoder) {
			e.Measurement(`"quoted"`)
			e.FieldInt("v", 1)
		}, `"quoted" v=1i 1434055562000` + "\n"},
		{"tag key and value: comma equals space", func(e *Encoder) {
			e.Measurement("m")
			e.TagString("tag key", "a,b=c d")
			e.FieldInt("v", 1)
		}, `m,tag\ key=a\,b\=c\ d v=1i 1434055562000` + "\n"},
		{"tag value quotes not escaped", func(e *Encoder) {
			e.Measurement("m")
			e.Tag("t", []byte(`"x"`))
			e.FieldInt("v", 1)
		}, `m,t="x" v=1i 1434055562000` + "\n"},
		{"field key: comma equals space", func(e *Encoder) {
			e.Measurement("m")
			e.FieldBool("f k=1,2", true)
		}, `m f\ k\=1\,2=true 1434055562000` + "\n"},
		{"string field: quotes and backslashes", func(e *Encoder) {
			e.Measurement("m")
			e.FieldText("s", `he said "hi" \o/`)
		}, `m s="he said \"hi\" \\o/" 1434055562000` + "\n"},
		{"string field: delimiters and newline verbatim", func(e *Encoder) {
			e.Measurement("m")
			e.FieldString("s", []byte("a, b=c\nd"))
		}, "m s=\"a, b=c\nd\" 1434055562000\n"},
		{"empty string field", func(e *Encoder) {
			e.Measurement("m")
			e.FieldText("s", "")
		}, `m s="" 1434055562000` + "\n"},
		{"unicode", func(e *Encoder) {
			e.Measurement("température")
			e.TagString("véhicule", "🚗")
			e.FieldFloat("°C", -4.5)
		}, "température,véhicule=🚗 °C=-4.5 1434055562000\n"},
		{"backslash before an ordinary character", func(e *Encoder) {
			e.Measurement(`a\b`)
			e.TagString(`k\x`, `C:\temp`)
			e.FieldInt(`f\g`, 1)
		}, `a\b,k\x=C:\temp f\g=1i 1434055562000` + "\n"},
		{"all field types", func(e *Encoder) {
			e.Measurement("m")
			e.TagString("a", "1")
			e.TagString("b", "2")
			e.FieldFloat("f", 1.5)
			e.FieldInt("i", -9223372036854775808)
			e.FieldBool("b", false)
			e.FieldText("s", "x")
		}, `m,a=1,b=2 f=1.5,i=-9223372036854775808i,b=false,s="x" 1434055562000` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := line(tt.build); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestEncoderFloatFormat(t *testing.T) {
	for _, tt := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {3, "3"}, {0.1, "0.1"}, {math.Copysign(0, -1), "-0"},
		{1e21, "1e+21"}, {1e-7, "1e-07"}, {123456789.125, "1.23456789125e+08"},
		{math.MaxFloat64, "1.7976931348623157e+308"}, {math.SmallestNonzeroFloat64, "5e-324"},
	} {
		var e Encoder
		e.Measurement("m")
		if !e.FieldFloat("v", tt.v) || !e.End(ts) {
			t.Fatalf("FieldFloat(%v) rejected", tt.v)
		}
		if got, want := string(e.Bytes()), "m v="+tt.want+" 1434055562000\n"; got != want {
			t.Errorf("FieldFloat(%v): got %q, want %q", tt.v, got, want)
		}
		if back, err := strconv.ParseFloat(tt.want, 64); err != nil || back != tt.v {
			t.Errorf("%s does not parse back to %v", tt.want, tt.v)
		}
	}
}

func TestEncoderRejectsUnrepresentable(t *testing.T) {
	bad := []string{
		"", `trailing\`, `a\,b`, `a\ b`, `a\=b`, `a\"b`, `a\\b`,
		"new\nline", "tab\there", "nul\x00", "del\x7f",
	}
	for _, s := range bad {
		var e Encoder
		if e.Measurement(s) {
			t.Errorf("Measurement(%q) accepted", s)
		}
		if e.FieldInt("v", 1) || e.End(ts) || e.Len() != 0 {
			t.Errorf("line with rejected measurement %q was emitted: %q", s, e.Bytes())
		}
		e.Measurement("m")
		if e.TagString(s, "v") {
			t.Errorf("tag key %q accepted", s)
		}
		if e.TagString("k", s) && s != "" {
			t.Errorf("tag value %q accepted", s)
		}
		if e.FieldInt(s, 1) {
			t.Errorf("field key %q accepted", s)
		}
		e.FieldInt("ok", 1)
		e.End(ts)
		if got := string(e.Bytes()); got != "m ok=1i 1434055562000\n" {
			t.Errorf("rejected token %q leaked into %q", s, got)
		}
	}

	var e Encoder
	if e.Measurement("#comment") {
		t.Error("measurement starting with '#' accepted")
	}
	e.Measurement("m")
	if e.TagString("time", "x") || e.FieldInt("time", 1) {
		t.Error(`key "time" accepted`)
	}
	if e.TagString("empty", "") || e.Tag("empty", nil) {
		t.Error("empty tag value accepted")
	}
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if e.FieldFloat("f", v) {
			t.Errorf("FieldFloat(%v) accepted", v)
		}
	}
	if e.End(ts) || e.Len() != 0 || e.Lines() != 0 {
		t.Errorf("line whose only fields were rejected was emitted: %q", e.Bytes())
	}
}

func TestEncoderLineLifecycle(t *testing.T) {
	var e Encoder
	e.Measurement("a")
	e.FieldInt("v", 1)
	e.End(ts)
	first := string(e.Bytes())

	// No fields: rolled back.
	e.Measurement("b")
	e.TagString("t", "x")
	if e.End(ts) {
		t.Error("End without fields reported a line")
	}
	// A line in progress is invisible and discarded by the next Measurement.
	e.Measurement("c")
	e.FieldInt("v", 1)
	if got := string(e.Bytes()); got != first || e.Len() != len(first) || e.Lines() != 1 {
		t.Errorf("in-progress line visible: %q (len %d, lines %d)", got, e.Len(), e.Lines())
	}
	e.Measurement("d")
	if e.TagString("t", "x") != true || e.FieldInt("v", 2) != true {
		t.Fatal("valid tokens rejected")
	}
	if e.TagString("u", "y") {
		t.Error("tag after a field accepted")
	}
	e.End(ts)
	want := first + "d,t=x v=2i 1434055562000\n"
	if got := string(e.Bytes()); got != want || e.Lines() != 2 {
		t.Errorf("got %q (%d lines), want %q", got, e.Lines(), want)
	}

	// Tags and fields outside a line are refused.
	if e.TagString("t", "x") || e.FieldInt("v", 1) || e.End(ts) {
		t.Error("token accepted with no line open")
	}
	// A repeated tag key is dropped.
	e.Measurement("m")
	e.TagString("k", "1")
	if e.TagString("k", "2") {
		t.Error("duplicate tag key accepted")
	}
	e.FieldInt("v", 1)
	e.End(ts)
	if !strings.HasSuffix(string(e.Bytes()), "\nm,k=1 v=1i 1434055562000\n") {
		t.Errorf("got %q", e.Bytes())
	}

	c := cap(e.buf)
	e.Reset()
	if e.Len() != 0 || e.Lines() != 0 || len(e.Bytes()) != 0 || cap(e.buf) != c {
		t.Errorf("Reset: len %d lines %d cap %d (was %d)", e.Len(), e.Lines(), cap(e.buf), c)
	}
	// Bytes cannot be appended to in place.
	e.Measurement("m")
	e.FieldInt("v", 1)
	e.End(ts)
	b := e.Bytes()
	_ = append(b, 'X')
	if string(e.Bytes()) != "m v=1i 1434055562000\n" {
		t.Error("appending to Bytes() changed the encoder's buffer")
	}
}

func TestEncoderTimestamps(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	for _, tt := range []struct {
		prec time.Duration
		want string
	}{
		{0, "1700000000123"},
		{time.Nanosecond, "1700000000123456789"},
		{time.Microsecond, "1700000000123456"},
		{time.Millisecond, "1700000000123"},
		{time.Second, "1700000000"},
	} {
		e := Encoder{Precision: tt.prec}
		e.Measurement("m")
		e.FieldInt("v", 1)
		e.End(at)
		if got := string(e.Bytes()); got != "m v=1i "+tt.want+"\n" {
			t.Errorf("precision %v: got %q", tt.prec, got)
		}
	}
	// Before the epoch the timestamp is floored, never rounded up.
	var e Encoder
	e.Measurement("m")
	e.FieldInt("v", 1)
	e.EndUnixNano(-1)
	if got := string(e.Bytes()); got != "m v=1i -1\n" {
		t.Errorf("got %q", got)
	}
	// Out of InfluxDB's range: rolled back.
	for _, bad := range []time.Time{{}, time.Unix(0, math.MinInt64), time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)} {
		e.Measurement("m")
		e.FieldInt("v", 1)
		if e.End(bad) {
			t.Errorf("End(%v) accepted", bad)
		}
	}
	for _, ns := range []int64{math.MinInt64, math.MinInt64 + 1, math.MaxInt64} {
		e.Measurement("m")
		e.FieldInt("v", 1)
		if e.EndUnixNano(ns) {
			t.Errorf("EndUnixNano(%d) accepted", ns)
		}
	}
	if e.Lines() != 1 {
		t.Errorf("Lines = %d, want 1", e.Lines())
	}
}

func TestEncoderGrow(t *testing.T) {
	var e Encoder
	e.Measurement("m")
	e.Grow(1000)
	if cap(e.buf)-len(e.buf) < 1000 || string(e.buf) != "m" {
		t.Fatalf("Grow: len %d cap %d %q", len(e.buf), cap(e.buf), e.buf)
	}
}

// vssFields are 32 field keys shaped like the gateway's signal paths.
var vssFields = func() []string {
	base := []string{
		"Vehicle.Speed", "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current",
		"Vehicle.Powertrain.TractionBattery.CurrentVoltage", "Vehicle.Powertrain.TractionBattery.CurrentCurrent",
		"Vehicle.Cabin.HVAC.AmbientAirTemperature", "Vehicle.OBD.EngineSpeed", "Vehicle.OBD.CoolantTemperature",
		"Vehicle.CurrentLocation.Latitude",
	}
	out := make([]string, 0, 32)
	for i := range 32 {
		out = append(out, base[i%len(base)]+"."+strconv.Itoa(i))
	}
	return out
}()

// encode32 encodes one telemetry line with 32 float fields.
func encode32(e *Encoder, vin []byte, at int64) {
	e.Measurement("telemetry")
	e.TagString("fleet", "eu-west")
	e.Tag("vin", vin)
	for i, k := range vssFields {
		e.FieldFloat(k, float64(i)*1.25+0.3)
	}
	e.EndUnixNano(at)
}

func TestEncoderZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	var e Encoder
	vin := []byte("WVWZZZ1JZXW000001")
	encode32(&e, vin, 1)
	e.Reset()
	if n := testing.AllocsPerRun(100, func() {
		e.Reset()
		encode32(&e, vin, 1700000000000000000)
	}); n != 0 {
		t.Fatalf("encoding a 32-field line allocates %v times", n)
	}
}

// BenchmarkEncoder32Fields measures one 32-field telemetry line (tags fleet
// and vin, float fields with VSS-style keys) into a reused Encoder.
func BenchmarkEncoder32Fields(b *testing.B) {
	var e Encoder
	vin := []byte("WVWZZZ1JZXW000001")
	encode32(&e, vin, 1)
	b.SetBytes(int64(e.Len()))
	b.ReportAllocs()
	at := int64(1700000000000000000)
	for b.Loop() {
		e.Reset()
		encode32(&e, vin, at)
		at += int64(time.Millisecond)
	}
}

// BenchmarkEncoderBatch measures 1000 lines into one buffer, the writer's
// batch shape.
func BenchmarkEncoderBatch1000(b *testing.B) {
	var e Encoder
	vin := []byte("WVWZZZ1JZXW000001")
	b.ReportAllocs()
	at := int64(1700000000000000000)
	for b.Loop() {
		e.Reset()
		for range 1000 {
			encode32(&e, vin, at)
			at += int64(time.Millisecond)
		}
	}
	b.SetBytes(int64(e.Len()))
}

// TestAppendFloatMatchesStrconv: the integral fast path writes exactly what
// strconv's shortest 'g' formatting writes, at and around its bounds, for
// -0 and for non-integral values.
func TestAppendFloatMatchesStrconv(t *testing.T) {
	check := func(v float64) {
		t.Helper()
		if got, want := string(appendFloat(nil, v)), strconv.FormatFloat(v, 'g', -1, 64); got != want {
			t.Fatalf("appendFloat(%v) = %q, want %q", v, got, want)
		}
	}
	for _, v := range []float64{0, math.Copysign(0, -1), 1, -1, 999999, -999999, 1e6, -1e6, 1e6 - 0.5,
		1e6 + 1, 123456, 100000, 1e21, -1e21, 1e22, 0.5, -0.5, 12.5, 1e-5, 5e-324, math.MaxFloat64,
		math.SmallestNonzeroFloat64, 1 << 53, 1<<53 + 1, -(1 << 62), 9.999999e5, 0.1 + 0.2} {
		check(v)
	}
	for i := -1_100_000; i <= 1_100_000; i += 7 {
		check(float64(i))
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200_000 {
		check(math.Float64frombits(r.Uint64()) /* NaN and Inf are never formatted */)
		check(math.Round(r.NormFloat64() * 1e5))
		check(r.Float64() * 250)
	}
}

// TestKeyMethodsMatchFieldMethods: a prepared Key writes the same bytes as
// the string-keyed methods, escaping included, and refuses what they refuse.
func TestKeyMethodsMatchFieldMethods(t *testing.T) {
	for _, key := range []string{"Vehicle.Speed", "a b", "a,b", "a=b", "°C", `a\b`, "time", "", "a\nb", `a\`} {
		k, ok := NewKey(key)
		var a, b Encoder
		a.Measurement("m")
		b.Measurement("m")
		okA := a.FieldFloat(key, 1.5) && a.FieldInt(key, -3) && a.FieldBool(key, true)
		okB := b.FieldFloatKey(k, 1.5) && b.FieldIntKey(k, -3) && b.FieldBoolKey(k, true)
		if okA != ok || okB != ok {
			t.Fatalf("key %q: NewKey %v, string methods %v, Key methods %v", key, ok, okA, okB)
		}
		a.EndUnixNano(1e6)
		b.EndUnixNano(1e6)
		if string(a.Bytes()) != string(b.Bytes()) {
			t.Fatalf("key %q: %q with a Key, %q without", key, b.Bytes(), a.Bytes())
		}
	}
	var e Encoder
	if e.FieldFloatKey(Key{}, 1) || e.Measurement("m") && e.FieldIntKey(Key{}, 1) {
		t.Fatal("the zero Key was written")
	}
	k, _ := NewKey("v")
	if e.FieldFloatKey(k, math.NaN()) || e.FieldFloatKey(k, math.Inf(1)) {
		t.Fatal("non-finite value written")
	}
	e.Reset()
	e.Grow(1 << 10)
	if n := testing.AllocsPerRun(100, func() {
		e.Reset()
		e.Measurement("m")
		e.FieldFloatKey(k, 12.25)
		e.FieldFloatKey(k, 12)
		e.FieldIntKey(k, 3)
		e.FieldBoolKey(k, true)
		e.EndUnixNano(1)
	}); n != 0 {
		t.Fatalf("%v allocations per line with prepared keys", n)
	}
}
