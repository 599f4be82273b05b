// Package config loads the gateway's YAML configuration.
//
// Loading is strict: unknown keys, wrong types and invalid values are errors.
// Every field has a documented default (see Default and
// deploy/gateway.sample.yaml). Any leaf value can be overridden by an
// environment variable TELEGATE_<SECTION>_<KEY> (upper case, dots become
// underscores, e.g. TELEGATE_INFLUX_URL) or by a `-set section.key=value`
// flag; flags win over the environment, which wins over the file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/telegate/telegate/broker"
	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/influx/localserver"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/sink/influxsink"
	"github.com/telegate/telegate/gateway/spool"
	"github.com/telegate/telegate/internal/bytesize"
)

// Errors returned by Load and Validate.
var (
	ErrInvalid     = errors.New("config: invalid value")
	ErrUnknownKey  = errors.New("config: unknown key")
	ErrBadOverride = errors.New("config: bad override")
)

// Config is the whole gateway configuration.
type Config struct {
	// DataDir holds the spool, the embedded NATS store and other state.
	DataDir string `yaml:"data_dir"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text or json.
	LogFormat string `yaml:"log_format"`
	// DevicesFile is the device registry (ids, kinds, bcrypt secret hashes).
	DevicesFile string `yaml:"devices_file"`

	HTTP   HTTP   `yaml:"http"`
	MQTT   MQTT   `yaml:"mqtt"`
	Spool  Spool  `yaml:"spool"`
	Influx Influx `yaml:"influx"`
	NATS   NATS   `yaml:"nats"`
	Ingest Ingest `yaml:"ingest"`

	Dashboard Dashboard `yaml:"dashboard"`
	Services  Services  `yaml:"services"`
	OCPP      OCPP      `yaml:"ocpp"`
	Cluster   Cluster   `yaml:"cluster"`
}

// HTTP is the operations/API listener.
type HTTP struct {
	Addr string `yaml:"addr"`
	// AllowedHosts are the host names (or addresses) requests may name in
	// their Host header, without port; anything else gets 421 Misdirected
	// Request (stops DNS rebinding against /metrics and the APIs). Empty:
	// the listen address's host plus localhost, 127.0.0.1 and ::1. List
	// the gateway's DNS name here when it is reached by name.
	AllowedHosts []string `yaml:"allowed_hosts"`
	// Pprof serves Go's /debug/pprof/ profiles on this listener when true
	// (off by default; no auth of its own, docs/operations.md#profiling).
	Pprof bool `yaml:"pprof"`
}

// MQTT configures the embedded broker: it is broker.Config, which carries
// the YAML keys and the defaults (broker.DefaultConfig); see docs/broker.md
// for the rationale behind each limit.
type MQTT = broker.Config

// Spool configures the durable on-disk write-ahead spool: it is
// spool.Settings, which carries the YAML keys and the defaults
// (spool.DefaultSettings).
type Spool = spool.Settings

// Influx configures the InfluxDB sink.
//
// Credentials (docs/operations.md): Token is an API token for 2.x/3.x or
// "user:password" for 1.x; Username+Password are the 1.x alternative;
// CredentialsFile reads them from a 0600 JSON file (influx.Credentials:
// writer, optional reader). QueryToken, if set, is used by the dashboard's
// queries instead (a read-only user). With Local.Enabled the local server's
// generated credentials are used and these must be empty.
type Influx struct {
	URL             string `yaml:"url"`
	Token           string `yaml:"token"`
	Username        string `yaml:"username"`
	Password        string `yaml:"password"`
	CredentialsFile string `yaml:"credentials_file"`
	QueryToken      string `yaml:"query_token"`
	Org             string `yaml:"org"`
	Database        string `yaml:"database"`
	RetentionPolicy string `yaml:"retention_policy"`
	// CreateDatabase creates the database at start-up (InfluxDB 1.x only).
	CreateDatabase bool `yaml:"create_database"`
	// BatchLines, BatchBytes, WriteConcurrency: the sink's
	// (influxsink.Settings).
	influxsink.Settings `yaml:",inline"`
	// Timeout bounds each InfluxDB request (default influx.DefaultTimeout).
	Timeout time.Duration `yaml:"timeout"`
	Local   LocalInflux   `yaml:"local"`
	// Version, WriteBucket, QueryAuthScheme: see influxversion.go.
	Version         int    `yaml:"version"`
	WriteBucket     string `yaml:"bucket"`
	QueryAuthScheme string `yaml:"query_auth_scheme"`
}

// LocalInflux makes the gateway start and stop a local influxd child
// process (the one `make influxd` installs into bin/): it is
// localserver.Settings, which carries the keys and the defaults.
type LocalInflux = localserver.Settings

// NATS configures the event bus: it is natsbus.Settings, which carries the
// YAML keys and the defaults (natsbus.DefaultSettings; the partner account
// limits' 0 means natsbus.DefaultPartnerLimits).
type NATS = natsbus.Settings

// EmbeddedNATS configures the in-process nats-server (nats.embedded).
type EmbeddedNATS = natsbus.EmbeddedSettings

// Ingest configures decoding and validation.
type Ingest struct {
	// MaxClockSkew: frames stamped further in the future than this (device
	// clock) are dead-lettered.
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
	// MinTimestamp: frames stamped before this date are dead-lettered.
	MinTimestamp string `yaml:"min_timestamp"`
	// Durability is where an accepted publish is made durable before its
	// PUBACK: DurabilitySpool (the local fsynced spool, for one box) or
	// DurabilityJetStream (the replicated INGEST stream, quorum-acked; the
	// sinks become shared durable consumers any replica runs).
	Durability string `yaml:"durability"`
	// StreamMaxBytes bounds the INGEST stream (jetstream mode): when the
	// sinks' backlog reaches it, QoS 1 publishes are refused like a full
	// spool (PUBACK 0x97 / 3.1.1 disconnect).
	StreamMaxBytes ByteSize `yaml:"stream_max_bytes"`
	// MaxInFlight bounds the publishes appended to JetStream and not yet
	// acknowledged (jetstream mode); beyond it appends are refused as full.
	MaxInFlight int `yaml:"max_in_flight"`
	// AckWait (jetstream mode) is how long a record a sink fetched and did
	// not acknowledge (its replica died) waits before JetStream redelivers
	// it to another replica.
	AckWait time.Duration `yaml:"ack_wait"`
}

// Durability modes (ingest.durability).
const (
	DurabilitySpool     = "spool"
	DurabilityJetStream = "jetstream"
)

// Default returns the configuration used when a key is absent. It assembles
// the components' own defaults (mqtt: broker.DefaultConfig, spool:
// spool.DefaultSettings, nats: natsbus.DefaultSettings, influx batches:
// influxsink.DefaultSettings, influx.local: localserver.DefaultSettings,
// services: suite.DefaultSettings; docs/operations.md) with the gateway's
// own (the rest; dashboard, OCPP and cluster from their files' *Defaults
// functions). deploy/gateway.sample.yaml must load to exactly this
// (TestSampleIsDefaults).
func Default() Config {
	return Config{
		DataDir:     "var/gateway",
		LogLevel:    "info",
		LogFormat:   "text",
		DevicesFile: "var/devices.yaml",
		HTTP:        HTTP{Addr: "127.0.0.1:8080"},
		MQTT:        broker.DefaultConfig(),
		Spool:       spool.DefaultSettings(),
		Influx: Influx{
			URL:             "http://127.0.0.1:8086",
			Database:        "telemetry",
			RetentionPolicy: "autogen",
			CreateDatabase:  true,
			Settings:        influxsink.DefaultSettings(),
			Timeout:         influx.DefaultTimeout,
			Local:           localserver.DefaultSettings(),
		},
		NATS: natsbus.DefaultSettings(),
		Ingest: Ingest{
			MaxClockSkew:   time.Hour,
			MinTimestamp:   "2000-01-01T00:00:00Z",
			Durability:     DurabilitySpool,
			StreamMaxBytes: 1 << 30,
			MaxInFlight:    8192,
			AckWait:        30 * time.Second,
		},
		Dashboard: dashboardDefaults(),
		Services:  servicesDefaults(),
		OCPP:      ocppDefaults(),
		Cluster:   clusterDefaults(),
	}
}

// Load reads the YAML file at path (empty path: defaults only), applies
// environment overrides from env (a list of KEY=VALUE, usually os.Environ())
// and then the `section.key=value` overrides, and validates the result.
func Load(path string, env []string, overrides []string) (Config, error) {
	cfg := Default()
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
		defer f.Close()
		if err := Decode(f, &cfg); err != nil {
			return cfg, fmt.Errorf("config %s: %w", path, err)
		}
	}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		if err := setByEnv(&cfg, strings.TrimPrefix(k, EnvPrefix), v); err != nil {
			return cfg, fmt.Errorf("environment %s: %w", k, err)
		}
	}
	for _, o := range overrides {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			return cfg, fmt.Errorf("%w: %q: want section.key=value", ErrBadOverride, o)
		}
		if err := Set(&cfg, k, v); err != nil {
			return cfg, err
		}
	}
	return cfg, cfg.Validate()
}

// Decode strictly decodes YAML from r into cfg, which holds the defaults:
// keys the YAML omits keep them. It reads at most 1 MiB; empty input leaves
// cfg unchanged. An unknown key is ErrUnknownKey, a wrong type or bad
// syntax ErrInvalid; Decode does not Validate.
func Decode(r io.Reader, cfg *Config) error {
	data, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if strings.Contains(err.Error(), "not found in type") {
			return fmt.Errorf("%w: %w", ErrUnknownKey, err)
		}
		return fmt.Errorf("%w: %w", ErrInvalid, err) // wrong type or syntax
	}
	return nil
}

// Validate checks ranges and cross-field rules and returns every violation
// (errors.Join), each wrapping ErrInvalid and naming its dotted key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, why string) { errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalid, key, why)) }
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "want debug, info, warn or error")
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log_format", "want text or json")
	}
	if c.DataDir == "" {
		bad("data_dir", "must be set")
	}
	if c.DevicesFile == "" {
		bad("devices_file", "must be set")
	}
	if c.MQTT.TCPAddr == "" && c.MQTT.WSAddr == "" && c.MQTT.TLSAddr == "" {
		bad("mqtt", "at least one listener (tcp_addr, ws_addr, tls_addr) is needed")
	}
	if c.MQTT.TLSAddr != "" && (c.MQTT.TLSCertFile == "" || c.MQTT.TLSKeyFile == "") {
		bad("mqtt.tls_addr", "needs tls_cert_file and tls_key_file")
	}
	if c.MQTT.MaxPacketSize < 256 || c.MQTT.MaxPacketSize > 256<<20 {
		bad("mqtt.max_packet_size", "must be between 256 B and 256 MiB")
	}
	if c.MQTT.ReadBatch < 0 || c.MQTT.ReadBatch > time.Second {
		bad("mqtt.read_batch", "must be 0 (off) to 1s")
	}
	if c.MQTT.ReceiveMaximum < 1 { // the upper bound 65535 is the uint16 type's
		bad("mqtt.receive_maximum", "must be 1..65535")
	}
	if c.MQTT.MaxInflight < 1 {
		bad("mqtt.max_inflight", "must be 1..65535")
	}
	if c.MQTT.MaxClientWritesPending < 1 || c.MQTT.MaxClientWritesPending > 1<<20 {
		bad("mqtt.max_client_writes_pending", "must be 1..1048576")
	}
	if c.MQTT.ConnectTimeout <= 0 {
		bad("mqtt.connect_timeout", "must be positive")
	}
	if c.MQTT.MaxClients < 1 {
		bad("mqtt.max_clients", "must be positive")
	}
	if c.MQTT.MaxKeepalive < time.Second || c.MQTT.MaxKeepalive > 65535*time.Second {
		bad("mqtt.max_keepalive", "must be 1s..65535s")
	}
	if c.MQTT.MaxConnections < 0 {
		bad("mqtt.max_connections", "must not be negative (0: max_clients + max_clients/8 + 64)")
	}
	if c.MQTT.SessionExpiry < 0 || c.MQTT.SessionExpiry > math.MaxUint32*time.Second {
		bad("mqtt.session_expiry", "must be 0..4294967295s")
	}
	if c.MQTT.RatePerDevice <= 0 || c.MQTT.Burst < 1 {
		bad("mqtt.rate_per_device", "rate and burst must be positive")
	}
	if c.Spool.MaxBytes < 1<<20 {
		bad("spool.max_bytes", "must be at least 1 MiB")
	}
	if c.Spool.SegmentBytes < 64<<10 || c.Spool.SegmentBytes > c.Spool.MaxBytes {
		bad("spool.segment_bytes", "must be at least 64 KiB and at most max_bytes")
	}
	if c.Spool.AckTimeout <= 0 {
		bad("spool.ack_timeout", "must be positive")
	}
	if c.Spool.SyncDelay < 0 || c.Spool.SyncDelay > time.Second {
		bad("spool.sync_delay", "must be 0 to 1s (it adds to every PUBACK's latency)")
	} else if c.Spool.AckTimeout > 0 && c.Spool.SyncDelay >= c.Spool.AckTimeout {
		bad("spool.sync_delay", "must be shorter than spool.ack_timeout (a publish waiting for the delay would be refused)")
	}
	if c.Spool.SyncRecords < 0 {
		bad("spool.sync_records", "must be ≥ 0")
	}
	if c.Spool.SyncMinRate < 0 || c.Spool.SyncMinRate != c.Spool.SyncMinRate {
		bad("spool.sync_min_rate", "must be ≥ 0 records/s")
	}
	if !strings.HasPrefix(c.Influx.URL, "http://") && !strings.HasPrefix(c.Influx.URL, "https://") {
		bad("influx.url", "must be an http(s) URL")
	}
	if c.Influx.Database == "" {
		bad("influx.database", "must be set")
	}
	if c.Influx.BatchLines < 1 || c.Influx.BatchBytes < 4096 {
		bad("influx.batch_lines", "batch_lines must be ≥ 1 and batch_bytes ≥ 4 KiB")
	}
	if c.Influx.Linger < time.Millisecond || c.Influx.Linger > influxsink.MaxLinger {
		bad("influx.linger", "must be between 1ms and 10s")
	}
	if c.Influx.WriteConcurrency < 1 || c.Influx.WriteConcurrency > 64 {
		bad("influx.write_concurrency", "must be 1 to 64")
	}
	if c.Influx.Timeout <= 0 {
		bad("influx.timeout", "must be positive")
	}
	if c.Influx.Local.Enabled && (c.Influx.Local.Binary == "" || c.Influx.Local.Dir == "") {
		bad("influx.local", "binary and dir are needed when enabled")
	}
	errs = append(errs, c.Influx.validateAuth()...)
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		bad("nats.replicas", "must be 1..5")
	}
	if c.NATS.DedupWindow < time.Second {
		bad("nats.dedup_window", "must be at least 1s")
	}
	if e := c.NATS.Embedded; e.PartnerMaxConnections < 0 || e.PartnerMaxSubscriptions < 0 || e.PartnerMaxPayload < 0 {
		bad("nats.embedded.partner_max_*", "must not be negative")
	}
	if c.NATS.URL == "" && c.NATS.Embedded.Addr == "" {
		bad("nats", "either url or embedded.addr must be set")
	}
	if c.Ingest.MaxClockSkew <= 0 {
		bad("ingest.max_clock_skew", "must be positive")
	}
	if _, err := time.Parse(time.RFC3339, c.Ingest.MinTimestamp); err != nil {
		bad("ingest.min_timestamp", "must be RFC 3339")
	}
	if c.Ingest.Durability != DurabilitySpool && c.Ingest.Durability != DurabilityJetStream {
		bad("ingest.durability", "must be spool or jetstream")
	}
	if c.Ingest.StreamMaxBytes < 1<<20 {
		bad("ingest.stream_max_bytes", "must be at least 1 MiB")
	}
	if c.Ingest.AckWait < time.Second {
		bad("ingest.ack_wait", "must be at least 1s")
	}
	if c.Ingest.MaxInFlight < 1 {
		bad("ingest.max_in_flight", "must be positive")
	}
	for _, h := range c.HTTP.AllowedHosts {
		if h == "" || strings.ContainsAny(h, "/ \t") || strings.Count(h, ":") == 1 {
			bad("http.allowed_hosts", "entries are host names or addresses without port")
		}
	}
	errs = append(errs, c.Dashboard.validate()...)
	errs = append(errs, c.Services.validate()...)
	errs = append(errs, c.OCPP.validate()...)
	errs = append(errs, c.Cluster.validate()...)
	return errors.Join(errs...)
}

// MinTime returns Ingest.MinTimestamp parsed (Validate guarantees it parses).
func (i Ingest) MinTime() time.Time {
	t, _ := time.Parse(time.RFC3339, i.MinTimestamp)
	return t
}

// Bucket is the InfluxDB bucket name: database/retention-policy (1.8 form)
// or the database alone when no retention policy is set.
func (i Influx) Bucket() string {
	if i.RetentionPolicy == "" {
		return i.Database
	}
	return i.Database + "/" + i.RetentionPolicy
}

// ByteSize is a size in bytes; YAML accepts an integer or a string with a
// unit suffix: B, KiB, MiB, GiB (also KB, MB, GB as powers of 1000).
type ByteSize = bytesize.Size

// ParseByteSize parses "1048576", "64KiB", "1 GiB", "10MB".
func ParseByteSize(s string) (ByteSize, error) {
	b, err := bytesize.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return b, nil
}
