package customers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

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
	Token  string
	Client *http.Client // nil: a client with a 60 s timeout, no redirects
}

// DeleteVehicle drops the vehicle's series.
func (t *InfluxTelemetry) DeleteVehicle(ctx context.Context, vin string) error {
	if !svc.ValidID(vin) {
		return fmt.Errorf("%w: %w: vin", ErrTelemetryErase, svc.ErrInvalid)
	}
	for _, tag := range []string{"vin", "device"} {
		if err := t.exec(ctx, `DROP SERIES FROM /.*/ WHERE "`+tag+`" = '`+vin+`'`); err != nil {
			return err
		}
	}
	return nil
}

func (t *InfluxTelemetry) exec(ctx context.Context, q string) error {
	c := t.Client
	if c == nil {
		c = &http.Client{Timeout: 60 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	form := url.Values{"q": {q}, "db": {t.Database}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(t.URL, "/")+"/query",
		strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTelemetryErase, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if t.Token != "" {
		req.Header.Set("Authorization", "Token "+t.Token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrTelemetryErase, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: status %d", ErrTelemetryErase, resp.StatusCode)
	}
	var r struct {
		Error   string `json:"error"`
		Results []struct {
			Error string `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("%w: answer: %w", ErrTelemetryErase, err)
	}
	if r.Error != "" {
		return fmt.Errorf("%w: %s", ErrTelemetryErase, r.Error)
	}
	for _, x := range r.Results {
		if x.Error != "" {
			return fmt.Errorf("%w: %s", ErrTelemetryErase, x.Error)
		}
	}
	return nil
}
