package app

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegate/telegate/broker"
)

// brokerCollector exports broker.Stats as telegate_broker_<name>_total
// counters (and telegate_broker_sockets_open as a gauge).
type brokerCollector struct {
	stats *broker.Stats
	descs map[string]*prometheus.Desc
}

func newBrokerCollector(s *broker.Stats) *brokerCollector {
	c := &brokerCollector{stats: s, descs: map[string]*prometheus.Desc{}}
	for name := range s.Snapshot() {
		full := "telegate_broker_" + name + "_total"
		if name == "sockets_open" {
			full = "telegate_broker_sockets_open"
		}
		c.descs[name] = prometheus.NewDesc(full, "Embedded MQTT broker: "+name+" (see docs/broker.md).", nil, nil)
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *brokerCollector) Collect(ch chan<- prometheus.Metric) {
	snap := c.stats.Snapshot()
	names := make([]string, 0, len(snap))
	for n := range snap {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		d, ok := c.descs[n]
		if !ok {
			continue
		}
		kind := prometheus.CounterValue
		if n == "sockets_open" {
			kind = prometheus.GaugeValue
		}
		ch <- prometheus.MustNewConstMetric(d, kind, float64(snap[n]))
	}
}
