package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/gateway/config"
	"github.com/telegate/telegate/gateway/dashboard/api"
	"github.com/telegate/telegate/gateway/dashboard/remotecmd"
)

// fromAddr returns a dashboard client whose connections come from the
// loopback address local (another "source address" for throttling).
func fromAddr(t *testing.T, base, local string) *dashClient {
	c := newDashClient(t, base)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	c.hc.Transport = &http.Transport{DialContext: d.DialContext}
	return c
}

// TestDashboardLoginThrottle: 80 concurrent wrong passwords for the
// operator from one address check at most MaxFailures (5) passwords — the
// rest get 429 with Retry-After at once — and the real operator from
// another address still logs in (no lockout at an attacker's will).
func TestDashboardLoginThrottle(t *testing.T) {
	e := startEnv(t, 1, 0, withDashboard(t))
	base := e.dashURL()
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	retryAfter := 0
	hc := &http.Client{Timeout: 60 * time.Second}
	for range 80 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", base+"/api/service/v1/login",
				strings.NewReader(`{"username":"`+dashOperator+`","password":"wrong-guess"}`))
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			codes[resp.StatusCode]++
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode == http.StatusTooManyRequests && err == nil && ra >= 1 {
				retryAfter++
			}
		}()
	}
	wg.Wait()
	checks := testutilCounter(t, e, "telegate_dashboard_logins_total", `result="bad_credentials"`)
	if checks > 5 || codes[http.StatusUnauthorized] != int(checks) || codes[http.StatusTooManyRequests] != 80-int(checks) {
		t.Fatalf("%v password checks (want ≤ 5); answers %v", checks, codes)
	}
	if retryAfter != codes[http.StatusTooManyRequests] {
		t.Fatalf("%d of %d 429 answers had a Retry-After", retryAfter, codes[http.StatusTooManyRequests])
	}
	// The attacker's address stays throttled; the operator elsewhere is not.
	if code := newDashClient(t, base).login(dashOperator, dashOperatorPass); code != http.StatusTooManyRequests {
		t.Fatalf("attacker address, right password at once: %d, want 429", code)
	}
	if code := fromAddr(t, base, "127.0.0.2").login(dashOperator, dashOperatorPass); code != http.StatusOK {
		t.Fatalf("real operator from another address: %d", code)
	}
}

// TestDashboardAckFromOtherVehicle: vehicle B acks vehicle A's command id
// over real MQTT (with its own VIN, which passes validation, and with A's
// VIN in the payload): A's command state is unchanged; A's own ack applies.
func TestDashboardAckFromOtherVehicle(t *testing.T) {
	e := startEnv(t, 2, 0, withDashboard(t))
	vinA, vinB := sim.VIN(sim.DefaultVINPrefix, 1), sim.VIN(sim.DefaultVINPrefix, 2)
	carA, carB := e.mqtt311(vinA), e.mqtt311(vinB)
	op := newDashClient(t, e.dashURL())
	if code := op.login(dashOperator, dashOperatorPass); code != 200 {
		t.Fatalf("login %d", code)
	}
	var rec remotecmd.Record
	if code := op.do("POST", "/api/service/v1/vehicles/"+vinA+"/commands", api.CommandRequest{Name: "ping"}, &rec); code != http.StatusAccepted {
		t.Fatalf("command: %d", code)
	}
	if len(strings.TrimPrefix(rec.CmdID, "dash-")) != 32 {
		t.Fatalf("cmd id %q: want 128 random bits", rec.CmdID)
	}
	ack := func(c paho.Client, topicVIN, payloadVIN string, st uint8) {
		b, _ := (&wire.CommandAck{Version: wire.Version, CmdID: rec.CmdID, VIN: wire.Ident(payloadVIN), TimeMs: time.Now().UnixMilli(), Status: st}).MarshalMsg(nil)
		if tok := c.Publish("vehicles/"+topicVIN+"/cmd-ack", 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("ack: %v", tok.Error())
		}
	}
	ack(carB, vinB, vinB, wire.AckRejected)
	ack(carB, vinB, vinA, wire.AckFailed) // a payload naming A changes nothing either
	eventually(t, "B's ack recorded in B's own history", func() error {
		var h api.CommandsResponse
		op.do("GET", "/api/service/v1/vehicles/"+vinB+"/commands", nil, &h)
		if len(h.Items) != 1 || h.Items[0].CmdID != rec.CmdID {
			return fmt.Errorf("B's history %+v", h.Items)
		}
		return nil
	})
	var h api.CommandsResponse
	op.do("GET", "/api/service/v1/vehicles/"+vinA+"/commands", nil, &h)
	if len(h.Items) != 1 || h.Items[0].Status != "sent" || h.Items[0].Reason != "" || !h.Items[0].AckTime.IsZero() {
		t.Fatalf("A's command changed by B's ack: %+v", h.Items)
	}
	ack(carA, vinA, vinA, wire.AckApplied)
	eventually(t, "A's own ack applied", func() error {
		var h api.CommandsResponse
		op.do("GET", "/api/service/v1/vehicles/"+vinA+"/commands", nil, &h)
		if len(h.Items) != 1 || h.Items[0].Status != "applied" {
			return fmt.Errorf("A's history %+v", h.Items)
		}
		return nil
	})
}

// openLive opens a live stream and returns its status and a reader of its
// events (closed with the test).
func (c *dashClient) openLive(t *testing.T, vin string) (int, *bufio.Reader) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", c.base+"/api/service/v1/vehicles/"+vin+"/live", nil)
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp.StatusCode, bufio.NewReader(resp.Body)
}

// TestDashboardPerUserCaps: one viewer logging in again and again evicts
// only their own oldest sessions (the operator stays logged in), and one
// viewer opening live streams gets 429 at the per-user cap while the
// operator still opens one.
func TestDashboardPerUserCaps(t *testing.T) {
	caps := func(c *config.Config) {
		c.Dashboard.MaxSessionsPerUser = 3
		c.Dashboard.MaxLiveStreamsPerUser = 2
		c.Dashboard.MaxLiveStreams = 8
	}
	e := startEnv(t, 1, 0, withDashboard(t), caps)
	vin := sim.VIN(sim.DefaultVINPrefix, 1)
	op := newDashClient(t, e.dashURL())
	if code := op.login(dashOperator, dashOperatorPass); code != 200 {
		t.Fatalf("login %d", code)
	}
	var viewers []*dashClient
	for range 6 {
		v := newDashClient(t, e.dashURL())
		if code := v.login(dashViewer, dashViewerPass); code != 200 {
			t.Fatalf("viewer login %d", code)
		}
		viewers = append(viewers, v)
	}
	if code := op.do("GET", "/api/service/v1/session", nil, nil); code != 200 {
		t.Fatalf("operator logged out by the viewer's logins: %d", code)
	}
	for i, v := range viewers {
		want := http.StatusUnauthorized
		if i >= 3 {
			want = http.StatusOK
		}
		if code := v.do("GET", "/api/service/v1/session", nil, nil); code != want {
			t.Fatalf("viewer session %d: %d, want %d", i, code, want)
		}
	}
	v := viewers[5]
	for i := range 2 {
		if code, _ := v.openLive(t, vin); code != http.StatusOK {
			t.Fatalf("viewer stream %d: %d", i, code)
		}
	}
	if code, msg := v.apiError("GET", "/api/service/v1/vehicles/"+vin+"/live"); code != http.StatusTooManyRequests || !strings.Contains(msg, "live streams") {
		t.Fatalf("viewer's 3rd stream: %d %q, want 429", code, msg)
	}
	if code, _ := op.openLive(t, vin); code != http.StatusOK {
		t.Fatalf("operator's stream while the viewer is at the cap: %d", code)
	}
}

func positionFrame(vin string, seq uint64, ts time.Time) []byte {
	f := wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident(vin), Seq: seq, TimeMs: ts.UnixMilli(), Signals: []wire.Signal{
		{ID: catalog.Speed, Value: 42}, {ID: catalog.Latitude, Value: 48.1371}, {ID: catalog.Longitude, Value: 11.5754},
		{ID: catalog.Heading, Value: 90},
	}}
	b, err := f.MarshalMsg(nil)
	if err != nil {
		panic(err)
	}
	return b
}

// readEvent returns the data of the next SSE event named name.
func readEvent(t *testing.T, r *bufio.Reader, name string) string {
	t.Helper()
	cur := ""
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("live stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		if ev, ok := strings.CutPrefix(line, "event: "); ok {
			cur = ev
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok && cur == name {
			return d
		}
	}
}

// TestDashboardLocationConsent: a vehicle whose owner grants
// location_sharing shows its position (detail, history, live); one whose
// owner does not shows none, to viewers and operators alike; withdrawing
// the consent hides it at once.
func TestDashboardLocationConsent(t *testing.T) {
	e := startEnv(t, 2, 0, withServices(t), withDashboard(t))
	vin1, vin2 := sim.VIN(sim.DefaultVINPrefix, 1), sim.VIN(sim.DefaultVINPrefix, 2) // owners c1, c2
	if code := e.api("PUT", "/api/v1/customers/c1/consents/location_sharing", svcAdminToken, map[string]any{"granted": true}, nil); code != 200 {
		t.Fatalf("grant: %d", code)
	}
	op := newDashClient(t, e.dashURL())
	op.login(dashOperator, dashOperatorPass)
	vw := newDashClient(t, e.dashURL())
	vw.login(dashViewer, dashViewerPass)
	_, live2 := op.openLive(t, vin2)
	readEvent(t, live2, "state")
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	for _, vin := range []string{vin1, vin2} {
		c := e.mqtt311(vin)
		for i := 1; i <= 3; i++ {
			if tok := c.Publish("vehicles/"+vin+"/telemetry", 1, false, positionFrame(vin, uint64(i), base.Add(time.Duration(i)*time.Second))); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
		}
	}
	hasPos := func(vs []api.LiveSignal) bool {
		for _, v := range vs {
			if strings.HasPrefix(v.Path, api.LocationPrefix) {
				return true
			}
		}
		return false
	}
	detail := func(c *dashClient, vin string) (api.VehicleResponse, bool) {
		var v api.VehicleResponse
		c.do("GET", "/api/service/v1/vehicles/"+vin, nil, &v)
		var ls []api.LiveSignal
		for _, x := range v.Values {
			ls = append(ls, api.LiveSignal{Path: x.Path})
		}
		return v, hasPos(ls)
	}
	eventually(t, "vehicle 1 shows its position (consent)", func() error {
		for _, c := range []*dashClient{op, vw} {
			if v, pos := detail(c, vin1); !pos || !v.LocationShared {
				return fmt.Errorf("vehicle 1: position %v, location_shared %v", pos, v.LocationShared)
			}
		}
		return nil
	})
	eventually(t, "vehicle 2 shows speed but no position (no consent)", func() error {
		for _, c := range []*dashClient{op, vw} {
			v, pos := detail(c, vin2)
			if pos || v.LocationShared || len(v.Values) == 0 {
				return fmt.Errorf("vehicle 2: position %v, location_shared %v, values %+v", pos, v.LocationShared, v.Values)
			}
		}
		return nil
	})
	if code, msg := vw.apiError("GET", "/api/service/v1/vehicles/"+vin2+"/history?signals=Vehicle.CurrentLocation.Latitude&range=15m"); code != http.StatusForbidden || !strings.Contains(msg, "location") {
		t.Fatalf("vehicle 2 position history: %d %q, want 403", code, msg)
	}
	eventually(t, "vehicle 1 position history", func() error {
		var h api.HistoryResponse
		if code := vw.do("GET", "/api/service/v1/vehicles/"+vin1+"/history?signals=Vehicle.CurrentLocation.Latitude&range=15m&window=1s", nil, &h); code != 200 || len(h.Series) != 1 || len(h.Series[0].Points) == 0 {
			return fmt.Errorf("status %d %+v", code, h.Series)
		}
		return nil
	})
	var ev struct {
		Signals []api.LiveSignal `json:"signals"`
	}
	if err := json.Unmarshal([]byte(readEvent(t, live2, "signals")), &ev); err != nil || len(ev.Signals) == 0 || hasPos(ev.Signals) {
		t.Fatalf("vehicle 2 live signals %+v (%v): want speed without position", ev.Signals, err)
	}
	// Withdrawal: vehicle 1's position disappears at once.
	if code := e.api("PUT", "/api/v1/customers/c1/consents/location_sharing", svcAdminToken, map[string]any{"granted": false}, nil); code != 200 {
		t.Fatalf("withdraw: %d", code)
	}
	if v, pos := detail(vw, vin1); pos || v.LocationShared {
		t.Fatalf("vehicle 1 after withdrawal: position %v", pos)
	}
}

// TestHTTPHostAssetsErasure: a foreign Host header gets 421 (DNS
// rebinding against /metrics and the APIs); /ui/assets/ lists nothing; an
// erased customer answers 410 Gone, an unknown one 404.
func TestHTTPHostAssetsErasure(t *testing.T) {
	e := startEnv(t, 1, 0, withServices(t), withDashboard(t))
	base := e.dashURL()
	hc := &http.Client{Timeout: 10 * time.Second}
	get := func(path, host string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var sb strings.Builder
		_, _ = bufio.NewReader(resp.Body).WriteTo(&sb)
		return resp.StatusCode, sb.String()
	}
	_, port, _ := net.SplitHostPort(e.gw.HTTPAddr())
	for _, p := range []string{"/metrics", "/healthz", "/api/service/v1/fleet", "/api/v1/customers"} {
		if code, body := get(p, "rebound.attacker.example:"+port); code != http.StatusMisdirectedRequest || !strings.Contains(body, "allowed_hosts") {
			t.Errorf("GET %s with a foreign Host: %d %.100q, want 421", p, code, body)
		}
	}
	for _, h := range []string{"", "localhost:" + port} {
		if code, _ := get("/metrics", h); code != 200 {
			t.Errorf("/metrics with Host %q: %d", h, code)
		}
	}
	for _, p := range []string{"/ui/assets/", "/ui/assets/./"} {
		if code, body := get(p, ""); code != http.StatusNotFound || strings.Contains(body, "app.js") {
			t.Errorf("GET %s: %d %.100q, want 404 without a listing", p, code, body)
		}
	}
	if code, _ := get("/ui/assets/app.js", ""); code != 200 {
		t.Errorf("app.js: %d", code)
	}
	if code := e.api("DELETE", "/api/v1/customers/c1", svcAdminToken, nil, nil); code != http.StatusNoContent {
		t.Fatalf("erase: %d", code)
	}
	var errBody struct {
		Error string `json:"error"`
	}
	if code := e.api("GET", "/api/v1/customers/c1", svcAdminToken, nil, &errBody); code != http.StatusGone || !strings.Contains(errBody.Error, "erased") {
		t.Fatalf("erased customer: %d %q, want 410", code, errBody.Error)
	}
	if code := e.api("GET", "/api/v1/customers/nobody", svcAdminToken, nil, nil); code != http.StatusNotFound {
		t.Fatalf("unknown customer: %d, want 404", code)
	}
}
