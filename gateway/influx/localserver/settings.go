package localserver

// Settings are the operator settings of the gateway's supervised local
// influxd: the `influx.local` configuration section (gateway/config aliases
// this struct, so the keys and their defaults live here alone). Ranges are
// checked by gateway/config, which names the key.
type Settings struct {
	// Enabled makes the gateway start and stop the influxd child process.
	Enabled bool   `yaml:"enabled"`
	Binary  string `yaml:"binary"`
	Dir     string `yaml:"dir"`
	// HTTPAddr must match the host:port of influx.url; both addresses are
	// loopback.
	HTTPAddr string `yaml:"http_addr"`
	RPCAddr  string `yaml:"rpc_addr"`
	// CredentialsFile holds the generated users (admin, gateway writer,
	// read-only); default <dir>/credentials.json, mode 0600.
	CredentialsFile string `yaml:"credentials_file"`
}

// DefaultSettings are the local server's defaults (the influx.local
// section of the gateway's config.Default()): off, bin/influxd (what
// `make influxd` installs) under var/influxdb on the default loopback ports.
func DefaultSettings() Settings {
	return Settings{
		Binary:   "bin/influxd",
		Dir:      "var/influxdb",
		HTTPAddr: "127.0.0.1:8086",
		RPCAddr:  "127.0.0.1:8088",
	}
}

// ServerConfig is the Start configuration these settings give for
// database (Enabled is the caller's decision to call Start).
func (s Settings) ServerConfig(database string) ServerConfig {
	return ServerConfig{Config: Config{Binary: s.Binary, Dir: s.Dir, HTTPAddr: s.HTTPAddr, RPCAddr: s.RPCAddr},
		Database: database, CredentialsFile: s.CredentialsFile}
}
