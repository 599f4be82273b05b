package config

import (
	"fmt"
	"time"
)

// Dashboard configures the service-team web dashboard and JSON API
// (gateway/dashboard). See docs/dashboard.md.
type Dashboard struct {
	// Enabled mounts the dashboard and API on the operations listener
	// (http.addr). It also needs UsersFile: without users nobody could log
	// in, so the dashboard is then not mounted (a warning is logged).
	Enabled bool `yaml:"enabled"`
	// UsersFile lists the service-team users (name, role, bcrypt hash).
	UsersFile string `yaml:"users_file"`
	// SessionTTL is the absolute lifetime of a login session.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// SessionIdle ends a session not used for this long.
	SessionIdle time.Duration `yaml:"session_idle"`
	// MaxSessions bounds the number of live sessions (oldest evicted).
	MaxSessions int `yaml:"max_sessions"`
	// MaxSessionsPerUser bounds one user's live sessions (their own
	// oldest is evicted, never another user's).
	MaxSessionsPerUser int `yaml:"max_sessions_per_user"`
	// SecureCookies sets the Secure attribute on the session cookie (set it
	// when the gateway is served over HTTPS, e.g. behind a TLS proxy).
	SecureCookies bool `yaml:"secure_cookies"`
	// MaxHistoryRange is the longest signal-history range the API accepts.
	MaxHistoryRange time.Duration `yaml:"max_history_range"`
	// MaxPoints bounds the points per series of a history answer; the API
	// refuses a window that would produce more.
	MaxPoints int `yaml:"max_points"`
	// MaxPageSize bounds page_size on paginated lists.
	MaxPageSize int `yaml:"max_page_size"`
	// InitLookback is how far back the fleet state looks in InfluxDB at
	// start (last connectivity, last diagnostics report, DTC first seen).
	InitLookback time.Duration `yaml:"init_lookback"`
	// MaxLiveStreams bounds concurrent live (server-sent events) streams.
	MaxLiveStreams int `yaml:"max_live_streams"`
	// MaxLiveStreamsPerUser bounds one user's concurrent live streams
	// (429 for that user beyond it; others are not affected).
	MaxLiveStreamsPerUser int `yaml:"max_live_streams_per_user"`
	// QueryTimeout bounds one InfluxDB (Flux) query made by the API.
	QueryTimeout time.Duration `yaml:"query_timeout"`
}

// dashboardDefaults is the dashboard section of Default().
func dashboardDefaults() Dashboard {
	return Dashboard{
		Enabled:               true,
		SessionTTL:            12 * time.Hour,
		SessionIdle:           time.Hour,
		MaxSessions:           1000,
		MaxSessionsPerUser:    10,
		MaxHistoryRange:       31 * 24 * time.Hour,
		MaxPoints:             2000,
		MaxPageSize:           500,
		InitLookback:          30 * 24 * time.Hour,
		MaxLiveStreams:        64,
		MaxLiveStreamsPerUser: 8,
		QueryTimeout:          15 * time.Second,
	}
}

// validate returns the dashboard section's violations (ErrInvalid, key named).
func (d Dashboard) validate() []error {
	var errs []error
	bad := func(key, why string) {
		errs = append(errs, fmt.Errorf("%w: dashboard.%s: %s", ErrInvalid, key, why))
	}
	if d.SessionTTL < time.Minute || d.SessionTTL > 30*24*time.Hour {
		bad("session_ttl", "must be between 1m and 720h")
	}
	if d.SessionIdle < time.Minute || d.SessionIdle > d.SessionTTL {
		bad("session_idle", "must be at least 1m and at most session_ttl")
	}
	if d.MaxSessions < 1 || d.MaxSessions > 1_000_000 {
		bad("max_sessions", "must be 1..1000000")
	}
	if d.MaxSessionsPerUser < 1 || d.MaxSessionsPerUser > d.MaxSessions {
		bad("max_sessions_per_user", "must be 1..max_sessions")
	}
	if d.MaxLiveStreamsPerUser < 1 || d.MaxLiveStreamsPerUser > d.MaxLiveStreams {
		bad("max_live_streams_per_user", "must be 1..max_live_streams")
	}
	if d.MaxHistoryRange < time.Minute || d.MaxHistoryRange > 366*24*time.Hour {
		bad("max_history_range", "must be between 1m and 8784h")
	}
	if d.MaxPoints < 10 || d.MaxPoints > 100_000 {
		bad("max_points", "must be 10..100000")
	}
	if d.MaxPageSize < 1 || d.MaxPageSize > 10_000 {
		bad("max_page_size", "must be 1..10000")
	}
	if d.InitLookback < time.Hour || d.InitLookback > 366*24*time.Hour {
		bad("init_lookback", "must be between 1h and 8784h")
	}
	if d.MaxLiveStreams < 1 || d.MaxLiveStreams > 10_000 {
		bad("max_live_streams", "must be 1..10000")
	}
	if d.QueryTimeout < time.Second || d.QueryTimeout > 5*time.Minute {
		bad("query_timeout", "must be between 1s and 5m")
	}
	return errs
}
