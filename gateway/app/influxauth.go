package app

import (
	"context"
	"fmt"

	"github.com/telegate/telegate/gateway/config"
	"github.com/telegate/telegate/gateway/influx"
)

// influxAuth holds the credentials the gateway presents to InfluxDB (owned
// by this file; set once in Start before any use, read-only after).
type influxAuth struct {
	write string // writer, sink, database creation: "user:password" or an API token
	query string // dashboard history and fleet-state queries (read-only user when configured)
	// ep is where the writer writes and the reader reads, per influx.version.
	ep config.InfluxEndpoints
}

// resolveInfluxAuth picks the credentials: the local influxd's generated
// users, or influx.credentials_file, or influx.username+password, or
// influx.token. query defaults to write.
func (a *App) resolveInfluxAuth() error {
	c := a.cfg.Influx
	var ia influxAuth
	ep, err := c.Endpoints()
	if err != nil {
		return err
	}
	switch {
	case a.proc != nil:
		cr := a.proc.Credentials()
		ia = influxAuth{write: cr.Writer.Token(), query: cr.Reader.Token()}
	case c.CredentialsFile != "":
		cr, err := influx.LoadCredentials(c.CredentialsFile)
		if err != nil {
			return fmt.Errorf("influx: %w", err)
		}
		ia = influxAuth{write: cr.Writer.Token(), query: cr.Reader.Token()}
	case c.Username != "":
		ia.write = c.UserToken()
	default:
		ia.write = c.Token
	}
	if c.QueryToken != "" {
		ia.query = c.QueryToken
	}
	if ia.query == "" {
		ia.query = ia.write
	}
	if ia.write == "" {
		a.log.Warn("InfluxDB credentials not configured (influx.token, username/password or credentials_file): " +
			"the server must be accepting anonymous writes")
	}
	ia.ep = ep
	a.ext.influxAuth = ia
	return nil
}

// createDatabase creates the InfluxDB database: as the local server's
// admin (which also restores the users' grants), else with the write
// credentials (which need the right to create it).
func (a *App) createDatabase(ctx context.Context) error {
	if a.proc != nil {
		return a.proc.EnsureDatabase(ctx)
	}
	return influx.EnsureDatabase(ctx, a.cfg.Influx.URL, a.ext.influxAuth.write, a.cfg.Influx.Database)
}
