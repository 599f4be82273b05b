// Package natsbus owns the gateway's connection to NATS JetStream: it starts
// the embedded nats-server when no external URL is configured, declares the
// streams and key-value buckets the gateway uses, and publishes events with
// Nats-Msg-Id so that a redelivered event is deduplicated by the server.
package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/internal/loglimit"
)

// Errors returned by the bus.
var (
	ErrClosed       = errors.New("natsbus: closed")
	ErrNotReady     = errors.New("natsbus: embedded server not ready")
	ErrPublishNack  = errors.New("natsbus: publish not acknowledged")
	ErrNotConnected = errors.New("natsbus: not connected")
)

// Config configures the bus: the operator Settings (the gateway's nats
// section, which config.NATS aliases) and what the embedding process
// supplies.
type Config struct {
	Settings
	Name string // client connection name
	// CredentialsFile keeps the embedded server's generated internal
	// passwords (0600; default StoreDir/credentials.json).
	CredentialsFile string
	// Partners are the partner accounts the embedded server starts with
	// (SetPartners replaces them at run time).
	Partners []PartnerAccount
	// Ingest, if set, declares the INGEST stream and its consumers (the
	// "jetstream" durability mode, DeclareIngest).
	Ingest *IngestStream
}

// StreamSpec describes one stream the gateway declares.
type StreamSpec struct {
	Name     string
	Subjects []string
	Desc     string
}

// Streams are the JetStream streams of the product (see docs/data-model.md).
var Streams = []StreamSpec{
	{StreamDTC, []string{"telemetry.dtc.>"}, "Diagnostic trouble codes raised / cleared"},
	{StreamCharging, []string{"charging.>"}, "Charging session and connector events"},
	{StreamVehicle, []string{"vehicle.>"}, "Vehicle connectivity, lifecycle, commands and acks"},
	{StreamProfile, []string{"profile.>"}, "Customer profile events"},
	{StreamPartners, []string{"partners.>"}, "Partner triggers"},
	{StreamDeadLetter, []string{"deadletter.>"}, "Rejected device payloads with the reason"},
}

// KV buckets used by the gateway.
const (
	BucketDTCState = "dtc_state"
	// BucketSessions holds which replica has each device's MQTT session
	// and each charging station's OCPP socket (gateway/cluster/presence;
	// 24h TTL, one value per key).
	BucketSessions = "sessions"
	// BucketDashboardSessions is auth.SessionBucket (declared by the
	// dashboard with its own user).
	BucketDashboardSessions = "dashboard_sessions"
	// BucketOCPPTxn is the OCPP central system's transaction table
	// (gateway/ocpp; shared by the replicas, kept across restarts; a key
	// expires OCPPTxnTTL after its last change).
	BucketOCPPTxn = "ocpp_txn"
)

// OCPPTxnTTL is how long the OCPP transaction table remembers a
// transaction after its last message: long enough for a station's queue of
// offline messages (docs/ocpp.md).
const OCPPTxnTTL = 7 * 24 * time.Hour

// SubjectLive is the prefix of the live frames shared between replicas
// (live.{vin}, core NATS, no persistence; gateway/dashboard/livebus).
const SubjectLive = "live."

// Bus is a connection to NATS (and, when embedded, the server itself).
type Bus struct {
	cfg  Config
	log  *slog.Logger
	srv  *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	once sync.Once
	url  string
	// asyncLog limits the asynchronous-error lines per role (a role
	// refused in a loop must not flood the log); set by Open.
	asyncLog *loglimit.Limiter

	auth      authState
	credsPath string // embedded: the internal credentials file
}

// Open starts the embedded server if cfg.URL is empty, connects, and declares
// streams and buckets. The connection reconnects forever; publishes made while
// disconnected fail and are retried by the caller.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Bus, error) {
	if log == nil {
		log = slog.Default()
	}
	d := DefaultSettings() // MaxAge 0 stays: unbounded
	if cfg.Replicas < 1 {
		cfg.Replicas = d.Replicas
	}
	if cfg.DedupWindow <= 0 {
		cfg.DedupWindow = d.DedupWindow
	}
	b := &Bus{cfg: cfg, log: log, url: cfg.URL, asyncLog: loglimit.New(loglimit.Config{})}
	if cfg.URL == "" {
		if err := b.startEmbedded(); err != nil {
			return nil, err
		}
	}
	nc, err := b.connect(RoleGateway)
	if err != nil {
		b.shutdownServer()
		return nil, err
	}
	b.nc = nc
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("natsbus: jetstream: %w", err)
	}
	b.js = js
	if err := b.declareRetrying(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// Declaring the streams and buckets at start retries what a cluster answers
// while it settles (a node restarting, a leader being elected: requests
// time out, get "JetStream system temporarily unavailable" or "no suitable
// peers for placement"), for up to declareFor, so that a replica starting
// meanwhile does not exit. A permanent answer (a conflicting stream, no
// permission) fails at once.
const declareFor = 90 * time.Second

// declareAttempt bounds each attempt (a variable for tests).
var declareAttempt = 15 * time.Second

func (b *Bus) declareRetrying(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, declareFor)
	defer cancel()
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, acancel := context.WithTimeout(ctx, declareAttempt)
		err := b.declare(actx)
		acancel()
		if err == nil || !transientJSError(err) || ctx.Err() != nil {
			return err
		}
		b.log.Warn("natsbus: declaring streams failed; retrying", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// jsErrNoPeers is JetStream's "no suitable peers for placement" (a
// replicated stream or bucket created while a node is offline).
const jsErrNoPeers = 10005

// transientJSError reports an error a JetStream cluster gives while it
// settles: a timeout, no responders, a 503 ("temporarily unavailable"), or
// no peers for placement (a node is offline).
func transientJSError(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.Code == 503 || apiErr.ErrorCode == jsErrNoPeers)
}

// StartEmbedded starts an in-process nats-server with JetStream (file store)
// on addr ("127.0.0.1:0" picks a free port) and no accounts: a stand-in for
// an external server in tests (whose authentication is its operator's
// configuration). The gateway's own embedded server is started by Open,
// with accounts and no anonymous access.
func StartEmbedded(addr, storeDir string, maxStore int64) (*server.Server, error) {
	opts, err := embeddedOptions(addr, storeDir, maxStore)
	if err != nil {
		return nil, err
	}
	return startServer(opts)
}

func embeddedOptions(addr, storeDir string, maxStore int64) (*server.Options, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("natsbus: embedded addr %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("natsbus: embedded port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName:        "telegate-embedded",
		Host:              host,
		Port:              port,
		JetStream:         true,
		StoreDir:          filepath.Clean(storeDir),
		JetStreamMaxStore: maxStore,
		NoSigs:            true,
		NoLog:             true,
		MaxPayload:        1 << 20,
		// Outbound bytes buffered per client before the server cuts a
		// slow consumer (a partner that stops reading cannot make the
		// server hold more than this for it).
		MaxPending: 8 << 20,
	}
	return opts, nil
}

func startServer(opts *server.Options) (*server.Server, error) {
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsbus: embedded server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(15 * time.Second) {
		srv.Shutdown()
		return nil, ErrNotReady
	}
	return srv, nil
}

func (b *Bus) declare(ctx context.Context) error {
	for _, s := range Streams {
		_, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:        s.Name,
			Description: s.Desc,
			Subjects:    s.Subjects,
			Storage:     jetstream.FileStorage,
			Replicas:    b.cfg.Replicas,
			Duplicates:  b.cfg.DedupWindow,
			MaxAge:      b.cfg.MaxAge,
			Discard:     jetstream.DiscardOld,
		})
		if err != nil {
			return fmt.Errorf("natsbus: stream %s: %w", s.Name, err)
		}
	}
	_, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketDTCState,
		Description: "Open DTCs per vehicle, as last seen by the gateway",
		Storage:     jetstream.FileStorage,
		Replicas:    b.cfg.Replicas,
		History:     1,
	})
	if err != nil {
		return fmt.Errorf("natsbus: bucket %s: %w", BucketDTCState, err)
	}
	_, err = b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketSessions,
		Description: "Which gateway replica holds each device's MQTT session (newest claim wins)",
		Storage:     jetstream.FileStorage,
		Replicas:    b.cfg.Replicas,
		History:     1,
		TTL:         24 * time.Hour,
	})
	if err != nil {
		return fmt.Errorf("natsbus: bucket %s: %w", BucketSessions, err)
	}
	_, err = b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketOCPPTxn,
		Description: "OCPP transactions per station: start register, last seq, stopped (replays are no-ops)",
		Storage:     jetstream.FileStorage,
		Replicas:    b.cfg.Replicas,
		History:     1,
		TTL:         OCPPTxnTTL,
	})
	if err != nil {
		return fmt.Errorf("natsbus: bucket %s: %w", BucketOCPPTxn, err)
	}
	if b.cfg.Ingest != nil {
		return DeclareIngest(ctx, b.js, *b.cfg.Ingest)
	}
	return nil
}

// Conn is the bus's own connection (RoleGateway on the embedded server:
// it declares the bus's streams and buckets, and reads or writes no
// message). Components use their own (Client).
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream is the JetStream context of Conn.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// URL is the server URL the bus connected to (the embedded server's when
// embedded).
func (b *Bus) URL() string { return b.url }

// Embedded is the in-process server, or nil.
func (b *Bus) Embedded() *server.Server { return b.srv }

// Ready reports whether the connection is up.
func (b *Bus) Ready() error {
	if b.nc == nil || b.nc.IsClosed() {
		return ErrClosed
	}
	if !b.nc.IsConnected() {
		return ErrNotConnected
	}
	return nil
}

// Close drains the connection (flushing pending publishes) and shuts the
// embedded server down. Safe to call more than once.
func (b *Bus) Close() error {
	b.once.Do(func() {
		if b.nc != nil {
			if b.nc.IsConnected() {
				done := make(chan struct{})
				b.nc.SetClosedHandler(func(*nats.Conn) { close(done) })
				if err := b.nc.Drain(); err == nil {
					select {
					case <-done:
					case <-time.After(10 * time.Second):
					}
				}
			}
			b.nc.Close()
		}
		b.shutdownServer()
	})
	return nil
}

func (b *Bus) shutdownServer() {
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}

// OpsCredentials is the operator's user and password on the embedded server
// (for the nats CLI); ok is false with an external server.
func (b *Bus) OpsCredentials() (user, password string, ok bool) {
	if b.srv == nil {
		return "", "", false
	}
	return RoleOps, b.auth.creds.Passwords[RoleOps], true
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
