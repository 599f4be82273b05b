// Package mapform holds a map-form ("generic") msgp encoding of a telemetry
// frame, used only by benchmarks and tests in decoders/wire to compare the
// tuple-form wire format against what a straightforward msgp struct with
// field names would cost. It is not part of the device protocol.
//
// mapform_gen.go is generated (go generate) and committed; gen_check.sh in
// decoders/wire verifies it is current.
package mapform

//go:generate go tool msgp -file=$GOFILE -o=mapform_gen.go -tests=false

//msgp:limit arrays:512 maps:64

// TelemetryFrame carries the same content as wire.TelemetryFrame, encoded as
// a MessagePack map keyed by field name.
type TelemetryFrame struct {
	Version uint8    `msg:"version"`
	VIN     []byte   `msg:"vin"`
	Seq     uint64   `msg:"seq"`
	TimeMs  int64    `msg:"ts_ms"`
	Signals []Signal `msg:"signals"`
}

// Signal is one sampled value, encoded as a map {"id": ..., "value": ...}.
type Signal struct {
	ID    uint16  `msg:"id"`
	Value float64 `msg:"value"`
}
