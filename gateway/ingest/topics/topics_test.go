package topics

import "testing"

func TestParse(t *testing.T) {
	cases := []struct {
		topic string
		class Class
		id    string
	}{
		{"vehicles/V1/telemetry", ClassTelemetry, "V1"},
		{"vehicles/V1/diag", ClassDiag, "V1"},
		{"vehicles/V1/events", ClassEvents, "V1"},
		{"vehicles/V1/cmd-ack", ClassCmdAck, "V1"},
		{"chargers/CS-1/session", ClassSession, "CS-1"},
		{"chargers/CS-1/status", ClassStatus, "CS-1"},
		{"vehicles//telemetry", ClassNone, ""},
		{"vehicles/V1/telemetry/x", ClassNone, ""},
		{"vehicles/V1/cmd/offer", ClassNone, ""},
		{"chargers/CS-1/telemetry", ClassNone, ""},
		{"vehicles/V1", ClassNone, ""},
		{"", ClassNone, ""},
		{"other/V1/telemetry", ClassNone, ""},
	}
	for _, c := range cases {
		got, id, ok := Parse(c.topic)
		if got != c.class || id != c.id || ok != (c.class != ClassNone) {
			t.Errorf("Parse(%q) = %v %q %v", c.topic, got, id, ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() { Parse("vehicles/TGSVS000000000001/telemetry") }); n != 0 {
		t.Fatalf("allocs %v", n)
	}
}
