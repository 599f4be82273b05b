package app

import (
	"context"
	"fmt"
	"os"

	"github.com/telegate/telegate/gateway/cluster/presence"
	"github.com/telegate/telegate/gateway/natsbus"
)

// startPresence adds the session presence hook (a device's stale session
// on another replica is ended when it connects here; startOCPP claims
// charging station sockets through it too; a registry reload
// requested by another replica is applied here). It is always on: a single replica pays one
// KV put per MQTT connect (docs/benchmarks.md). Call before broker.Start.
func (a *App) startPresence(ctx context.Context) error {
	host, _ := os.Hostname()
	if host == "" {
		host = "gateway"
	}
	a.replica = presence.NewReplicaID(host)
	nc, err := a.natsClient(natsbus.RoleBroker)
	if err != nil {
		return err
	}
	a.reloadNC = nc
	kv, err := nc.JetStream().KeyValue(ctx, natsbus.BucketSessions)
	if err != nil {
		return fmt.Errorf("sessions bucket: %w", err)
	}
	log := a.log.With("component", "presence")
	p, err := presence.New(presence.Config{KV: kv, Replica: a.replica, End: a.broker.TakeOver, Log: log,
		Reload: func() {
			if err := a.reloadLocal(); err != nil {
				log.Error("device registry reload (requested by another replica) failed; keeping the previous one", "err", err)
			}
		}})
	if err != nil {
		return err
	}
	if err := a.broker.AddHook(p, nil); err != nil {
		return fmt.Errorf("presence hook: %w", err)
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	a.presence = p
	return nil
}

// Drain takes this replica out of service for a rolling upgrade: /readyz
// fails from now on, new MQTT connections are refused and connected
// devices are told to use another server (broker.Drain), once their
// in-flight publishes are acknowledged. The process keeps running until it
// is stopped (SIGTERM).
func (a *App) Drain(ctx context.Context) (int, error) {
	if a.broker == nil {
		return 0, nil
	}
	return a.broker.Drain(ctx)
}
