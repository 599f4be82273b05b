package config

// Dashboard configures the service-team web dashboard and JSON API
// (gateway/dashboard). Owned by the dashboard package; see docs/operations.md.
type Dashboard struct {
	Enabled bool `yaml:"enabled"`
}

func dashboardDefaults() Dashboard { return Dashboard{Enabled: true} }

func (d Dashboard) validate() []error { return nil }
