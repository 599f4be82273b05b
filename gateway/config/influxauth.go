package config

import (
	"fmt"
	"net"
	"net/netip"
)

// validateAuth checks the InfluxDB credential keys and that a local
// influxd listens on loopback only.
func (i Influx) validateAuth() []error {
	var errs []error
	bad := func(key, why string) { errs = append(errs, fmt.Errorf("%w: influx.%s: %s", ErrInvalid, key, why)) }
	set := 0
	for _, s := range []string{i.Token, i.Username, i.CredentialsFile} {
		if s != "" {
			set++
		}
	}
	if set > 1 {
		bad("token", "set one of token, username+password, credentials_file")
	}
	if (i.Username == "") != (i.Password == "") {
		bad("username", "username and password go together")
	}
	if i.Local.Enabled && (set > 0 || i.QueryToken != "") {
		bad("local", "the local server's generated credentials are used: leave token, username, credentials_file and query_token empty")
	}
	if i.Local.Enabled {
		for key, addr := range map[string]string{"local.http_addr": i.Local.HTTPAddr, "local.rpc_addr": i.Local.RPCAddr} {
			host, _, err := net.SplitHostPort(addr)
			ip, perr := netip.ParseAddr(host)
			if err != nil || perr != nil || !ip.IsLoopback() {
				bad(key, "must be a loopback host:port (e.g. 127.0.0.1:8086)")
			}
		}
	}
	return errs
}

// UserToken is Username:Password (the 1.x token form), or "".
func (i Influx) UserToken() string {
	if i.Username == "" {
		return ""
	}
	return i.Username + ":" + i.Password
}
