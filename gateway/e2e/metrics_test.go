package e2e

import (
	"strings"
	"testing"
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
