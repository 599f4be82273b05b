package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/internal/testenv"
)

// metric reads one unlabelled sample from the gateway's /metrics.
func metric(t *testing.T, g *testenv.Gateway, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + g.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// TestInfluxOutage stops the real InfluxDB under load: publishes keep being
// acknowledged (the spool grows), and when InfluxDB is back every acked frame
// is stored, exactly.
func TestInfluxOutage(t *testing.T) {
	in := testenv.StartInflux(t)
	gw := testenv.StartGateway(t, in, 10)
	outage := time.Duration(pick(4, 120)) * time.Second
	l := startLoad(t, gw.MQTTURL, 10, pick(400, 4000), 5*time.Millisecond)

	for l.acked.Load() < int64(l.total()/5) {
		time.Sleep(20 * time.Millisecond)
	}
	in.Stop()
	stopped := time.Now()
	ackedAtStop := l.acked.Load()
	time.Sleep(outage)
	ackedDuring := l.acked.Load() - ackedAtStop
	pending := metric(t, gw, "telegate_spool_pending_bytes")
	t.Logf("InfluxDB down for %s: %d frames acknowledged meanwhile, spool pending %.0f bytes", time.Since(stopped).Round(time.Millisecond), ackedDuring, pending)
	if ackedDuring == 0 {
		t.Fatal("no frame acknowledged during the outage: the spool should have taken them")
	}
	if pending == 0 {
		t.Fatal("spool did not grow during the outage")
	}
	in.Start(t)
	l.wait(t, 5*time.Minute)
	l.waitStored(t, in, 5*time.Minute)
	t.Logf("outage %s, %d frames acked, %d stored, 0 lost, %d resends", outage, l.acked.Load(), l.total(), l.resends.Load())
}

// TestGatewayKill9 kills the gateway process with SIGKILL repeatedly under
// load. Devices reconnect and resend; every acknowledged frame must be in
// InfluxDB afterwards, duplicates being harmless (same series + timestamp).
func TestGatewayKill9(t *testing.T) {
	in := testenv.StartInflux(t)
	gw := testenv.StartGateway(t, in, 10)
	cycles := pick(3, 20)
	l := startLoad(t, gw.MQTTURL, 10, pick(300, 3000), 3*time.Millisecond)
	for i := 0; i < cycles; i++ {
		target := int64(l.total() * (i + 1) / (cycles + 1))
		for l.acked.Load() < target {
			time.Sleep(10 * time.Millisecond)
		}
		gw.Kill()
		gw.Start()
	}
	l.wait(t, 10*time.Minute)
	l.waitStored(t, in, 5*time.Minute)
	t.Logf("%d kill -9 cycles, %d frames acked, all %d stored, 0 lost, %d resends", cycles, l.acked.Load(), l.total(), l.resends.Load())
}

// TestNATSRestart stops the (external) NATS server while diagnostics keep
// arriving: the events are published once NATS is back, none lost, none
// duplicated in the stream (Nats-Msg-Id dedup).
func TestNATSRestart(t *testing.T) {
	in := testenv.StartInflux(t)
	natsAddr := testenv.FreeAddr(t)
	store := filepath.Join(t.TempDir(), "nats")
	srv, err := natsbus.StartEmbedded(natsAddr, store, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	gw := testenv.StartGateway(t, in, 1, testenv.GatewayOptions{NATSURL: "nats://" + natsAddr})

	vin := sim.VIN(sim.DefaultVINPrefix, 1)
	o := paho.NewClientOptions().AddBroker(gw.MQTTURL).SetClientID(vin).SetUsername(vin).
		SetPassword(sim.Secret(testenv.FleetKey, vin)).SetCleanSession(false).SetAutoReconnect(true)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	reports := pick(20, 200)
	base := time.Now().Add(-time.Hour)
	send := func(seq int) {
		d := wire.DiagReport{Version: wire.Version, VIN: wire.Ident(vin), Seq: uint64(seq), TimeMs: base.Add(time.Duration(seq) * time.Second).UnixMilli()}
		if seq%2 == 1 { // odd reports raise P0301, even ones clear it
			d.DTCs = []wire.DTCEntry{{Code: 0x0301, Status: wire.DTCConfirmed}}
			d.MIL = true
		}
		b, _ := d.MarshalMsg(nil)
		if tok := c.Publish("vehicles/"+vin+"/diag", 1, false, b); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("report %d: %v", seq, tok.Error())
		}
	}
	for seq := 1; seq <= reports/2; seq++ {
		send(seq)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	for seq := reports/2 + 1; seq <= reports; seq++ {
		send(seq) // acknowledged: durable in the spool while NATS is down
	}
	time.Sleep(time.Second) // the event sink retries against a dead server
	srv, err = natsbus.StartEmbedded(natsAddr, store, 1<<30)
	if err != nil {
		t.Fatal(err)
	}

	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Wait for the stream to hold every event, then read them all.
	var st *jetstream.StreamInfo
	for {
		s, err := js.Stream(ctx, "DTC")
		if err == nil {
			if st, err = s.Info(ctx); err == nil && st.State.Msgs >= uint64(reports) {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("DTC stream incomplete: %+v %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // a duplicate, if any, would land now
	if st, _ = mustStream(t, ctx, js).Info(ctx); st.State.Msgs != uint64(reports) {
		t.Fatalf("DTC stream has %d messages, want exactly %d", st.State.Msgs, reports)
	}
	cons, err := js.OrderedConsumer(ctx, "DTC", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for i := 0; i < reports; i++ {
		m, err := cons.Next(jetstream.FetchMaxWait(30 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		}
		_ = json.Unmarshal(m.Data(), &env)
		want := "dtc.raised"
		if i%2 == 1 {
			want = "dtc.cleared"
		}
		if env.Type != want || ids[env.ID] {
			t.Fatalf("event %d: %s %s (want %s, no duplicates)", i, env.Type, env.ID, want)
		}
		ids[env.ID] = true
	}
	t.Logf("NATS restarted with %d of %d reports pending: %d events, none lost, none duplicated", reports/2, reports, len(ids))
}

func mustStream(t *testing.T, ctx context.Context, js jetstream.JetStream) jetstream.Stream {
	s, err := js.Stream(ctx, "DTC")
	if err != nil {
		t.Fatal(err)
	}
	return s
}
