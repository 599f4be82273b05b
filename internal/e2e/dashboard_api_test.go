package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/gateway/dashboard/api"
	"github.com/telegate/telegate/gateway/dashboard/remotecmd"
)

// TestDashboardAPI drives the JSON API against the real gateway, InfluxDB
// and NATS: auth, fleet, vehicle, history, DTCs, validation errors, an
// operator command round trip with the vehicle's ack, and a restart that
// rebuilds the fleet state from InfluxDB.
func TestDashboardAPI(t *testing.T) {
	e := startEnv(t, 3, 0, withDashboard(t))
	vin1, vin2 := sim.VIN(sim.DefaultVINPrefix, 1), sim.VIN(sim.DefaultVINPrefix, 2)
	car := e.mqtt311(vin1)
	cmds := make(chan paho.Message, 8)
	if tok := car.Subscribe("vehicles/"+vin1+"/cmd/#", 1, func(_ paho.Client, m paho.Message) { cmds <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	base := time.Now().Add(-2 * time.Minute).Truncate(time.Millisecond)
	for i := 1; i <= 60; i++ {
		tok := car.Publish("vehicles/"+vin1+"/telemetry", 1, false, telemetryFrame(vin1, uint64(i), base.Add(time.Duration(i)*time.Second)))
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	if tok := car.Publish("vehicles/"+vin1+"/diag", 1, false, diagReport(vin1, 1, base.Add(61*time.Second), true,
		map[string]uint8{"P0301": 2})); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("diag: %v", tok.Error())
	}

	// Unauthenticated: 401 on every API route, login page redirect on pages.
	anon := newDashClient(t, e.dashURL())
	for _, p := range []string{"/api/service/v1/fleet", "/api/service/v1/vehicles/" + vin1, "/api/service/v1/dtcs", "/api/service/v1/vehicles/" + vin1 + "/history?signals=Vehicle.Speed"} {
		if code := anon.do("GET", p, nil, nil); code != http.StatusUnauthorized {
			t.Fatalf("anonymous GET %s: %d", p, code)
		}
	}
	if code, _ := anon.raw("GET", "/ui/", nil); code != http.StatusSeeOther {
		t.Fatalf("anonymous page: %d", code)
	}
	if code := anon.login(dashViewer, "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("bad password: %d", code)
	}

	viewer := newDashClient(t, e.dashURL())
	if code := viewer.login(dashViewer, dashViewerPass); code != http.StatusOK {
		t.Fatalf("login: %d", code)
	}
	var fleet api.FleetResponse
	eventually(t, "vehicle 1 connected with P0301 in the fleet list", func() error {
		if code := viewer.do("GET", "/api/service/v1/fleet?dtc=P0301&status=connected", nil, &fleet); code != 200 {
			return fmt.Errorf("status %d", code)
		}
		if fleet.Total != 1 || fleet.Items[0].VIN != vin1 || fleet.Items[0].Health != "critical" {
			return fmt.Errorf("fleet %+v", fleet.Page)
		}
		return nil
	})
	if fleet.Counts.Vehicles != 3 || fleet.Counts.Connected < 1 {
		t.Fatalf("counts %+v", fleet.Counts)
	}
	viewer.do("GET", "/api/service/v1/fleet?page=2&page_size=2", nil, &fleet)
	if fleet.Total != 3 || len(fleet.Items) != 1 || fleet.Items[0].VIN != sim.VIN(sim.DefaultVINPrefix, 3) {
		t.Fatalf("page 2: %+v", fleet.Page)
	}

	var v api.VehicleResponse
	eventually(t, "vehicle detail", func() error {
		viewer.do("GET", "/api/service/v1/vehicles/"+vin1, nil, &v)
		if len(v.OpenDTCs) != 1 || v.OpenDTCs[0].Description != describeDTC("P0301") || v.OpenDTCs[0].Severity != "critical" || !v.MIL {
			return fmt.Errorf("open dtcs %+v", v.OpenDTCs)
		}
		return nil
	})

	var h api.HistoryResponse
	eventually(t, "speed history", func() error {
		if code := viewer.do("GET", "/api/service/v1/vehicles/"+vin1+"/history?signals=Vehicle.Speed,Vehicle.IsMoving&range=15m&window=10s&agg=max", nil, &h); code != 200 {
			return fmt.Errorf("status %d", code)
		}
		if len(h.Series) != 2 || len(h.Series[0].Points) < 5 || h.Series[0].Unit != "km/h" {
			return fmt.Errorf("history %+v", h.Series)
		}
		return nil
	})
	var dtcs api.VehicleDTCsResponse
	eventually(t, "vehicle DTC history", func() error {
		viewer.do("GET", "/api/service/v1/vehicles/"+vin1+"/dtcs", nil, &dtcs)
		if len(dtcs.History) != 1 || dtcs.History[0].Code != "P0301" || !dtcs.History[0].Open || dtcs.History[0].LastStatus != "confirmed" {
			return fmt.Errorf("dtcs %+v", dtcs)
		}
		return nil
	})
	var alerts api.AlertsResponse
	viewer.do("GET", "/api/service/v1/dtcs?severity=critical", nil, &alerts)
	if alerts.Total != 1 || alerts.Items[0].VIN != vin1 || alerts.Items[0].Code != "P0301" {
		t.Fatalf("alerts %+v", alerts)
	}

	// Validation: 400 with a message, 404 for unknown vehicles.
	bad := map[string]string{
		"/api/service/v1/fleet?page_size=0":                                                      "page_size",
		"/api/service/v1/fleet?page_size=100000":                                                 "page_size",
		"/api/service/v1/fleet?status=maybe":                                                     "status",
		"/api/service/v1/vehicles/not-a-vin":                                                     "not a VIN",
		"/api/service/v1/vehicles/" + vin1 + "/history":                                          "signals is required",
		"/api/service/v1/vehicles/" + vin1 + "/history?signals=Vehicle.Nope":                     "unknown signal",
		"/api/service/v1/vehicles/" + vin1 + "/history?signals=Vehicle.Speed&range=400d":         "maximum",
		"/api/service/v1/vehicles/" + vin1 + "/history?signals=Vehicle.Speed&range=7d&window=1s": "use a larger window",
		"/api/service/v1/vehicles/" + vin1 + "/history?signals=Vehicle.Speed&agg=median":         "agg",
		"/api/service/v1/vehicles/" + vin1 + "/history?signals=Vehicle.Speed&start=yesterday":    "RFC 3339",
		"/api/service/v1/dtcs?severity=bad":                                                      "severity",
	}
	for p, want := range bad {
		code, msg := viewer.apiError("GET", p)
		if code != http.StatusBadRequest || !strings.Contains(msg, want) {
			t.Errorf("GET %s: %d %q, want 400 mentioning %q", p, code, msg, want)
		}
	}
	if code, _ := viewer.apiError("GET", "/api/service/v1/vehicles/WVWZZZ1JZXW000001"); code != http.StatusNotFound {
		t.Errorf("unknown vin: %d", code)
	}
	if code, _ := viewer.apiError("GET", "/api/service/v1/nope"); code != http.StatusNotFound {
		t.Errorf("unknown route: %d", code)
	}

	// Commands: viewers may not; operators may, with the CSRF token.
	if code := viewer.do("POST", "/api/service/v1/vehicles/"+vin1+"/commands", api.CommandRequest{Name: "ping"}, nil); code != http.StatusForbidden {
		t.Fatalf("viewer command: %d", code)
	}
	op := newDashClient(t, e.dashURL())
	op.login(dashOperator, dashOperatorPass)
	csrf := op.csrf
	op.csrf = ""
	if code := op.do("POST", "/api/service/v1/vehicles/"+vin1+"/commands", api.CommandRequest{Name: "ping"}, nil); code != http.StatusForbidden {
		t.Fatalf("command without CSRF token: %d", code)
	}
	op.csrf = csrf
	if code := op.do("POST", "/api/service/v1/vehicles/"+vin1+"/commands", api.CommandRequest{Name: "clear_dtc_reminder", Params: map[string]string{"code": "X"}}, nil); code != http.StatusBadRequest {
		t.Fatalf("bad param: %d", code)
	}
	var rec remotecmd.Record
	if code := op.do("POST", "/api/service/v1/vehicles/"+vin1+"/commands", api.CommandRequest{Name: "clear_dtc_reminder", Params: map[string]string{"code": "P0301"}}, &rec); code != http.StatusAccepted {
		t.Fatalf("command: %d", code)
	}
	var got wire.Command
	select {
	case m := <-cmds:
		if m.Topic() != "vehicles/"+vin1+"/cmd/clear_dtc_reminder" {
			t.Fatalf("topic %s", m.Topic())
		}
		if err := wire.DecodeCommand(m.Payload(), &got); err != nil || got.CmdID != rec.CmdID || len(got.Params) != 1 || got.Params[0].Value != "P0301" {
			t.Fatalf("command %+v: %v", got, err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the vehicle did not receive the command")
	}
	ack, _ := (&wire.CommandAck{Version: wire.Version, CmdID: got.CmdID, VIN: wire.Ident(vin1), TimeMs: time.Now().UnixMilli(), Status: wire.AckApplied}).MarshalMsg(nil)
	if tok := car.Publish("vehicles/"+vin1+"/cmd-ack", 1, false, ack); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("ack: %v", tok.Error())
	}
	var hist api.CommandsResponse
	eventually(t, "command acked in the history", func() error {
		viewer.do("GET", "/api/service/v1/vehicles/"+vin1+"/commands", nil, &hist)
		if len(hist.Items) != 1 || hist.Items[0].Status != "applied" || hist.Items[0].User != dashOperator || len(hist.Acks) != 1 {
			return fmt.Errorf("history %+v", hist)
		}
		return nil
	})
	if testutilCounter(t, e, "telegate_dashboard_commands_total", `result="sent"`) != 1 {
		t.Fatal("command not counted")
	}
	if testutilCounter(t, e, "telegate_dashboard_http_requests_total", `route="api_fleet"`) < 2 {
		t.Fatal("requests not counted")
	}

	// Restart: the state comes back from InfluxDB (DTC, last seen) and the
	// command history from NATS.
	car.Disconnect(100)
	if err := e.gw.Close(); err != nil {
		t.Fatal(err)
	}
	e.start()
	after := newDashClient(t, e.dashURL())
	after.login(dashViewer, dashViewerPass)
	eventually(t, "state rebuilt after restart", func() error {
		var v api.VehicleResponse
		after.do("GET", "/api/service/v1/vehicles/"+vin1, nil, &v)
		if !v.Ready || len(v.OpenDTCs) != 1 || v.OpenDTCs[0].Code != "P0301" || v.Connected || v.LastSeen.IsZero() {
			return fmt.Errorf("after restart: ready %v dtcs %+v connected %v last seen %v", v.Ready, v.OpenDTCs, v.Connected, v.LastSeen)
		}
		var hist api.CommandsResponse
		after.do("GET", "/api/service/v1/vehicles/"+vin1+"/commands", nil, &hist)
		if len(hist.Items) != 1 || hist.Items[0].Status != "applied" {
			return fmt.Errorf("commands after restart %+v", hist.Items)
		}
		return nil
	})
	var v2 api.VehicleResponse
	after.do("GET", "/api/service/v1/vehicles/"+vin2, nil, &v2)
	if len(v2.OpenDTCs) != 0 || v2.Health != "ok" {
		t.Fatalf("vehicle 2: %+v", v2)
	}
}
