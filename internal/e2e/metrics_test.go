package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/telegate/telegate/firmware-sim/sim"
)

// counter sums the samples of metric whose label set contains match
// (e.g. `reason="unknown_id"`), read from the gateway's registry.
func testutilCounter(t *testing.T, e *env, metric, match string) float64 {
	t.Helper()
	mfs, err := e.gw.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			if match == "" || strings.Contains(strings.Join(labels, ","), match) {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// TestOperationsEndpoints checks /healthz, /readyz and that /metrics serves
// the pipeline and broker metrics over real HTTP.
func TestOperationsEndpoints(t *testing.T) {
	e := startEnv(t, 1, 0)
	e.mqtt311(sim.VIN(sim.DefaultVINPrefix, 1))
	base := "http://" + e.gw.HTTPAddr()
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"telegate_broker_connects_accepted_total 1", "telegate_spool_pending_bytes",
		"telegate_mqtt_publishes_received_total{class=\"telemetry\"}", "telegate_mqtt_clients_connected 1"} {
		if !strings.Contains(string(body), name) {
			t.Fatalf("/metrics lacks %q", name)
		}
	}
	// Readiness follows InfluxDB.
	e.influx.Stop()
	resp, err = http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with InfluxDB down: %d", resp.StatusCode)
	}
}
