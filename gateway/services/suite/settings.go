package suite

import (
	"net/netip"
	"time"
)

// Settings are the suite's operator settings: the gateway's `services`
// configuration section (gateway/config embeds this struct, so the YAML
// keys and their defaults live here alone; deploy/gateway.sample.yaml
// lists them). Ranges are checked by gateway/config, which names the key.
// See docs/services.md.
type Settings struct {
	// Enabled starts the suite in the gateway (the suite ignores it).
	Enabled bool `yaml:"enabled"`

	// Registries. Empty paths start with empty registries (customers and
	// partners can still be registered through the API).
	CustomersFile string `yaml:"customers_file"`
	FeaturesFile  string `yaml:"features_file"`
	PartnersFile  string `yaml:"partners_file"`
	StationsFile  string `yaml:"stations_file"`

	// AdminToken is the bearer token of the services API's admin role
	// (partners' tokens are in partners.yaml as SHA-256 digests). Empty:
	// the API answers 401 to everything.
	AdminToken string `yaml:"admin_token"`

	// TokenKey is the HMAC key (at least 32 bytes) of the partners' driver
	// tokens, TokenKeyID its id (part of every token; change both to
	// rotate). Empty key: a random key is generated once and kept in
	// Config.TokenKeyFile (the gateway: <data_dir>/services/token.key).
	TokenKey   string `yaml:"token_key"`
	TokenKeyID string `yaml:"token_key_id"`

	// PartnerNATSUsers adds the partners' NATS users (partners.yaml) to the
	// embedded NATS server, each allowed to subscribe to partners.{id}.>.
	PartnerNATSUsers bool `yaml:"partner_nats_users"`

	// SchedulerInterval is the period of the seasonal feature scheduler.
	SchedulerInterval time.Duration `yaml:"scheduler_interval"`
	// SchedulerDaysPerTick > 0 makes the scheduler's clock advance that
	// many days per tick from today (demo of a simulated year); 0 uses the
	// real date.
	SchedulerDaysPerTick int `yaml:"scheduler_days_per_tick"`
	// FeaturesDryRun computes and logs feature changes without sending.
	FeaturesDryRun bool `yaml:"features_dry_run"`

	// CommandRetry: an unacknowledged command to an online vehicle is sent
	// again after this long.
	CommandRetry time.Duration `yaml:"command_retry"`

	// Webhooks: a trigger is dead-lettered after WebhookMaxAttempts failed
	// deliveries; the delay before retry n is WebhookBackoff·2^(n-1)
	// (at most 10 min).
	WebhookMaxAttempts int           `yaml:"webhook_max_attempts"`
	WebhookBackoff     time.Duration `yaml:"webhook_backoff"`
	// WebhookAllowCIDRs lists internal address ranges webhooks may connect
	// to anyway (e.g. ["10.20.0.0/16"] for a partner on a private link).
	// By default loopback, private, link-local (cloud metadata),
	// unspecified, multicast and other internal addresses are refused at
	// connect time. Override: comma-separated. Entries that do not parse
	// are ignored here (gateway/config refuses them).
	WebhookAllowCIDRs []string `yaml:"webhook_allow_cidrs"`
}

// DefaultSettings are the suite's defaults: the services section of the
// gateway's config.Default(). Start applies them to zero durations and
// counts and to an empty TokenKeyID.
func DefaultSettings() Settings {
	return Settings{
		Enabled:            true,
		TokenKeyID:         "k1",
		PartnerNATSUsers:   true,
		SchedulerInterval:  time.Hour,
		CommandRetry:       30 * time.Second,
		WebhookMaxAttempts: 8,
		WebhookBackoff:     time.Second,
	}
}

// applyDefaults fills the zero settings that have a non-zero default
// (booleans cannot be told from an explicit false and are left alone).
func (s *Settings) applyDefaults() {
	d := DefaultSettings()
	if s.TokenKeyID == "" {
		s.TokenKeyID = d.TokenKeyID
	}
	if s.SchedulerInterval <= 0 {
		s.SchedulerInterval = d.SchedulerInterval
	}
	if s.CommandRetry <= 0 {
		s.CommandRetry = d.CommandRetry
	}
	if s.WebhookMaxAttempts <= 0 {
		s.WebhookMaxAttempts = d.WebhookMaxAttempts
	}
	if s.WebhookBackoff <= 0 {
		s.WebhookBackoff = d.WebhookBackoff
	}
}

// WebhookAllow parses WebhookAllowCIDRs, skipping entries that do not parse.
func (s Settings) WebhookAllow() []netip.Prefix {
	var out []netip.Prefix
	for _, c := range s.WebhookAllowCIDRs {
		if p, err := netip.ParsePrefix(c); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}
