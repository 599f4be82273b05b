package config

import (
	"errors"
	"testing"
)

// TestInfluxEndpointsPerVersion: each supported InfluxDB version maps the
// influx section to the writer's bucket/org and the reader's db/rp/auth.
func TestInfluxEndpointsPerVersion(t *testing.T) {
	for name, c := range map[string]struct {
		in   Influx
		want InfluxEndpoints
	}{
		"1.8 default": {Influx{Database: "telemetry", RetentionPolicy: "autogen", CreateDatabase: true},
			InfluxEndpoints{Version: 1, WriteBucket: "telemetry/autogen", QueryDatabase: "telemetry",
				QueryRetentionPolicy: "autogen", QueryAuthScheme: "Token", CreateDatabase: true}},
		"1.8 basic auth": {Influx{Version: 1, Database: "telemetry", QueryAuthScheme: "Basic"},
			InfluxEndpoints{Version: 1, WriteBucket: "telemetry", QueryDatabase: "telemetry", QueryAuthScheme: "Basic"}},
		"2.x": {Influx{Version: 2, Database: "telemetry", RetentionPolicy: "autogen", Org: "acme", WriteBucket: "fleet"},
			InfluxEndpoints{Version: 2, WriteBucket: "fleet", WriteOrg: "acme", QueryDatabase: "telemetry",
				QueryRetentionPolicy: "autogen", QueryAuthScheme: "Token"}},
		"2.x bucket defaults to the database": {Influx{Version: 2, Database: "telemetry", Org: "acme"},
			InfluxEndpoints{Version: 2, WriteBucket: "telemetry", WriteOrg: "acme", QueryDatabase: "telemetry", QueryAuthScheme: "Token"}},
		"3.x": {Influx{Version: 3, Database: "telemetry", RetentionPolicy: "autogen", QueryAuthScheme: "Bearer"},
			InfluxEndpoints{Version: 3, WriteBucket: "telemetry", QueryDatabase: "telemetry", QueryAuthScheme: "Bearer"}},
	} {
		got, err := c.in.Endpoints()
		if err != nil || got != c.want {
			t.Errorf("%s: %+v %v, want %+v", name, got, err, c.want)
		}
	}
	for name, in := range map[string]Influx{
		"unknown version":      {Version: 4, Database: "telemetry"},
		"no database":          {Version: 1},
		"bad scheme":           {Database: "telemetry", QueryAuthScheme: "Digest"},
		"1.x with a bucket":    {Database: "telemetry", WriteBucket: "b"},
		"2.x without org":      {Version: 2, Database: "telemetry"},
		"2.x create database":  {Version: 2, Database: "telemetry", Org: "o", CreateDatabase: true},
		"2.x local influxd":    {Version: 2, Database: "telemetry", Org: "o", Local: LocalInflux{Enabled: true}},
		"3.x create database":  {Version: 3, Database: "telemetry", CreateDatabase: true},
		"3.x with a user name": {Version: 3, Database: "telemetry", Username: "u"},
	} {
		if _, err := in.Endpoints(); !errors.Is(err, ErrInfluxVersion) {
			t.Errorf("%s: err %v, want ErrInfluxVersion", name, err)
		}
	}
}
