package benchcompare

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/influx"
)

// TestFramesCarryTheSameSignals: the MessagePack frame the gateway gets,
// the JSON frame Telegraf gets and the line the direct writer posts carry
// the same 32 valid signals with the same values.
func TestFramesCarryTheSameSignals(t *testing.T) {
	const vin, seq, ts = "TGSVS000000000007", 4242, 1_700_000_000_123
	var f wire.TelemetryFrame
	if err := wire.DecodeTelemetry(newFrameEncoder(vin, false).frame(seq, ts), &f); err != nil {
		t.Fatalf("msgpack frame does not decode: %v", err)
	}
	if string(f.VIN) != vin || f.Seq != seq || f.TimeMs != ts || len(f.Signals) != Signals {
		t.Fatalf("decoded frame: vin %s seq %d ts %d, %d signals", f.VIN, f.Seq, f.TimeMs, len(f.Signals))
	}
	var j map[string]any
	if err := json.Unmarshal(newFrameEncoder(vin, true).frame(seq, ts), &j); err != nil {
		t.Fatalf("JSON frame: %v", err)
	}
	if j["vin"] != vin || j["seq"] != float64(seq) || j["ts"] != float64(ts) || len(j) != Signals+3 {
		t.Fatalf("JSON frame header: %v (%d keys)", j, len(j))
	}
	line := string(appendLine(nil, vin, seq, ts, f.Signals))
	for _, sg := range f.Signals {
		s, ok := catalog.Lookup(sg.ID)
		if !ok || !s.Valid(sg.Value) {
			t.Errorf("signal %d value %v is not valid", sg.ID, sg.Value)
			continue
		}
		if j[s.Path] != sg.Value {
			t.Errorf("%s: JSON %v, msgpack %v", s.Path, j[s.Path], sg.Value)
		}
		if !strings.Contains(line, string(s.AppendField(nil, sg.Value))) {
			t.Errorf("%s missing from line %q", s.Path, line)
		}
	}
	if !strings.HasSuffix(line, " 1700000000123004242\n") {
		t.Errorf("line timestamp: %q", line)
	}
}

// TestConfigs: the alternative is configured as the comparison requires.
func TestConfigs(t *testing.T) {
	m := mosquittoConf("/d", "127.0.0.1:1884", "")
	for _, want := range []string{"listener 1884 127.0.0.1", "allow_anonymous false", "password_file /d/passwd",
		"acl_file /d/acl", "persistence true"} {
		if !strings.Contains(m, want) {
			t.Errorf("mosquitto.conf lacks %q", want)
		}
	}
	tg := telegrafConf("127.0.0.1:1884", "pw", "http://127.0.0.1:8086", influx.User{Name: "w", Password: "p"}, 5000, 10000)
	for _, want := range []string{"qos = 1", "persistent_session = true", `client_id = "telegraf-bench"`,
		"max_undelivered_messages = 10000", `data_format = "json"`, `database = "bench_telegraf"`, "metric_batch_size = 5000"} {
		if !strings.Contains(tg, want) {
			t.Errorf("telegraf.conf lacks %q", want)
		}
	}
}

// TestSmallRun runs every pipeline with a tiny load when the external
// binaries are installed (`make bench-compare` installs them into bin/) and
// TELEGATE_BENCH_COMPARE is set; otherwise it skips. It checks counting and
// the table, not speed.
func TestSmallRun(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	if os.Getenv("TELEGATE_BENCH_COMPARE") == "" {
		t.Skip("set TELEGATE_BENCH_COMPARE=1 (needs bin/mosquitto, bin/telegraf, bin/gateway)")
	}
	root, _ := filepath.Abs("../..")
	bin := func(n string) string { return filepath.Join(root, "bin", n) }
	o := Options{Influxd: bin("influxd"), Mosquitto: bin("mosquitto"), MosquittoPasswd: bin("mosquitto_passwd"),
		Telegraf: bin("telegraf"), Gateway: bin("gateway"), Clients: 3, Frames: 200, Inflight: 8, Batch: 100,
		TelegrafUndelivered: 200, Dir: t.TempDir()}
	if m := o.Missing(); len(m) > 0 {
		t.Skipf("not installed: %v", m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rs, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteTable(&out, rs, o); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	for _, r := range rs {
		if r.Err != nil || r.Sent != 600 || r.Stored != 600 {
			t.Errorf("%s: sent %d stored %d err %v", r.Pipeline, r.Sent, r.Stored, r.Err)
		}
	}
}

// TestFloorAcksEveryFrame: the floor servers answer CONNECT and every QoS 1
// PUBLISH of a paced load over a real socket.
func TestFloorAcksEveryFrame(t *testing.T) {
	t.Run("goroutines", func(t *testing.T) { testFloor(t, ServeFloor) })
	t.Run("epoll", func(t *testing.T) {
		testFloor(t, func(l net.Listener) error { return ServeFloorEpoll(l.(*net.TCPListener)) })
	})
}

func testFloor(t *testing.T, serve func(net.Listener) error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve(l) }()
	devs := devices(3)[:3]
	res := runLoad(l.Addr().String(), devs, 5, 4, 200, false, 1_700_000_000_000, func() {})
	if res.Err != nil || res.Sent != 15 || res.Acked != 15 {
		t.Fatalf("paced load on the floor: sent %d acked %d err %v", res.Sent, res.Acked, res.Err)
	}
	l.Close()
	if err := <-done; err == nil {
		t.Fatal("ServeFloor returned nil after its listener closed")
	}
}
