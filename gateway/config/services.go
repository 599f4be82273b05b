package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"time"
)

// Services configures the post-purchase services that run on NATS inside
// the gateway by default (gateway/services/...). See docs/services.md.
type Services struct {
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
	// rotate). Empty: a random key is generated once and kept in
	// <data_dir>/services/token.key.
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
	// connect time. Override: comma-separated.
	WebhookAllowCIDRs []string `yaml:"webhook_allow_cidrs"`

	// SchedulerClock is the seasonal feature scheduler's date source (its
	// start-up tick and API runs without a date included); nil: the system
	// clock. Not read from YAML: tests pin it (TELEGATE_TEST_DATE,
	// internal/testenv). The other services keep the system clock:
	// their times are compared with the gateway's event times (offer
	// expiry, webhook signatures), not calendar dates.
	SchedulerClock func() time.Time `yaml:"-" json:"-"`
}

// WebhookAllow parses WebhookAllowCIDRs (Validate guarantees they parse).
func (s Services) WebhookAllow() []netip.Prefix {
	var out []netip.Prefix
	for _, c := range s.WebhookAllowCIDRs {
		if p, err := netip.ParsePrefix(c); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// servicesDefaults is the services section of Default().
func servicesDefaults() Services {
	return Services{
		Enabled:            true,
		TokenKeyID:         "k1",
		PartnerNATSUsers:   true,
		SchedulerInterval:  time.Hour,
		CommandRetry:       30 * time.Second,
		WebhookMaxAttempts: 8,
		WebhookBackoff:     time.Second,
	}
}

var servicesIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$`)

// validate returns the services section's violations (ErrInvalid, key named).
func (s Services) validate() []error {
	var errs []error
	bad := func(key, msg string) { errs = append(errs, fmt.Errorf("%w: services.%s: %s", ErrInvalid, key, msg)) }
	if s.TokenKey != "" && len(s.TokenKey) < 32 {
		bad("token_key", "must be at least 32 bytes")
	}
	if !servicesIDRE.MatchString(s.TokenKeyID) {
		bad("token_key_id", "1-16 letters, digits, '-' or '_'")
	}
	if s.AdminToken != "" && len(s.AdminToken) < 16 {
		bad("admin_token", "must be at least 16 bytes")
	}
	if s.SchedulerInterval < time.Second || s.SchedulerInterval > 24*time.Hour {
		bad("scheduler_interval", "must be 1s..24h")
	}
	if s.SchedulerDaysPerTick < 0 || s.SchedulerDaysPerTick > 31 {
		bad("scheduler_days_per_tick", "must be 0..31")
	}
	if s.CommandRetry < time.Second || s.CommandRetry > time.Hour {
		bad("command_retry", "must be 1s..1h")
	}
	if s.WebhookMaxAttempts < 1 || s.WebhookMaxAttempts > 50 {
		bad("webhook_max_attempts", "must be 1..50")
	}
	for _, c := range s.WebhookAllowCIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			bad("webhook_allow_cidrs", fmt.Sprintf("%q is not a CIDR (e.g. 10.20.0.0/16)", c))
		}
	}
	if s.WebhookBackoff < 10*time.Millisecond || s.WebhookBackoff > 10*time.Minute {
		bad("webhook_backoff", "must be 10ms..10m")
	}
	return errs
}
