package influx

// ServerEnv returns the environment (KEY=value entries, to append to
// os.Environ()) that configures `influxd run` of InfluxDB 1.8 without a
// configuration file: HTTP API on httpAddr (host:port) with Flux enabled
// and authentication on (no anonymous query or write; see SetupAuth for
// the first admin), RPC (backup/restore) on rpcAddr (callers pass loopback
// addresses), meta, data and WAL under dir, no usage
// reporting, no _internal monitoring database, warnings-only logs, and no
// configuration file from ~/.influxdb or /etc/influxdb. With exec.Cmd.Env
// a later duplicate key wins, so callers can append overrides.
func ServerEnv(httpAddr, rpcAddr, dir string) []string {
	return []string{
		"INFLUXDB_CONFIG_PATH=/dev/null",
		"INFLUXDB_REPORTING_DISABLED=true",
		"INFLUXDB_BIND_ADDRESS=" + rpcAddr,
		"INFLUXDB_HTTP_BIND_ADDRESS=" + httpAddr,
		"INFLUXDB_HTTP_FLUX_ENABLED=true",
		"INFLUXDB_HTTP_AUTH_ENABLED=true",
		"INFLUXDB_HTTP_LOG_ENABLED=false",
		"INFLUXDB_HTTP_DEBUG_PPROF_ENABLED=false",
		"INFLUXDB_META_DIR=" + dir + "/meta",
		"INFLUXDB_DATA_DIR=" + dir + "/data",
		"INFLUXDB_DATA_WAL_DIR=" + dir + "/wal",
		"INFLUXDB_DATA_QUERY_LOG_ENABLED=false",
		"INFLUXDB_MONITOR_STORE_ENABLED=false",
		"INFLUXDB_LOGGING_LEVEL=warn",
		"INFLUXDB_LOGGING_SUPPRESS_LOGO=true",
	}
}
