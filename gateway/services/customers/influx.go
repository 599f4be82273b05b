package customers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/telegate/telegate/gateway/influx/query"
	"github.com/telegate/telegate/gateway/services/svc"
)

// ErrTelemetryErase wraps failures of InfluxTelemetry.
var ErrTelemetryErase = errors.New("telemetry deletion failed")

// InfluxTelemetry deletes a vehicle's series from InfluxDB over the v1
// query API (InfluxDB 1.8+, 2.x with the v1 compatibility API):
//
//	DROP SERIES FROM /.*/ WHERE "vin" = '<vin>'
//	DROP SERIES FROM /.*/ WHERE "device" = '<vin>'
//
// which removes every series tagged with the VIN (telemetry, diagnostics,
// DTCs, freeze frames, vehicle events, command acks) or with the vehicle as
// device (connectivity). The user needs the rights for DROP SERIES on the
// database (InfluxDB 1.x: WRITE is not enough; an admin or ALL PRIVILEGES
// on the database). Charging-session points are series of the station and
// keep the VIN as a field, which InfluxQL cannot delete by value: they stay
// (docs/services.md).
type InfluxTelemetry struct {
	URL      string // base URL, e.g. http://127.0.0.1:8086
	Database string
	// Token authenticates: "user:password" for 1.x, an API token for 2.x;
	// sent as "Authorization: Token ...". Empty: no credentials.
	Token string
	// AuthScheme: query.SchemeToken (default), SchemeBearer, SchemeBasic.
	AuthScheme string
	Client     *http.Client // nil: a client with a 60 s timeout, no redirects
}

// DeleteVehicle drops the vehicle's series.
func (t *InfluxTelemetry) DeleteVehicle(ctx context.Context, vin string) error {
	if !svc.ValidID(vin) {
		return fmt.Errorf("%w: %w: vin", ErrTelemetryErase, svc.ErrInvalid)
	}
	for _, tag := range []string{"vin", "device"} {
		if err := t.exec(ctx, `DROP SERIES FROM /.*/ WHERE `+query.Ident(tag)+` = `+query.String(vin)); err != nil {
			return err
		}
	}
	return nil
}

// exec runs q through the one read/query seam (gateway/influx/query):
// POST /query, as statements that change data require.
func (t *InfluxTelemetry) exec(ctx context.Context, q string) error {
	r := query.New(query.Config{URL: t.URL, Database: t.Database, Token: t.Token, AuthScheme: t.AuthScheme,
		Timeout: 60 * time.Second, Client: t.Client})
	defer r.Close()
	if err := r.Exec(ctx, q); err != nil {
		return fmt.Errorf("%w: %w", ErrTelemetryErase, err)
	}
	return nil
}
