// Package metrics declares the gateway's Prometheus metrics. Every stage of
// the pipeline counts what it received, accepted, refused, dropped and
// stored, so that "nothing accepted is lost silently" can be checked from
// /metrics alone: received = spooled + refused + dropped, and
// spooled frames eventually equal stored + dead-lettered.
package metrics

import "github.com/prometheus/client_golang/prometheus"

// Namespace prefixes every metric name.
const Namespace = "telegate"

// Metrics holds the collectors. Labels are low-cardinality by design (no
// device ids).
type Metrics struct {
	Received       *prometheus.CounterVec // class
	Decoded        *prometheus.CounterVec // class
	DeadLettered   *prometheus.CounterVec // class, reason (a decoders/reject label)
	Spooled        *prometheus.CounterVec // qos
	Refused        *prometheus.CounterVec // reason: QoS 1 publishes not acknowledged
	Dropped        *prometheus.CounterVec // reason: QoS 0 publishes dropped
	InvalidSignals *prometheus.CounterVec // reason
	Stored         *prometheus.CounterVec // measurement (points written)
	StoredFrames   prometheus.Counter
	InfluxWrites   *prometheus.CounterVec // result
	InfluxBatch    prometheus.Histogram
	InfluxWriteDur prometheus.Histogram
	StoreLatency   prometheus.Histogram   // gateway receive -> stored in InfluxDB
	Events         *prometheus.CounterVec // stream
	EventErrors    prometheus.Counter
	AppendDur      prometheus.Histogram   // durable hand-off inside OnPublish
	SinkErrors     *prometheus.CounterVec // sink, kind
}

// New registers the collectors with reg (nil: a fresh registry is not
// created, the collectors are just returned unregistered).
func New(reg prometheus.Registerer) *Metrics {
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help}, labels)
	}
	m := &Metrics{
		Received:       cv("mqtt_publishes_received_total", "Device publishes received on ingest topics.", "class"),
		Decoded:        cv("frames_decoded_total", "Device payloads that decoded and validated.", "class"),
		DeadLettered:   cv("dead_letters_total", "Device payloads rejected and written to the dead-letter stream, by rejection label (decoders/reject, docs/protocol.md section 8).", "class", "reason"),
		Spooled:        cv("spool_appends_total", "Records appended to the durable spool.", "qos"),
		Refused:        cv("publishes_refused_total", "QoS 1 publishes refused (never acknowledged) with a reason code or disconnect.", "reason"),
		Dropped:        cv("publishes_dropped_total", "QoS 0 publishes dropped (best effort).", "reason"),
		InvalidSignals: cv("signals_invalid_total", "Signals skipped inside accepted frames.", "reason"),
		Stored:         cv("influx_points_total", "Points written to InfluxDB.", "measurement"),
		StoredFrames: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "influx_records_stored_total",
			Help: "Spool records whose points are in InfluxDB."}),
		InfluxWrites: cv("influx_writes_total", "InfluxDB write requests.", "result"),
		InfluxBatch: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "influx_batch_lines",
			Help: "Lines per InfluxDB write.", Buckets: prometheus.ExponentialBuckets(1, 4, 9)}),
		InfluxWriteDur: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "influx_write_seconds",
			Help: "InfluxDB write request duration.", Buckets: prometheus.DefBuckets}),
		StoreLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "store_latency_seconds",
			Help: "Gateway receive to stored in InfluxDB.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		Events: cv("nats_events_total", "Events published to NATS JetStream (acknowledged).", "stream"),
		EventErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "nats_publish_errors_total",
			Help: "Failed JetStream publish attempts (retried)."}),
		AppendDur: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "spool_append_seconds",
			Help: "Durable hand-off time of a QoS 1 publish (group commit wait).", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		SinkErrors: cv("sink_errors_total", "Sink errors by sink and kind.", "sink", "kind"),
	}
	if reg != nil {
		reg.MustRegister(m.Received, m.Decoded, m.DeadLettered, m.Spooled, m.Refused, m.Dropped, m.InvalidSignals,
			m.Stored, m.StoredFrames, m.InfluxWrites, m.InfluxBatch, m.InfluxWriteDur, m.StoreLatency, m.Events,
			m.EventErrors, m.AppendDur, m.SinkErrors)
	}
	return m
}
