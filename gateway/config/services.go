package config

// Services configures the post-purchase services that run on NATS inside
// the gateway by default (gateway/services/...). See docs/services.md.
type Services struct {
	Enabled bool `yaml:"enabled"`
}

func servicesDefaults() Services { return Services{Enabled: true} }

func (s Services) validate() []error { return nil }
