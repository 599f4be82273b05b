package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"time"

	"github.com/telegate/telegate/gateway/services/suite"
)

// Services configures the post-purchase services that run on NATS inside
// the gateway by default (gateway/services/...). Its keys and defaults are
// suite.Settings (gateway/services/suite/settings.go); see docs/services.md.
type Services struct {
	suite.Settings `yaml:",inline"`

	// SchedulerClock is the seasonal feature scheduler's date source (its
	// start-up tick and API runs without a date included); nil: the system
	// clock. Not read from YAML: tests pin it (TELEGATE_TEST_DATE,
	// internal/testenv). The other services keep the system clock:
	// their times are compared with the gateway's event times (offer
	// expiry, webhook signatures), not calendar dates.
	SchedulerClock func() time.Time `yaml:"-" json:"-"`
}

// servicesDefaults is the services section of Default().
func servicesDefaults() Services { return Services{Settings: suite.DefaultSettings()} }

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
