package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/telegate/telegate/gateway/cluster/lease"
	"github.com/telegate/telegate/gateway/natsbus"

	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/suite"
)

// servicesExt holds what the post-purchase services started (owned by this file).
type servicesExt struct {
	suite *suite.Suite
}

// startServices starts the post-purchase services (profile projector,
// seasonal features, partner offers) against a.bus and a.broker, and may
// mount HTTP routes on a.mux. Called after the broker has started.
func (a *App) startServices(ctx context.Context) error {
	c := a.cfg.Services
	// Each service runs on its own NATS user (natsbus.ServiceRoles) with
	// least rights and declares its own buckets; the lease bucket serves
	// the feature scheduler's ticks only.
	feat, err := a.natsClient(natsbus.RoleFeatures)
	if err != nil {
		return err
	}
	leases, err := lease.OpenBucket(ctx, feat.JetStream(), a.cfg.NATS.Replicas)
	if err != nil {
		return err
	}
	s, err := suite.Start(ctx, suite.Config{
		Settings:       c.Settings,
		TokenKeyFile:   filepath.Join(a.cfg.DataDir, "services", "token.key"),
		Replicas:       a.cfg.NATS.Replicas,
		Telemetry:      telemetryEraser(a),
		SchedulerClock: c.SchedulerClock,
		Cluster: lease.Cluster{KV: leases, Holder: a.holderID(), TTL: a.cfg.Cluster.LeaseTTL,
			Log: a.log.With("component", "lease")},
	}, suite.Deps{Client: func(role string) (*natsbus.Client, error) { return a.natsClient(role) }, MQTT: a.broker, Online: a.vehicleOnline, Session: a.vehicleSession, Bus: a.bus},
		a.log.With("component", "services"))
	if err != nil {
		return err
	}
	a.ext.services.suite = s
	s.Mount(a.mux)
	return nil
}

// holderID is this process's lease holder id: the replica id and a random
// suffix, so that a restarted replica is a new contender (gateway/cluster/lease).
func (a *App) holderID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go >= 1.24)
	return a.cfg.Cluster.ReplicaIDOrDefault() + "-" + hex.EncodeToString(b)
}

// telemetryEraser deletes an erased customer's vehicle series from the
// gateway's InfluxDB when the erasure asks for it (nil without InfluxDB).
func telemetryEraser(a *App) customers.TelemetryEraser {
	in := a.cfg.Influx
	if in.URL == "" {
		return nil
	}
	return &customers.InfluxTelemetry{URL: in.URL, Database: a.ext.influxAuth.ep.QueryDatabase, Token: a.ext.influxAuth.write,
		AuthScheme: a.ext.influxAuth.ep.QueryAuthScheme}
}

// vehicleOnline reports whether vin has a live MQTT session.
func (a *App) vehicleOnline(vin string) bool {
	cl, ok := a.broker.Server().Clients.Get(vin)
	return ok && !cl.Closed()
}

// vehicleSession identifies vin's MQTT session on this replica once it is
// ready for commands (subscribed under vehicles/{vin}/cmd/), "" otherwise:
// the replica id, the remote address and the client, so a reconnection,
// here or on another replica, is a new session (commands.Config.Session).
func (a *App) vehicleSession(vin string) string {
	cl, ok := a.broker.Server().Clients.Get(vin)
	if !ok || cl.Closed() {
		return ""
	}
	prefix := "vehicles/" + vin + "/cmd/"
	for filter := range cl.State.Subscriptions.GetAll() {
		if strings.HasPrefix(filter, prefix) {
			return fmt.Sprintf("%s/%s/%p", a.replica, cl.Net.Remote, cl)
		}
	}
	return ""
}

// Services is the running services suite (nil when disabled).
func (a *App) Services() *suite.Suite { return a.ext.services.suite }

// closeServices stops what startServices started. Idempotent. Runs after
// the broker, OCPP and the dashboard close, before the sinks drain.
func (a *App) closeServices() {
	if a.ext.services.suite != nil {
		a.ext.services.suite.Close()
	}
}
