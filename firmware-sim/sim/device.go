package sim

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// errStopped means the fleet is stopping; the device gives up.
var errStopped = errors.New("sim: stopped")

// pendingPub is a publish waiting for its PUBACK.
type pendingPub struct {
	tok   mqtt.Token
	start time.Time
	kind  topicKind
}

// device is the MQTT side shared by vehicles and chargers: connection with
// rate-limited retries, auto-reconnect, and publishing with a bounded number
// of unacknowledged messages.
type device struct {
	f      *Fleet
	id     string
	log    *slog.Logger
	rng    *rand.Rand
	client mqtt.Client
	store  resumeSafeStore

	sem     chan struct{}   // one token per unacked publish
	pending chan pendingPub // publishes in flight, in order, to the collector
	acked   chan struct{}   // closed when the collector has finished

	up       atomic.Bool   // connected (for the gauge)
	connects atomic.Int64  // successful connections of this device
	online   chan struct{} // signalled after each (re)connect, once subscribed

	// onConnect runs in paho's OnConnect goroutine before online is
	// signalled (vehicles subscribe to their command topic there).
	onConnect func(mqtt.Client)
}

// newDevice makes the MQTT side of device number index of its kind; index
// picks its order of brokers (BrokerOrder).
func newDevice(f *Fleet, id, kind string, index int, seed int64) *device {
	d := &device{
		f:       f,
		id:      id,
		log:     f.log.With("device", id, "kind", kind),
		rng:     rand.New(rand.NewPCG(uint64(seed), uint64(len(id))<<32|0x5eed)),
		sem:     make(chan struct{}, f.cfg.InflightPerDevice),
		pending: make(chan pendingPub, f.cfg.InflightPerDevice),
		acked:   make(chan struct{}),
		online:  make(chan struct{}, 1),
	}
	cfg := &f.cfg
	opts := mqtt.NewClientOptions()
	// paho tries the brokers in this order on every (re)connection attempt
	// and keeps the first that accepts.
	for _, b := range BrokerOrder(cfg.Brokers, index) {
		opts.AddBroker(b)
	}
	opts.SetClientID(id).
		SetUsername(id).
		SetPassword(Secret(cfg.FleetKey, id)).
		SetProtocolVersion(4). // MQTT 3.1.1
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(false). // the device's own loop retries, rate limited
		SetMaxReconnectInterval(cfg.MaxReconnect).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetKeepAlive(30 * time.Second).
		SetWriteTimeout(cfg.ConnectTimeout).
		SetOrderMatters(false). // handlers must not block the ack path
		SetResumeSubs(true).
		// No SetMaxResumePubInFlight: the device's own inflight limit already
		// bounds what is stored, and paho v1.5.1's resume limiter races with
		// reconnect (it reads c.stop unsynchronised).
		SetOnConnectHandler(d.handleConnect).
		SetConnectionLostHandler(d.handleLost).
		SetReconnectingHandler(d.handleReconnecting)
	d.store = resumeSafeStore{mqtt.NewMemoryStore()}
	opts.SetStore(d.store)
	if cfg.TLS != nil {
		opts.SetTLSConfig(cfg.TLS)
	}
	d.client = mqtt.NewClient(opts)
	return d
}

func (d *device) handleConnect(c mqtt.Client) {
	st := &d.f.stats
	st.connects.Add(1)
	if d.connects.Add(1) > 1 {
		st.reconnects.Add(1)
		d.log.Info("reconnected")
	} else {
		d.log.Debug("connected")
	}
	if d.up.CompareAndSwap(false, true) {
		st.connected.Add(1)
	}
	if d.onConnect != nil {
		d.onConnect(c)
	}
	select {
	case d.online <- struct{}{}:
	default:
	}
}

// handleReconnecting runs in paho's reconnect goroutine before each
// reconnection attempt: a random delay up to Config.ReconnectJitter, so
// that the devices of a failed replica reach the survivors spread out
// rather than all at once (paho's own backoff, 1 s doubling up to
// MaxReconnect between failed attempts, has no jitter).
func (d *device) handleReconnecting(mqtt.Client, *mqtt.ClientOptions) {
	d.log.Debug("reconnecting")
	if j := d.f.cfg.ReconnectJitter; j > 0 {
		// The package-level generator: d.rng belongs to the device's loop.
		sleep(time.Duration(rand.Int64N(int64(j))), d.f.stop)
	}
}

func (d *device) handleLost(_ mqtt.Client, err error) {
	if d.up.CompareAndSwap(true, false) {
		d.f.stats.connected.Add(-1)
	}
	d.f.stats.connLosses.Add(1)
	d.log.Warn("connection lost", "err", err)
}

// connect makes the first connection, retrying with exponential backoff
// (and the fleet's connection rate limit) until it succeeds or the fleet
// stops. Later reconnections are paho's auto-reconnect.
func (d *device) connect() error {
	backoff := 250 * time.Millisecond
	for {
		if !d.f.limiter.wait(d.f.stop) {
			return errStopped
		}
		tok := d.client.Connect()
		<-tok.Done() // bounded by ConnectTimeout
		err := tok.Error()
		if err == nil {
			if stopped(d.f.stop) {
				d.disconnect()
				return errStopped
			}
			return nil
		}
		d.f.stats.connectErrors.Add(1)
		d.log.Warn("connect failed", "err", err, "retry_in", backoff)
		jitter := time.Duration(d.rng.Int64N(int64(backoff)/2 + 1))
		if !sleep(backoff/2+jitter, d.f.stop) {
			return errStopped
		}
		backoff = min(backoff*2, d.f.cfg.MaxReconnect)
	}
}

// acquire waits for an inflight slot. It returns false when the fleet has
// given up waiting (drain timeout).
func (d *device) acquire() bool {
	select {
	case d.sem <- struct{}{}:
		return true
	case <-d.f.abort:
		return false
	}
}

// publish sends payload on topic. The caller must hold a slot from
// acquire; the collector releases it. payload must not be modified
// afterwards: the client keeps it for retransmission after a reconnect
// (even past the PUBACK of an earlier copy), so it is never reused.
func (d *device) publish(topic string, kind topicKind, payload []byte) {
	start := time.Now()
	tok := d.client.Publish(topic, d.f.cfg.qos(), false, payload)
	d.f.stats.sent[kind].Add(1)
	d.pending <- pendingPub{tok: tok, start: start, kind: kind}
}

// marshaler is implemented by the wire payload types.
type marshaler interface {
	MarshalMsg([]byte) ([]byte, error)
}

// send encodes m into a fresh buffer and publishes it on topic. The caller
// must hold a slot from acquire. It reports whether the device may go on
// (an encoding error is logged and skipped).
func (d *device) send(kind topicKind, topic string, m marshaler) bool {
	b, err := m.MarshalMsg(make([]byte, 0, 512))
	if err != nil {
		d.log.Error("encode", "topic", topicNames[kind], "err", err)
		<-d.sem
		return true
	}
	d.publish(topic, kind, b)
	return true
}

// collect waits for the tokens of in-flight publishes in order, records the
// outcome and latency and frees their slots. It returns when pending is
// closed and drained.
func (d *device) collect() {
	defer close(d.acked)
	st := &d.f.stats
	for p := range d.pending {
		select {
		case <-p.tok.Done():
			if err := p.tok.Error(); err != nil {
				st.failed[p.kind].Add(1)
				d.log.Warn("publish failed", "topic", topicNames[p.kind], "err", err)
			} else {
				st.acked[p.kind].Add(1)
				st.latency.record(time.Since(p.start))
			}
		case <-d.f.abort:
			st.unacked.Add(1)
		}
		<-d.sem
	}
}

// finish waits for the outstanding acks (bounded by the fleet's drain
// timeout) and disconnects.
//
// After a reconnect paho re-sends the publishes still in its store and
// completes their original tokens right away, before the new PUBACK: the
// store, not the token, says whether the broker has them. So finish also
// waits for the store to empty and counts what is left there as unacked.
func (d *device) finish(connected bool) {
	close(d.pending)
	<-d.acked
	if !connected {
		return
	}
	if n := d.store.pendingPublishes(); n > 0 {
		t := time.NewTicker(5 * time.Millisecond)
	wait:
		for n > 0 {
			select {
			case <-t.C:
				n = d.store.pendingPublishes()
			case <-d.f.abort:
				d.f.stats.unacked.Add(int64(n))
				d.log.Warn("disconnecting with unacknowledged publishes", "count", n)
				break wait
			}
		}
		t.Stop()
	}
	d.disconnect()
}

func (d *device) disconnect() {
	d.client.Disconnect(250)
	if d.up.CompareAndSwap(true, false) {
		d.f.stats.connected.Add(-1)
	}
}

// stopped reports whether ch is closed.
func stopped(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// sleep waits for d or until stop is closed; it reports whether the full
// duration elapsed.
func sleep(d time.Duration, stop <-chan struct{}) bool {
	if d <= 0 {
		return !stopped(stop)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}

// limiter spaces out events to at most one per interval, without bursts.
type limiter struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

func newLimiter(perSecond int) *limiter {
	return &limiter{interval: time.Second / time.Duration(max(perSecond, 1))}
}

// wait blocks until the caller's slot; false if stop was closed first.
func (l *limiter) wait(stop <-chan struct{}) bool {
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	at := l.next
	l.next = l.next.Add(l.interval)
	l.mu.Unlock()
	return sleep(time.Until(at), stop)
}

// resumeSafeStore is paho's memory store holding private copies of
// PUBLISH packets. After a reconnect paho's resume() sets the DUP flag on
// the packet it gets from the store and re-sends it, while a publish made
// right after the reconnect (stored and sent at once) may be being written
// by the network goroutine, which also updates its header: with one shared
// object that is a data race (eclipse-paho/paho.mqtt.golang issue #703,
// present in v1.5.1). With copies taken at Put (before the packet is
// handed to the network) and at Get, nothing is shared; the re-send is a
// duplicate, which QoS 1 allows.
type resumeSafeStore struct{ *mqtt.MemoryStore }

func copyPublish(p packets.ControlPacket) packets.ControlPacket {
	if pub, ok := p.(*packets.PublishPacket); ok {
		cp := *pub
		return &cp
	}
	return p
}

// Put implements mqtt.Store.
func (s resumeSafeStore) Put(key string, p packets.ControlPacket) {
	s.MemoryStore.Put(key, copyPublish(p))
}

// Get implements mqtt.Store.
func (s resumeSafeStore) Get(key string) packets.ControlPacket {
	return copyPublish(s.MemoryStore.Get(key))
}

// pendingPublishes returns the number of outbound PUBLISH packets in the
// store, i.e. not yet acknowledged by the broker.
func (s resumeSafeStore) pendingPublishes() int {
	n := 0
	for _, k := range s.All() {
		if strings.HasPrefix(k, "o.") {
			if _, ok := s.MemoryStore.Get(k).(*packets.PublishPacket); ok {
				n++
			}
		}
	}
	return n
}
