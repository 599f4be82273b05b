package wire_test

import (
	"bufio"
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/telegate/telegate/decoders/wire"
)

// TestErrorDetails: the text of a decode error names the element in
// docs/protocol.md terms and says what was wrong, without payload bytes.
func TestErrorDetails(t *testing.T) {
	long := strings.Repeat("X", wire.MaxIdentLen+1)
	cases := []struct {
		name, codec string
		in          []byte
		want        string
	}{
		{"int for float", "telemetry", telemetryWith(enc(nil).arr(2).sig(1, 1).arr(2).u(6).u(80)),
			"wire: f64 element sent as a MessagePack integer: element 4 (signals), entry 1, element 1 (value): f64 expected, got a MessagePack integer; encode it as float64"},
		{"odometer as integer", "diag", append(head(8).bool(true).u(1000), enc(nil).arr(0).arr(0)...),
			"wire: f64 element sent as a MessagePack integer: element 5 (odometer_km): f64 expected, got a MessagePack integer; encode it as float64"},
		{"vin too long", "telemetry", append(enc(nil).arr(5).u(1).s(long).u(1).i(1), signals(1)...),
			"wire: identifier too long: element 1 (vin): longer than 64 bytes"},
		{"too few elements", "telemetry", head(4),
			"wire: malformed payload: tuple of 5 elements expected, got 4"},
		{"seq as string", "telemetry", append(enc(nil).arr(5).u(1).s("V").s("7").i(1), signals(1)...),
			"wire: malformed payload: element 2 (seq): unsigned integer expected, got a MessagePack str"},
		{"version 2", "diag", enc(nil).arr(8).u(2),
			"wire: unsupported schema version: element 0 (version) is 2; this gateway understands 1"},
		{"dtc status", "diag", append(head(8).bool(true).f(1), enc(nil).arr(2).arr(2).u(0x0301).u(1).arr(2).u(0x0420).u(7).arr(0)...),
			"wire: invalid field value: element 6 (dtcs), entry 1, element 1 (status): is 7, not 1, 2 or 3"},
		{"latitude", "event", head(8).u(uint64(wire.EventLocation)).bool(true).f(91.25).f(12.5),
			"wire: invalid field value: element 6 (lat): outside -90..90 while has_position is true"},
		{"trailing", "telemetry", append(telemetryWith(signals(1)), 0, 0),
			"wire: trailing bytes after payload: 2 bytes after the tuple"},
		{"map", "telemetry", []byte{0x81, 0xa1, 'v', 0x01},
			"wire: payload is not a MessagePack array: the payload is a MessagePack map, not an array"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := codecByName(tc.codec)
			err := c.decode(tc.in, c.fresh())
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error text\n got: %v\nwant: %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "91.25") {
				t.Fatal("a position leaked into the error text")
			}
		})
	}
}

// TestDocNames: the element names used in error details are the names of
// the payload tables in docs/protocol.md section 4.
func TestDocNames(t *testing.T) {
	doc, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| \\d+ \\| (\\w+) \\| `[^`]+` \\| `(\\w+)` \\|")
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for sc.Scan() {
		m := row.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		seen++
		if got := wire.DocName(m[2]); got != m[1] {
			t.Errorf("Go field %s: DocName %q, docs/protocol.md says %q", m[2], got, m[1])
		}
	}
	if seen < 40 {
		t.Fatalf("only %d payload table rows found in %s", seen, protocolDoc)
	}
}
