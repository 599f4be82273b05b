package wire_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/tinylib/msgp/msgp"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/decoders and the example in docs/protocol.md")

const goldenDir = "../../testdata/decoders"

// golden is one golden payload: <name>.msgpack holds the bytes, <name>.json
// the value the matching Decode function must produce.
type golden struct {
	name  string
	codec string
	// build produces the payload bytes when regenerating (-update).
	build func() []byte
	// canonical: the payload is what MarshalMsg emits for the decoded value,
	// so re-encoding must reproduce it byte for byte.
	canonical bool
}

var goldens = []golden{
	{"telemetry", "telemetry", func() []byte { return mustMarshal(telemetry32()) }, true},
	{"telemetry_compact", "telemetry", compactTelemetry, false},
	{"diag", "diag", func() []byte { return mustMarshal(sampleDiag()) }, true},
	{"event", "event", func() []byte { return mustMarshal(sampleEvent()) }, true},
	{"charging_session", "charging_session", func() []byte { return mustMarshal(sampleSession()) }, true},
	{"charger_status", "charger_status", func() []byte { return mustMarshal(sampleChargerStatus()) }, true},
	{"command", "command", func() []byte { return mustMarshal(sampleCommand()) }, true},
	{"command_ack", "command_ack", func() []byte { return mustMarshal(sampleCommandAck()) }, true},
}

// compactTelemetry is a frame as a constrained device may legitimately encode
// it: VIN as bin, values as float32, a signal id in uint16 form, integers in
// wider forms than necessary, and an array16 header for the signal list.
func compactTelemetry() []byte {
	b := msgp.AppendArrayHeader(nil, 5)
	b = append(b, 0xcc, 0x01)                   // version 1 as uint8
	b = msgp.AppendBytes(b, []byte(sampleVIN))  // bin 8
	b = append(b, 0xce, 0x00, 0x01, 0x00, 0x00) // seq 65536 as uint32
	b = msgp.AppendInt64(b, sampleTsMs)
	b = append(b, 0xdc, 0x00, 0x03) // array16 of 3 signals
	b = msgp.AppendArrayHeader(b, 2)
	b = append(b, 0xcd, 0x00, 0x01) // id 1 as uint16
	b = msgp.AppendFloat32(b, 87.5)
	b = msgp.AppendArrayHeader(b, 2)
	b = append(b, 0xd0, 0x06) // id 6 as int8
	b = msgp.AppendFloat32(b, 76.25)
	b = msgp.AppendArrayHeader(b, 2)
	b = msgp.AppendUint16(b, 31)
	b = msgp.AppendFloat32(b, 1)
	return b
}

func goldenJSON(v any) []byte {
	j, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(j, '\n')
}

func TestGolden(t *testing.T) {
	if *update {
		if err := os.MkdirAll(goldenDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range goldens {
		t.Run(g.name, func(t *testing.T) {
			c := codecByName(g.codec)
			binPath := filepath.Join(goldenDir, g.name+".msgpack")
			jsonPath := filepath.Join(goldenDir, g.name+".json")
			if *update {
				b := g.build()
				v := c.fresh()
				if err := c.decode(b, v); err != nil {
					t.Fatalf("sample does not decode: %v", err)
				}
				writeFile(t, binPath, b)
				writeFile(t, jsonPath, goldenJSON(v))
			}
			b := readFile(t, binPath)
			want := readFile(t, jsonPath)

			v := c.fresh()
			if err := c.decode(b, v); err != nil {
				t.Fatalf("decode %s: %v", binPath, err)
			}
			if got := goldenJSON(v); !bytes.Equal(got, want) {
				t.Errorf("decoded %s differs from %s:\n got: %s\nwant: %s", binPath, jsonPath, got, want)
			}
			// The JSON expectation decodes back to the same value.
			fromJSON := c.fresh()
			if err := json.Unmarshal(want, fromJSON); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(normalize(fromJSON), normalize(v)) {
				t.Errorf("%s does not round-trip through JSON", jsonPath)
			}
			if g.canonical {
				if enc := mustMarshal(v); !bytes.Equal(enc, b) {
					t.Errorf("re-encoding differs from %s:\n got %x\nwant %x", binPath, enc, b)
				}
				if enc := mustMarshal(c.sample()); !bytes.Equal(enc, b) {
					t.Errorf("encoding of the sample value differs from %s (wire format changed?); run go test -update if intended", binPath)
				}
			}
		})
	}
}

// normalize maps empty identifiers/slices to nil so that values from JSON and
// from MessagePack compare equal.
func normalize(v any) any {
	rv := reflect.ValueOf(v).Elem()
	for i := range rv.NumField() {
		f := rv.Field(i)
		if f.Kind() == reflect.Slice && f.Len() == 0 {
			f.Set(reflect.Zero(f.Type()))
		}
	}
	return v
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./decoders/wire -run TestGolden -update to create)", err)
	}
	return b
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// goldenPayloads returns every golden payload (for fuzz seeds and
// malformed-input tests), keyed by codec name.
func goldenPayloads(t testing.TB) map[string][][]byte {
	out := map[string][][]byte{}
	for _, g := range goldens {
		b, err := os.ReadFile(filepath.Join(goldenDir, g.name+".msgpack"))
		if err != nil {
			t.Fatalf("%v (run go test ./decoders/wire -run TestGolden -update to create)", err)
		}
		out[g.codec] = append(out[g.codec], b)
	}
	return out
}
