package ingest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/reject"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/ingest"
	"github.com/telegate/telegate/gateway/ingest/topics"
	"github.com/tinylib/msgp/msgp"
)

// validatorClock is the injected gateway clock of the validator tests.
var validatorClock = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newValidator() *ingest.Validator {
	return ingest.NewValidator(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), time.Hour, func() time.Time { return validatorClock })
}

func telemetryAt(vinInside string, tsMs int64) []byte {
	f := wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident(vinInside), Seq: 1, TimeMs: tsMs,
		Signals: []wire.Signal{{ID: catalog.Speed, Value: 42}}}
	b, _ := f.MarshalMsg(nil)
	return b
}

// TestValidateLabels: every check of the gateway gives its own label and a
// detail that says what to fix, without payload bytes.
func TestValidateLabels(t *testing.T) {
	now := validatorClock.UnixMilli()
	ack := func(cmdID string, reason string) []byte {
		a := wire.CommandAck{Version: wire.Version, CmdID: cmdID, VIN: wire.Ident(vin), TimeMs: now, Status: wire.AckApplied, Reason: reason}
		b, _ := a.MarshalMsg(nil)
		return b
	}
	session := func(station, sid string) []byte {
		s := wire.ChargingSession{Version: wire.Version, Station: wire.Ident(station), Seq: 1, TimeMs: now, Kind: wire.SessionStarted,
			SessionID: wire.Ident(sid), Connector: 1, SoCPct: 20, TargetSoCPct: 80}
		b, _ := s.MarshalMsg(nil)
		return b
	}
	intValue := msgp.AppendArrayHeader(nil, 5)
	intValue = msgp.AppendUint8(intValue, 1)
	intValue = msgp.AppendString(intValue, vin)
	intValue = msgp.AppendUint64(intValue, 1)
	intValue = msgp.AppendInt64(intValue, now)
	intValue = msgp.AppendArrayHeader(intValue, 1)
	intValue = msgp.AppendArrayHeader(intValue, 2)
	intValue = msgp.AppendUint16(intValue, 1)
	intValue = msgp.AppendInt(intValue, 80) // 80, not 80.0

	cases := []struct {
		name    string
		class   topics.Class
		id      string
		payload []byte
		want    reject.Label
		detail  string
	}{
		{"valid", topics.ClassTelemetry, vin, telemetryAt(vin, now), reject.None, ""},
		{"valid at the skew limit", topics.ClassTelemetry, vin, telemetryAt(vin, now+time.Hour.Milliseconds()), reject.None, ""},
		{"valid at the minimum time", topics.ClassTelemetry, vin, telemetryAt(vin, 946684800000), reject.None, ""},
		{"other vin inside", topics.ClassTelemetry, vin, telemetryAt("TGSVS000000000002", now), reject.IdentityMismatch,
			"element 1 (vin) differs from the topic's {vin}"},
		{"other station inside", topics.ClassSession, "ST-1", session("ST-2", "S1"), reject.IdentityMismatch,
			"element 1 (station) differs from the topic's {station}"},
		{"future", topics.ClassTelemetry, vin, telemetryAt(vin, now+2*time.Hour.Milliseconds()), reject.TimestampFuture,
			"element 3 (ts_ms) 1772373600000 is 2h0m0s ahead of the gateway clock, more than the allowed 1h0m0s"},
		{"microseconds", topics.ClassTelemetry, vin, telemetryAt(vin, now*1000), reject.TimestampFuture,
			"; it looks like microseconds"},
		{"seconds", topics.ClassTelemetry, vin, telemetryAt(vin, now/1000), reject.TimestampSeconds,
			"element 3 (ts_ms) 1772366400 is 2026-03-01T12:00:00Z as Unix seconds; send 1772366400000"},
		{"too old", topics.ClassTelemetry, vin, telemetryAt(vin, 946684799999), reject.TimestampTooOld,
			"element 3 (ts_ms) 946684799999 is before the minimum time 2000-01-01T00:00:00Z"},
		{"zero", topics.ClassTelemetry, vin, telemetryAt(vin, 0), reject.TimestampTooOld, "element 3 (ts_ms) 0 is before"},
		{"negative", topics.ClassTelemetry, vin, telemetryAt(vin, -1<<62), reject.TimestampTooOld, "is before the minimum time"},
		{"int for float", topics.ClassTelemetry, vin, intValue, reject.IntForFloat,
			"element 4 (signals), entry 0, element 1 (value): f64 expected, got a MessagePack integer; encode it as float64"},
		{"empty", topics.ClassTelemetry, vin, nil, reject.NotTuple, "empty payload"},
		{"garbage", topics.ClassDiag, vin, []byte("not msgpack"), reject.NotTuple, "the payload is a MessagePack"},
		{"ack cmd id too long", topics.ClassCmdAck, vin, ack(strings.Repeat("c", ingest.MaxCmdIDLen+1), ""), reject.InvalidValue,
			"element 1 (cmd_id): longer than 128 bytes"},
		{"ack reason too long", topics.ClassCmdAck, vin, ack("c1", strings.Repeat("r", ingest.MaxAckReasonLen+1)), reject.InvalidValue,
			"element 5 (reason): longer than 1024 bytes"},
		{"session without id", topics.ClassSession, "ST-1", session("ST-1", ""), reject.InvalidValue, "element 5 (session_id): empty"},
	}
	v := newValidator()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			label, err := v.Validate(c.class, c.id, c.payload)
			if label != c.want || (err == nil) != (c.want == reject.None) {
				t.Fatalf("label %v (%v), want %v", label, err, c.want)
			}
			if reject.FromError(err) != label {
				t.Fatalf("FromError(%v) = %v, Validate said %v", err, reject.FromError(err), label)
			}
			if d := reject.Detail(err); !strings.Contains(d, c.detail) {
				t.Fatalf("detail %q, want it to contain %q", d, c.detail)
			}
		})
	}
}

// TestValidateAllocs: validating a valid frame allocates nothing.
func TestValidateAllocs(t *testing.T) {
	v := newValidator()
	b := telemetryAt(vin, validatorClock.UnixMilli())
	if n := testing.AllocsPerRun(100, func() {
		if l, err := v.Validate(topics.ClassTelemetry, vin, b); err != nil || l != reject.None {
			t.Fatal(l, err)
		}
	}); n != 0 {
		t.Fatalf("%v allocs per valid frame", n)
	}
}
