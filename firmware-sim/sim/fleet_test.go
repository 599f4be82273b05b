package sim

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"go.uber.org/goleak"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// deadline bounds every wait in these tests; it only fails a test that
// would otherwise hang, it never asserts on timing.
const deadline = 30 * time.Second

// startBroker runs an allow-all mochi broker on a loopback port.
func startBroker(t *testing.T, addr string) (*mochi.Server, string) {
	t.Helper()
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: discardLogger()})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t", Address: addr})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	return srv, tcp.Address()
}

// observer is a separate MQTT client recording everything the fleet
// publishes.
type observer struct {
	client paho.Client
	mu     sync.Mutex
	msgs   map[string][][]byte // by topic
}

func newObserver(t *testing.T, addr string) *observer {
	t.Helper()
	o := &observer{msgs: map[string][][]byte{}}
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("observer").
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false)
	o.client = paho.NewClient(opts)
	if tok := o.client.Connect(); !tok.WaitTimeout(deadline) || tok.Error() != nil {
		t.Fatalf("observer connect: %v", tok.Error())
	}
	handler := func(_ paho.Client, m paho.Message) {
		if strings.Contains(m.Topic(), "/cmd/") {
			return // the test's own commands
		}
		o.mu.Lock()
		o.msgs[m.Topic()] = append(o.msgs[m.Topic()], append([]byte(nil), m.Payload()...))
		o.mu.Unlock()
	}
	tok := o.client.SubscribeMultiple(map[string]byte{"vehicles/#": 1, "chargers/#": 1}, handler)
	if !tok.WaitTimeout(deadline) || tok.Error() != nil {
		t.Fatalf("observer subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { o.client.Disconnect(100) })
	return o
}

// get returns a copy of the payloads received on topic.
func (o *observer) get(topic string) [][]byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([][]byte(nil), o.msgs[topic]...)
}

func (o *observer) topics() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var ts []string
	for k := range o.msgs {
		ts = append(ts, k)
	}
	return ts
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func events(t *testing.T, payloads [][]byte) []wire.VehicleEvent {
	t.Helper()
	out := make([]wire.VehicleEvent, len(payloads))
	for i, p := range payloads {
		if err := wire.DecodeVehicleEvent(p, &out[i]); err != nil {
			t.Fatalf("event: %v", err)
		}
	}
	return out
}

func acks(t *testing.T, payloads [][]byte) map[string][]wire.CommandAck {
	t.Helper()
	out := map[string][]wire.CommandAck{}
	for _, p := range payloads {
		var a wire.CommandAck
		if err := wire.DecodeCommandAck(p, &a); err != nil {
			t.Fatalf("ack: %v", err)
		}
		out[a.CmdID] = append(out[a.CmdID], a)
	}
	return out
}

func command(t *testing.T, id, name string, params ...string) []byte {
	t.Helper()
	c := wire.Command{Version: wire.Version, CmdID: id, TimeMs: time.Now().UnixMilli(), Name: name}
	for i := 0; i+1 < len(params); i += 2 {
		c.Params = append(c.Params, wire.Param{Key: params[i], Value: params[i+1]})
	}
	b, err := c.MarshalMsg(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkSeq verifies that seq numbers are strictly increasing.
func checkSeq(t *testing.T, topic string, seqs []uint64) {
	t.Helper()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("%s: seq %d after %d", topic, seqs[i], seqs[i-1])
		}
	}
}

func TestFleetEndToEnd(t *testing.T) {
	srv, addr := startBroker(t, "127.0.0.1:0")
	defer srv.Close()
	obs := newObserver(t, addr)

	f, err := New(Config{
		Broker:            "tcp://" + addr,
		Vehicles:          3,
		Chargers:          1,
		FleetKey:          "test-fleet-key",
		TelemetryInterval: 10 * time.Millisecond,
		DiagInterval:      40 * time.Millisecond,
		DTCProbability:    0.8,
		ChargeEvery:       30 * time.Millisecond,
		SessionInterval:   20 * time.Millisecond,
		ChargeSpeedup:     50000,
		TimeScale:         20,
		RefuseCommands:    []string{"remote_unlock"},
		Seed:              1,
		Logger:            discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- f.Run(ctx) }()

	vins, station := f.VINs(), f.Stations()[0]
	v0 := vins[0]
	waitFor(t, "vehicles online", func() bool {
		for _, vin := range vins {
			if len(obs.get(eventsTopic(vin))) == 0 {
				return false
			}
		}
		return true
	})

	// Commands: applied, duplicate, refused by policy, unsupported, garbage.
	pub := func(topic string, b []byte) {
		if err := srv.Publish(topic, b, false, 1); err != nil {
			t.Fatal(err)
		}
	}
	pub("vehicles/"+v0+"/cmd/feature", command(t, "c1", "feature", "feature", "heated_seats", "state", "on", "level", "3"))
	waitFor(t, "ack c1", func() bool { return len(acks(t, obs.get(cmdAckTopic(v0)))["c1"]) == 1 })
	pub("vehicles/"+v0+"/cmd/feature", command(t, "c1", "feature", "feature", "heated_seats", "state", "off"))
	pub("vehicles/"+v0+"/cmd/remote_unlock", command(t, "c2", "remote_unlock"))
	pub("vehicles/"+v0+"/cmd/bogus", command(t, "c3", ""))
	pub("vehicles/"+v0+"/cmd/bogus", command(t, "c5", "bogus"))
	pub("vehicles/"+v0+"/cmd/feature", []byte{0xc1, 0x00})
	pub("vehicles/"+vins[1]+"/cmd/climate", command(t, "c4", "climate", "setpoint", "18.5"))
	waitFor(t, "acks", func() bool {
		a0, a1 := acks(t, obs.get(cmdAckTopic(v0))), acks(t, obs.get(cmdAckTopic(vins[1])))
		ok := len(a0["c1"]) == 2 && len(a0["c2"]) == 1 && len(a0["c3"]) == 1 && len(a0["c5"]) == 1 && len(a1["c4"]) == 1
		return ok
	})
	a0 := acks(t, obs.get(cmdAckTopic(v0)))
	for i, a := range a0["c1"] {
		if a.Status != wire.AckApplied || a.VIN.String() != v0 {
			t.Errorf("c1 ack %d: %+v", i, a)
		}
	}
	if a := a0["c2"][0]; a.Status != wire.AckRejected || a.Reason == "" {
		t.Errorf("refused command acked %+v", a)
	}
	if a := a0["c3"][0]; a.Status != wire.AckRejected || !strings.Contains(a.Reason, "invalid") {
		t.Errorf("nameless command acked %+v", a)
	}
	if a := a0["c5"][0]; a.Status != wire.AckRejected || !strings.Contains(a.Reason, "bogus") {
		t.Errorf("unsupported command acked %+v", a)
	}
	if a := acks(t, obs.get(cmdAckTopic(vins[1])))["c4"][0]; a.Status != wire.AckApplied {
		t.Errorf("climate command acked %+v", a)
	}

	// The applied command shows in later telemetry (applied once: the
	// duplicate "off" was not applied, the level stays 3).
	latest := func(vin string, id uint16) (float64, bool) {
		frames := obs.get(telemetryTopic(vin))
		var fr wire.TelemetryFrame
		for i := len(frames) - 1; i >= 0; i-- {
			if err := wire.DecodeTelemetry(frames[i], &fr); err != nil {
				t.Fatal(err)
			}
			for _, s := range fr.Signals {
				if s.ID == id {
					return s.Value, true
				}
			}
		}
		return 0, false
	}
	waitFor(t, "seat heating in telemetry", func() bool {
		v, ok := latest(v0, catalog.HeatedSeatDriverLevel)
		return ok && v == 100
	})
	waitFor(t, "setpoint in telemetry", func() bool {
		v, ok := latest(vins[1], catalog.DriverTempSetpoint)
		return ok && v == 18.5
	})

	// Enough traffic on every topic, including a complete charging session.
	waitFor(t, "traffic", func() bool {
		for _, vin := range vins {
			if len(obs.get(telemetryTopic(vin))) < 20 || len(obs.get(diagTopic(vin))) < 6 {
				return false
			}
		}
		var started, updated, stopped bool
		for _, p := range obs.get(sessionTopic(station)) {
			var s wire.ChargingSession
			if err := wire.DecodeChargingSession(p, &s); err != nil {
				t.Fatal(err)
			}
			started = started || s.Kind == wire.SessionStarted
			updated = updated || s.Kind == wire.SessionUpdated
			stopped = stopped || s.Kind == wire.SessionStopped
		}
		return started && updated && stopped
	})

	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(deadline):
		t.Fatal("Run did not return")
	}
	sum := f.Summary()
	t.Logf("summary: sent %d acked %d errors %d frames %d rate %.0f/s p50 %v p99 %v topics %v",
		sum.Sent, sum.Acked, sum.Errors, sum.Frames, sum.Rate, sum.Latency.P50, sum.Latency.P99, sum.Topics)
	if sum.Sent == 0 || sum.Acked != sum.Sent || sum.Errors != sum.BadCommands || sum.Unacked != 0 {
		t.Errorf("sent %d acked %d errors %d unacked %d", sum.Sent, sum.Acked, sum.Errors, sum.Unacked)
	}
	if sum.CommandsApplied != 2 || sum.CommandsDuplicate != 1 || sum.CommandsRejected != 2 || sum.BadCommands != 2 {
		t.Errorf("commands: applied %d dup %d rejected %d bad %d",
			sum.CommandsApplied, sum.CommandsDuplicate, sum.CommandsRejected, sum.BadCommands)
	}
	if sum.Connected != 0 || sum.Connects != 4 || sum.Latency.Count != sum.Acked {
		t.Errorf("connected %d connects %d latency count %d", sum.Connected, sum.Connects, sum.Latency.Count)
	}

	// Everything acked reached the observer; check topics and payloads.
	waitFor(t, "observer to catch up", func() bool {
		n := 0
		for _, topic := range obs.topics() {
			n += len(obs.get(topic))
		}
		return int64(n) == sum.Acked
	})
	for _, topic := range obs.topics() {
		parts := strings.Split(topic, "/")
		if len(parts) != 3 {
			t.Errorf("unexpected topic %q", topic)
			continue
		}
		id, leaf := parts[1], parts[2]
		switch {
		case parts[0] == "vehicles" && (leaf == "telemetry" || leaf == "diag" || leaf == "events" || leaf == "cmd-ack"):
		case parts[0] == "chargers" && id == station && (leaf == "session" || leaf == "status"):
		default:
			t.Errorf("unexpected topic %q", topic)
		}
	}
	for _, vin := range vins {
		var seqs []uint64
		var fr wire.TelemetryFrame
		for _, p := range obs.get(telemetryTopic(vin)) {
			if err := wire.DecodeTelemetry(p, &fr); err != nil {
				t.Fatalf("telemetry: %v", err)
			}
			if fr.Version != wire.Version || fr.VIN.String() != vin || len(fr.Signals) != NumSignals || fr.TimeMs <= 0 {
				t.Fatalf("frame %+v", fr)
			}
			checkCatalog(t, fr.Signals)
			seqs = append(seqs, fr.Seq)
		}
		checkSeq(t, telemetryTopic(vin), seqs)
		if seqs[0] != 1 || int(seqs[len(seqs)-1]) != len(seqs) {
			t.Errorf("%s: seqs %d..%d for %d frames: frames lost", vin, seqs[0], seqs[len(seqs)-1], len(seqs))
		}

		seqs = seqs[:0]
		var d wire.DiagReport
		dtcs := 0
		for _, p := range obs.get(diagTopic(vin)) {
			if err := wire.DecodeDiag(p, &d); err != nil {
				t.Fatalf("diag: %v", err)
			}
			seqs = append(seqs, d.Seq)
			confirmed := false
			for _, e := range d.DTCs {
				if e.Status < wire.DTCPending || e.Status > wire.DTCPermanent {
					t.Errorf("DTC status %d", e.Status)
				}
				confirmed = confirmed || e.Status != wire.DTCPending
			}
			dtcs += len(d.DTCs)
			if d.MIL != confirmed || d.OdometerKm <= 0 || (d.MIL && len(d.Freeze) == 0) {
				t.Errorf("diag report %+v", d)
			}
		}
		checkSeq(t, diagTopic(vin), seqs)
		if dtcs == 0 {
			t.Errorf("%s: no DTCs reported", vin)
		}

		seqs = seqs[:0]
		evs := events(t, obs.get(eventsTopic(vin)))
		for _, e := range evs {
			seqs = append(seqs, e.Seq)
		}
		checkSeq(t, eventsTopic(vin), seqs)
		if evs[0].Kind != wire.EventOnline || evs[len(evs)-1].Kind != wire.EventOffline {
			t.Errorf("%s: events %+v", vin, evs)
		}
	}

	var seqs []uint64
	var s wire.ChargingSession
	for _, p := range obs.get(sessionTopic(station)) {
		if err := wire.DecodeChargingSession(p, &s); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, s.Seq)
		if s.Station.String() != station || s.SoCPct < 0 || s.SoCPct > 100 || s.EnergyWh < 0 || s.TargetSoCPct < 50 ||
			len(s.IDTag) == 0 || (len(s.VIN) > 0) != strings.HasPrefix(s.IDTag.String(), "PNC-") || len(s.SessionID) == 0 {
			t.Errorf("session %+v", s)
		}
		if len(s.VIN) > 0 && !strings.HasPrefix(s.VIN.String(), "TGSVS") {
			t.Errorf("session VIN %q", s.VIN)
		}
	}
	checkSeq(t, sessionTopic(station), seqs)
	var st wire.ChargerStatus
	statuses := map[uint8]bool{}
	for _, p := range obs.get(statusTopic(station)) {
		if err := wire.DecodeChargerStatus(p, &st); err != nil {
			t.Fatal(err)
		}
		statuses[st.Status] = true
	}
	if !statuses[wire.ConnectorAvailable] || !statuses[wire.ConnectorOccupied] {
		t.Errorf("connector statuses %v", statuses)
	}
}

func TestFleetFrameBudget(t *testing.T) {
	srv, addr := startBroker(t, "127.0.0.1:0")
	defer srv.Close()
	obs := newObserver(t, addr)
	var progress sync.WaitGroup
	progress.Add(1)
	var once sync.Once
	f, err := New(Config{
		Broker:            "tcp://" + addr,
		Vehicles:          4,
		FleetKey:          "k",
		TelemetryInterval: 2 * time.Millisecond,
		SignalsPerFrame:   32,
		InflightPerDevice: 2,
		Frames:            101,
		Logger:            discardLogger(),
		Progress:          func(Summary) { once.Do(progress.Done) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	sum := f.Summary()
	if tel := sum.Topics["telemetry"]; sum.Frames != 101 || tel.Sent != 101 || tel.Acked != 101 {
		t.Errorf("frames %d telemetry %+v", sum.Frames, tel)
	}
	waitFor(t, "observer to receive every frame", func() bool {
		n := 0
		for _, vin := range f.VINs() {
			n += len(obs.get(telemetryTopic(vin)))
		}
		return n == 101
	})
	var fr wire.TelemetryFrame
	for _, vin := range f.VINs() {
		for _, p := range obs.get(telemetryTopic(vin)) {
			if err := wire.DecodeTelemetry(p, &fr); err != nil || len(fr.Signals) != 32 {
				t.Fatalf("frame: %v, %d signals", err, len(fr.Signals))
			}
		}
	}
	if err := f.Run(context.Background()); !errors.Is(err, ErrAlreadyRun) {
		t.Errorf("second Run: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Error(err)
	}
	if err := f.Close(); err != nil {
		t.Error(err)
	}
}

func TestFleetCloseAndUnreachableBroker(t *testing.T) {
	// Nothing listens on this port (a broker was started and closed).
	srv, addr := startBroker(t, "127.0.0.1:0")
	srv.Close()
	f, err := New(Config{Broker: "tcp://" + addr, Vehicles: 2, Chargers: 1, FleetKey: "k",
		Logger: discardLogger(), ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background()) }()
	waitFor(t, "connect errors", func() bool { return f.Summary().ConnectErrors >= 3 })
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Error(err)
	}
	if err := f.Run(context.Background()); !errors.Is(err, ErrClosed) && !errors.Is(err, ErrAlreadyRun) {
		t.Errorf("Run after Close: %v", err)
	}
	f2, _ := New(Config{Vehicles: 1, FleetKey: "k"})
	f2.Close()
	if err := f2.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v", err)
	}
	if s := f.Summary(); s.Sent != 0 || s.Connected != 0 {
		t.Errorf("summary %+v", s)
	}
}

// TestFleetReconnect restarts the broker under a running fleet: devices
// reconnect and the frames published meanwhile are delivered.
func TestFleetReconnect(t *testing.T) {
	srv, addr := startBroker(t, "127.0.0.1:0")
	f, err := New(Config{
		Broker: "tcp://" + addr, Vehicles: 2, Chargers: 1, FleetKey: "k",
		TelemetryInterval: 10 * time.Millisecond, MaxReconnect: 500 * time.Millisecond,
		Logger: discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	waitFor(t, "connected", func() bool { return f.Summary().Connected == 3 && f.Summary().Acked > 10 })
	srv.Close()
	waitFor(t, "connection losses", func() bool { return f.Summary().ConnectionLosses == 3 })
	srv2, _ := startBroker(t, addr)
	defer srv2.Close()
	waitFor(t, "reconnected", func() bool {
		s := f.Summary()
		return s.Reconnects == 3 && s.Connected == 3
	})
	before := f.Summary().Topics["telemetry"].Acked
	waitFor(t, "publishing again", func() bool { return f.Summary().Topics["telemetry"].Acked > before+10 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	s := f.Summary()
	if s.Acked+s.PublishErrors != s.Sent || s.ConnectionLosses != 3 {
		t.Errorf("sent %d acked %d publish errors %d losses %d", s.Sent, s.Acked, s.PublishErrors, s.ConnectionLosses)
	}
	fmt.Fprintf(testWriter{t}, "reconnect: sent %d acked %d errors %d\n", s.Sent, s.Acked, s.Errors)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestBrokerOrder: devices start evenly on every replica, and the devices
// of one replica fall back evenly on the others.
func TestBrokerOrder(t *testing.T) {
	bs := []string{"tcp://a", "tcp://b", "tcp://c"}
	first := map[string]int{}
	second := map[string]map[string]int{}
	for i := range 60 {
		o := BrokerOrder(bs, i)
		if len(o) != 3 || o[0] == o[1] || o[1] == o[2] || o[0] == o[2] {
			t.Fatalf("device %d: order %v is not a permutation", i, o)
		}
		first[o[0]]++
		if second[o[0]] == nil {
			second[o[0]] = map[string]int{}
		}
		second[o[0]][o[1]]++
	}
	for _, b := range bs {
		if first[b] != 20 || len(second[b]) != 2 {
			t.Errorf("%s: first for %d devices, fallbacks %v", b, first[b], second[b])
		}
		for fb, n := range second[b] {
			if n != 10 {
				t.Errorf("%s -> %s: %d devices, want 10", b, fb, n)
			}
		}
	}
	if got := BrokerOrder([]string{"tcp://a"}, 7); len(got) != 1 || got[0] != "tcp://a" {
		t.Errorf("single broker: %v", got)
	}
}

func TestBrokerListConfig(t *testing.T) {
	for _, tc := range []struct {
		broker  string
		brokers []string
		want    string
	}{
		{"", nil, DefaultBroker},
		{"tcp://x:1", nil, "tcp://x:1"},
		{"", []string{"tcp://a:1", " tcp://b:1", "tcp://a:1", ""}, "tcp://a:1,tcp://b:1"},
		{"tcp://b:1", []string{"tcp://a:1", "tcp://b:1"}, "tcp://b:1,tcp://a:1"},
	} {
		c, err := Config{Broker: tc.broker, Brokers: tc.brokers, Vehicles: 1, FleetKey: "k"}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(c.Brokers, ","); got != tc.want || c.Broker != c.Brokers[0] {
			t.Errorf("%q %q: brokers %q broker %q, want %q", tc.broker, tc.brokers, got, c.Broker, tc.want)
		}
	}
	_, err := Config{Brokers: []string{"localhost:1883"}, Vehicles: 1, FleetKey: "k"}.withDefaults()
	if !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("broker without scheme: %v, want ErrInvalidConfig", err)
	}
}

// TestFleetFailover runs a fleet over three brokers: the devices spread
// evenly; when one broker goes away its devices move to the two others,
// half each, and keep publishing; no publish is left unacknowledged.
func TestFleetFailover(t *testing.T) {
	var srvs []*mochi.Server
	var urls []string
	for range 3 {
		srv, addr := startBroker(t, "127.0.0.1:0")
		srvs = append(srvs, srv)
		urls = append(urls, "tcp://"+addr)
	}
	defer func() { srvs[1].Close(); srvs[2].Close() }() // srvs[0] is closed below
	clients := func(i int) int64 { return atomic.LoadInt64(&srvs[i].Info.ClientsConnected) }
	f, err := New(Config{
		Brokers: urls, Vehicles: 12, FleetKey: "k",
		TelemetryInterval: 20 * time.Millisecond, MaxReconnect: 500 * time.Millisecond,
		ReconnectJitter: 100 * time.Millisecond, Logger: discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	waitFor(t, "spread over three brokers", func() bool {
		return f.Summary().Connected == 12 && clients(0) == 4 && clients(1) == 4 && clients(2) == 4
	})
	waitFor(t, "publishing", func() bool { return f.Summary().Acked > 50 })
	srvs[0].Close()
	waitFor(t, "moved to the survivors", func() bool {
		s := f.Summary()
		return s.ConnectionLosses == 4 && s.Reconnects == 4 && s.Connected == 12 && clients(1) == 6 && clients(2) == 6
	})
	before := f.Summary().Topics["telemetry"].Acked
	waitFor(t, "publishing again", func() bool { return f.Summary().Topics["telemetry"].Acked > before+50 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	s := f.Summary()
	if s.Acked+s.PublishErrors != s.Sent || s.Unacked != 0 {
		t.Errorf("sent %d acked %d publish errors %d unacked %d", s.Sent, s.Acked, s.PublishErrors, s.Unacked)
	}
	var frames uint64
	for _, n := range f.TelemetrySent() {
		frames += n
	}
	if int64(frames) != s.Topics["telemetry"].Sent {
		t.Errorf("per-vehicle telemetry frames %d, summary sent %d", frames, s.Topics["telemetry"].Sent)
	}
}
