package config

import (
	"fmt"
	"time"

	"github.com/telegate/telegate/gateway/ocpp/wsmux"
)

// OCPP configures the OCPP 1.6J / 2.0.1 central system (gateway/ocpp,
// docs/ocpp.md). Off by default.
type OCPP struct {
	Enabled bool `yaml:"enabled"`
	// Listen is the WebSocket listener; charge points connect to
	// ws(s)://<listen>/ocpp/{chargePointId}.
	Listen string `yaml:"listen"`
	// SecurityProfile: 1 basic auth over plain ws (development only),
	// 2 TLS + basic auth, 3 mutual TLS (certificate CN = charge point id).
	SecurityProfile int    `yaml:"security_profile"`
	TLSCertFile     string `yaml:"tls_cert_file"`
	TLSKeyFile      string `yaml:"tls_key_file"`
	ClientCAFile    string `yaml:"client_ca_file"`
	// MaxFrameBytes is the WebSocket read limit (larger frames close the socket, 1009).
	MaxFrameBytes ByteSize `yaml:"max_frame_bytes"`
	// RatePerConn / RateBurst: frames per second per connection (above: closed, 1008).
	RatePerConn float64 `yaml:"rate_per_conn"`
	RateBurst   int     `yaml:"rate_burst"`
	// HeartbeatInterval is sent in BootNotification answers.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// ConnectTimeout: a socket not authenticated and upgraded to a
	// WebSocket this long after accept is closed.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// IdleTimeout closes an idle keep-alive socket before its upgrade.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxConnections caps the open sockets, authenticated or not.
	MaxConnections int `yaml:"max_connections"`
}

// ocppDefaults is the ocpp section of Default() (disabled).
func ocppDefaults() OCPP {
	return OCPP{Listen: "127.0.0.1:8887", SecurityProfile: 2, MaxFrameBytes: 64 << 10, RatePerConn: 20, RateBurst: 40,
		HeartbeatInterval: 5 * time.Minute, ConnectTimeout: wsmux.DefaultConnectTimeout,
		IdleTimeout: wsmux.DefaultIdleTimeout, MaxConnections: wsmux.DefaultMaxConnections}
}

// validate returns the ocpp section's violations; a disabled section is
// not checked.
func (o OCPP) validate() []error {
	if !o.Enabled {
		return nil
	}
	var errs []error
	bad := func(key, why string) { errs = append(errs, fmt.Errorf("%w: ocpp.%s: %s", ErrInvalid, key, why)) }
	if o.Listen == "" {
		bad("listen", "must be set")
	}
	switch o.SecurityProfile {
	case 1:
	case 2, 3:
		if o.TLSCertFile == "" || o.TLSKeyFile == "" {
			bad("tls_cert_file", "profiles 2 and 3 need tls_cert_file and tls_key_file")
		}
		if o.SecurityProfile == 3 && o.ClientCAFile == "" {
			bad("client_ca_file", "profile 3 needs client_ca_file")
		}
	default:
		bad("security_profile", "must be 1, 2 or 3")
	}
	if o.MaxFrameBytes < 1024 {
		bad("max_frame_bytes", "must be at least 1KiB")
	}
	if o.RatePerConn <= 0 || o.RateBurst < 1 {
		bad("rate_per_conn", "rate_per_conn and rate_burst must be positive")
	}
	if o.HeartbeatInterval <= 0 {
		bad("heartbeat_interval", "must be positive")
	}
	if o.ConnectTimeout <= 0 {
		bad("connect_timeout", "must be positive")
	}
	if o.IdleTimeout <= 0 {
		bad("idle_timeout", "must be positive")
	}
	if o.MaxConnections < 1 {
		bad("max_connections", "must be at least 1")
	}
	return errs
}
