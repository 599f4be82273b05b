package app

import (
	"context"
	"net"

	"github.com/telegate/telegate/broker/registry"
	"github.com/telegate/telegate/gateway/dashboard"
	"github.com/telegate/telegate/gateway/dashboard/auth"
	"github.com/telegate/telegate/gateway/dashboard/history"
	"github.com/telegate/telegate/gateway/dashboard/livebus"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/sink/live"
)

// dashboardExt holds what the dashboard started (owned by this file).
type dashboardExt struct {
	d    *dashboard.Dashboard
	live *livebus.Bridge // the other replicas' live frames
}

// startDashboard mounts the service-team dashboard and JSON API on a.mux.
// Called after the broker and the services have started and before HTTP
// listens. Without a
// users file nobody could log in, so nothing is mounted (warning logged).
func (a *App) startDashboard(ctx context.Context) error {
	c := a.cfg.Dashboard
	log := a.log.With("component", "dashboard")
	if c.UsersFile == "" {
		log.Warn("dashboard enabled but dashboard.users_file is empty: dashboard not mounted")
		return nil
	}
	nc, err := a.natsClient(natsbus.RoleDashboard) // its own credentials: reads DTC/VEHICLE, records sent commands
	if err != nil {
		return err
	}
	// The dashboard's own user declares the shared session bucket and
	// may read and write that bucket's keys, no other bucket's.
	// dashboard.session_ttl is validated (1m..720h): no default here.
	sessions, err := auth.OpenSessionStore(ctx, nc.JetStream(), a.cfg.NATS.Replicas, c.SessionTTL)
	if err != nil {
		return err
	}
	var vins []string
	for _, dev := range a.devices.Devices() {
		if dev.Kind == registry.KindVehicle && !dev.Disabled {
			vins = append(vins, dev.ID)
		}
	}
	// The dashboard's hub holds this replica's frames and, through NATS
	// live.{vin}, the other replicas' (gateway/dashboard/livebus).
	hub := live.New()
	br, err := livebus.Start(livebus.Config{NC: nc.Conn(), Replica: a.replica, Local: a.live, Out: hub,
		LocationAllowed: a.locationConsent, Log: log})
	if err != nil {
		return err
	}
	a.ext.dashboard.live = br
	d, err := dashboard.New(dashboard.Options{
		Config: c,
		Influx: history.Config{URL: a.cfg.Influx.URL, Token: a.ext.influxAuth.query, Org: a.cfg.Influx.Org,
			Bucket: a.cfg.Influx.Bucket(), Database: a.ext.influxAuth.ep.QueryDatabase,
			RetentionPolicy: a.ext.influxAuth.ep.QueryRetentionPolicy, AuthScheme: a.ext.influxAuth.ep.QueryAuthScheme,
			Timeout: c.QueryTimeout},
		VINs: vins, Hub: hub, JS: nc.JetStream(), Publisher: a.broker, Registerer: a.reg, Log: log,
		// A vehicle whose MQTT client is on this broker gets the command
		// from it (the fast path, as before); any other goes through the
		// services' dispatcher (started before the dashboard).
		VehicleLocal:    a.vehicleOnline,
		Dispatch:        a.ext.services.suite != nil,
		LocationAllowed: a.locationConsent,
		Sessions:        sessions,
	})
	if err != nil {
		return err
	}
	d.Mount(a.mux)
	if err := d.Start(); err != nil {
		d.Close()
		return err
	}
	a.ext.dashboard.d = d
	host, port, _ := net.SplitHostPort(a.cfg.HTTP.Addr)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	log.Info("dashboard mounted", "url", "http://"+net.JoinHostPort(host, port)+"/ui/", "users_file", c.UsersFile)
	return nil
}

// locationConsent reports whether vin's owner (customer registry of the
// services) grants location_sharing. Without the services there is no
// consent record, so no position is shown.
func (a *App) locationConsent(vin string) bool {
	s := a.ext.services.suite
	if s == nil || s.Customers == nil {
		return false
	}
	o, ok := s.Customers.Lookup(vin)
	return ok && s.Customers.Consented(o.CustomerID, "location_sharing")
}

// closeDashboard stops what startDashboard started. Idempotent.
func (a *App) closeDashboard() {
	if a.ext.dashboard.d != nil {
		a.ext.dashboard.d.Close()
	}
	if a.ext.dashboard.live != nil {
		a.ext.dashboard.live.Close()
		a.ext.dashboard.live = nil
	}
}

// Dashboard is the running dashboard, or nil when it is not mounted.
func (a *App) Dashboard() *dashboard.Dashboard { return a.ext.dashboard.d }
