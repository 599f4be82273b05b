// Package ocpptest runs the real OCPP central system (gateway/ocpp with its
// wsmux listener, device registry, record validation and a real fsynced
// spool) on a loopback port for tests and benchmarks outside the gateway
// process: the firmware simulator's OCPP stations, the security profile
// tests and the session-start latency benchmark.
package ocpptest

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/telegate/telegate/broker/registry"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/cluster/presence"
	"github.com/telegate/telegate/gateway/ingest"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/ocpp"
	"github.com/telegate/telegate/gateway/ocpp/wsmux"
	"github.com/telegate/telegate/gateway/spool"
	"github.com/telegate/telegate/gateway/spool/record"
)

// Options of a harness.
type Options struct {
	Stations        []string // charger ids in the registry, secret = Secret(id)
	SecurityProfile int      // 1 (default), 2 or 3
	TLS             *tls.Config
	Now             func() time.Time // central system clock (nil: time.Now)
	RatePerConn     float64          // frames/s per connection (0: unlimited)
	Dir             string           // spool directory (default: a test temp dir)
	Log             *slog.Logger
	// NATS, when set, makes the central system cluster-wide
	// (Central.UseNATS) and claims every station socket in the sessions
	// bucket (a presence.Presence, as the gateway does): the ocpp_txn and
	// sessions buckets and the CHARGING stream must exist on it
	// (DeclareNATS).
	NATS *nats.Conn
}

// Secret is the test secret of a station.
func Secret(id string) string { return "secret-" + strings.ToLower(id) + "-0123456789" }

// Rec is one record the central system made durable.
type Rec struct {
	Topic   string
	Kind    record.Kind
	Reason  string                // dead letters: "label" or "label: detail" (decoders/reject)
	Session *wire.ChargingSession // chargers/{id}/session
	Status  *wire.ChargerStatus   // chargers/{id}/status
}

// Harness is a running central system.
type Harness struct {
	Central *ocpp.Central
	Mux     *wsmux.Server
	// Presence claims the station sockets across replicas (Options.NATS
	// only; nil without).
	Presence *presence.Presence
	Reg      *prometheus.Registry
	Addr     string
	URL      string // ws(s)://addr/ocpp (append /{id})
	// mu guards recs and waiters.
	mu      sync.Mutex
	recs    []Rec
	changed chan struct{}
	stop    func()
}

// capture is the real spool, remembering what was made durable.
type capture struct {
	sp *spool.Spool
	h  *Harness
}

func (c capture) Append(rec []byte) error {
	if _, err := c.sp.Append(rec); err != nil {
		return err
	}
	c.h.add(rec)
	return nil
}

func (c capture) AppendAsync(rec []byte) error {
	if _, err := c.sp.AppendAsync(rec); err != nil {
		return err
	}
	c.h.add(rec)
	return nil
}

func (h *Harness) add(b []byte) {
	var r record.Record
	if record.Parse(b, &r) != nil {
		return
	}
	rec := Rec{Topic: string(r.Topic), Kind: r.Kind, Reason: string(r.Reason)}
	switch {
	case strings.HasSuffix(rec.Topic, "/session"):
		var s wire.ChargingSession
		if _, err := s.UnmarshalMsg(append([]byte(nil), r.Payload...)); err == nil {
			rec.Session = &s
		}
	case strings.HasSuffix(rec.Topic, "/status"):
		var s wire.ChargerStatus
		if _, err := s.UnmarshalMsg(append([]byte(nil), r.Payload...)); err == nil {
			rec.Status = &s
		}
	}
	h.mu.Lock()
	h.recs = append(h.recs, rec)
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

// Records returns what was stored so far.
func (h *Harness) Records() []Rec {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Rec(nil), h.recs...)
}

// WaitFor waits until ok(records) or the timeout (a test bound, not a
// timing assertion) and reports whether ok held.
func (h *Harness) WaitFor(timeout time.Duration, ok func([]Rec) bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		recs, ch := append([]Rec(nil), h.recs...), h.changed
		h.mu.Unlock()
		if ok(recs) {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return false
		}
	}
}

// Start runs a central system on 127.0.0.1:0 until the test ends.
func Start(t testing.TB, o Options) *Harness {
	t.Helper()
	if o.SecurityProfile == 0 {
		o.SecurityProfile = 1
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	devs := make([]registry.Device, 0, len(o.Stations))
	for _, id := range o.Stations {
		hash, err := registry.HashSecret([]byte(Secret(id)), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, registry.Device{ID: id, Kind: registry.KindCharger, SecretHash: hash})
	}
	reg, err := registry.New(devs)
	if err != nil {
		t.Fatal(err)
	}
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	sp, err := spool.Open(spool.Options{Dir: o.Dir, Consumers: []string{"test"}, Logger: o.Log})
	if err != nil {
		t.Fatal(err)
	}
	h := &Harness{Reg: prometheus.NewRegistry(), changed: make(chan struct{})}
	m := ocpp.NewMetrics(h.Reg)
	h.Mux = wsmux.New(wsmux.Config{SecurityProfile: o.SecurityProfile, TLS: o.TLS, MaxFrameBytes: 64 << 10,
		RatePerConn: o.RatePerConn, Burst: 100, Now: o.Now}, reg, ocpp.MuxMetrics(m), o.Log)
	h.Central = ocpp.New(h.Mux, capture{sp, h},
		ingest.NewValidator(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), 24*time.Hour, o.Now), m, o.Now, o.Log)
	h.Central.HeartbeatInterval = time.Minute
	if o.NATS != nil {
		js, err := jetstream.New(o.NATS)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = h.Central.UseNATS(ctx, o.NATS, js)
		if err == nil {
			h.Presence, err = startPresence(ctx, js, h.Mux, o.Log)
		}
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.Addr = ln.Addr().String()
	scheme := "ws"
	if o.SecurityProfile >= 2 {
		scheme = "wss"
	}
	h.URL = scheme + "://" + h.Addr + "/ocpp"
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = h.Mux.Serve(ln)
	}()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			h.Mux.Close()
			_ = ln.Close()
			<-done
			if h.Presence != nil {
				h.Presence.Close()
			}
			h.Central.Close()
			_ = sp.Close()
		})
	}
	t.Cleanup(h.stop)
	return h
}

// startPresence watches the sessions bucket and claims every station
// socket of mux there, as the gateway does (gateway/app).
func startPresence(ctx context.Context, js jetstream.JetStream, mux *wsmux.Server, log *slog.Logger) (*presence.Presence, error) {
	kv, err := js.KeyValue(ctx, presence.Bucket)
	if err != nil {
		return nil, err
	}
	p, err := presence.New(presence.Config{KV: kv, Replica: presence.NewReplicaID("ocpptest"), Log: log})
	if err != nil {
		return nil, err
	}
	if err := p.Start(ctx); err != nil {
		return nil, err
	}
	mux.OnSession = func(id string, closed func() bool, end func()) func() {
		return p.Claim(presence.OCPPKey(id), closed, end)
	}
	return p, nil
}

// Stop stops the central system (a gateway "restart" when another harness
// then starts on the same NATS bucket). Idempotent; also run at test end.
func (h *Harness) Stop() { h.stop() }

// DeclareNATS declares what UseNATS needs, as natsbus does for the
// gateway: the CHARGING stream and the ocpp_txn and sessions buckets, with
// replicas.
func DeclareNATS(t testing.TB, js jetstream.JetStream, replicas int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: natsbus.StreamCharging, Subjects: []string{"charging.>"},
		Storage: jetstream.FileStorage, Replicas: replicas}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: natsbus.BucketOCPPTxn, Storage: jetstream.FileStorage,
		Replicas: replicas, History: 1, TTL: natsbus.OCPPTxnTTL}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, presence.BucketConfig(replicas)); err != nil {
		t.Fatal(err)
	}
}
