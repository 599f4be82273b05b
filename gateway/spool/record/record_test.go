package record

import (
	"bytes"
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	b := Append(nil, KindDeadLetter, 1, 1234567890123, "vehicles/V/telemetry", "V", "bad version", []byte{1, 2, 3})
	var r Record
	if err := Parse(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Kind != KindDeadLetter || r.QoS != 1 || r.RecvNs != 1234567890123 || string(r.Topic) != "vehicles/V/telemetry" ||
		string(r.Client) != "V" || string(r.Reason) != "bad version" || !bytes.Equal(r.Payload, []byte{1, 2, 3}) {
		t.Fatalf("%+v", r)
	}
	// Every truncation either parses (shorter payload) or fails cleanly.
	for i := range b {
		_ = Parse(b[:i], &r)
	}
	if err := Parse([]byte{9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, &r); !errors.Is(err, ErrMalformed) {
		t.Fatal("bad kind accepted")
	}
}

func TestAppendNoAlloc(t *testing.T) {
	buf := make([]byte, 0, 1024)
	p := make([]byte, 400)
	n := testing.AllocsPerRun(100, func() {
		buf = Append(buf[:0], KindPublish, 1, 1, "vehicles/TGSVS000000000001/telemetry", "TGSVS000000000001", "", p)
	})
	if n != 0 {
		t.Fatalf("allocs %v", n)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Append(nil, KindPublish, 0, 1, "a/b", "c", "", []byte("x")))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		_ = Parse(b, &r)
	})
}
