// Package broker embeds the mochi MQTT server as the telematics gateway's
// device-facing broker: per-device identity from the device registry,
// a closed per-device ACL, per-device rate limits, limits sized for a fleet
// of small devices, and hardened listeners (TCP, TLS with optional mutual
// TLS, WebSocket).
//
// Typical use:
//
//	reg, err := registry.Load("devices.yaml")
//	cfg := broker.DefaultConfig()
//	b, err := broker.New(cfg, reg, logger)
//	err = b.AddHook(ingestHook, nil) // the gateway's OnPublish hand-off
//	err = b.Start()
//	defer b.Close()
//
// See docs/broker.md for the identity model, ACL rules, chosen limits and
// the mochi defects this package works around.
package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telegate/telegate/broker/listener"
	"github.com/telegate/telegate/broker/registry"
	"github.com/telegate/telegate/internal/bytesize"
)

// Listener names accepted by Broker.Addr.
const (
	ListenerTCP = "tcp"
	ListenerWS  = "ws"
	ListenerTLS = "tls"
)

// maxPacketSize is the upper bound of Config.MaxPacketSize: the largest
// remaining length MQTT can encode (256 MiB - 1).
const maxPacketSize = 268435455

// TopicAliasMaximum is the number of inbound topic aliases a v5 client may
// use per connection.
const TopicAliasMaximum = 16

// Errors returned by the broker.
var (
	// ErrConfig means the Config is unusable.
	ErrConfig = errors.New("broker: invalid config")
	// ErrStarted is returned by Start and AddHook after Start.
	ErrStarted = errors.New("broker: already started")
	// ErrClosed is returned by operations after Close.
	ErrClosed = errors.New("broker: closed")
)

// Config configures a Broker. Its YAML keys are the gateway's `mqtt`
// section (gateway/config embeds it). Start from DefaultConfig: New fills
// zero numeric fields with the defaults (applyDefaults, the one place
// defaults are applied), but an empty address always disables its listener.
type Config struct {
	TCPAddr string `yaml:"tcp_addr"` // plain MQTT over TCP; default "127.0.0.1:1883"; "" disables
	WSAddr  string `yaml:"ws_addr"`  // MQTT over WebSocket; default "127.0.0.1:1882"; "" disables
	TLSAddr string `yaml:"tls_addr"` // MQTT over TLS; "" disables; requires TLSCertFile/TLSKeyFile

	TLSCertFile string `yaml:"tls_cert_file"` // PEM server certificate chain
	TLSKeyFile  string `yaml:"tls_key_file"`  // PEM server key
	// ClientCAFile (PEM), when set, makes the TLS listener require a client
	// certificate signed by one of these CAs. Its subject CN is the device
	// identity: it must equal the client id, and the password is optional
	// (verified if present).
	ClientCAFile string `yaml:"client_ca_file"`

	MaxPacketSize          bytesize.Size `yaml:"max_packet_size"`           // largest packet a client may send; default 64 KiB
	ReceiveMaximum         uint16        `yaml:"receive_maximum"`           // QoS 1 publishes from one client awaiting PUBACK; default 64
	MaxInflight            uint16        `yaml:"max_inflight"`              // QoS 1 messages to one client awaiting PUBACK; default 64
	MaxClientWritesPending int32         `yaml:"max_client_writes_pending"` // queued outbound packets per client; default 16
	ConnectTimeout         time.Duration `yaml:"connect_timeout"`           // accept to complete CONNECT; default 10s
	// MaxKeepalive caps the keepalive a client may choose; a client asking
	// for 0 (no keepalive) or more gets this value, sent to v5 clients as
	// Server Keep Alive. An idle connection is dropped after 1.5 times the
	// effective keepalive. Default 5 minutes.
	MaxKeepalive time.Duration `yaml:"max_keepalive"`
	MaxClients   int64         `yaml:"max_clients"` // authenticated sessions; default 100000
	// MaxConnections caps open sockets, including ones not yet
	// authenticated; 0 (the default): MaxClients + MaxClients/8 + 64.
	MaxConnections int64         `yaml:"max_connections"`
	SessionExpiry  time.Duration `yaml:"session_expiry"`  // longest a disconnected session (and its queued messages) is kept; default 24h
	RatePerDevice  float64       `yaml:"rate_per_device"` // sustained publishes per second per device; default 200
	Burst          int           `yaml:"rate_burst"`      // publishes a device may burst above the rate; default 400
	// ServerReference is sent to MQTT 5 clients with reason 0x9C Use
	// another server when the broker drains (Drain, SIGUSR1): the other
	// replicas, e.g. "mqtt-b.example:8883 mqtt-c.example:8883". "" sends none.
	ServerReference string `yaml:"server_reference"`
	// ReadBatch turns read batching on (docs/operations.md): a connection
	// whose last read brought a PUBLISH reads again at the listener's next
	// tick, ReadBatch apart, so that the frames a steadily publishing
	// device sent meanwhile are read, committed and acknowledged together.
	// It saves most of the per-frame CPU of a fleet publishing several
	// times a second, and delays each frame (and its PUBACK) by up to
	// ReadBatch. 0 (the default): off; at most 1s. TCP and TLS
	// listeners on Linux only (WebSocket connections never wait). Burst
	// must cover the frames a device at RatePerDevice sends in ReadBatch,
	// plus one: they reach the rate limiter at once.
	ReadBatch time.Duration `yaml:"read_batch"`

	// noPacketGuard turns the listeners' packet guard off; only tests use
	// it, to show what reaches mochi without it.
	noPacketGuard bool
	// now is the clock of credential validity (client certificates in the
	// TLS handshake and in live sessions, previous secrets' expiry); nil:
	// time.Now. Only tests set it.
	now func() time.Time
}

// DefaultConfig returns the defaults described on Config.
func DefaultConfig() Config {
	return Config{
		TCPAddr:                "127.0.0.1:1883",
		WSAddr:                 "127.0.0.1:1882",
		MaxPacketSize:          64 << 10,
		ReceiveMaximum:         64,
		MaxInflight:            64,
		MaxClientWritesPending: 16,
		ConnectTimeout:         10 * time.Second,
		MaxKeepalive:           5 * time.Minute,
		MaxClients:             100000,
		SessionExpiry:          24 * time.Hour,
		RatePerDevice:          200,
		Burst:                  400,
	}
}

func (c *Config) applyDefaults() error {
	d := DefaultConfig()
	if c.MaxPacketSize == 0 {
		c.MaxPacketSize = d.MaxPacketSize
	}
	if c.ReceiveMaximum == 0 {
		c.ReceiveMaximum = d.ReceiveMaximum
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = d.MaxInflight
	}
	if c.MaxClientWritesPending == 0 {
		c.MaxClientWritesPending = d.MaxClientWritesPending
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = d.ConnectTimeout
	}
	if c.MaxKeepalive == 0 {
		c.MaxKeepalive = d.MaxKeepalive
	}
	if c.MaxClients == 0 {
		c.MaxClients = d.MaxClients
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = c.MaxClients + c.MaxClients/8 + 64
	}
	if c.SessionExpiry == 0 {
		c.SessionExpiry = d.SessionExpiry
	}
	if c.RatePerDevice == 0 {
		c.RatePerDevice = d.RatePerDevice
	}
	if c.Burst == 0 {
		c.Burst = d.Burst
	}

	switch {
	case c.MaxPacketSize < 256 || c.MaxPacketSize > maxPacketSize:
		return fmt.Errorf("%w: MaxPacketSize %d outside 256..268435455", ErrConfig, c.MaxPacketSize)
	case c.MaxClientWritesPending < 1:
		return fmt.Errorf("%w: MaxClientWritesPending must be positive", ErrConfig)
	case c.ConnectTimeout < 0:
		return fmt.Errorf("%w: negative ConnectTimeout", ErrConfig)
	case c.MaxKeepalive < time.Second || c.MaxKeepalive > math.MaxUint16*time.Second:
		return fmt.Errorf("%w: MaxKeepalive %v outside 1s..65535s", ErrConfig, c.MaxKeepalive)
	case c.MaxClients < 1 || c.MaxConnections < 1:
		return fmt.Errorf("%w: MaxClients and MaxConnections must be positive", ErrConfig)
	case c.SessionExpiry < 0 || c.SessionExpiry > math.MaxUint32*time.Second:
		return fmt.Errorf("%w: SessionExpiry %v out of range", ErrConfig, c.SessionExpiry)
	case c.ReadBatch < 0 || c.ReadBatch > time.Second:
		return fmt.Errorf("%w: ReadBatch %v outside 0..1s", ErrConfig, c.ReadBatch)
	case c.RatePerDevice < 0 || c.Burst < 1:
		return fmt.Errorf("%w: RatePerDevice must be >= 0 and Burst >= 1", ErrConfig)
	case c.ReadBatch > 0 && c.RatePerDevice > 0 && float64(c.Burst) < 1+math.Ceil(c.RatePerDevice*c.ReadBatch.Seconds()):
		// The frames a device sent during a tick reach the limiter at
		// once: one that keeps to the rate must not be limited for it.
		return fmt.Errorf("%w: Burst %d below the frames a device at RatePerDevice sends during a ReadBatch tick, plus one (%v)",
			ErrConfig, c.Burst, 1+math.Ceil(c.RatePerDevice*c.ReadBatch.Seconds()))
	case c.TLSAddr != "" && (c.TLSCertFile == "" || c.TLSKeyFile == ""):
		return fmt.Errorf("%w: TLSAddr requires TLSCertFile and TLSKeyFile", ErrConfig)
	case c.TLSAddr == "" && c.ClientCAFile != "":
		return fmt.Errorf("%w: ClientCAFile set without TLSAddr", ErrConfig)
	case c.TCPAddr == "" && c.WSAddr == "" && c.TLSAddr == "":
		return fmt.Errorf("%w: no listener address", ErrConfig)
	}
	return nil
}

// Broker is the device-facing MQTT broker.
type Broker struct {
	// seamDrainStarted, if set, runs in Drain once the draining switch is
	// on, before the clients are disconnected (tests).
	seamDrainStarted func()

	cfg    Config
	reg    *registry.Registry
	log    *slog.Logger
	server *mqtt.Server
	tls    *tls.Config
	limit  *listener.Limit
	stats  Stats
	rates  *limiters

	mu      sync.Mutex
	started bool
	closed  bool
	expiry  *time.Timer // fires at the next credential expiry (expiryAt); guarded by mu
	// expiryAt is when expiry fires: the earliest previous_valid_until or
	// live session's client certificate expiry still ahead (zero: none
	// armed); guarded by mu.
	expiryAt time.Time
	// lastExpire is when the expiry timer last ran (expiryMinGap);
	// guarded by mu.
	lastExpire time.Time
	now        func() time.Time // cfg.now or time.Now
	closeMu    sync.Mutex       // serialises Close

	authMu sync.Mutex
	auth   map[string]authRecord // per device id: how its live session authenticated

	drain drainState // Drain's switch (drain.go); per-connection state is in each mqtt.Client's Ext slot (connstate.go)
}

// authRecord is how a device's current session proved its identity: the
// bcrypt hash its secret matched, or a client certificate without a
// password; certUntil is when the session's client certificate (with its
// chain) stops being valid (zero: no certificate).
type authRecord struct {
	cl        *mqtt.Client
	hash      string
	cert      bool
	certUntil time.Time
}

// New builds a broker. It validates cfg, loads the TLS material and
// installs the broker's own hooks (identity, ACL, rate limit, limits); it
// opens no socket until Start. log may be nil.
func New(cfg Config, reg *registry.Registry, log *slog.Logger) (*Broker, error) {
	if reg == nil {
		return nil, fmt.Errorf("%w: nil registry", ErrConfig)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	b := &Broker{
		cfg:   cfg,
		reg:   reg,
		limit: listener.NewLimit(cfg.MaxConnections),
		rates: newLimiters(cfg.RatePerDevice, cfg.Burst),
		auth:  make(map[string]authRecord),
		now:   cfg.now,
	}
	if b.now == nil {
		b.now = time.Now
	}
	// One filter for the broker's and mochi's lines: no payload bytes,
	// bounded strings, per-client rate limit (logfilter.go).
	b.log = slog.New(newLogFilter(log.Handler(), nil, func() { b.stats.LogSuppressed.Add(1) }))
	if cfg.TLSAddr != "" {
		tc, err := loadTLS(cfg)
		if err != nil {
			return nil, err
		}
		// The handshake checks the client certificate's validity on the
		// same clock as the live sessions' expiry (revalidate).
		tc.Time = b.now
		b.tls = tc
	}

	caps := mqtt.NewDefaultServerCapabilities()
	// MaxClients is enforced by the policy hook after authentication, so
	// that a device reconnecting while its old (half-open) connection still
	// counts can take its own session over at the limit; mochi's own check
	// runs before it knows who connects.
	caps.MaximumClients = math.MaxInt64
	caps.MaximumPacketSize = uint32(cfg.MaxPacketSize)
	caps.ReceiveMaximum = cfg.ReceiveMaximum
	caps.MaximumInflight = cfg.MaxInflight
	caps.MaximumClientWritesPending = cfg.MaxClientWritesPending
	caps.MaximumSessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
	caps.MaximumMessageExpiryInterval = int64(cfg.SessionExpiry / time.Second)
	caps.TopicAliasMaximum = TopicAliasMaximum
	caps.SharedSubAvailable = 0
	caps.RetainAvailable = 0
	caps.MaximumQos = 1
	caps.MinimumProtocolVersion = 4 // MQTT 3.1.1 and 5

	// Read buffer: 1 KiB per connection (mochi's default 2 KiB); a device's
	// packets are small and longer ones are read past the buffer
	// (docs/benchmarks.md "Connections").
	b.server = mqtt.New(&mqtt.Options{
		Capabilities:             caps,
		ClientNetReadBufferSize:  1 << 10,
		ClientNetWriteBufferSize: 2 << 10,
		Logger:                   b.log,
		SysTopicResendInterval:   60,
		InlineClient:             true, // for Publish (cloud-to-device commands)
		// The body of an ignored 3.1.1 publish (the ingest hook's held
		// QoS 1 path) serves the next packet: no allocation per frame.
		// Safe because no hook keeps a publish's strings or slices
		// (policy, ingest, presence; see AddHook) and the log filter
		// formats records at once (its rate-limit keys are client ids).
		ReuseIgnoredPublishBody: true,
	})
	b.stats.info = b.server.Info
	if err := b.server.AddHook(&policy{b: b}, nil); err != nil {
		return nil, fmt.Errorf("broker: add policy hook: %w", err)
	}
	return b, nil
}

func loadTLS(cfg Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: TLS key pair: %w", ErrConfig, err)
	}
	tc := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}
	if cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: client CA: %w", ErrConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: client CA file %s holds no PEM certificate", ErrConfig, cfg.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// AddHook attaches an extra mochi hook (e.g. the gateway's ingest hook). It
// must be called before Start. Extra hooks run after the broker's own
// hooks, so their OnPublish sees only authenticated, authorised,
// rate-limited publishes. They cannot take part in authentication or ACL
// decisions: their OnConnectAuthenticate and OnACLCheck are never called
// (in mochi any hook answering true would grant access).
//
// Note that mochi calls OnConnect before authentication, and calls
// OnPublish for server-side publishes too (cl.Net.Inline is true for
// those).
//
// A hook must not keep pk.TopicName, pk.Payload or any other string or
// slice of a device's PUBLISH after its OnPacketRead, OnPublish or
// OnPacketProcessed returns (copy what it keeps): the broker runs mochi
// with ReuseIgnoredPublishBody, so the body of a 3.1.1 publish that
// OnPublish returned ignored (the ingest hook's held QoS 1 path) is read
// over by a later packet. A hook providing OnPublished turns that off.
func (b *Broker) AddHook(h mqtt.Hook, config any) error {
	if h == nil {
		return fmt.Errorf("%w: nil hook", ErrConfig)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if b.started {
		return ErrStarted
	}
	return b.server.AddHook(&extraHook{Hook: h}, config)
}

// extraHook hides the access-granting events of a hook added by AddHook.
type extraHook struct{ mqtt.Hook }

func (h *extraHook) Provides(e byte) bool {
	if e == mqtt.OnConnectAuthenticate || e == mqtt.OnACLCheck {
		return false
	}
	return h.Hook.Provides(e)
}

// WantsPacketRead passes on the wrapped hook's mqtt.PacketReadFilter: a
// hook without one sees every packet type.
func (h *extraHook) WantsPacketRead(t byte) bool {
	if f, ok := h.Hook.(mqtt.PacketReadFilter); ok {
		return f.WantsPacketRead(t)
	}
	return true
}

// Start opens the configured listeners and starts serving. It does not
// block. On error, sockets opened so far are closed; call Close anyway.
func (b *Broker) Start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if b.started {
		return ErrStarted
	}
	type spec struct {
		id, addr string
		tls      *tls.Config
	}
	var specs []spec
	if b.cfg.TCPAddr != "" {
		specs = append(specs, spec{ListenerTCP, b.cfg.TCPAddr, nil})
	}
	if b.cfg.TLSAddr != "" {
		specs = append(specs, spec{ListenerTLS, b.cfg.TLSAddr, b.tls})
	}
	var opened []listeners.Listener
	fail := func(err error) error {
		for _, l := range opened {
			l.Close(func(string) {})
		}
		return err
	}
	for _, s := range specs {
		l, err := listener.NewTCP(b.listenerOptions(s.id, s.addr, s.tls))
		if err != nil {
			return fail(err)
		}
		if err := b.server.AddListener(l); err != nil {
			return fail(fmt.Errorf("broker: %s listener on %s: %w", s.id, s.addr, err))
		}
		opened = append(opened, l)
	}
	if b.cfg.WSAddr != "" {
		l, err := listener.NewWebSocket(b.listenerOptions(ListenerWS, b.cfg.WSAddr, nil))
		if err != nil {
			return fail(err)
		}
		if err := b.server.AddListener(l); err != nil {
			return fail(fmt.Errorf("broker: ws listener on %s: %w", b.cfg.WSAddr, err))
		}
		opened = append(opened, l)
	}
	if err := b.server.Serve(); err != nil {
		return fail(fmt.Errorf("broker: serve: %w", err))
	}
	b.started = true
	b.scheduleExpiryLocked()
	for _, s := range []string{ListenerTCP, ListenerTLS, ListenerWS} {
		if a := b.addr(s); a != "" {
			b.log.Info("broker listening", "listener", s, "address", a)
		}
	}
	return nil
}

func (b *Broker) listenerOptions(id, addr string, tc *tls.Config) listener.Options {
	return listener.Options{
		ID:             id,
		Address:        addr,
		TLSConfig:      tc,
		ConnectTimeout: b.cfg.ConnectTimeout,
		Limit:          b.limit,
		Stats:          &b.stats.Listener,
		OnPanic:        b.afterPanic,
		// Defence in depth in front of mochi's decoder: see docs/broker.md.
		ValidatePackets: !b.cfg.noPacketGuard,
		MaxPacketSize:   uint32(b.cfg.MaxPacketSize),
		CloseClients:    b.closeListenerClients,
		ReadBatch:       b.cfg.ReadBatch,
		ReadBatchWindow: int(b.cfg.ReceiveMaximum),
	}
}

// closeListenerClients disconnects the clients of one listener on Close
// (MQTT 5: DISCONNECT 0x8B Server shutting down; 3.1.1: the policy hook
// drops the DISCONNECT and the connection is closed). It replaces mochi's
// own closer, whose nested read lock on the clients map deadlocks against
// a client disconnecting at the same moment (see listener.Options).
// Clients.GetAll takes the lock once and returns a copy.
func (b *Broker) closeListenerClients(listenerID string) {
	for _, cl := range b.server.Clients.GetAll() {
		if cl.Net.Listener != listenerID || cl.Closed() {
			continue
		}
		_ = b.server.DisconnectClient(cl, packets.ErrServerShuttingDown)
	}
}

// Close disconnects every client, closes the listeners and stops the
// hooks. It is safe to call more than once; later calls return nil.
func (b *Broker) Close() error {
	b.closeMu.Lock()
	defer b.closeMu.Unlock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	if b.expiry != nil {
		b.expiry.Stop()
	}
	b.mu.Unlock()
	if err := b.server.Close(); err != nil {
		return fmt.Errorf("broker: close: %w", err)
	}
	return nil
}

// Addr returns the bound address of the named listener (ListenerTCP,
// ListenerWS or ListenerTLS), or "" if it is not running.
func (b *Broker) Addr(name string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return ""
	}
	return b.addr(name)
}

func (b *Broker) addr(name string) string {
	l, ok := b.server.Listeners.Get(name)
	if !ok {
		return ""
	}
	return l.Address()
}

// Publish publishes a server-side message (e.g. a cloud-to-vehicle command
// on vehicles/{vin}/cmd/...) to matching subscribers. It bypasses the
// device ACL; delivery still requires the subscriber's ACL to allow the
// topic. qos above 1 is lowered to 1. Retain is not supported.
func (b *Broker) Publish(topic string, payload []byte, qos byte) error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if qos > 1 {
		qos = 1
	}
	if err := b.server.Publish(topic, payload, false, qos); err != nil {
		return fmt.Errorf("broker: publish %q: %w", topic, err)
	}
	return nil
}

// Disconnect ends the live session of device id, if any (MQTT 5 clients
// receive DISCONNECT 0x98 Administrative action). A persistent session is
// kept; use Reload to revoke a device.
func (b *Broker) Disconnect(id string) {
	b.kick(id, false)
}

// kick disconnects the client with id; purge also discards its stored
// session (subscriptions and queued messages).
func (b *Broker) kick(id string, purge bool) bool {
	cl, ok := b.server.Clients.Get(id)
	if !ok || cl.Net.Inline {
		return false
	}
	if !cl.Closed() {
		_ = b.server.DisconnectClient(cl, packets.ErrAdministrativeAction)
	}
	if purge {
		b.discardSession(cl)
	}
	return true
}

// discardSession removes a stopped client's subscriptions, queued messages
// and map entry, as mochi does for a clean session: mochi's
// DiscardSession, under the client id's lock, so a connection of the same
// device that resumes or takes the id meanwhile keeps its own state (the
// steps done here without the lock gave it Session Present 1 with the
// subscriptions gone, or deleted its Clients entry).
func (b *Broker) discardSession(cl *mqtt.Client) {
	b.server.DiscardSession(cl)
	b.rates.release(cl.ID, b.hasOpenClient(cl.ID, cl))
}

// hasOpenClient reports whether a client other than except with id is
// connected.
func (b *Broker) hasOpenClient(id string, except *mqtt.Client) bool {
	cur, ok := b.server.Clients.Get(id)
	return ok && cur != except && !cur.Closed()
}

// Reload re-reads the registry file and ends the sessions of devices that
// lost access: removed, disabled or kind-changed devices (whose stored
// sessions are discarded too), and sessions whose secret is no longer
// accepted. A device in the middle of a secret rotation (previous_secret_hash
// in the registry) keeps its session as long as the secret it authenticated
// with is still accepted; when it is not (the previous hash was removed or
// the device was rotated without one), the live session is ended and the
// stored session kept for when it reconnects with the new secret. On error
// the current registry stays in force.
func (b *Broker) Reload() error {
	ch, err := b.reg.Reload()
	if err != nil {
		return fmt.Errorf("broker: reload registry: %w", err)
	}
	ended := 0
	for _, ids := range [][]string{ch.Removed, ch.Disabled, ch.KindChanged} {
		for _, id := range ids {
			b.forget(id)
			if b.kick(id, true) {
				ended++
				b.stats.Revoked.Add(1)
			}
		}
	}
	ended += b.revalidate()
	b.mu.Lock()
	b.scheduleExpiryLocked()
	b.mu.Unlock()
	b.log.Info("device registry reloaded",
		"devices", b.reg.Len(), "added", len(ch.Added), "removed", ch.Removed,
		"disabled", ch.Disabled, "enabled", len(ch.Enabled), "rotated", ch.Rotated,
		"kind_changed", ch.KindChanged, "sessions_ended", ended)
	return nil
}

// recordAuth remembers how cl authenticated (hash "" and cert true for a
// client certificate without password; certUntil: the client
// certificate's expiry, zero without one). A certificate expiring before
// the armed expiry timer re-arms it, so the session ends when it expires.
func (b *Broker) recordAuth(cl *mqtt.Client, hash string, cert bool, certUntil time.Time) {
	b.authMu.Lock()
	b.auth[cl.ID] = authRecord{cl: cl, hash: hash, cert: cert, certUntil: certUntil}
	b.authMu.Unlock()
	if certUntil.IsZero() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started && (b.expiryAt.IsZero() || certUntil.Before(b.expiryAt)) {
		b.scheduleExpiryLocked()
	}
}

// forget drops the auth record of id, or only cl's if cl is not nil.
func (b *Broker) forget(id string, cl ...*mqtt.Client) {
	b.authMu.Lock()
	defer b.authMu.Unlock()
	if r, ok := b.auth[id]; ok && (len(cl) == 0 || r.cl == cl[0]) {
		delete(b.auth, id)
	}
}

// revalidate ends every live session whose credentials are no longer
// accepted (device gone or disabled, its secret's hash neither the current
// nor a still-valid previous one, or its client certificate expired).
// Stored sessions are kept. It returns the number of sessions ended.
func (b *Broker) revalidate() int {
	now := b.now()
	ended := 0
	for _, cl := range b.server.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		d, ok := b.reg.Lookup(cl.ID)
		b.authMu.Lock()
		rec, known := b.auth[cl.ID]
		b.authMu.Unlock()
		certOK := rec.certUntil.IsZero() || now.Before(rec.certUntil)
		if ok && !d.Disabled && known && rec.cl == cl && certOK && (rec.cert || d.Accepts(rec.hash, now)) {
			continue
		}
		b.log.Info("session ended: credentials no longer accepted", "client", cl.ID, "remote", cl.Net.Remote)
		b.forget(cl.ID, cl)
		// Counted before the DISCONNECT: whoever sees the session end
		// (the device, a test) then also sees the count (the expiry timer
		// runs this concurrently with them).
		b.stats.Revoked.Add(1)
		_ = b.server.DisconnectClient(cl, packets.ErrAdministrativeAction)
		ended++
	}
	return ended
}

// scheduleExpiryLocked arms a timer for the next credential expiry: the
// earliest previous_valid_until in the registry or client certificate
// expiry of a live session still ahead. It ends the sessions whose
// credentials just expired. b.mu must be held.
func (b *Broker) scheduleExpiryLocked() {
	if b.expiry != nil {
		b.expiry.Stop()
		b.expiry = nil
	}
	b.expiryAt = time.Time{}
	now := b.now()
	next, ok := b.reg.NextExpiry(now)
	b.authMu.Lock()
	for _, r := range b.auth {
		if u := r.certUntil; !u.IsZero() && u.After(now) && (!ok || u.Before(next)) {
			next, ok = u, true
		}
	}
	b.authMu.Unlock()
	if !ok || b.closed {
		return
	}
	b.expiryAt = next
	b.expiry = time.AfterFunc(expiryWait(now, next, b.lastExpire), b.expire)
}

// expiryMinGap spaces the expiry timer's runs. Each run scans every live
// session (revalidate, then the next expiry), so a fleet whose
// certificates expire one after another (100 000 within an hour) is
// checked at most once a second instead of once per certificate. A
// CONNECT is refused at the instant its credential expires; a live
// session ends at most this much later.
const expiryMinGap = time.Second

// expiryWait is how long the expiry timer waits at now for the expiry at
// next, when the timer last ran at last (zero: never): just past next,
// but not sooner than expiryMinGap after last.
func expiryWait(now, next, last time.Time) time.Duration {
	wait := next.Sub(now) + 10*time.Millisecond
	if !last.IsZero() {
		if gap := last.Add(expiryMinGap).Sub(now); wait < gap {
			wait = gap
		}
	}
	return wait
}

// expire is the expiry timer's work: it ends the sessions whose credentials
// expired and arms the timer for the next expiry.
func (b *Broker) expire() {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return
	}
	if n := b.revalidate(); n > 0 {
		b.log.Info("device credentials expired", "sessions_ended", n)
	}
	b.mu.Lock()
	b.lastExpire = b.now()
	b.scheduleExpiryLocked()
	b.mu.Unlock()
}

// Connected returns the number of connected, authenticated clients.
func (b *Broker) Connected() int {
	return int(atomic.LoadInt64(&b.server.Info.ClientsConnected))
}

// Stats returns the broker's live counters.
func (b *Broker) Stats() *Stats { return &b.stats }

// Server returns the underlying mochi server, for read-only inspection and
// inline subscriptions. Do not add hooks or listeners through it.
func (b *Broker) Server() *mqtt.Server { return b.server }

// Logger returns the broker's filtered logger (logfilter.go): payload
// bytes never pass, and lines with a "client" attribute are rate-limited
// per client, dropped lines counted in log_lines_suppressed. Hooks that
// log about devices (the gateway's ingest) should log through it.
func (b *Broker) Logger() *slog.Logger { return b.log }

// NewLogFilter returns the broker's log filter around next, for a
// component that logs about devices outside a Broker (logfilter.go). now
// is the rate limits' clock (nil: time.Now); suppressed, if not nil, is
// called for every dropped line.
func NewLogFilter(next slog.Handler, now func() time.Time, suppressed func()) slog.Handler {
	return newLogFilter(next, now, suppressed)
}

// Allowed reports whether device id is registered and enabled now: the
// check to repeat when something is done in a device's name after it
// connected (its Will, sent at disconnect or after a Will Delay).
func (b *Broker) Allowed(id string) bool {
	d, ok := b.reg.Lookup(id)
	return ok && !d.Disabled
}
