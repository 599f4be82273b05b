package app

import "context"

// dashboardExt holds what the dashboard started (owned by this file).
type dashboardExt struct{}

// startDashboard mounts the service-team dashboard and JSON API on a.mux.
// Called after the broker has started and before HTTP listens.
func (a *App) startDashboard(ctx context.Context) error { return nil }

// closeDashboard stops what startDashboard started. Idempotent.
func (a *App) closeDashboard() {}
