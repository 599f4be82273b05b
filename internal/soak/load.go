package soak

import (
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/firmware-sim/sim"
)

// publishers are vehicles publishing QoS 1 telemetry frames with sequence
// numbers 1, 2, 3, ..., each resent until acknowledged (through reconnects,
// on a persistent session), so that exactly frames 1..acked[v] of vehicle
// v were acknowledged: the stored points must be exactly those.
type publishers struct {
	vins    []string
	base    time.Time
	acked   []atomic.Int64 // highest acknowledged seq per vehicle
	sent    atomic.Int64   // publish attempts, resends included
	stop    chan struct{}
	wg      sync.WaitGroup
	clients []paho.Client
}

func startPublishers(url, fleetKey string, vins []string, interval time.Duration) *publishers {
	p := &publishers{vins: vins, base: time.Now().Add(-time.Hour).Truncate(time.Second),
		acked: make([]atomic.Int64, len(vins)), stop: make(chan struct{})}
	for i, vin := range vins {
		o := paho.NewClientOptions().AddBroker(url).SetClientID(vin).SetUsername(vin).
			SetPassword(sim.Secret(fleetKey, vin)).SetCleanSession(false).
			SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
			SetMaxReconnectInterval(time.Second).SetKeepAlive(30 * time.Second).SetOrderMatters(false)
		c := paho.NewClient(o)
		c.Connect()
		p.clients = append(p.clients, c)
		p.wg.Add(1)
		go p.run(c, i, interval)
	}
	return p
}

func (p *publishers) frame(vin string, seq int64) []byte {
	f := wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident(vin), Seq: uint64(seq),
		TimeMs:  p.base.Add(time.Duration(seq) * 10 * time.Millisecond).UnixMilli(),
		Signals: []wire.Signal{{ID: catalog.Speed, Value: float64(seq % 150)}, {ID: catalog.TractionSoC, Value: 55}}}
	b, _ := f.MarshalMsg(nil)
	return b
}

// run publishes until stop; the frame in progress at stop is finished
// (resent until acknowledged) so the acknowledged set stays 1..n.
func (p *publishers) run(c paho.Client, i int, interval time.Duration) {
	defer p.wg.Done()
	vin := p.vins[i]
	topic := "vehicles/" + vin + "/telemetry"
	for seq := int64(1); ; seq++ {
		select {
		case <-p.stop:
			return
		default:
		}
		payload := p.frame(vin, seq)
		for {
			p.sent.Add(1)
			tok := c.Publish(topic, 1, false, payload)
			if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		p.acked[i].Store(seq)
		if interval > 0 {
			select {
			case <-p.stop:
				return
			case <-time.After(interval):
			}
		}
	}
}

// finish stops publishing, waits for the frames in progress, and
// disconnects.
func (p *publishers) finish() {
	close(p.stop)
	p.wg.Wait()
	for _, c := range p.clients {
		c.Disconnect(250)
	}
}

func (p *publishers) totalAcked() int64 {
	var n int64
	for i := range p.acked {
		n += p.acked[i].Load()
	}
	return n
}
