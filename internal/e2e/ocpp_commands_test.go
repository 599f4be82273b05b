package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	simocpp "github.com/telegate/telegate/firmware-sim/ocpp"
	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/gateway/ocpp"
)

var errNotYet = errors.New("not yet")

// runStation runs a simulated OCPP station (no automatic sessions) until
// the test ends.
func runStation(t *testing.T, e *env, id, version string) *simocpp.Station {
	t.Helper()
	st, err := simocpp.New(simocpp.Config{URL: e.ocppURL(), ID: id, Version: version, Secret: sim.Secret(fleetKey, id),
		Seed: 5, ChargeEvery: -1, MeterInterval: time.Second, Retry: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = st.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return st
}

// TestOCPPCommandAPI: an operator sends RemoteStart/Stop, ChangeAvailability
// and Reset through the dashboard API to a connected 1.6J and 2.0.1
// station; each answer is the station's and is recorded (GET
// /api/ocpp/commands, viewer). A viewer is refused (403), an unknown
// station is 404, a registered but unconnected one 409, no session 401.
func TestOCPPCommandAPI(t *testing.T) {
	e := startEnv(t, 0, 3, withOCPP, withDashboard(t))
	ids := map[string]string{sim.StationID(sim.DefaultStationPrefix, 1): simocpp.V16, sim.StationID(sim.DefaultStationPrefix, 2): simocpp.V201}
	stations := map[string]*simocpp.Station{}
	for id, v := range ids {
		stations[id] = runStation(t, e, id, v)
	}
	eventually(t, "stations connected", func() error {
		for id := range ids {
			if _, ok := e.gw.OCPP().Mux.Connected(id); !ok {
				return errNotYet
			}
		}
		return nil
	})
	anon := newDashClient(t, e.dashURL())
	if code := anon.do("POST", "/api/ocpp/stations/CS-0001/commands", ocpp.Command{Action: "reset"}, nil); code != http.StatusUnauthorized {
		t.Fatalf("no session: %d", code)
	}
	viewer := newDashClient(t, e.dashURL())
	if code := viewer.login(dashViewer, dashViewerPass); code != http.StatusOK {
		t.Fatalf("viewer login %d", code)
	}
	op := newDashClient(t, e.dashURL())
	if code := op.login(dashOperator, dashOperatorPass); code != http.StatusOK {
		t.Fatalf("operator login %d", code)
	}
	path := func(id string) string { return "/api/ocpp/stations/" + id + "/commands" }
	if code := viewer.do("POST", path("CS-0001"), ocpp.Command{Action: "reset"}, nil); code != http.StatusForbidden {
		t.Fatalf("viewer command: %d, want 403", code)
	}
	if code := op.do("POST", path("NOPE-0001"), ocpp.Command{Action: "reset"}, nil); code != http.StatusNotFound {
		t.Fatalf("unknown station: %d, want 404", code)
	}
	if code := op.do("POST", path(sim.StationID(sim.DefaultStationPrefix, 3)), ocpp.Command{Action: "reset"}, nil); code != http.StatusConflict {
		t.Fatalf("registered, not connected: %d, want 409", code)
	}
	if code := op.do("POST", path("CS-0001"), map[string]any{"action": "launch"}, nil); code != http.StatusBadRequest {
		t.Fatalf("bad action: %d, want 400", code)
	}
	send := func(id string, c ocpp.Command, want string) {
		t.Helper()
		var res ocpp.CommandResult
		if code := op.do("POST", path(id), c, &res); code != http.StatusOK || res.Status != want || res.Station != id ||
			res.Version != "ocpp"+ids[id] {
			t.Fatalf("%s %s: %d %+v, want %s", id, c.Action, code, res, want)
		}
	}
	sent := 0
	for id := range ids {
		st := stations[id]
		send(id, ocpp.Command{Action: "remote_start", IDTag: "OPERATOR-1", Connector: 1}, "Accepted")
		eventually(t, id+" charging", func() error {
			if st.Charging() == "" {
				return errNotYet
			}
			return nil
		})
		send(id, ocpp.Command{Action: "remote_stop", TransactionID: st.Charging()}, "Accepted")
		eventually(t, id+" stopped", func() error {
			if st.Charging() != "" {
				return errNotYet
			}
			return nil
		})
		send(id, ocpp.Command{Action: "change_availability", Operative: false}, "Accepted")
		send(id, ocpp.Command{Action: "change_availability", Operative: true}, "Accepted")
		send(id, ocpp.Command{Action: "reset"}, "Accepted")
		sent += 5
	}
	// The results are recorded on NATS (charging.cmdresult.*) and listed
	// from the CHARGING stream: eventually all of them.
	var log []ocpp.CommandResult
	eventually(t, "command log", func() error {
		log = nil
		if code := viewer.do("GET", "/api/ocpp/commands", nil, &log); code != http.StatusOK || len(log) != sent {
			return fmt.Errorf("%w: %d, %d results, want %d", errNotYet, code, len(log), sent)
		}
		return nil
	})
	for _, r := range log {
		if r.Status != "Accepted" {
			t.Fatalf("recorded %+v", r)
		}
	}
	body := scrapeMetrics(t, e)
	for _, want := range []string{`telegate_ocpp_commands_total{action="remote_start",result="Accepted"} 2`,
		`telegate_ocpp_commands_total{action="reset",result="Accepted"} 2`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
