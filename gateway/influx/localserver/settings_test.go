package localserver

import "testing"

// TestSettingsServerConfig: every influx.local key reaches Start's config.
func TestSettingsServerConfig(t *testing.T) {
	s := Settings{Enabled: true, Binary: "/b/influxd", Dir: "/d", HTTPAddr: "127.0.0.1:1", RPCAddr: "127.0.0.1:2", CredentialsFile: "/c.json"}
	got := s.ServerConfig("db")
	want := ServerConfig{Config: Config{Binary: "/b/influxd", Dir: "/d", HTTPAddr: "127.0.0.1:1", RPCAddr: "127.0.0.1:2"},
		Database: "db", CredentialsFile: "/c.json"}
	if got != want {
		t.Fatalf("ServerConfig = %+v, want %+v", got, want)
	}
}
