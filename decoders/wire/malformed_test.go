package wire_test

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/telegate/telegate/decoders/reject"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/tinylib/msgp/msgp"
)

// enc builds MessagePack by hand for malformed-input cases.
type enc []byte

func (e enc) arr(n uint32) enc             { return msgp.AppendArrayHeader(e, n) }
func (e enc) u(v uint64) enc               { return msgp.AppendUint64(e, v) }
func (e enc) i(v int64) enc                { return msgp.AppendInt64(e, v) }
func (e enc) f(v float64) enc              { return msgp.AppendFloat64(e, v) }
func (e enc) f32(v float32) enc            { return msgp.AppendFloat32(e, v) }
func (e enc) s(v string) enc               { return msgp.AppendString(e, v) }
func (e enc) bin(v []byte) enc             { return msgp.AppendBytes(e, v) }
func (e enc) bool(v bool) enc              { return msgp.AppendBool(e, v) }
func (e enc) raw(b ...byte) enc            { return append(e, b...) }
func (e enc) sig(id uint64, v float64) enc { return e.arr(2).u(id).f(v) }

// head starts a vehicle tuple: [version, vin, seq, ts].
func head(n uint32) enc { return enc(nil).arr(n).u(1).s(sampleVIN).u(7).i(sampleTsMs) }

func signals(n int) enc {
	e := enc(nil).arr(uint32(n))
	for i := range n {
		e = e.sig(uint64(i%36+1), float64(i))
	}
	return e
}

func telemetryWith(sigs enc) []byte { return append(head(5), sigs...) }

type malformedCase struct {
	name  string
	codec string
	in    []byte
	want  error // sentinel the error must wrap; nil means the payload is valid
}

func malformedCases() []malformedCase {
	long := strings.Repeat("X", wire.MaxIdentLen+1)
	maxLen := strings.Repeat("X", wire.MaxIdentLen)
	diag := func(mil bool, odo float64, dtcs, freeze enc) []byte {
		return append(append(head(8).bool(mil).f(odo), dtcs...), freeze...)
	}
	event := func(kind uint8, has bool, lat, lon float64) []byte {
		return head(8).u(uint64(kind)).bool(has).f(lat).f(lon)
	}
	session := func(kind uint64, station, sid string, energy, power, soc, target float64) []byte {
		return enc(nil).arr(13).u(1).s(station).u(1).i(sampleTsMs).u(kind).s(sid).u(1).s("TAG").s(sampleVIN).
			f(energy).f(power).f(soc).f(target)
	}
	status := func(st uint64) []byte {
		return enc(nil).arr(6).u(1).s("ST-1").u(1).i(sampleTsMs).u(1).u(st)
	}
	command := func(id, name string, params enc) []byte {
		return append(enc(nil).arr(5).u(1).s(id).i(sampleTsMs).s(name), params...)
	}
	ack := func(id string, st uint8) []byte {
		return enc(nil).arr(6).u(1).s(id).s(sampleVIN).i(sampleTsMs).u(uint64(st)).s("")
	}
	manyParams := enc(nil).arr(wire.MaxArrayLen + 1)
	for range wire.MaxArrayLen + 1 {
		manyParams = manyParams.arr(2).s("k").s("v")
	}
	manyDTCs := enc(nil).arr(wire.MaxArrayLen + 1)
	for range wire.MaxArrayLen + 1 {
		manyDTCs = manyDTCs.arr(2).u(0x0301).u(2)
	}

	return []malformedCase{
		// Valid edge cases first: these must decode.
		{"valid/empty signal list", "telemetry", telemetryWith(signals(0)), nil},
		{"valid/512 signals", "telemetry", telemetryWith(signals(wire.MaxArrayLen)), nil},
		{"valid/ident of max length", "telemetry", append(enc(nil).arr(5).u(1).s(maxLen).u(1).i(1), signals(1)...), nil},
		{"valid/vin as bin", "telemetry", append(enc(nil).arr(5).u(1).bin([]byte(sampleVIN)).u(1).i(1), signals(1)...), nil},
		{"valid/float32 value", "telemetry", telemetryWith(enc(nil).arr(1).arr(2).u(1).f32(1.5)), nil},
		{"valid/id above 127", "telemetry", telemetryWith(enc(nil).arr(1).sig(300, 1)), nil},
		{"valid/id 65535", "telemetry", telemetryWith(enc(nil).arr(1).sig(65535, 1)), nil},
		{"valid/negative zero", "telemetry", telemetryWith(enc(nil).arr(1).sig(1, math.Copysign(0, -1))), nil},
		{"valid/largest finite", "telemetry", telemetryWith(enc(nil).arr(1).sig(1, math.MaxFloat64)), nil},
		{"valid/negative timestamp", "telemetry", append(head(5)[:0:0].arr(5).u(1).s("V").u(1).i(-1), signals(1)...), nil},

		// Not a tuple.
		{"empty input", "telemetry", nil, wire.ErrNotTuple},
		{"nil", "telemetry", []byte{0xc0}, wire.ErrNotTuple},
		{"map", "telemetry", []byte{0x81, 0xa1, 'v', 0x01}, wire.ErrNotTuple},
		{"string", "telemetry", enc(nil).s("hello"), wire.ErrNotTuple},
		{"integer", "diag", []byte{0x01}, wire.ErrNotTuple},
		{"reserved byte 0xc1", "event", []byte{0xc1}, wire.ErrNotTuple},

		// Version.
		{"empty tuple", "telemetry", []byte{0x90}, wire.ErrUnsupportedVersion},
		{"version 0", "telemetry", append(enc(nil).arr(5).u(0), head(5)[2:]...), wire.ErrUnsupportedVersion},
		{"version 2", "diag", enc(nil).arr(8).u(2), wire.ErrUnsupportedVersion},
		{"version 2 other shape", "telemetry", enc(nil).arr(3).u(2).s("future").bool(true), wire.ErrUnsupportedVersion},
		{"version 255", "event", enc(nil).arr(8).u(255), wire.ErrUnsupportedVersion},
		{"version 256", "command", enc(nil).arr(5).u(256), wire.ErrUnsupportedVersion},
		{"version -1", "charger_status", enc(nil).arr(6).i(-1), wire.ErrUnsupportedVersion},
		{"version as string", "command_ack", enc(nil).arr(6).s("1"), wire.ErrUnsupportedVersion},
		{"version as float", "charging_session", enc(nil).arr(13).f(1), wire.ErrUnsupportedVersion},
		{"array16 header, version missing", "telemetry", []byte{0xdc, 0x00, 0x05}, wire.ErrMalformed},
		{"array32 header truncated", "telemetry", []byte{0xdd, 0x00}, wire.ErrMalformed},

		// Shape.
		{"too few elements", "telemetry", head(4), wire.ErrMalformed},
		{"too many elements", "telemetry", append(telemetryWith(signals(1))[:0:0], append(head(6), append(signals(1), 0x01)...)...), wire.ErrMalformed},
		{"vin as integer", "telemetry", append(enc(nil).arr(5).u(1).u(12345).u(1).i(1), signals(1)...), wire.ErrMalformed},
		{"seq negative", "telemetry", append(enc(nil).arr(5).u(1).s("V").i(-5).i(1), signals(1)...), wire.ErrMalformed},
		{"seq as string", "telemetry", append(enc(nil).arr(5).u(1).s("V").s("7").i(1), signals(1)...), wire.ErrMalformed},
		{"ts overflows int64", "telemetry", append(enc(nil).arr(5).u(1).s("V").u(1).u(math.MaxUint64), signals(1)...), wire.ErrMalformed},
		{"signals as map", "telemetry", telemetryWith(enc(nil).raw(0x80)), wire.ErrMalformed},
		{"signals as nil", "telemetry", telemetryWith(enc(nil).raw(0xc0)), wire.ErrMalformed},
		{"signal with 3 elements", "telemetry", telemetryWith(enc(nil).arr(1).arr(3).u(1).f(1).f(2)), wire.ErrMalformed},
		{"signal with 1 element", "telemetry", telemetryWith(enc(nil).arr(1).arr(1).u(1)), wire.ErrMalformed},
		{"signal not an array", "telemetry", telemetryWith(enc(nil).arr(1).u(1)), wire.ErrMalformed},
		{"signal id 65536", "telemetry", telemetryWith(enc(nil).arr(1).sig(65536, 1)), wire.ErrMalformed},
		{"signal id negative", "telemetry", telemetryWith(enc(nil).arr(1).arr(2).i(-1).f(1)), wire.ErrMalformed},
		{"signal id as float", "telemetry", telemetryWith(enc(nil).arr(1).arr(2).f(1).f(1)), wire.ErrMalformed},
		{"signal value as integer", "telemetry", telemetryWith(enc(nil).arr(1).arr(2).u(1).u(80)), wire.ErrIntForFloat},
		{"signal value as negative integer", "telemetry", telemetryWith(enc(nil).arr(1).arr(2).u(1).i(-80)), wire.ErrIntForFloat},
		{"odometer as integer", "diag", append(head(8).bool(true).u(1000), enc(nil).arr(0).arr(0)...), wire.ErrIntForFloat},
		{"soc as integer", "charging_session", enc(nil).arr(13).u(1).s("ST").u(1).i(sampleTsMs).u(1).s("S").u(1).s("TAG").s(sampleVIN).
			f(1).f(1).u(50).f(80), wire.ErrIntForFloat},
		{"signal value as string", "telemetry", telemetryWith(enc(nil).arr(1).arr(2).u(1).s("80")), wire.ErrMalformed},
		{"signal value as bool", "telemetry", telemetryWith(enc(nil).arr(1).arr(2).u(1).bool(true)), wire.ErrMalformed},
		{"signal count larger than content", "telemetry", telemetryWith(append(enc(nil).arr(3), signals(2)[1:]...)), wire.ErrMalformed},

		// Limits.
		{"513 signals", "telemetry", telemetryWith(signals(wire.MaxArrayLen + 1)), wire.ErrTooLarge},
		{"array32 of 2^32-1 signals, no content", "telemetry", telemetryWith(enc(nil).raw(0xdd, 0xff, 0xff, 0xff, 0xff)), wire.ErrTooLarge},
		{"vin too long", "telemetry", append(enc(nil).arr(5).u(1).s(long).u(1).i(1), signals(1)...), wire.ErrIdentTooLong},
		{"vin bin too long", "telemetry", append(enc(nil).arr(5).u(1).bin([]byte(long)).u(1).i(1), signals(1)...), wire.ErrIdentTooLong},
		{"vin declares 4 GiB", "telemetry", enc(nil).arr(5).u(1).raw(0xdb, 0xff, 0xff, 0xff, 0xff, 'V'), wire.ErrMalformed},
		{"513 DTCs", "diag", diag(true, 1, manyDTCs, signals(0)), wire.ErrTooLarge},
		{"513 freeze signals", "diag", diag(true, 1, enc(nil).arr(0), signals(wire.MaxArrayLen+1)), wire.ErrTooLarge},
		{"513 params", "command", command("c1", "n", manyParams), wire.ErrTooLarge},
		{"station too long", "charging_session", session(1, long, "S", 0, 0, 0, 0), wire.ErrIdentTooLong},
		{"session id too long", "charging_session", session(1, "ST", long, 0, 0, 0, 0), wire.ErrIdentTooLong},
		{"charger station too long", "charger_status", enc(nil).arr(6).u(1).s(long).u(1).i(1).u(1).u(1), wire.ErrIdentTooLong},
		{"ack vin too long", "command_ack", enc(nil).arr(6).u(1).s("c").s(long).i(1).u(1).s(""), wire.ErrIdentTooLong},

		// Non-finite floats.
		{"NaN signal", "telemetry", telemetryWith(enc(nil).arr(1).sig(1, math.NaN())), wire.ErrNonFinite},
		{"+Inf signal", "telemetry", telemetryWith(enc(nil).arr(2).sig(1, 1).sig(2, math.Inf(1))), wire.ErrNonFinite},
		{"-Inf float32 signal", "telemetry", telemetryWith(enc(nil).arr(1).arr(2).u(1).f32(float32(math.Inf(-1)))), wire.ErrNonFinite},
		{"NaN float32 signal", "telemetry", telemetryWith(enc(nil).arr(1).arr(2).u(1).f32(float32(math.NaN()))), wire.ErrNonFinite},
		{"NaN with id 300", "telemetry", telemetryWith(enc(nil).arr(1).sig(300, math.NaN())), wire.ErrNonFinite},
		{"NaN odometer", "diag", diag(false, math.NaN(), enc(nil).arr(0), enc(nil).arr(0)), wire.ErrNonFinite},
		{"NaN freeze signal", "diag", diag(false, 1, enc(nil).arr(0), enc(nil).arr(1).sig(1, math.NaN())), wire.ErrNonFinite},
		{"Inf latitude", "event", event(wire.EventLocation, true, math.Inf(1), 0), wire.ErrNonFinite},
		{"NaN longitude without position", "event", event(wire.EventOnline, false, 0, math.NaN()), wire.ErrNonFinite},
		{"NaN power", "charging_session", session(2, "ST", "S", 1, math.NaN(), 50, 80), wire.ErrNonFinite},
		{"Inf energy", "charging_session", session(2, "ST", "S", math.Inf(1), 1, 50, 80), wire.ErrNonFinite},

		// Invalid values.
		{"DTC status 0", "diag", diag(true, 1, enc(nil).arr(1).arr(2).u(0x0301).u(0), enc(nil).arr(0)), wire.ErrInvalidValue},
		{"DTC status 4", "diag", diag(true, 1, enc(nil).arr(1).arr(2).u(0x0301).u(4), enc(nil).arr(0)), wire.ErrInvalidValue},
		{"DTC code 65536", "diag", diag(true, 1, enc(nil).arr(1).arr(2).u(65536).u(1), enc(nil).arr(0)), wire.ErrMalformed},
		{"negative odometer", "diag", diag(true, -1, enc(nil).arr(0), enc(nil).arr(0)), wire.ErrInvalidValue},
		{"MIL as integer", "diag", append(head(8).u(1).f(1), enc(nil).arr(0).arr(0)...), wire.ErrMalformed},
		{"event kind 0", "event", event(0, false, 0, 0), wire.ErrInvalidValue},
		{"event kind 6", "event", event(6, false, 0, 0), wire.ErrInvalidValue},
		{"latitude 91", "event", event(wire.EventLocation, true, 91, 0), wire.ErrInvalidValue},
		{"longitude -181", "event", event(wire.EventLocation, true, 0, -181), wire.ErrInvalidValue},
		{"out-of-range position ignored without HasPosition", "event", event(wire.EventIgnitionOn, false, 1000, 1000), nil},
		{"session kind 4", "charging_session", session(4, "ST", "S", 1, 1, 50, 80), wire.ErrInvalidValue},
		{"negative energy", "charging_session", session(2, "ST", "S", -1, 1, 50, 80), wire.ErrInvalidValue},
		{"soc 101", "charging_session", session(2, "ST", "S", 1, 1, 101, 80), wire.ErrInvalidValue},
		{"target soc -1", "charging_session", session(2, "ST", "S", 1, 1, 50, -1), wire.ErrInvalidValue},
		{"negative power is V2G", "charging_session", session(2, "ST", "S", 1, -7400, 50, 80), nil},
		{"connector status 0", "charger_status", status(0), wire.ErrInvalidValue},
		{"connector status 5", "charger_status", status(5), wire.ErrInvalidValue},
		{"empty command id", "command", command("", "n", enc(nil).arr(0)), wire.ErrInvalidValue},
		{"empty command name", "command", command("c1", "", enc(nil).arr(0)), wire.ErrInvalidValue},
		{"param not a pair", "command", command("c1", "n", enc(nil).arr(1).arr(3).s("a").s("b").s("c")), wire.ErrMalformed},
		{"param value as integer", "command", command("c1", "n", enc(nil).arr(1).arr(2).s("a").u(1)), wire.ErrMalformed},
		{"ack status 0", "command_ack", ack("c1", 0), wire.ErrInvalidValue},
		{"ack status 4", "command_ack", ack("c1", 4), wire.ErrInvalidValue},
		{"ack empty command id", "command_ack", ack("", wire.AckApplied), wire.ErrInvalidValue},

		// Trailing bytes.
		{"trailing byte", "telemetry", append(telemetryWith(signals(1)), 0x00), wire.ErrTrailingBytes},
		{"two frames back to back", "telemetry", append(telemetryWith(signals(1)), telemetryWith(signals(1))...), wire.ErrTrailingBytes},
		{"trailing byte after ack", "command_ack", append(ack("c1", 1), 0xc0), wire.ErrTrailingBytes},
	}
}

func TestMalformed(t *testing.T) {
	for _, tc := range malformedCases() {
		t.Run(tc.codec+"/"+tc.name, func(t *testing.T) {
			c := codecByName(tc.codec)
			err := c.decode(tc.in, c.fresh())
			if tc.want == nil {
				if err != nil {
					t.Fatalf("valid payload rejected: %v\n% x", err, tc.in)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got error %v, want one wrapping %v\n% x", err, tc.want, tc.in)
			}
			if l := reject.FromError(err); l == reject.None || l == reject.Unclassified {
				t.Fatalf("FromError(%v) = %v", err, l)
			}
		})
	}
}

// TestTruncatedEverywhere cuts every golden payload at every byte offset:
// each prefix must fail cleanly (no panic, a classified error).
func TestTruncatedEverywhere(t *testing.T) {
	for name, payloads := range goldenPayloads(t) {
		c := codecByName(name)
		for _, b := range payloads {
			for i := range len(b) {
				err := c.decode(b[:i:i], c.fresh())
				if err == nil {
					t.Fatalf("%s: prefix of %d/%d bytes decoded without error", name, i, len(b))
				}
				if l := reject.FromError(err); l == reject.None || l == reject.Unclassified {
					t.Fatalf("%s: prefix %d: unclassified error %v", name, i, err)
				}
			}
		}
	}
}

// TestMutatedEverywhere overwrites every byte of every golden payload with a
// set of interesting values and decodes the result, into a fresh value and
// into a reused one: nothing may panic, errors must be classified.
func TestMutatedEverywhere(t *testing.T) {
	interesting := []byte{0x00, 0x01, 0x02, 0x7f, 0x80, 0x90, 0x91, 0x9f, 0xa0, 0xc0, 0xc1, 0xc2,
		0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd9, 0xdc, 0xdd, 0xde, 0xff}
	for name, payloads := range goldenPayloads(t) {
		c := codecByName(name)
		reused := c.fresh()
		for _, orig := range payloads {
			b := bytes.Clone(orig)
			for i := range b {
				for _, v := range interesting {
					b[i] = v
					for _, dst := range []payload{c.fresh(), reused} {
						if err := c.decode(b, dst); err != nil {
							if reject.FromError(err) == reject.Unclassified {
								t.Fatalf("%s: byte %d = %#x: unclassified error %v", name, i, v, err)
							}
						}
					}
				}
				b[i] = orig[i]
			}
		}
	}
}

// TestMsgpErrorsStayInChain: callers can still inspect the underlying msgp
// error.
func TestMsgpErrorsStayInChain(t *testing.T) {
	b := mustMarshal(telemetry32())
	err := wire.DecodeTelemetry(b[:len(b)-3], new(wire.TelemetryFrame))
	if !errors.Is(err, wire.ErrMalformed) || !errors.Is(err, msgp.ErrShortBytes) {
		t.Fatalf("truncated frame: %v", err)
	}
}
