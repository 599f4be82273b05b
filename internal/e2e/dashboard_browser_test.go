package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/internal/testenv"
)

// chromiumPath is $CHROMIUM or Debian's /usr/bin/chromium.
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// newBrowser starts headless Chromium with a fresh profile and the flags
// that keep it off the (closed) network. A missing Chromium fails the test;
// in -short mode the test is skipped without looking for it.
func newBrowser(t testing.TB) context.Context {
	t.Helper()
	testenv.SkipIfShort(t, "headless Chromium")
	bin := chromiumPath()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("Chromium not found at %s (%v): run deploy/install-chromium.sh (Debian package chromium) or set CHROMIUM", bin, err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("safebrowsing-disable-auto-update", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.WindowSize(1440, 1000),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelC()
		cancelA()
	})
	// Start the browser now so a broken install fails here, clearly. (The
	// first call must not carry a timeout: it would end the browser.)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium (%s): %v", bin, err)
	}
	return ctx
}

// run runs actions with a bounded wait (a safety net, not an assertion).
func run(t testing.TB, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(cctx, actions...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// value runs one action that returns a value (bounded).
func value[T any](t testing.TB, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	v, err := chromedp.Run(cctx, a)
	if err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// screenshot saves a full-page PNG to docs/screenshots when
// TELEGATE_SCREENSHOTS=1.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("TELEGATE_SCREENSHOTS") != "1" {
		return
	}
	run(t, ctx, "settle", chromedp.Sleep(300*time.Millisecond))
	png := value(t, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	dir := filepath.Join("..", "..", "docs", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot docs/screenshots/%s.png", name)
}

// TestDashboardBrowser: in real headless Chromium, log in, see the fleet,
// open a vehicle, watch a live value change while the simulator publishes,
// and see a DTC raised by a vehicle appear with its description.
func TestDashboardBrowser(t *testing.T) {
	testenv.SkipIfShort(t, "headless Chromium and a real InfluxDB")
	e := startEnv(t, 3, 0, withDashboard(t))
	vin1, vin2 := sim.VIN(sim.DefaultVINPrefix, 1), sim.VIN(sim.DefaultVINPrefix, 2)

	// Vehicle 1: the firmware simulator, driving fast.
	cfg := e.simCfg
	cfg.Vehicles, cfg.Chargers = 1, 0
	cfg.TelemetryInterval = 250 * time.Millisecond
	cfg.DiagInterval = time.Hour
	cfg.TimeScale = 20
	cfg.Seed = 3
	fleet, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	simCtx, stopSim := context.WithCancel(context.Background())
	simDone := make(chan struct{})
	go func() {
		defer close(simDone)
		_ = fleet.Run(simCtx)
	}()
	t.Cleanup(func() {
		stopSim()
		<-simDone
	})
	// Vehicle 2: a head unit we drive by hand, to raise a DTC on cue.
	car2 := e.mqtt311(vin2)
	base := time.Now().Add(-15 * time.Minute)
	for i := 1; i <= 180; i++ {
		car2.Publish("vehicles/"+vin2+"/telemetry", 1, false, drivingFrame(vin2, uint64(i), base.Add(time.Duration(i)*5*time.Second))).WaitTimeout(10 * time.Second)
	}
	car2.Publish("vehicles/"+vin2+"/diag", 1, false, diagReport(vin2, 1, base, false, map[string]uint8{"P0420": 1})).WaitTimeout(10 * time.Second)

	ctx := newBrowser(t)
	url := e.dashURL()

	// Log in (the fleet page redirects to the login page first).
	run(t, ctx, "login page",
		chromedp.Navigate(url+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")))
	screenshot(t, ctx, "login")
	run(t, ctx, "log in",
		chromedp.SendKeys(chromedp.CSS("#username"), dashOperator),
		chromedp.SendKeys(chromedp.CSS("#password"), dashOperatorPass),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS(`#fleet-body tr[data-vin="`+vin1+`"]`)))

	// The fleet: three vehicles, vehicle 1 connected.
	stat := value(t, ctx, "fleet", chromedp.Text(chromedp.CSS("#stat-vehicles")))
	if stat != "3" {
		t.Fatalf("fleet shows %q vehicles, want 3", stat)
	}
	waitText(t, ctx, "vehicle 1 shown connected", `#fleet-body tr[data-vin="`+vin1+`"]`, "Connected")
	screenshot(t, ctx, "fleet")

	// Search by VIN narrows the list.
	run(t, ctx, "search", chromedp.SendKeys(chromedp.CSS("#f-q"), vin2[len(vin2)-4:]))
	waitJS(t, ctx, "search result", `document.querySelectorAll('#fleet-body tr[data-vin]').length === 1 && !!document.querySelector('#fleet-body tr[data-vin="`+vin2+`"]')`)

	// Open vehicle 1 and watch a live value change.
	run(t, ctx, "open vehicle 1",
		chromedp.Navigate(url+"/ui/?q="+vin1),
		chromedp.WaitVisible(chromedp.CSS(`#fleet-body tr[data-vin="`+vin1+`"] a`)),
		chromedp.Click(chromedp.CSS(`#fleet-body tr[data-vin="`+vin1+`"] a`)),
		chromedp.WaitVisible(chromedp.CSS("#live-body tr")))
	waitText(t, ctx, "live stream open", "#live-status", "live")
	first := value(t, ctx, "live values", chromedp.Evaluate[string](liveValuesJS))
	waitJS(t, ctx, "a live value changes", `(`+liveValuesJS+`) !== `+jsString(first))
	waitJS(t, ctx, "history chart drawn", `!!document.querySelector('#chart-list .chart path.line')`)
	screenshot(t, ctx, "vehicle")

	// Vehicle 2's page: raise a DTC while watching; it appears with its
	// description, without a reload.
	run(t, ctx, "open vehicle 2",
		chromedp.Navigate(url+"/ui/vehicles/"+vin2),
		chromedp.WaitVisible(chromedp.CSS(`#dtc-list .dtc-item[data-code="P0420"]`)))
	value(t, ctx, "mark page", chromedp.Evaluate[bool](`window.__noReload = true`))
	if tok := car2.Publish("vehicles/"+vin2+"/diag", 1, false, diagReport(vin2, 2, time.Now(), true,
		map[string]uint8{"P0420": 2, "P0301": 2})); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("diag: %v", tok.Error())
	}
	waitText(t, ctx, "raised DTC shown with its description", `#dtc-list .dtc-item[data-code="P0301"]`, describeDTC("P0301"))
	waitText(t, ctx, "severity shown", `#dtc-list .dtc-item[data-code="P0301"]`, "critical")
	if !value(t, ctx, "no reload", chromedp.Evaluate[bool](`window.__noReload === true`)) {
		t.Fatal("the page reloaded")
	}
	screenshot(t, ctx, "vehicle-dtc")

	// The alerts page lists it.
	run(t, ctx, "alerts",
		chromedp.Navigate(url+"/ui/alerts"),
		chromedp.WaitVisible(chromedp.CSS(`#alerts-body tr[data-vin="`+vin2+`"][data-code="P0301"]`)))
	waitText(t, ctx, "alert description", `#alerts-body tr[data-code="P0301"]`, describeDTC("P0301"))
	screenshot(t, ctx, "alerts")

	// Filter the fleet by DTC.
	run(t, ctx, "fleet by DTC",
		chromedp.Navigate(url+"/ui/?dtc=P0301"),
		chromedp.WaitVisible(chromedp.CSS(`#fleet-body tr[data-vin="`+vin2+`"]`)))
	waitJS(t, ctx, "only vehicle 2", `document.querySelectorAll('#fleet-body tr[data-vin]').length === 1`)
}

const liveValuesJS = `Array.from(document.querySelectorAll('#live-body .live-val')).map(e => e.textContent).join('|')`

func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`)
	return "'" + r.Replace(s) + "'"
}

// waitJS polls a JavaScript condition until it is true (bounded).
func waitJS(t *testing.T, ctx context.Context, what, cond string) {
	t.Helper()
	run(t, ctx, what, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(80*time.Second)))
}

// waitText waits until the element matching sel contains want.
func waitText(t *testing.T, ctx context.Context, what, sel, want string) {
	t.Helper()
	cond := fmt.Sprintf(`(() => { const e = document.querySelector(%s); return !!e && e.textContent.includes(%s); })()`, jsString(sel), jsString(want))
	waitJS(t, ctx, what, cond)
}
