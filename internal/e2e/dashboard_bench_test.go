package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/gateway/app"
	"github.com/telegate/telegate/gateway/config"
	"github.com/telegate/telegate/internal/testenv"
)

// BenchmarkDashboard1000 measures the dashboard on a fleet of 1,000
// registered vehicles whose data (20 minutes of telemetry at 10 s, a
// diagnostics report with DTCs for every tenth vehicle, connectivity) is in
// a real InfluxDB: the time the fleet state takes to load at start, the
// JSON API (fleet pages, filters, alerts, vehicle, signal history via
// Flux) over loopback HTTP, and the fleet page's load in headless
// Chromium until the first 25 rows are rendered.
//
//	go test -run '^$' -bench Dashboard1000 -benchtime 200x ./internal/e2e/
func BenchmarkDashboard1000(b *testing.B) {
	const vehicles = 1000
	in := testenv.StartInflux(b)
	dir := b.TempDir()
	simCfg := sim.Config{Vehicles: vehicles, FleetKey: fleetKey}
	entries, err := sim.Provision(simCfg, 4)
	if err != nil {
		b.Fatal(err)
	}
	devices := filepath.Join(dir, "devices.yaml")
	if err := sim.WriteRegistry(devices, entries); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	writeFleetHistory(b, in.URL, in.Token, vehicles)
	b.Logf("wrote 20 min of history for %d vehicles in %s", vehicles, time.Since(t0).Round(time.Millisecond))

	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.DevicesFile = devices
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.MQTT.TCPAddr = "127.0.0.1:0"
	cfg.MQTT.WSAddr = ""
	cfg.NATS.Embedded.Addr = "127.0.0.1:0"
	cfg.Influx.URL = in.URL
	cfg.Influx.Token, cfg.Influx.QueryToken = in.Token, in.ReadToken
	withDashboard(b)(&cfg)
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	gw := app.New(cfg, quietLogger())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	if err := gw.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = gw.Close() })
	for !gw.Dashboard().Ready() {
		if time.Since(start) > 2*time.Minute {
			b.Fatal("fleet state not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Logf("fleet state of %d vehicles loaded from InfluxDB %s after start (%s)", vehicles,
		time.Since(start).Round(time.Millisecond), gw.Dashboard().State())
	base := "http://" + gw.HTTPAddr()
	c := newDashClient(b, base)
	if code := c.login(dashViewer, dashViewerPass); code != 200 {
		b.Fatalf("login %d", code)
	}
	vin := sim.VIN(sim.DefaultVINPrefix, 500)
	apis := []struct{ name, path string }{
		{"api_fleet_page1_50", "/api/service/v1/fleet?page=1&page_size=50"},
		{"api_fleet_page20_50", "/api/service/v1/fleet?page=20&page_size=50"},
		{"api_fleet_page1_500", "/api/service/v1/fleet?page=1&page_size=500"},
		{"api_fleet_filter_dtc", "/api/service/v1/fleet?dtc=P0301&page_size=50"},
		{"api_fleet_search_sort_health", "/api/service/v1/fleet?q=00000000099&sort=health"},
		{"api_dtcs_alerts", "/api/service/v1/dtcs?limit=100"},
		{"api_vehicle", "/api/service/v1/vehicles/" + vin},
		{"api_history_speed_20m_auto", "/api/service/v1/vehicles/" + vin + "/history?signals=Vehicle.Speed&range=20m"},
		{"api_history_2sig_1h_1m", "/api/service/v1/vehicles/" + vin + "/history?signals=Vehicle.Speed,Vehicle.Powertrain.TractionBattery.StateOfCharge.Current&range=1h&window=1m"},
		{"api_vehicle_dtcs_flux", "/api/service/v1/vehicles/" + vin + "/dtcs"},
		{"page_fleet_html", "/ui/"},
		{"asset_app_js", "/ui/assets/app.js"},
	}
	for _, a := range apis {
		b.Run(a.name, func(b *testing.B) {
			for b.Loop() {
				if code, _ := c.raw("GET", a.path, nil); code != http.StatusOK {
					b.Fatalf("%s: %d", a.path, code)
				}
			}
		})
	}
	b.Run("browser_fleet_page_load", func(b *testing.B) {
		bctx := newBrowser(b)
		run(b, bctx, "login",
			chromedp.Navigate(base+"/ui/login"),
			chromedp.WaitVisible(chromedp.CSS("#login-form")),
			chromedp.SendKeys(chromedp.CSS("#username"), dashViewer),
			chromedp.SendKeys(chromedp.CSS("#password"), dashViewerPass),
			chromedp.Click(chromedp.CSS("#login-submit")),
			chromedp.WaitVisible(chromedp.CSS("#fleet-body tr[data-vin]")))
		b.ResetTimer()
		for b.Loop() {
			run(b, bctx, "fleet page", chromedp.Navigate(base+"/ui/?page=3"),
				chromedp.Poll[chromedp.Void](`document.querySelectorAll('#fleet-body tr[data-vin]').length === 25`,
					chromedp.WithPollingInterval(time.Millisecond)))
		}
	})
}

// writeFleetHistory writes 20 minutes of history for n vehicles straight
// to InfluxDB (line protocol, the gateway's measurements).
func writeFleetHistory(b testing.TB, url, token string, n int) {
	b.Helper()
	now := time.Now().Truncate(time.Second)
	var buf bytes.Buffer
	flush := func() {
		if buf.Len() == 0 {
			return
		}
		req, err := http.NewRequest(http.MethodPost, url+"/write?db=telemetry&precision=ms", &buf)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", "Token "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			b.Fatalf("write: %s", resp.Status)
		}
		buf.Reset()
	}
	for i := 1; i <= n; i++ {
		vin := sim.VIN(sim.DefaultVINPrefix, i)
		for k := 0; k < 120; k++ {
			ts := now.Add(-time.Duration(120-k) * 10 * time.Second).UnixMilli()
			x := float64(k + i)
			fmt.Fprintf(&buf, "telemetry,vin=%s Vehicle.Speed=%.1f,Vehicle.Powertrain.TractionBattery.StateOfCharge.Current=%.1f,Vehicle.Exterior.AirTemperature=8,seq=%di %d\n",
				vin, math.Max(0, 55+35*math.Sin(x/9)), 80-float64(k)*0.05, k+1, ts)
		}
		ts := now.Add(-time.Minute).UnixMilli()
		fmt.Fprintf(&buf, "connectivity,device=%s connected=%t %d\n", vin, i%3 != 0, ts)
		if i%10 == 0 {
			fmt.Fprintf(&buf, "diag,vin=%s mil=true,odometer_km=%d,dtc_count=2i,confirmed_count=1i,dtcs=\"P0301:confirmed,P0420:pending\",seq=1i %d\n", vin, 10000+i, ts)
			fmt.Fprintf(&buf, "dtc,code=P0301,vin=%s status=2i,status_name=\"confirmed\",severity=\"critical\" %d\n", vin, ts)
			fmt.Fprintf(&buf, "dtc,code=P0420,vin=%s status=1i,status_name=\"pending\",severity=\"warning\" %d\n", vin, ts)
		} else {
			fmt.Fprintf(&buf, "diag,vin=%s mil=false,odometer_km=%d,dtc_count=0i,confirmed_count=0i,dtcs=\"\",seq=1i %d\n", vin, 10000+i, ts)
		}
		if buf.Len() > 1<<20 {
			flush()
		}
	}
	flush()
}
