package app

import "context"

// servicesExt holds what the post-purchase services started (owned by this file).
type servicesExt struct{}

// startServices starts the post-purchase services (profile projector,
// seasonal features, partner offers) against a.bus and a.broker, and may
// mount HTTP routes on a.mux. Called after the broker has started.
func (a *App) startServices(ctx context.Context) error { return nil }

// closeServices stops what startServices started. Idempotent. Runs right
// after the broker closes, before the sinks drain.
func (a *App) closeServices() {}
