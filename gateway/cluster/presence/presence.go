// Package presence ends a device's stale session on one gateway replica
// when the device connects to another, as a single broker ends the older
// connection on a session takeover.
//
// On every established session the replica puts a claim into the
// JetStream key-value bucket "sessions" (key: the client id; value: the
// replica id, a per-connection nonce and the time). Every replica watches
// the bucket; a claim by another replica for a client id with a local
// session ends that session (Ender: DISCONNECT 0x8E Session taken over for
// MQTT 5, connection closed for 3.1.1).
//
// Other connections claim the same way through Claim, under keys of their
// own: an OCPP charging station's WebSocket under OCPPKey(station id),
// ended by the OCPP listener (gateway/ocpp/wsmux Server.OnSession).
//
// Order: the newest claim wins, and "newest" is the bucket's revision
// (the stream sequence, one total order for the whole cluster), never a
// clock. A local session remembers the revision of its own claim and is
// ended only by a foreign claim with a higher revision, so a late-arriving
// older claim cannot end a newer session. A foreign claim seen while the
// local claim is still being written is remembered and applied once the
// local revision is known.
package presence

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is the key-value bucket of the claims.
const Bucket = "sessions"

// Errors of the package.
var (
	// ErrConfig: a required field of Config is missing.
	ErrConfig = errors.New("presence: invalid config")
	// ErrBadClaim: a bucket value is not a claim (counted, ignored).
	ErrBadClaim = errors.New("presence: malformed claim")
)

// Claim is the value of a bucket key.
type Claim struct {
	Replica string    `json:"replica"`
	Nonce   string    `json:"nonce"`
	At      time.Time `json:"at"` // informational only; never used for ordering
}

// Config configures a Presence.
type Config struct {
	KV      jetstream.KeyValue // the sessions bucket (BucketConfig)
	Replica string             // this replica's id, unique per process (NewReplicaID)
	// End ends a local MQTT session taken over by another replica
	// (broker.Broker.TakeOver). Required when the Presence is added to a
	// broker as its hook (Init refuses it otherwise); a Presence serving
	// only Claim may leave it nil.
	End func(cl *mqtt.Client)
	// Timeout bounds one claim write; default 2s. A failed claim leaves
	// the session running (counted in Stats.ClaimErrors).
	Timeout time.Duration
	Now     func() time.Time // clock for Claim.At; default time.Now
	Log     *slog.Logger
	// Reload, if set, is called (on the watcher's goroutine) when another
	// replica requests a device registry reload (RequestReload).
	Reload func()
}

// BucketConfig is the sessions bucket's configuration: one value per
// key, claims of devices gone for a day expire.
func BucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Which gateway replica holds each device's MQTT session (newest claim wins)",
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		History:     1,
		TTL:         24 * time.Hour,
	}
}

// Stats are the package's counters.
type Stats struct {
	Claims      atomic.Uint64 // claims written
	ClaimErrors atomic.Uint64 // claims that could not be written
	TakenOver   atomic.Uint64 // local sessions ended by a newer foreign claim
	BadClaims   atomic.Uint64 // bucket values that were not claims (or not reload requests)
	Reloads     atomic.Uint64 // registry reloads requested by other replicas
}

// session is a local session (MQTT client or another connection that
// called Claim) and the revision of its claim.
type session struct {
	owner  any         // *mqtt.Client, or the *holder of a Claim: identity for the release
	id     string      // for logs
	closed func() bool // whether the connection is already gone
	end    func()      // ends the connection (taken over)
	nonce  string
	rev    uint64
}

// holder identifies one Claim call (its release forgets only its own session).
type holder struct{ _ byte }

// Presence is the mochi hook (OnSessionEstablished, OnDisconnect) and the
// bucket watcher of one replica.
type Presence struct {
	mqtt.HookBase
	cfg   Config
	log   *slog.Logger
	stats Stats

	mu sync.Mutex // guards local, writing and seen
	// local: bucket key -> the local session whose claim is current here.
	local map[string]session
	// writing: bucket key -> local claims being written; seen: the highest
	// foreign revision that arrived meanwhile.
	writing map[string]int
	seen    map[string]uint64

	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a Presence; Start begins watching.
func New(cfg Config) (*Presence, error) {
	if cfg.KV == nil || cfg.Replica == "" {
		return nil, fmt.Errorf("%w: KV and Replica are required", ErrConfig)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Presence{cfg: cfg, log: cfg.Log, local: map[string]session{}, writing: map[string]int{},
		seen: map[string]uint64{}}, nil
}

// NewReplicaID returns a random replica id with a readable prefix.
func NewReplicaID(prefix string) string {
	return prefix + "-" + randomHex(6)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Stats returns the live counters.
func (p *Presence) Stats() *Stats { return &p.stats }

// ID is the hook's id.
func (p *Presence) ID() string { return "telegate-presence" }

// Init refuses to serve as a broker hook without Config.End.
func (p *Presence) Init(any) error {
	if p.cfg.End == nil {
		return fmt.Errorf("%w: End is required for the broker hook", ErrConfig)
	}
	return nil
}

// Provides declares the hook's events.
func (p *Presence) Provides(e byte) bool {
	return e == mqtt.OnSessionEstablished || e == mqtt.OnDisconnect
}

// Start watches the bucket for new claims until Close (the watch outlives
// ctx, which only bounds setting it up).
func (p *Presence) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(context.Background())
	w, err := p.cfg.KV.WatchAll(wctx, jetstream.UpdatesOnly())
	if err != nil {
		cancel()
		return fmt.Errorf("presence: watch %s: %w", Bucket, err)
	}
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-wctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil && e.Operation() == jetstream.KeyValuePut {
					p.observe(e.Key(), e.Revision(), e.Value())
				}
			}
		}
	}()
	return nil
}

// Close stops the watcher.
func (p *Presence) Close() {
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
}

// observe applies one claim seen in the bucket.
func (p *Presence) observe(key string, rev uint64, val []byte) {
	if key == ReloadKey {
		p.observeReload(rev, val)
		return
	}
	var c Claim
	if err := json.Unmarshal(val, &c); err != nil || c.Replica == "" {
		p.stats.BadClaims.Add(1)
		p.log.Warn("sessions bucket value is not a claim", "key", key, "revision", rev, "err", ErrBadClaim)
		return
	}
	if c.Replica == p.cfg.Replica {
		// Two local connections of one device: the broker itself ends the
		// older one.
		return
	}
	p.mu.Lock()
	if p.writing[key] > 0 && rev > p.seen[key] {
		p.seen[key] = rev
	}
	s, ok := p.local[key]
	if ok && rev > s.rev {
		delete(p.local, key)
	} else {
		ok = false
	}
	p.mu.Unlock()
	if ok {
		p.takeOver(s, c, rev)
	}
}

func (p *Presence) takeOver(s session, by Claim, rev uint64) {
	p.stats.TakenOver.Add(1)
	p.log.Info("session taken over by another replica", "client", s.id, "by_replica", by.Replica,
		"revision", rev, "own_revision", s.rev)
	s.end()
}

// OnSessionEstablished writes the claim of a new local session.
func (p *Presence) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if cl.Net.Inline {
		return
	}
	p.claim(Key(cl.ID), session{owner: cl, id: cl.ID, closed: cl.Closed, end: func() { p.cfg.End(cl) }})
}

// Claim claims key (OCPPKey for a charging station) for a local connection
// other than an MQTT session, as OnSessionEstablished does for one: it
// writes the claim (blocking up to Config.Timeout) and, from then on until
// release, calls end once if another replica claims key later (by bucket
// revision). closed reports whether the connection is already gone (then
// nothing is written). end runs on the watcher's goroutine (or on the
// caller's, when a newer claim arrived while this one was written) and
// must not block. Call release when the connection ends; the claim stays in the
// bucket, as an MQTT session's does.
func (p *Presence) Claim(key string, closed func() bool, end func()) (release func()) {
	h := &holder{}
	p.claim(key, session{owner: h, id: key, closed: closed, end: end})
	return func() { p.forget(key, h) }
}

// OCPPKey is the bucket key of an OCPP charging station's claim: "o." and
// Key(id). It never equals an MQTT client's key (plain keys hold no '.',
// encoded ones start "x.") nor ReloadKey.
func OCPPKey(id string) string { return "o." + Key(id) }

// claim writes the claim of the local session s under key.
func (p *Presence) claim(key string, s session) {
	nonce := randomHex(8)
	s.nonce = nonce
	val, _ := json.Marshal(Claim{Replica: p.cfg.Replica, Nonce: nonce, At: p.cfg.Now().UTC()})
	p.mu.Lock()
	p.writing[key]++
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
	var rev uint64
	var err error
	if !s.closed() {
		rev, err = p.cfg.KV.Put(ctx, key, val)
	}
	cancel()
	p.mu.Lock()
	seen := p.seen[key]
	if p.writing[key]--; p.writing[key] == 0 {
		delete(p.writing, key)
		delete(p.seen, key)
	}
	takeOver := false
	switch {
	case err != nil:
	case rev == 0: // closed before claiming
	case seen > rev:
		takeOver = true // a newer foreign claim arrived while writing
	default:
		if cur, ok := p.local[key]; !ok || cur.rev < rev || cur.closed() {
			s.rev = rev
			p.local[key] = s
		}
	}
	p.mu.Unlock()
	if err != nil {
		p.stats.ClaimErrors.Add(1)
		p.log.Warn("session claim not written; a stale session elsewhere is not ended", "client", s.id, "err", err)
		return
	}
	if rev != 0 {
		p.stats.Claims.Add(1)
	}
	if takeOver {
		s.rev = rev
		p.takeOver(s, Claim{Replica: "?"}, seen)
	}
}

// OnDisconnect forgets the local session. Its claim stays (a newer one by
// another replica may already have replaced it); claims expire with the
// bucket's TTL.
func (p *Presence) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	p.forget(Key(cl.ID), cl)
}

// forget drops key's local session if owner still holds it.
func (p *Presence) forget(key string, owner any) {
	p.mu.Lock()
	if s, ok := p.local[key]; ok && s.owner == owner {
		delete(p.local, key)
	}
	p.mu.Unlock()
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]{1,200}$`)

// Key is the bucket key of client id: the id itself when it holds only
// letters, digits, '-' and '_' (VINs, station ids), else "x." and its
// base64url form (KV keys allow few characters; plain keys never hold '.').
func Key(id string) string {
	if plainKey.MatchString(id) {
		return id
	}
	return "x." + base64.RawURLEncoding.EncodeToString([]byte(id))
}
