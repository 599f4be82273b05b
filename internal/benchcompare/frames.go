package benchcompare

import (
	"strconv"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
)

// Signals is the number of signals in every benchmark frame: catalog ids
// 1..Signals, each with a valid value.
const Signals = 32

// signalValue is a valid, frame-dependent value for catalog signal s.
func signalValue(s *catalog.Signal, seq uint64) float64 {
	switch s.Type {
	case catalog.Bool:
		return float64(seq & 1)
	case catalog.Int:
		lo, hi := int64(s.Min), int64(s.Max)
		return float64(lo + int64(seq)%(hi-lo+1))
	default:
		frac := float64(seq%997) / 997
		return s.Min + (s.Max-s.Min)*frac
	}
}

// frameSignals fills dst with the Signals signals of frame seq.
func frameSignals(dst []wire.Signal, seq uint64) []wire.Signal {
	dst = dst[:0]
	for id := uint16(1); id <= Signals; id++ {
		s, _ := catalog.Lookup(id)
		dst = append(dst, wire.Signal{ID: id, Value: signalValue(s, seq)})
	}
	return dst
}

// frameEncoder builds one device's frames without allocating per frame.
// Not safe for concurrent use: one per load client.
type frameEncoder struct {
	vin  string
	json bool
	f    wire.TelemetryFrame
	buf  []byte
}

func newFrameEncoder(vin string, json bool) *frameEncoder {
	e := &frameEncoder{vin: vin, json: json}
	e.f = wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident(vin), Signals: make([]wire.Signal, 0, Signals)}
	return e
}

// frame returns frame seq stamped tsMs; the slice is valid until the next
// call.
func (e *frameEncoder) frame(seq uint64, tsMs int64) []byte {
	e.f.Seq, e.f.TimeMs = seq, tsMs
	e.f.Signals = frameSignals(e.f.Signals, seq)
	if !e.json {
		e.buf, _ = e.f.MarshalMsg(e.buf[:0]) // a TelemetryFrame always marshals
		return e.buf
	}
	return appendJSONFrame(e.buf[:0], e.vin, &e.f)
}

// appendJSONFrame appends the JSON form of f that Telegraf's stock "json"
// parser reads: {"vin":..,"seq":..,"ts":<unix ms>,"<VSS path>":<number>,...}.
// VINs and VSS paths need no JSON escaping.
func appendJSONFrame(b []byte, vin string, f *wire.TelemetryFrame) []byte {
	b = append(b, `{"vin":"`...)
	b = append(b, vin...)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, f.Seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, f.TimeMs, 10)
	for _, sg := range f.Signals {
		s, _ := catalog.Lookup(sg.ID)
		b = append(b, `,"`...)
		b = append(b, s.Path...)
		b = append(b, `":`...)
		b = strconv.AppendFloat(b, sg.Value, 'g', -1, 64)
	}
	return append(b, '}')
}

// appendLine appends the line-protocol point the gateway writes for a
// telemetry frame (measurement telemetry, tag vin, one field per signal,
// seq, nanosecond timestamp = ms + seq mod 1e6) to b.
func appendLine(b []byte, vin string, seq uint64, tsMs int64, sigs []wire.Signal) []byte {
	b = append(b, "telemetry,vin="...)
	b = append(b, vin...)
	b = append(b, ' ')
	for _, sg := range sigs {
		s, _ := catalog.Lookup(sg.ID)
		b = s.AppendField(b, sg.Value)
		b = append(b, ',')
	}
	b = append(b, "seq="...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, "i "...)
	b = strconv.AppendInt(b, tsMs*1_000_000+int64(seq%1_000_000), 10)
	return append(b, '\n')
}
