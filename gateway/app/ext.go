package app

// extensions groups the state of the optional components; each component's
// file owns its own field.
type extensions struct {
	dashboard dashboardExt
	services  servicesExt
	// influxAuth: see influxauth.go.
	influxAuth influxAuth
	ocpp       ocppExt
}
