package app

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/config"
	"github.com/telegate/telegate/gateway/ingest"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/sink"
	"github.com/telegate/telegate/gateway/sink/eventsink"
	"github.com/telegate/telegate/gateway/sink/influxsink"
)

// The two durability modes (ingest.durability, docs/reliability.md):
//
//   - spool: the hook appends to the local spool (fsync, group commit); the
//     sinks read it through their spool consumers and drain it at shutdown.
//   - jetstream: the hook appends to the replicated INGEST stream and acks
//     after JetStream's (quorum) ack; the sinks read the stream's shared
//     durable consumers, as every other replica does. The local spool is
//     still opened (its gauges, /readyz) but stays empty.

func (a *App) jsDurable() bool { return a.cfg.Ingest.Durability == config.DurabilityJetStream }

// ingestStream is the INGEST stream to declare (nil in spool mode). It has
// no age limit: a record leaves it once both sinks acknowledged it.
func (a *App) ingestStream() *natsbus.IngestStream {
	if !a.jsDurable() {
		return nil
	}
	return &natsbus.IngestStream{Replicas: a.cfg.NATS.Replicas, MaxBytes: int64(a.cfg.Ingest.StreamMaxBytes),
		DedupWindow: a.cfg.NATS.DedupWindow, AckWait: a.cfg.Ingest.AckWait}
}

// ingestClient is the ingest role's connection; its maximum of pending
// async publishes is ingest.max_in_flight.
func (a *App) ingestClient() (*natsbus.Client, error) {
	return a.natsClient(natsbus.RoleIngest, jetstream.WithPublishAsyncMaxPending(a.cfg.Ingest.MaxInFlight))
}

// durable is the hook's durable hand-off for the configured mode.
func (a *App) durable() (ingest.Spool, error) {
	if !a.jsDurable() {
		return ingest.FromSpool(a.spool, a.cfg.Spool.AckTimeout), nil
	}
	c, err := a.ingestClient()
	if err != nil {
		return nil, err
	}
	return ingest.FromJetStream(c.JetStream(), ingest.JetStreamConfig{AckTimeout: a.cfg.Spool.AckTimeout}), nil
}

// sinkSources are the influx and events sinks' sources for the mode.
func (a *App) sinkSources(ctx context.Context) (influxSrc, eventsSrc sink.Source, err error) {
	if !a.jsDurable() {
		ic, err := a.spool.Consumer(influxsink.ConsumerName)
		if err != nil {
			return nil, nil, err
		}
		ec, err := a.spool.Consumer(eventsink.ConsumerName)
		if err != nil {
			return nil, nil, err
		}
		return ic, ec, nil
	}
	c, err := a.ingestClient()
	if err != nil {
		return nil, nil, err
	}
	for i, name := range []string{natsbus.ConsumerIngestInflux, natsbus.ConsumerIngestEvents} {
		cons, err := c.JetStream().Consumer(ctx, natsbus.StreamIngest, name)
		if err != nil {
			return nil, nil, fmt.Errorf("ingest consumer %s: %w", name, err)
		}
		group := ""
		if name == natsbus.ConsumerIngestEvents {
			group = natsbus.IngestPriorityGroup
		}
		a.jsSources[i] = sink.NewJetStreamSource(cons, group)
	}
	return a.jsSources[0], a.jsSources[1], nil
}
