package wire

import (
	"encoding/binary"
	"math"

	"github.com/tinylib/msgp/msgp"
)

// Signal is one sampled value. ID refers to the signal catalog
// (decoders/catalog), which gives the VSS path, unit, type and valid range.
// Booleans are 0/1, enumerations their numeric code. Value must be finite:
// a device omits a signal it has no valid value for.
//
//	[id, value]
//
// Signal's MessagePack methods are written by hand (like Ident's) rather than
// generated: a telemetry frame is mostly signals, and a fast path for the
// canonical encoding (fixarray 2, unsigned id, float64) decodes a 32-signal
// frame about 2.5 times faster than the generated loop. The generated code for
// TelemetryFrame and DiagReport calls these methods. The byte format is
// exactly what msgp generates for the same struct in tuple form; a
// differential fuzz test (FuzzSignalMatchesGenerated) checks this against a
// generated reference in decoders/internal/reftuple.
type Signal struct {
	ID    uint16
	Value float64
}

const (
	float64ExpMask = 0x7ff0000000000000 // exponent bits all ones: NaN or ±Inf
	msgpFixArray2  = 0x92
	msgpFloat64    = 0xcb
)

// finite reports whether f is neither NaN nor ±Inf.
func finite(f float64) bool { return math.Float64bits(f)&float64ExpMask != float64ExpMask }

// UnmarshalMsg implements msgp.Unmarshaler. The id may use any unsigned or
// non-negative signed integer encoding that fits in 16 bits, the value a
// float64 or a float32. NaN and ±Inf are rejected with ErrNonFinite.
func (z *Signal) UnmarshalMsg(b []byte) ([]byte, error) {
	// Fast path: what every encoder emits for ids below 128 (all catalog
	// ids) and finite float64 values. Everything else, including errors,
	// goes through the general path.
	if len(b) >= 11 && b[0] == msgpFixArray2 && b[1] < 0x80 && b[2] == msgpFloat64 {
		bits := binary.BigEndian.Uint64(b[3:11])
		if bits&float64ExpMask != float64ExpMask {
			z.ID = uint16(b[1])
			z.Value = math.Float64frombits(bits)
			return b[11:], nil
		}
	}
	return z.unmarshalSlow(b)
}

// unmarshalSlow decodes any valid encoding; it mirrors the msgp-generated
// tuple decoder.
func (z *Signal) unmarshalSlow(b []byte) ([]byte, error) {
	n, o, err := msgp.ReadArrayHeaderBytes(b)
	if err != nil {
		return b, msgp.WrapError(err)
	}
	if n != 2 {
		return b, msgp.ArrayError{Wanted: 2, Got: n}
	}
	id, o, err := msgp.ReadUint16Bytes(o)
	if err != nil {
		return b, msgp.WrapError(err, "ID")
	}
	v, o, err := msgp.ReadFloat64Bytes(o)
	if err != nil {
		return b, msgp.WrapError(err, "Value")
	}
	if !finite(v) {
		return b, msgp.WrapError(ErrNonFinite, "Value")
	}
	z.ID, z.Value = id, v
	return o, nil
}

// DecodeMsg implements msgp.Decodable (same rules as UnmarshalMsg).
func (z *Signal) DecodeMsg(dc *msgp.Reader) error {
	n, err := dc.ReadArrayHeader()
	if err != nil {
		return msgp.WrapError(err)
	}
	if n != 2 {
		return msgp.ArrayError{Wanted: 2, Got: n}
	}
	id, err := dc.ReadUint16()
	if err != nil {
		return msgp.WrapError(err, "ID")
	}
	v, err := dc.ReadFloat64()
	if err != nil {
		return msgp.WrapError(err, "Value")
	}
	if !finite(v) {
		return msgp.WrapError(ErrNonFinite, "Value")
	}
	z.ID, z.Value = id, v
	return nil
}

// EncodeMsg implements msgp.Encodable.
func (z Signal) EncodeMsg(en *msgp.Writer) error {
	if err := en.Append(msgpFixArray2); err != nil {
		return err
	}
	if err := en.WriteUint16(z.ID); err != nil {
		return msgp.WrapError(err, "ID")
	}
	if err := en.WriteFloat64(z.Value); err != nil {
		return msgp.WrapError(err, "Value")
	}
	return nil
}

// MarshalMsg implements msgp.Marshaler. It emits exactly what msgp's
// generated code emits: the id in its smallest unsigned form and the value
// as a float64.
func (z Signal) MarshalMsg(b []byte) ([]byte, error) {
	if z.ID < 0x80 {
		b = append(b, msgpFixArray2, byte(z.ID), msgpFloat64)
	} else {
		b = msgp.AppendUint16(append(b, msgpFixArray2), z.ID)
		b = append(b, msgpFloat64)
	}
	return binary.BigEndian.AppendUint64(b, math.Float64bits(z.Value)), nil
}

// Msgsize implements msgp.Sizer: an upper bound of the encoded size.
func (z Signal) Msgsize() int { return 1 + msgp.Uint16Size + msgp.Float64Size }
