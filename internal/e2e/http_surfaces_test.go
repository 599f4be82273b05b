package e2e

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/internal/logbuf"
)

type route struct{ method, path string }

// apiRoutes lists every JSON API route the gateway mounts (services and
// dashboard), with concrete path parameters.
func apiRoutes(vin string) []route {
	return []route{
		{"GET", "/api/v1/customers"}, {"POST", "/api/v1/customers"}, {"GET", "/api/v1/customers/c1"},
		{"GET", "/api/v1/customers/c1/profile"}, {"PUT", "/api/v1/customers/c1/consents/partner_offers"},
		{"DELETE", "/api/v1/customers/c1"},
		{"GET", "/api/v1/features"}, {"GET", "/api/v1/features/plan"}, {"POST", "/api/v1/features/run"},
		{"PUT", "/api/v1/features/heated_seats/rollout"}, {"POST", "/api/v1/features/heated_seats/rollback"},
		{"POST", "/api/v1/features/heated_seats/restore"},
		{"GET", "/api/v1/vehicles/" + vin + "/features"}, {"GET", "/api/v1/vehicles/" + vin + "/commands"},
		{"GET", "/api/v1/partners"}, {"POST", "/api/v1/partners"}, {"GET", "/api/v1/partners/cafe"},
		{"GET", "/api/v1/partners/cafe/deliveries"}, {"GET", "/api/v1/partners/cafe/nats"},
		{"POST", "/api/v1/partners/cafe/redemptions"}, {"PUT", "/api/v1/partners/cafe/venues/v1/availability"},
		{"POST", "/api/service/v1/logout"}, {"GET", "/api/service/v1/session"}, {"GET", "/api/service/v1/fleet"},
		{"GET", "/api/service/v1/dtcs"}, {"GET", "/api/service/v1/signals"}, {"GET", "/api/service/v1/commands"},
		{"GET", "/api/service/v1/vehicles/" + vin}, {"GET", "/api/service/v1/vehicles/" + vin + "/history"},
		{"GET", "/api/service/v1/vehicles/" + vin + "/dtcs"}, {"GET", "/api/service/v1/vehicles/" + vin + "/charging"},
		{"GET", "/api/service/v1/vehicles/" + vin + "/commands"}, {"POST", "/api/service/v1/vehicles/" + vin + "/commands"},
		{"GET", "/api/service/v1/vehicles/" + vin + "/live"},
	}
}

// TestHTTPSurfaces: every API route refuses requests without credentials
// or with wrong ones, state-changing routes refuse oversized bodies even
// with valid credentials, and no secret (right or wrong) ever reaches the
// logs, even at debug level.
func TestHTTPSurfaces(t *testing.T) {
	logs := &logbuf.Buffer{}
	e := startEnvLogged(t, logs, 2, 0, withServices(t), withDashboard(t))
	vin := sim.VIN(sim.DefaultVINPrefix, 1)
	base := e.dashURL()
	hc := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path, bearer string, body []byte, cookie string) int {
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const wrongBearer = "wrong-bearer-7f3a9c"
	for _, r := range apiRoutes(vin) {
		if c := do(r.method, r.path, "", []byte("{}"), ""); c != http.StatusUnauthorized && c != http.StatusForbidden {
			t.Errorf("%s %s without credentials: %d, want 401/403", r.method, r.path, c)
		}
		if c := do(r.method, r.path, wrongBearer, []byte("{}"), "tg_session=forged-cookie-value"); c != http.StatusUnauthorized && c != http.StatusForbidden {
			t.Errorf("%s %s with wrong credentials: %d, want 401/403", r.method, r.path, c)
		}
	}
	// Oversized bodies with valid admin credentials, on every route that
	// reads a body: refused, never 2xx or 5xx. (Routes without a body —
	// DELETE, run, rollback, restore — never read it: net/http discards it.)
	big := append([]byte(`{"x":"`), append(bytes.Repeat([]byte("a"), 2<<20), '"', '}')...)
	for _, r := range []route{
		{"POST", "/api/v1/customers"}, {"PUT", "/api/v1/customers/c1/consents/partner_offers"},
		{"PUT", "/api/v1/features/heated_seats/rollout"}, {"POST", "/api/v1/partners"},
		{"POST", "/api/v1/partners/cafe/redemptions"}, {"PUT", "/api/v1/partners/cafe/venues/v1/availability"},
	} {
		c := do(r.method, r.path, svcAdminToken, big, "")
		if c < 400 || c >= 500 {
			t.Errorf("%s %s with a 2 MiB body: %d, want 4xx", r.method, r.path, c)
		}
	}
	dc := newDashClient(t, base)
	if c := dc.login(dashOperator, dashOperatorPass); c != 200 {
		t.Fatalf("login: %d", c)
	}
	if c, _ := dc.raw("POST", "/api/service/v1/vehicles/"+vin+"/commands", map[string]string{"name": strings.Repeat("a", 2<<20)}); c < 400 || c >= 500 {
		t.Errorf("dashboard command with a 2 MiB body: %d, want 4xx", c)
	}
	// Failed logins and connects, to give the logs a chance to leak.
	const wrongPass = "wrong-password-41b2e8"
	bad := newDashClient(t, base)
	if c := bad.login(dashOperator, wrongPass); c != http.StatusUnauthorized {
		t.Errorf("wrong password login: %d", c)
	}
	o := paho.NewClientOptions().AddBroker(e.mqttURL).SetClientID(vin).SetUsername(vin).SetPassword(wrongPass).SetAutoReconnect(false)
	if tok := paho.NewClient(o).Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
		t.Fatal("MQTT connect with a wrong secret accepted")
	}
	good := e.mqtt311(vin) // a successful connect with the real secret
	_ = good
	time.Sleep(200 * time.Millisecond)
	out := logs.String()
	if len(out) == 0 {
		t.Fatal("no logs captured")
	}
	for name, secret := range map[string]string{
		"device secret": sim.Secret(fleetKey, vin), "wrong MQTT/dashboard password": wrongPass,
		"dashboard password": dashOperatorPass, "admin token": svcAdminToken, "wrong bearer": wrongBearer,
		"forged cookie": "forged-cookie-value",
	} {
		if strings.Contains(out, secret) {
			t.Errorf("%s appears in the logs", name)
		}
	}
	// The session cookie and CSRF token of the real login must not leak either.
	if dc.csrf != "" && strings.Contains(out, dc.csrf) {
		t.Error("CSRF token appears in the logs")
	}
}
