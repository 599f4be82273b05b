package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/dtc"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/config"
	"github.com/telegate/telegate/gateway/dashboard/auth"
)

// Dashboard users of the e2e tests (bcrypt cost 8 keeps them fast).
const (
	dashOperator, dashOperatorPass = "op", "op-secret-1"
	dashViewer, dashViewerPass     = "viewer", "viewer-secret-1"
)

// withDashboard writes a users file and points the dashboard at it.
func withDashboard(t testing.TB) envOpt {
	t.Helper()
	op, err := auth.HashPassword(dashOperatorPass, 8)
	if err != nil {
		t.Fatal(err)
	}
	vw, _ := auth.HashPassword(dashViewerPass, 8)
	path := filepath.Join(t.TempDir(), "users.yaml")
	body := fmt.Sprintf("users:\n  - name: %s\n    role: operator\n    password_hash: %q\n  - name: %s\n    role: viewer\n    password_hash: %q\n",
		dashOperator, op, dashViewer, vw)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) {
		c.Dashboard.Enabled = true
		c.Dashboard.UsersFile = path
	}
}

// dashClient is a logged-in API client (cookie jar + CSRF token).
type dashClient struct {
	t    testing.TB
	base string
	hc   *http.Client
	csrf string
}

func (e *env) dashURL() string { return "http://" + e.gw.HTTPAddr() }

func newDashClient(t testing.TB, base string) *dashClient {
	jar, _ := cookiejar.New(nil)
	c := &dashClient{t: t, base: base, hc: &http.Client{Jar: jar, Timeout: 60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	t.Cleanup(c.hc.CloseIdleConnections)
	return c
}

func (c *dashClient) login(user, pass string) int {
	c.t.Helper()
	var out struct {
		CSRF string `json:"csrf_token"`
	}
	code := c.do("POST", "/api/service/v1/login", map[string]string{"username": user, "password": pass}, &out)
	c.csrf = out.CSRF
	return code
}

// do sends a request (JSON body when body != nil) and decodes a JSON answer
// into out (when non-nil and the status is 2xx). It returns the status.
func (c *dashClient) do(method, path string, body, out any) int {
	c.t.Helper()
	code, b := c.raw(method, path, body)
	if out != nil && code/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
	return code
}

func (c *dashClient) raw(method, path string, body any) (int, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.csrf != "" && method != "GET" {
		req.Header.Set(auth.CSRFHeader, c.csrf)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, b
}

// apiError returns the {"error"} message of a non-2xx answer.
func (c *dashClient) apiError(method, path string) (int, string) {
	c.t.Helper()
	code, b := c.raw(method, path, nil)
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	return code, e.Error
}

func diagReport(vin string, seq uint64, ts time.Time, mil bool, codes map[string]uint8) []byte {
	r := wire.DiagReport{Version: wire.Version, VIN: wire.Ident(vin), Seq: seq, TimeMs: ts.UnixMilli(), MIL: mil, OdometerKm: 12345.6}
	for code, st := range codes {
		c, err := dtc.Parse(code)
		if err != nil {
			panic(err)
		}
		r.DTCs = append(r.DTCs, wire.DTCEntry{Code: c, Status: st})
	}
	b, err := r.MarshalMsg(nil)
	if err != nil {
		panic(err)
	}
	return b
}

func describeDTC(code string) string {
	c, _ := dtc.Parse(code)
	d, _, _ := dtc.Describe(c)
	return d
}

// drivingFrame is a telemetry frame of a plausible drive (smooth speed,
// falling state of charge), so history charts look like real data.
func drivingFrame(vin string, seq uint64, ts time.Time) []byte {
	x := float64(seq)
	speed := math.Max(0, 55+35*math.Sin(x/9)+12*math.Sin(x/2.3))
	f := wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident(vin), Seq: seq, TimeMs: ts.UnixMilli(), Signals: []wire.Signal{
		{ID: catalog.Speed, Value: math.Round(speed*10) / 10},
		{ID: catalog.TractionSoC, Value: math.Round((82-x*0.06)*10) / 10},
		{ID: catalog.TractionPower, Value: math.Round(speed * 310)},
		{ID: catalog.TractionBatteryTemp, Value: math.Round((24+x*0.03)*10) / 10},
		{ID: catalog.CabinTemp, Value: 21.5},
		{ID: catalog.ExteriorTemp, Value: 8},
		{ID: catalog.LowVoltageBattery, Value: 12.6},
		{ID: catalog.IsMoving, Value: 1},
	}}
	b, err := f.MarshalMsg(nil)
	if err != nil {
		panic(err)
	}
	return b
}
