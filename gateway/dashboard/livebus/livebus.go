// Package livebus shares live telemetry between gateway replicas, so every
// replica's dashboard shows the whole fleet (last seen, live values) and
// the live signals of a vehicle connected to another replica.
//
// Each replica's sink fans its stored frames out on its own live.Hub
// (Local). The Bridge forwards them to the dashboard's hub (Out) as they
// come, and publishes them on core NATS live.{vin} (no persistence; at
// most one frame per vehicle every MinInterval, the others are counted as
// throttled). It subscribes to live.* and puts the other replicas' frames
// on Out, ignoring its own (header Telegate-Replica). Position signals
// (Vehicle.CurrentLocation.*) leave the replica only when the owner's
// location consent holds at that moment; the reading replica's API
// filters them again at output, as it does for local frames.
package livebus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/sink/live"
)

// SubjectPrefix: frames of vehicle vin are published on SubjectPrefix+vin.
const SubjectPrefix = natsbus.SubjectLive

// HeaderReplica names the publishing replica.
const HeaderReplica = "Telegate-Replica"

// locationPrefix is the VSS branch of position signals.
const locationPrefix = "Vehicle.CurrentLocation."

// Errors of the package.
var (
	// ErrConfig: a required field of Config is missing.
	ErrConfig = errors.New("livebus: invalid config")
	// ErrBadFrame: a live.* message is not a frame (counted, dropped).
	ErrBadFrame = errors.New("livebus: malformed frame")
)

// Config configures a Bridge.
type Config struct {
	NC      *nats.Conn // the dashboard role's connection (pub/sub live.*)
	Replica string     // this replica's id
	Local   *live.Hub  // this replica's frames (the sink's hub)
	Out     *live.Hub  // the dashboard's hub: local and remote frames
	// MinInterval bounds the publish rate per vehicle (default 250 ms).
	MinInterval time.Duration
	// LocationAllowed reports the owner's location consent; nil: none, no
	// position is published.
	LocationAllowed func(vin string) bool
	Now             func() time.Time // for the rate bound; default time.Now
	Log             *slog.Logger
}

// Stats are the Bridge's counters.
type Stats struct {
	Published atomic.Uint64 // frames published on NATS
	Throttled atomic.Uint64 // local frames not published (rate bound)
	Received  atomic.Uint64 // remote frames put on Out
	Bad       atomic.Uint64 // malformed live.* messages
	Errors    atomic.Uint64 // publish errors
}

// Bridge is one replica's live bridge.
type Bridge struct {
	cfg   Config
	stats Stats
	sub   *nats.Subscription
	unsub func()
	done  chan struct{}

	mu   sync.Mutex           // guards last
	last map[string]time.Time // vin → time of its last published frame
}

// Start subscribes to live.* and to the local hub.
func Start(cfg Config) (*Bridge, error) {
	if cfg.NC == nil || cfg.Replica == "" || cfg.Local == nil || cfg.Out == nil {
		return nil, fmt.Errorf("%w: NC, Replica, Local and Out are required", ErrConfig)
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = 250 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	b := &Bridge{cfg: cfg, last: map[string]time.Time{}, done: make(chan struct{})}
	sub, err := cfg.NC.Subscribe(SubjectPrefix+"*", b.receive)
	if err != nil {
		return nil, fmt.Errorf("livebus: subscribe: %w", err)
	}
	b.sub = sub
	ch, unsub := cfg.Local.Subscribe("", 4096)
	b.unsub = unsub
	go b.forward(ch)
	return b, nil
}

// Stats returns the live counters.
func (b *Bridge) Stats() *Stats { return &b.stats }

// Close stops the bridge.
func (b *Bridge) Close() {
	_ = b.sub.Unsubscribe()
	b.unsub()
	close(b.done)
}

func (b *Bridge) forward(ch <-chan live.Update) {
	for {
		select {
		case <-b.done:
			return
		case u := <-ch:
			b.cfg.Out.Publish([]byte(u.VIN), u.TimeMs, u.Seq, u.Signals)
			b.publish(u)
		}
	}
}

func (b *Bridge) publish(u live.Update) {
	now := b.cfg.Now()
	b.mu.Lock()
	if t, ok := b.last[u.VIN]; ok && now.Sub(t) < b.cfg.MinInterval {
		b.mu.Unlock()
		b.stats.Throttled.Add(1)
		return
	}
	b.last[u.VIN] = now
	b.mu.Unlock()
	loc := b.cfg.LocationAllowed != nil && b.cfg.LocationAllowed(u.VIN)
	m := nats.NewMsg(SubjectPrefix + u.VIN)
	m.Header.Set(HeaderReplica, b.cfg.Replica)
	m.Data = Encode(u, loc)
	if err := b.cfg.NC.PublishMsg(m); err != nil {
		b.stats.Errors.Add(1)
		b.cfg.Log.Debug("live frame not published", "vin", u.VIN, "err", err)
		return
	}
	b.stats.Published.Add(1)
}

func (b *Bridge) receive(m *nats.Msg) {
	if m.Header.Get(HeaderReplica) == b.cfg.Replica {
		return
	}
	vin := strings.TrimPrefix(m.Subject, SubjectPrefix)
	u, err := Decode(m.Data)
	if err == nil && !validVIN(vin) {
		err = fmt.Errorf("%w: vehicle id", ErrBadFrame)
	}
	if err != nil {
		b.stats.Bad.Add(1)
		b.cfg.Log.Debug("live frame dropped", "subject", m.Subject, "err", err)
		return
	}
	b.stats.Received.Add(1)
	b.cfg.Out.Publish([]byte(vin), u.TimeMs, u.Seq, u.Signals)
}

// Encode is the wire form of a frame: time (ms) and sequence number
// (8 bytes each, big endian), then per signal its id (2 bytes) and value
// (IEEE 754, 8 bytes). Position signals are left out unless location.
func Encode(u live.Update, location bool) []byte {
	out := make([]byte, 16, 16+10*len(u.Signals))
	binary.BigEndian.PutUint64(out, uint64(u.TimeMs))
	binary.BigEndian.PutUint64(out[8:], u.Seq)
	for _, s := range u.Signals {
		if !location {
			if sig, ok := catalog.Lookup(s.ID); !ok || strings.HasPrefix(sig.Path, locationPrefix) {
				continue
			}
		}
		out = binary.BigEndian.AppendUint16(out, s.ID)
		out = binary.BigEndian.AppendUint64(out, math.Float64bits(s.Value))
	}
	return out
}

// Decode parses Encode's form.
func Decode(b []byte) (live.Update, error) {
	if len(b) < 16 || (len(b)-16)%10 != 0 {
		return live.Update{}, fmt.Errorf("%w: %d bytes", ErrBadFrame, len(b))
	}
	u := live.Update{TimeMs: int64(binary.BigEndian.Uint64(b)), Seq: binary.BigEndian.Uint64(b[8:])}
	for p := b[16:]; len(p) > 0; p = p[10:] {
		u.Signals = append(u.Signals, wire.Signal{ID: binary.BigEndian.Uint16(p), Value: math.Float64frombits(binary.BigEndian.Uint64(p[2:]))})
	}
	return u, nil
}

// validVIN accepts 1..64 letters, digits, '-' and '_' (device ids).
func validVIN(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
