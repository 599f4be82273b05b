package natsbus

import (
	"time"

	"github.com/telegate/telegate/internal/bytesize"
)

// Settings are the bus's operator settings: the gateway's `nats`
// configuration section (gateway/config aliases this struct, so the YAML
// keys and their defaults live here alone; Config embeds it). Ranges are
// checked by gateway/config, which names the key.
type Settings struct {
	// URL of an external server or cluster (comma-separated). Empty starts
	// the embedded server.
	URL string `yaml:"url"`
	// CredsFile (JWT + nkey seed) or User/Password authenticate to an
	// external server.
	CredsFile string `yaml:"creds_file"`
	User      string `yaml:"user"`
	Password  string `yaml:"password"`
	// Embedded server settings (used when URL is empty).
	Embedded EmbeddedSettings `yaml:"embedded"`
	// Replicas for the JetStream streams/buckets the gateway creates
	// (0: 1).
	Replicas int `yaml:"replicas"`
	// DedupWindow is the streams' Nats-Msg-Id duplicate window (0: the
	// default).
	DedupWindow time.Duration `yaml:"dedup_window"`
	// MaxAge bounds the streams' message age (0: unbounded).
	MaxAge time.Duration `yaml:"max_age"`
}

// EmbeddedSettings configure the in-process nats-server.
type EmbeddedSettings struct {
	Addr string `yaml:"addr"`
	// StoreDir is the JetStream store (the gateway: empty means
	// <data_dir>/nats).
	StoreDir string        `yaml:"store_dir"`
	MaxStore bytesize.Size `yaml:"max_store"`
	// Limits of each partner's NATS account (0: DefaultPartnerLimits).
	PartnerMaxConnections   int           `yaml:"partner_max_connections"`
	PartnerMaxSubscriptions int           `yaml:"partner_max_subscriptions"`
	PartnerMaxPayload       bytesize.Size `yaml:"partner_max_payload"`
}

// DefaultSettings are the bus's defaults: the nats section of the gateway's
// config.Default(). The partner limits stay 0 there, meaning
// DefaultPartnerLimits (applied by PartnerLimits.WithDefaults).
func DefaultSettings() Settings {
	return Settings{
		Embedded: EmbeddedSettings{
			Addr:     "127.0.0.1:4222",
			MaxStore: 10 << 30,
		},
		Replicas:    1,
		DedupWindow: 10 * time.Minute,
		MaxAge:      7 * 24 * time.Hour,
	}
}

// PartnerLimits are the partner account limits these settings give (zero
// fields: DefaultPartnerLimits, filled where they are used).
func (e EmbeddedSettings) PartnerLimits() PartnerLimits {
	return PartnerLimits{MaxConnections: e.PartnerMaxConnections, MaxSubscriptions: e.PartnerMaxSubscriptions,
		MaxPayload: int(e.PartnerMaxPayload)}
}
