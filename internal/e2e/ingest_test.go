package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tinylib/msgp/msgp"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/reject"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/gateway/config"
	"github.com/telegate/telegate/gateway/influx/query"
	"github.com/telegate/telegate/gateway/sink/eventsink"
	"github.com/telegate/telegate/internal/svctest"
)

func telemetryFrame(vin string, seq uint64, ts time.Time) []byte {
	f := wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident(vin), Seq: seq, TimeMs: ts.UnixMilli()}
	f.Signals = append(f.Signals,
		wire.Signal{ID: catalog.Speed, Value: float64(seq % 200)},
		wire.Signal{ID: catalog.TractionSoC, Value: 50.5},
		wire.Signal{ID: catalog.IsMoving, Value: 1},
		wire.Signal{ID: catalog.CurrentGear, Value: 3},
		wire.Signal{ID: 9999, Value: 1},               // unknown id: skipped
		wire.Signal{ID: catalog.Speed + 0, Value: -5}, // out of range: skipped
	)
	b, err := f.MarshalMsg(nil)
	if err != nil {
		panic(err)
	}
	return b
}

// TestQoS1FramesQueryable publishes K QoS 1 frames from paho clients and
// checks that exactly K frames' worth of points, with the right values, are
// queryable in InfluxDB.
func TestQoS1FramesQueryable(t *testing.T) {
	e := startEnv(t, 3, 0)
	const perVehicle = 200
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	var sumSeq uint64
	for v := 1; v <= 3; v++ {
		vin := sim.VIN(sim.DefaultVINPrefix, v)
		c := e.mqtt311(vin)
		for i := 1; i <= perVehicle; i++ {
			tok := c.Publish("vehicles/"+vin+"/telemetry", 1, false, telemetryFrame(vin, uint64(i), base.Add(time.Duration(i)*time.Millisecond)))
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish %d: %v", i, tok.Error())
			}
			sumSeq += uint64(i)
		}
	}
	const k = 3 * perVehicle
	since := base.Add(-time.Second)
	eventually(t, "frames in InfluxDB", countIs(t, e.influx, "telemetry", "seq", since, k))
	// Same count for a value field, and the right values.
	if n := e.influx.Count(t, "telemetry", "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", since); n != k {
		t.Fatalf("soc points %d, want %d", n, k)
	}
	rows := e.influx.Query(t, `SELECT sum("seq") FROM "telemetry" WHERE time >= `+query.Time(since))
	if len(rows) != 1 || rows[0]["_value"].(int64) != int64(sumSeq) {
		t.Fatalf("sum of seq: %v, want %d", rows, sumSeq)
	}
	rows = e.influx.Query(t, `SELECT last(*) FROM "telemetry" WHERE time >= `+query.Time(since)+
		` AND "vin" = `+query.String(sim.VIN(sim.DefaultVINPrefix, 2)))
	got := map[string]any{}
	for _, r := range rows { // last(*) names its columns last_<field>
		got[strings.TrimPrefix(r["_field"].(string), "last_")] = r["_value"]
	}
	if got["Vehicle.Speed"] != float64(perVehicle%200) || got["Vehicle.IsMoving"] != true || got["Vehicle.Powertrain.Transmission.CurrentGear"] != int64(3) {
		t.Fatalf("last values: %v", got)
	}
	for f := range got {
		if f != "seq" && f != "Vehicle.Speed" && f != "Vehicle.IsMoving" && f != "Vehicle.Powertrain.Transmission.CurrentGear" &&
			f != "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current" {
			t.Fatalf("unexpected field %q", f)
		}
	}
	// The sink counts a batch's skipped signals once InfluxDB has answered
	// its write, which can be just after the points became queryable.
	for _, reason := range []string{"unknown_id", "out_of_range"} {
		eventually(t, reason+" signals counted", func() error {
			if v := testutilCounter(t, e, "telegate_signals_invalid_total", `reason="`+reason+`"`); v != k {
				return fmt.Errorf("%s signals counted %v, want %d", reason, v, k)
			}
			return nil
		})
	}
}

// TestFleetSimulatorToInflux runs the real firmware simulator (drive cycle,
// DTCs, charging) and checks every acknowledged telemetry frame is stored.
func TestFleetSimulatorToInflux(t *testing.T) {
	fleetToInflux(t)
}

// TestFleetSimulatorToInfluxReadBatch: the same with read batching on
// (mqtt.read_batch): frames read several at a time, PUBACKs still after
// their group commit, every acknowledged frame stored.
func TestFleetSimulatorToInfluxReadBatch(t *testing.T) {
	fleetToInflux(t, func(c *config.Config) { c.MQTT.ReadBatch = 30 * time.Millisecond })
}

func fleetToInflux(t *testing.T, opts ...envOpt) {
	e := startEnv(t, 4, 2, opts...)
	cfg := e.simCfg
	cfg.Frames = 400
	cfg.TelemetryInterval = 10 * time.Millisecond
	cfg.DiagInterval = 100 * time.Millisecond
	cfg.DTCProbability = 0.5
	cfg.ChargeEvery = 50 * time.Millisecond
	cfg.SessionInterval = 50 * time.Millisecond
	cfg.ChargeSpeedup = 200
	cfg.Seed = 7
	start := time.Now().Add(-time.Minute)
	fleet, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := fleet.Run(ctx); err != nil {
		t.Fatal(err)
	}
	s := fleet.Summary()
	tel := s.Topics["telemetry"]
	t.Logf("fleet summary: sent %d acked %d errors %d rate %.0f/s", s.Sent, s.Acked, s.Errors, s.Rate)
	if tel.Acked != 400 {
		t.Fatalf("telemetry acked %d, want 400 (%+v)", tel.Acked, s)
	}
	eventually(t, "all acked telemetry stored", countIs(t, e.influx, "telemetry", "seq", start, int(tel.Acked)))
	if d := s.Topics["diag"]; d.Acked > 0 {
		eventually(t, "diag stored", countIs(t, e.influx, "diag", "seq", start, int(d.Acked)))
	}
}

// rawTelemetry encodes a telemetry frame by hand, with the signal values
// in enc (so that a test can send what a buggy encoder sends).
func rawTelemetry(vin string, ts time.Time, signals ...[]byte) []byte {
	b := msgp.AppendArrayHeader(nil, 5)
	b = msgp.AppendUint8(b, wire.Version)
	b = msgp.AppendString(b, vin)
	b = msgp.AppendUint64(b, 1)
	b = msgp.AppendInt64(b, ts.UnixMilli())
	b = msgp.AppendArrayHeader(b, uint32(len(signals)))
	for _, s := range signals {
		b = append(b, s...)
	}
	return b
}

// TestMalformedPayloads: MQTT 5 gets PUBACK 0x99, 3.1.1 gets a PUBACK, and
// every rejection label that a device can cause appears identically in the
// metric, the NATS dead letter (with the label's message and a detail) and
// the InfluxDB dead_letter point.
func TestMalformedPayloads(t *testing.T) {
	e := startEnv(t, 2, 0)
	vin1, vin2 := sim.VIN(sim.DefaultVINPrefix, 1), sim.VIN(sim.DefaultVINPrefix, 2)
	now := time.Now() // the gateway's clock in this test is the real one; only offsets from it matter
	sig := func(id uint16, v []byte) []byte {
		return append(msgp.AppendUint16(msgp.AppendArrayHeader(nil, 2), id), v...)
	}
	f64 := func(v float64) []byte { return msgp.AppendFloat64(nil, v) }
	many := make([][]byte, wire.MaxArrayLen+1)
	for i := range many {
		many[i] = sig(catalog.Speed, f64(1))
	}
	event := func(kind uint8) []byte {
		ev := wire.VehicleEvent{Version: wire.Version, VIN: wire.Ident(vin1), Seq: 1, TimeMs: now.UnixMilli(), Kind: kind}
		b, _ := ev.MarshalMsg(nil)
		return b
	}
	telemetry := "vehicles/" + vin1 + "/telemetry"
	cases := []struct {
		name    string
		label   reject.Label
		topic   string
		payload []byte
	}{
		{"garbage", reject.NotTuple, telemetry, []byte{0xc1, 0xff, 0x00}},
		{"empty", reject.NotTuple, telemetry, nil},
		{"future version", reject.Version, telemetry, func() []byte {
			b := telemetryFrame(vin1, 1, now)
			b[1] = 9 // first tuple element is the version
			return b
		}()},
		{"truncated", reject.Malformed, telemetry, telemetryFrame(vin1, 1, now)[:20]},
		{"integer for a float", reject.IntForFloat, telemetry, rawTelemetry(vin1, now, sig(catalog.Speed, f64(80)), sig(catalog.TractionSoC, msgp.AppendInt(nil, 80)))},
		{"513 signals", reject.TooLarge, telemetry, rawTelemetry(vin1, now, many...)},
		{"vin too long", reject.IdentTooLong, telemetry, rawTelemetry(strings.Repeat("V", wire.MaxIdentLen+1), now)},
		{"NaN", reject.NonFinite, telemetry, rawTelemetry(vin1, now, sig(catalog.Speed, f64(math.NaN())))},
		{"event kind 9", reject.InvalidValue, "vehicles/" + vin1 + "/events", event(9)},
		{"trailing bytes", reject.TrailingBytes, telemetry, append(telemetryFrame(vin1, 1, now), 0xc0)},
		{"other vin inside", reject.IdentityMismatch, telemetry, telemetryFrame(vin2, 1, now)},
		{"far future", reject.TimestampFuture, telemetry, telemetryFrame(vin1, 1, now.Add(48*time.Hour))},
		{"before the minimum time", reject.TimestampTooOld, telemetry, rawTelemetry(vin1, time.UnixMilli(1_000_000))},
		{"seconds", reject.TimestampSeconds, telemetry, rawTelemetry(vin1, time.UnixMilli(now.Unix()))},
	}
	want := map[string]int{} // label → dead letters expected
	cm := e.mqtt5(vin1)
	for _, c := range cases {
		resp, err := cm.Publish(context.Background(), &paho.Publish{Topic: c.topic, QoS: 1, Payload: c.payload})
		if err != nil && resp == nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if resp == nil || resp.ReasonCode != reject.PubackCode {
			t.Fatalf("%s: want PUBACK 0x99, got %+v (%v)", c.name, resp, err)
		}
		want[c.label.String()]++
	}
	// Every label a device can cause is exercised (unknown_topic cannot pass
	// the ACL, unclassified is only for records of older releases and
	// session_stopped only comes from OCPP charge points, gateway/ocpp).
	for _, l := range reject.All() {
		if want[l.String()] == 0 && l != reject.UnknownTopic && l != reject.Unclassified && l != reject.SessionStopped {
			t.Errorf("label %s not exercised end to end", l)
		}
	}
	// 3.1.1: acked (durably dead-lettered), connection stays up.
	c3 := e.mqtt311(vin2)
	tok := c3.Publish("vehicles/"+vin2+"/diag", 1, false, []byte("not msgpack"))
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1 malformed publish: %v", tok.Error())
	}
	if !c3.IsConnectionOpen() {
		t.Fatal("3.1.1 client disconnected")
	}
	want[reject.NotTuple.String()]++
	total := len(cases) + 1

	// NATS: one dead letter per rejection, with the label, its message and a detail.
	js := svctest.Ops(t, e.gw.Bus()).JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "DEADLETTER", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seen, natsLabels := map[string]int{}, map[string]int{}
	for sum(seen) < total {
		m, err := cons.Next(jetstream.FetchMaxWait(30 * time.Second))
		if err != nil {
			t.Fatalf("dead letters so far %v: %v", seen, err)
		}
		var env struct {
			Data eventsink.DeadLetter `json:"data"`
		}
		if err := json.Unmarshal(m.Data(), &env); err != nil {
			t.Fatal(err)
		}
		l, ok := reject.Parse(env.Data.Reason)
		if !ok || env.Data.Client == "" || env.Data.Message != l.Message() || env.Data.Detail == "" {
			t.Fatalf("dead letter without label/message/detail/client: %s", m.Data())
		}
		seen[m.Subject()]++
		natsLabels[env.Data.Reason]++
	}
	if seen["deadletter.telemetry."+vin1] != len(cases)-1 || seen["deadletter.events."+vin1] != 1 || seen["deadletter.diag."+vin2] != 1 {
		t.Fatalf("dead letters by subject: %v", seen)
	}
	if !maps.Equal(natsLabels, want) {
		t.Fatalf("NATS dead letters by label %v, want %v", natsLabels, want)
	}
	// Metric: the same labels, the same counts.
	for l, n := range want {
		if v := testutilCounter(t, e, "telegate_dead_letters_total", `reason="`+l+`"`); v != float64(n) {
			t.Fatalf("telegate_dead_letters_total{reason=%q} = %v, want %d", l, v, n)
		}
	}
	if v := testutilCounter(t, e, "telegate_dead_letters_total", ""); v != float64(total) {
		t.Fatalf("telegate_dead_letters_total = %v, want %d", v, total)
	}
	// InfluxDB: one dead_letter point per rejection, the same labels and messages.
	since := now.Add(-time.Hour)
	eventually(t, "dead letters in InfluxDB", countIs(t, e.influx, "dead_letter", "bytes", since, total))
	rows := e.influx.QueryRows(t, `SELECT "reason", "message" FROM "dead_letter" WHERE time >= `+query.Time(since))
	influxLabels := map[string]int{}
	for _, r := range rows {
		label, _ := r["reason"].(string)
		l, ok := reject.Parse(label)
		if msg, _ := r["message"].(string); !ok || msg != l.Message() {
			t.Fatalf("dead_letter point %v", r)
		}
		influxLabels[label]++
	}
	if !maps.Equal(influxLabels, want) {
		t.Fatalf("InfluxDB dead letters by label %v, want %v", influxLabels, want)
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestDTCEventsAndCharging: a diag report raising P0301 produces
// telemetry.dtc.raised with the SAE description, a later report without it
// produces dtc.cleared, charging sessions produce charging.session.*.
func TestDTCEventsAndCharging(t *testing.T) {
	e := startEnv(t, 1, 1)
	vin, station := sim.VIN(sim.DefaultVINPrefix, 1), sim.StationID(sim.DefaultStationPrefix, 1)
	cv := e.mqtt311(vin)
	now := time.Now()
	report := func(seq uint64, dtcs ...wire.DTCEntry) {
		d := wire.DiagReport{Version: wire.Version, VIN: wire.Ident(vin), Seq: seq, TimeMs: now.Add(time.Duration(seq) * time.Second).UnixMilli(),
			MIL: len(dtcs) > 0, OdometerKm: 12345.6, DTCs: dtcs}
		b, _ := d.MarshalMsg(nil)
		if tok := cv.Publish("vehicles/"+vin+"/diag", 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	report(1, wire.DTCEntry{Code: 0x0301, Status: wire.DTCPending})
	report(2, wire.DTCEntry{Code: 0x0301, Status: wire.DTCConfirmed}, wire.DTCEntry{Code: 0x0420, Status: wire.DTCPending})
	report(3, wire.DTCEntry{Code: 0x0420, Status: wire.DTCPending})

	cc := e.mqtt311(station)
	sess := wire.ChargingSession{Version: wire.Version, Station: wire.Ident(station), Seq: 1, TimeMs: now.UnixMilli(), Kind: wire.SessionStarted,
		SessionID: wire.Ident("S1"), Connector: 1, VIN: wire.Ident(vin), PowerW: 50000, SoCPct: 20, TargetSoCPct: 80}
	b, _ := sess.MarshalMsg(nil)
	if tok := cc.Publish("chargers/"+station+"/session", 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}

	js := svctest.Ops(t, e.gw.Bus()).JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "DTC", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 4 {
		m, err := cons.Next(jetstream.FetchMaxWait(30 * time.Second))
		if err != nil {
			t.Fatalf("dtc events so far %v: %v", got, err)
		}
		var env struct {
			Type string             `json:"type"`
			ID   string             `json:"id"`
			Data eventsink.DTCEvent `json:"data"`
		}
		if err := json.Unmarshal(m.Data(), &env); err != nil {
			t.Fatal(err)
		}
		if m.Headers().Get(jetstream.MsgIDHeader) != env.ID {
			t.Fatalf("Nats-Msg-Id %q != id %q", m.Headers().Get(jetstream.MsgIDHeader), env.ID)
		}
		if env.Data.Code == "P0301" && env.Type == "dtc.raised" && env.Data.Description == "" {
			t.Fatal("P0301 without description")
		}
		got = append(got, env.Type+" "+env.Data.Code+" "+env.Data.Status)
	}
	want := []string{"dtc.raised P0301 pending", "dtc.updated P0301 confirmed", "dtc.raised P0420 pending", "dtc.cleared P0301 cleared"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("dtc events %v, want %v", got, want)
	}
	ch, err := js.OrderedConsumer(ctx, "CHARGING", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"charging.session.>"}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := ch.Next(jetstream.FetchMaxWait(30 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject() != "charging.session.started."+station {
		t.Fatalf("subject %s", m.Subject())
	}
	eventually(t, "diag stored", countIs(t, e.influx, "diag", "seq", now.Add(-time.Minute), 3))
	rows := e.influx.Query(t, `SELECT last("dtcs") FROM "diag" WHERE time >= now() - 1h GROUP BY *`)
	if len(rows) != 1 || rows[0]["_value"] != "P0420:pending" {
		t.Fatalf("active dtcs: %v", rows)
	}
}

// mqtt5 connects an MQTT 5 client (paho.golang) as device id.
func (e *env) mqtt5(id string) *paho.Client {
	e.t.Helper()
	u, _ := url.Parse(e.mqttURL)
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, Username: id, UsernameFlag: true, Password: []byte(sim.Secret(fleetKey, id)),
		PasswordFlag: true, CleanStart: true, KeepAlive: 30})
	if err != nil || ack.ReasonCode != 0 {
		e.t.Fatalf("mqtt5 connect %s: %v %+v", id, err, ack)
	}
	e.t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}
