package faults

import (
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/gateway/influx/query"
	"github.com/telegate/telegate/internal/testenv"
)

func long() bool { return os.Getenv("TELEGATE_LONG") != "" }

func pick(short, longV int) int {
	if long() {
		return longV
	}
	return short
}

// load is a set of vehicles publishing QoS 1 telemetry frames 1..perVIN each,
// resending a frame until it is acknowledged, through reconnects (persistent
// sessions), like real devices.
type load struct {
	vins    []string
	perVIN  int
	base    time.Time
	acked   atomic.Int64
	resends atomic.Int64
	wg      sync.WaitGroup
	clients []paho.Client
}

func startLoad(t *testing.T, url string, vehicles, perVIN int, interval time.Duration) *load {
	t.Helper()
	return startLoadURLs(t, []string{url}, vehicles, perVIN, interval)
}

// startLoadURLs is startLoad with several gateway replicas: a device
// connects to the first that answers, in order, and fails over on loss.
func startLoadURLs(t *testing.T, urls []string, vehicles, perVIN int, interval time.Duration) *load {
	t.Helper()
	l := &load{perVIN: perVIN, base: time.Now().Add(-time.Hour).Truncate(time.Second)}
	for i := 1; i <= vehicles; i++ {
		vin := sim.VIN(sim.DefaultVINPrefix, i)
		l.vins = append(l.vins, vin)
		o := paho.NewClientOptions()
		for _, url := range urls {
			o.AddBroker(url)
		}
		o.SetClientID(vin).SetUsername(vin).
			SetPassword(sim.Secret(testenv.FleetKey, vin)).SetCleanSession(false).
			SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
			SetMaxReconnectInterval(500 * time.Millisecond).SetKeepAlive(30 * time.Second).SetOrderMatters(false)
		c := paho.NewClient(o)
		c.Connect().WaitTimeout(30 * time.Second)
		l.clients = append(l.clients, c)
		l.wg.Add(1)
		go l.run(c, vin, interval)
	}
	t.Cleanup(func() {
		for _, c := range l.clients {
			c.Disconnect(100)
		}
	})
	return l
}

func (l *load) frame(vin string, seq int) []byte {
	f := wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident(vin), Seq: uint64(seq),
		TimeMs:  l.base.Add(time.Duration(seq) * 10 * time.Millisecond).UnixMilli(),
		Signals: []wire.Signal{{ID: catalog.Speed, Value: float64(seq % 150)}, {ID: catalog.TractionSoC, Value: 55}}}
	b, _ := f.MarshalMsg(nil)
	return b
}

func (l *load) run(c paho.Client, vin string, interval time.Duration) {
	defer l.wg.Done()
	topic := "vehicles/" + vin + "/telemetry"
	for seq := 1; seq <= l.perVIN; seq++ {
		payload := l.frame(vin, seq)
		for attempt := 0; ; attempt++ {
			if attempt > 0 {
				l.resends.Add(1)
				time.Sleep(100 * time.Millisecond)
			}
			tok := c.Publish(topic, 1, false, payload)
			if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
				break
			}
		}
		l.acked.Add(1)
		if interval > 0 {
			time.Sleep(interval)
		}
	}
}

func (l *load) wait(t *testing.T, max time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(max):
		t.Fatalf("publishers did not finish: %d of %d acked", l.acked.Load(), l.total())
	}
}

func (l *load) total() int { return len(l.vins) * l.perVIN }

// waitStored waits until exactly every frame is queryable, then checks each
// vehicle's count and sum of sequence numbers (so a missing frame cannot be
// hidden by an extra one).
func (l *load) waitStored(t *testing.T, in *testenv.Influx, max time.Duration) {
	t.Helper()
	since := l.base.Add(-time.Minute)
	deadline := time.Now().Add(max)
	n := 0
	for time.Now().Before(deadline) {
		if n = in.Count(t, "telemetry", "seq", since); n >= l.total() {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n != l.total() {
		t.Fatalf("stored %d frames, want exactly %d (acked %d)", n, l.total(), l.acked.Load())
	}
	q := `SELECT sum("seq") FROM "telemetry" WHERE time >= ` + query.Time(since.Truncate(time.Second)) + ` GROUP BY "vin"`
	want := int64(l.perVIN * (l.perVIN + 1) / 2)
	rows := in.Query(t, q)
	if len(rows) != len(l.vins) {
		t.Fatalf("%d vehicles stored, want %d", len(rows), len(l.vins))
	}
	for _, r := range rows {
		if r["_value"].(int64) != want {
			t.Fatalf("vehicle %v: sum of seq %v, want %d (a frame is missing)", r["vin"], r["_value"], want)
		}
	}
}
