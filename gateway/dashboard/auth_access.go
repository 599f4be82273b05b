package dashboard

import "github.com/telegate/telegate/gateway/dashboard/auth"

// AuthManager is the dashboard's session manager, for other components that
// mount role-protected API routes (e.g. the OCPP command API).
func (d *Dashboard) AuthManager() *auth.Manager { return d.auth }
