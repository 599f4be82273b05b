package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	ocpp16 "github.com/lorenzodonini/ocpp-go/ocpp1.6"
	"github.com/lorenzodonini/ocpp-go/ocpp1.6/core"
	types16 "github.com/lorenzodonini/ocpp-go/ocpp1.6/types"
	ocpp201 "github.com/lorenzodonini/ocpp-go/ocpp2.0.1"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/provisioning"
	"github.com/lorenzodonini/ocpp-go/ocpp2.0.1/transactions"
	types201 "github.com/lorenzodonini/ocpp-go/ocpp2.0.1/types"
	"github.com/lorenzodonini/ocpp-go/ws"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/gateway/config"
	"github.com/telegate/telegate/internal/svctest"
)

func withOCPP(c *config.Config) {
	c.OCPP.Enabled, c.OCPP.Listen, c.OCPP.SecurityProfile = true, "127.0.0.1:0", 1
}

func (e *env) ocppURL() string { return "ws://" + e.gw.OCPPAddr() + "/ocpp" }

func wsClient(id, secret string) *ws.Client {
	c := ws.NewClient()
	c.SetBasicAuth(id, secret)
	return c
}

// TestOCPPSessions: a 1.6J and a 2.0.1 station run a session over real
// WebSockets; the sessions land in InfluxDB and on NATS, and an offline
// replay of the same messages writes nothing new.
func TestOCPPSessions(t *testing.T) {
	e := startEnv(t, 0, 2, withOCPP)
	st16, st201 := sim.StationID(sim.DefaultStationPrefix, 1), sim.StationID(sim.DefaultStationPrefix, 2)
	since := time.Now().Add(-time.Hour)
	t0 := time.Now().Add(-10 * time.Minute).Truncate(time.Second)

	// OCPP 1.6J.
	cp := ocpp16.NewChargePoint(st16, nil, wsClient(st16, sim.Secret(fleetKey, st16)))
	if err := cp.Start(e.ocppURL()); err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	if _, err := cp.BootNotification("sim", "telegate"); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.StatusNotification(1, core.NoError, core.ChargePointStatusCharging, func(r *core.StatusNotificationRequest) {
		r.Timestamp = types16.NewDateTime(t0)
	}); err != nil {
		t.Fatal(err)
	}
	start, err := cp.StartTransaction(1, "TAG16", 1000, types16.NewDateTime(t0))
	if err != nil {
		t.Fatal(err)
	}
	mv := []types16.MeterValue{{Timestamp: types16.NewDateTime(t0.Add(time.Minute)), SampledValue: []types16.SampledValue{
		{Value: "4.5", Measurand: types16.MeasurandEnergyActiveImportRegister, Unit: types16.UnitOfMeasureKWh},
		{Value: "22000", Measurand: types16.MeasurandPowerActiveImport, Unit: types16.UnitOfMeasureW},
		{Value: "55", Measurand: types16.MeasurandSoC, Unit: types16.UnitOfMeasurePercent}}}}
	if _, err := cp.MeterValues(1, mv, func(r *core.MeterValuesRequest) { r.TransactionId = &start.TransactionId }); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.StopTransaction(9000, types16.NewDateTime(t0.Add(2*time.Minute)), start.TransactionId); err != nil {
		t.Fatal(err)
	}
	// Offline replay (1.6 queued messages): the same Start, MeterValues and Stop again.
	again, err := cp.StartTransaction(1, "TAG16", 1000, types16.NewDateTime(t0))
	if err != nil || again.TransactionId != start.TransactionId {
		t.Fatalf("replayed start: %v id %d, want %d", err, again.TransactionId, start.TransactionId)
	}
	if _, err := cp.MeterValues(1, mv, func(r *core.MeterValuesRequest) { r.TransactionId = &start.TransactionId }); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.StopTransaction(9000, types16.NewDateTime(t0.Add(2*time.Minute)), start.TransactionId); err != nil {
		t.Fatal(err)
	}

	// OCPP 2.0.1.
	cs := ocpp201.NewChargingStation(st201, nil, wsClient(st201, sim.Secret(fleetKey, st201)))
	if err := cs.Start(e.ocppURL()); err != nil {
		t.Fatal(err)
	}
	defer cs.Stop()
	if _, err := cs.BootNotification(provisioning.BootReasonPowerUp, "sim", "telegate"); err != nil {
		t.Fatal(err)
	}
	kwh := func(v float64, soc float64) []types201.MeterValue {
		return []types201.MeterValue{{Timestamp: *types201.NewDateTime(t0), SampledValue: []types201.SampledValue{
			{Value: v, Measurand: types201.MeasurandEnergyActiveImportRegister, UnitOfMeasure: &types201.UnitOfMeasure{Unit: "kWh"}},
			{Value: soc, Measurand: types201.MeasurandSoC}}}}
	}
	ev := func(typ transactions.TransactionEvent, seq int, at time.Time, offline bool, meter []types201.MeterValue) {
		t.Helper()
		req := transactions.NewTransactionEventRequest(typ, types201.NewDateTime(at), transactions.TriggerReasonAuthorized, seq,
			transactions.Transaction{TransactionID: "TX-201"})
		req.Offline = offline
		req.Evse = &types201.EVSE{ID: 1}
		req.IDToken = &types201.IdToken{IdToken: "TAG201", Type: types201.IdTokenTypeISO14443}
		req.MeterValue = meter
		if _, err := cs.SendRequest(req); err != nil {
			t.Fatal(err)
		}
	}
	ev(transactions.TransactionEventStarted, 0, t0, false, kwh(10, 20))
	ev(transactions.TransactionEventUpdated, 1, t0.Add(time.Minute), false, kwh(12, 30))
	ev(transactions.TransactionEventEnded, 2, t0.Add(2*time.Minute), false, kwh(15, 40))
	// Offline replay with the offline flag: same seqNos, nothing new, nothing restarted.
	ev(transactions.TransactionEventStarted, 0, t0, true, kwh(10, 20))
	ev(transactions.TransactionEventUpdated, 1, t0.Add(time.Minute), true, kwh(12, 30))
	ev(transactions.TransactionEventEnded, 2, t0.Add(2*time.Minute), true, kwh(15, 40))

	// 3 points per station in InfluxDB (started, updated, stopped): no duplicate.
	eventually(t, "sessions stored", countIs(t, e.influx, "charging", "seq", since, 6))
	rows := e.influx.Query(t, `SELECT "energy_wh" FROM "charging" WHERE "event" = 'stopped' AND time >= now() - 1h GROUP BY *`)
	got := map[string]any{}
	for _, r := range rows {
		got[r["station"].(string)] = r["_value"]
	}
	if got[st16] != 8000.0 || got[st201] != 5000.0 {
		t.Fatalf("stopped energy: %v", got)
	}
	eventually(t, "status stored", countIs(t, e.influx, "charger_status", "seq", since, 1))

	// NATS: started events for both, each exactly once.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cons, err := svctest.Ops(t, e.gw.Bus()).JetStream().OrderedConsumer(ctx, "CHARGING", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"charging.session.>"}})
	if err != nil {
		t.Fatal(err)
	}
	subjects := map[string]int{}
	for range 6 {
		m, err := cons.Next(jetstream.FetchMaxWait(30 * time.Second))
		if err != nil {
			t.Fatalf("events so far %v: %v", subjects, err)
		}
		subjects[m.Subject()]++
	}
	if m, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second)); err == nil {
		t.Fatalf("extra event %s (replay duplicated)", m.Subject())
	}
	for _, s := range []string{"charging.session.started." + st16, "charging.session.stopped." + st16,
		"charging.session.started." + st201, "charging.session.stopped." + st201} {
		if subjects[s] != 1 {
			t.Fatalf("%s: %d events (%v)", s, subjects[s], subjects)
		}
	}
}

func dialOCPP(e *env, id, user, pass, proto string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	if user != "" {
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	}
	d := websocket.Dialer{Subprotocols: []string{proto}, HandshakeTimeout: 10 * time.Second}
	return d.Dial(e.ocppURL()+"/"+id, h)
}

// TestOCPPRefusesBadCredentials: wrong secret, another station's secret,
// a vehicle identity and no credentials are all refused with 401.
func TestOCPPRefusesBadCredentials(t *testing.T) {
	e := startEnv(t, 1, 2, withOCPP)
	st1, st2 := sim.StationID(sim.DefaultStationPrefix, 1), sim.StationID(sim.DefaultStationPrefix, 2)
	vin := sim.VIN(sim.DefaultVINPrefix, 1)
	for _, c := range []struct{ name, id, user, pass string }{
		{"wrong secret", st1, st1, "nope"},
		{"other station's secret", st1, st1, sim.Secret(fleetKey, st2)},
		{"username is another station", st1, st2, sim.Secret(fleetKey, st2)},
		{"no credentials", st1, "", ""},
		{"unknown station", "NOPE-1", "NOPE-1", "x"},
		{"vehicle identity", vin, vin, sim.Secret(fleetKey, vin)},
	} {
		conn, resp, err := dialOCPP(e, c.id, c.user, c.pass, "ocpp1.6")
		if err == nil {
			conn.Close()
			t.Fatalf("%s: connected", c.name)
		}
		if resp == nil || (resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusNotFound) {
			t.Fatalf("%s: %v %v", c.name, resp, err)
		}
	}
	conn, _, err := dialOCPP(e, st1, st1, sim.Secret(fleetKey, st1), "ocpp1.6")
	if err != nil {
		t.Fatalf("right credentials refused: %v", err)
	}
	conn.Close()
}

// TestOCPPMalformedFrames: bad frames get the CALLERROR the spec names;
// an oversized frame and a flood close the socket; all are counted.
func TestOCPPMalformedFrames(t *testing.T) {
	e := startEnv(t, 0, 1, withOCPP, func(c *config.Config) { c.OCPP.MaxFrameBytes = 4096; c.OCPP.RatePerConn, c.OCPP.RateBurst = 5, 20 })
	st := sim.StationID(sim.DefaultStationPrefix, 1)
	for _, proto := range []string{"ocpp1.6", "ocpp2.0.1"} {
		v201 := proto == "ocpp2.0.1"
		conn, _, err := dialOCPP(e, st, st, sim.Secret(fleetKey, st), proto)
		if err != nil {
			t.Fatal(err)
		}
		format := map[bool]string{false: "FormationViolation", true: "FormatViolation"}[v201]
		rpc := map[bool]string{false: "ProtocolError", true: "RpcFrameworkError"}[v201]
		for _, c := range []struct{ in, id, code string }{
			{`not json`, "-1", rpc},
			{`[2,"a1","NoSuchAction",{}]`, "a1", "NotImplemented"},
			{`[2,"a2","Heartbeat",[]]`, "a2", format},
			{`[2,"a3","StatusNotification",{"connectorId":"x"}]`, "a3", map[bool]string{false: format, true: format}[v201]},
			{`[2,"a4","BootNotification",{}]`, "a4", "OccurrenceConstraintViolation"},
			{`[7,"a5","Heartbeat",{}]`, "a5", map[bool]string{false: "NotSupported", true: "MessageTypeNotSupported"}[v201]},
		} {
			if err := conn.WriteMessage(websocket.TextMessage, []byte(c.in)); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, b, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("%s %s: %v", proto, c.in, err)
			}
			var f []any
			if err := json.Unmarshal(b, &f); err != nil || len(f) < 3 || f[0] != 4.0 || f[1] != c.id || f[2] != c.code {
				t.Fatalf("%s %s: got %s, want CALLERROR %s %s", proto, c.in, b, c.id, c.code)
			}
		}
		// Oversized frame: the socket is closed with 1009.
		big := `[2,"b","Heartbeat",{"x":"` + strings.Repeat("a", 8192) + `"}]`
		_ = conn.WriteMessage(websocket.TextMessage, []byte(big))
		_, _, err = conn.ReadMessage()
		if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Fatalf("%s oversized: %v", proto, err)
		}
		conn.Close()
		// gorilla/websocket writes the 1009 close frame itself before the
		// server's read loop sees the error and counts the close: wait for
		// the count, or the next connection of this station could replace
		// the old socket first and have it counted as "replaced".
		want := fmt.Sprintf(`telegate_ocpp_closed_total{reason="oversized"} %d`, map[bool]int{false: 1, true: 2}[v201])
		eventually(t, "oversized close counted", func() error {
			if !strings.Contains(scrapeMetrics(t, e), want) {
				return fmt.Errorf("metrics lack %s", want)
			}
			return nil
		})
	}
	// Flood: closed with 1008.
	conn, _, err := dialOCPP(e, st, st, sim.Secret(fleetKey, st), "ocpp1.6")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := range 200 {
			if conn.WriteMessage(websocket.TextMessage, []byte(`[2,"h`+strconv.Itoa(i)+`","Heartbeat",{}]`)) != nil {
				return
			}
		}
	}()
	for {
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, _, err = conn.ReadMessage(); err != nil {
			break
		}
	}
	// The server answers the flood with a 1008 close frame and closes the
	// socket; frames this test is still writing then make the kernel reset
	// the connection, which can reach the reader before the close frame.
	// Either way the socket is closed, and the metrics below must say it
	// was for the rate limit.
	if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("flood: %v", err)
	}
	conn.Close()
	// The close frame can reach the client before the server has counted
	// the close: poll the counters until they settle.
	eventually(t, "OCPP counters", func() error {
		body := scrapeMetrics(t, e)
		for _, want := range []string{`telegate_ocpp_closed_total{reason="rate_limited"} 1`, `telegate_ocpp_closed_total{reason="oversized"} 2`,
			`telegate_ocpp_callerrors_total{code="NotImplemented",version="ocpp1.6"} 1`, `telegate_ocpp_malformed_total{reason="not_json",version="ocpp2.0.1"} 1`} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("metrics lack %s", want)
			}
		}
		return nil
	})
}

// scrapeMetrics renders the gateway's counters as `name{l="v",...} value` lines.
func scrapeMetrics(t *testing.T, e *env) string {
	t.Helper()
	mfs, err := e.gw.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+`="`+l.GetValue()+`"`)
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			sb.WriteString(mf.GetName() + "{" + strings.Join(ls, ",") + "} " + strconv.FormatFloat(v, 'g', -1, 64) + "\n")
		}
	}
	return sb.String()
}
