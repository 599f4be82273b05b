// Package ocpp is the gateway's OCPP central system (OCPP 1.6J and 2.0.1,
// built on lorenzodonini/ocpp-go): charge points connect over WebSocket
// (gateway/ocpp/wsmux), and their transactions and connector statuses are
// mapped onto the same ChargingSession / ChargerStatus msgp frames MQTT
// chargers publish, appended to the same durable spool under the same
// topics, so InfluxDB, NATS charging.* events, partner offers and the
// profile work unchanged. A charge point is answered only after its record
// is durable (spool fsync). See docs/ocpp.md.
package ocpp

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync"
	"time"

	ocpp16 "github.com/lorenzodonini/ocpp-go/ocpp1.6"
	ocpp201 "github.com/lorenzodonini/ocpp-go/ocpp2.0.1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/telegate/telegate/broker/acl"
	"github.com/telegate/telegate/broker/registry"
	"github.com/telegate/telegate/decoders/reject"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/ingest"
	"github.com/telegate/telegate/gateway/ingest/topics"
	"github.com/telegate/telegate/gateway/ocpp/wsmux"
	"github.com/telegate/telegate/gateway/spool/record"
)

// Errors.
var (
	ErrNotDurable = errors.New("ocpp: record not stored")
	ErrOffline    = errors.New("ocpp: charge point not connected")
	ErrUnknown    = errors.New("ocpp: no such charge point")
	ErrBadCommand = errors.New("ocpp: bad command")
)

// Central is the central system for both OCPP versions.
type Central struct {
	spool ingest.Spool
	val   *ingest.Validator
	now   func() time.Time
	log   *slog.Logger
	m     *Metrics
	Mux   *wsmux.Server
	cs16  ocpp16.CentralSystem
	cs201 ocpp201.CSMS
	// txns is the transaction table (a JetStream KV bucket after UseNATS,
	// else in memory); the store guards itself.
	txns txnStore
	// cmds records command results (guarded by cmdMu).
	cmdMu sync.Mutex
	cmds  []CommandResult
	// bus is set by UseNATS (nil: single process, memory only).
	bus *natsState
	// HeartbeatInterval is sent in BootNotification answers.
	HeartbeatInterval time.Duration
}

// Metrics of the central system.
type Metrics struct {
	Records *prometheus.CounterVec // kind (session|status), result (stored|dead_letter|refused|replay)
	// DeadLetters counts the dead_letter results by kind and reason (a
	// decoders/reject label, as telegate_dead_letters_total).
	DeadLetters *prometheus.CounterVec
	AckDur      prometheus.Histogram
	Connects    *prometheus.CounterVec
	Closed      *prometheus.CounterVec
	Malformed   *prometheus.CounterVec
	CallErrs    *prometheus.CounterVec
	Messages    *prometheus.CounterVec
	Conns       *prometheus.GaugeVec
	Commands    *prometheus.CounterVec
	// LogSuppressed counts refused-connection log lines dropped by the
	// listener's log rate limit.
	LogSuppressed prometheus.Counter
}

// NewMetrics registers the OCPP metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telegate_ocpp_records_total",
			Help: "OCPP messages mapped to spool records, by record kind and result."}, []string{"kind", "result"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telegate_ocpp_dead_letters_total",
			Help: "OCPP records stored as dead letters, by record kind and rejection label (decoders/reject)."}, []string{"kind", "reason"}),
		AckDur: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "telegate_ocpp_durable_ack_seconds",
			Help: "Time from an OCPP request to its durable spool append.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		Connects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telegate_ocpp_connects_total",
			Help: "OCPP WebSocket connection attempts by result."}, []string{"result"}),
		Closed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telegate_ocpp_closed_total",
			Help: "OCPP connections closed, by reason (oversized, rate_limited, revoked, panic, replaced, taken_over, peer, shutdown)."}, []string{"reason"}),
		Malformed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telegate_ocpp_malformed_total",
			Help: "OCPP frames refused by the frame pre-check, by version and reason."}, []string{"version", "reason"}),
		CallErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telegate_ocpp_callerrors_total",
			Help: "CALLERROR frames sent to charge points, by version and error code."}, []string{"version", "code"}),
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telegate_ocpp_messages_total",
			Help: "Well-formed OCPP CALLs received, by version and action."}, []string{"version", "action"}),
		Conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "telegate_ocpp_connections",
			Help: "Open OCPP connections by version."}, []string{"version"}),
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "telegate_ocpp_commands_total",
			Help: "Commands sent to charge points, by action and result."}, []string{"action", "result"}),
		LogSuppressed: prometheus.NewCounter(prometheus.CounterOpts{Name: "telegate_ocpp_log_lines_suppressed_total",
			Help: "Refused-connection log lines dropped by the rate limit (per remote address and global)."}),
	}
	reg.MustRegister(m.Records, m.DeadLetters, m.AckDur, m.Connects, m.Closed, m.Malformed, m.CallErrs, m.Messages, m.Conns, m.Commands,
		m.LogSuppressed)
	return m
}

func (m *Metrics) wsmux() wsmux.Metrics {
	return wsmux.Metrics{
		Connect:       func(r string) { m.Connects.WithLabelValues(r).Inc() },
		Closed:        func(r string) { m.Closed.WithLabelValues(r).Inc() },
		Malformed:     func(v, r string) { m.Malformed.WithLabelValues(v, r).Inc() },
		CallError:     func(v, c string) { m.CallErrs.WithLabelValues(v, c).Inc() },
		Message:       func(v, a string) { m.Messages.WithLabelValues(v, a).Inc() },
		Conns:         func(v string, d int) { m.Conns.WithLabelValues(v).Add(float64(d)) },
		LogSuppressed: m.LogSuppressed.Inc,
	}
}

// New builds the central system on mux (not yet serving: call mux.Serve).
func New(mux *wsmux.Server, sp ingest.Spool, val *ingest.Validator, m *Metrics, now func() time.Time, log *slog.Logger) *Central {
	if now == nil {
		now = time.Now
	}
	c := &Central{spool: sp, val: val, now: now, log: log, m: m, Mux: mux, txns: newMemStore(),
		HeartbeatInterval: 5 * time.Minute}
	c.start16()
	c.start201()
	return c
}

// Close stops the ocpp-go central systems (the listener is closed by its owner).
func (c *Central) Close() {
	c.closeNATS()
	c.cs16.Stop()
	c.cs201.Stop()
}

// MuxMetrics adapts m for wsmux.New.
func MuxMetrics(m *Metrics) wsmux.Metrics { return m.wsmux() }

// lookup returns the transaction's state (ok false when unknown).
func (c *Central) lookup(station, tx string) (t txn, ok bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), StoreTimeout)
	defer cancel()
	return c.txns.get(ctx, txnKey(station, tx))
}

// setTxn merges t into the transaction's state.
func (c *Central) setTxn(station, tx string, t txn) error {
	ctx, cancel := context.WithTimeout(context.Background(), StoreTimeout)
	defer cancel()
	return c.txns.update(ctx, txnKey(station, tx), t)
}

// sessionSeq derives a frame sequence number from what the charge point
// sent, so a replayed message yields the same InfluxDB point and the same
// Nats-Msg-Id: kind in the low 2 bits, above it the 2.0.1 seqNo or (1.6)
// the message's own timestamp in ms for starts and stops, the reading's
// fingerprint for updates (readingSeq).
func sessionSeq(kind uint8, n uint64) uint64 { return n<<2 | uint64(kind) }

// readingSeq is the seq of a session update: a 61-bit FNV-64a fingerprint
// of the transaction and of what the reading says (its parts: timestamps,
// sampled values, 2.0.1 seqNo), never of the charge point's clock alone.
// An exact replay gets the same seq; any other reading gets its own, also
// when the station's clock stepped back or two readings share a second.
// 61 bits keep the seq a positive int64 (the InfluxDB seq field).
func readingSeq(tx string, parts ...[]byte) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(tx))
	for _, p := range parts {
		_, _ = h.Write([]byte{0})
		_, _ = h.Write(p)
	}
	return sessionSeq(wire.SessionUpdated, h.Sum64()>>3)
}

// storeSession encodes and durably appends a ChargingSession frame.
func (c *Central) storeSession(station string, s wire.ChargingSession) error {
	s.Version, s.Station = wire.Version, wire.Ident(station)
	payload, err := s.MarshalMsg(nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotDurable, err)
	}
	return c.store("session", topics.ClassSession, station, "chargers/"+station+"/session", payload)
}

// storeStatus encodes and durably appends a ChargerStatus frame.
func (c *Central) storeStatus(station string, connector, status uint8, ts time.Time) error {
	st := wire.ChargerStatus{Version: wire.Version, Station: wire.Ident(station), Seq: uint64(ts.UnixMilli()),
		TimeMs: ts.UnixMilli(), Connector: connector, Status: status}
	payload, err := st.MarshalMsg(nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotDurable, err)
	}
	return c.store("status", topics.ClassStatus, station, "chargers/"+station+"/status", payload)
}

// store validates like the MQTT ingest hook (invalid frames become dead
// letters, still durable) and appends with fsync.
func (c *Central) store(kind string, class topics.Class, station, topic string, payload []byte) error {
	start := c.now()
	_, err := c.val.Validate(class, station, payload)
	return c.append(start, kind, topic, station, payload, err)
}

// append appends the record with fsync: a dead letter when rejected is not
// nil (its reason the decoders/reject label and detail, as MQTT dead
// letters), else a publish.
func (c *Central) append(start time.Time, kind, topic, station string, payload []byte, rejected error) error {
	rk, result, label := record.KindPublish, "stored", reject.None
	var reason []byte
	if rejected != nil {
		label = reject.FromError(rejected)
		rk, result, reason = record.KindDeadLetter, "dead_letter", reject.AppendReason(nil, label, reject.Detail(rejected))
	}
	rec := record.Append(nil, rk, 1, c.now().UnixNano(), topic, station, string(reason), payload)
	if err := c.spool.Append(rec); err != nil {
		c.m.Records.WithLabelValues(kind, "refused").Inc()
		return fmt.Errorf("%w: %w", ErrNotDurable, err)
	}
	c.m.AckDur.Observe(time.Since(start).Seconds())
	c.m.Records.WithLabelValues(kind, result).Inc()
	if rk == record.KindDeadLetter {
		c.m.DeadLetters.WithLabelValues(kind, label.String()).Inc()
	}
	return nil
}

// deadLetterSession durably stores s as a dead letter with the
// session_stopped label: an update of a transaction that already stopped
// is kept and counted, but does not reopen the session.
func (c *Central) deadLetterSession(station string, s wire.ChargingSession) error {
	start := c.now()
	s.Version, s.Station = wire.Version, wire.Ident(station)
	payload, err := s.MarshalMsg(nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotDurable, err)
	}
	return c.append(start, "session", "chargers/"+station+"/session", station, payload,
		fmt.Errorf("%w: transaction %s", reject.ErrSessionStopped, s.SessionID))
}

func (c *Central) replay(kind string) { c.m.Records.WithLabelValues(kind, "replay").Inc() }

// txID16 derives the 1.6 transaction id from what identifies the
// transaction on the charge point, so a replayed StartTransaction (answer
// lost, or queued while offline) gets the same id, even after a restart.
func txID16(station string, connector int, idTag string, ts time.Time) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(station + "\x00" + strconv.Itoa(connector) + "\x00" + idTag + "\x00" + strconv.FormatInt(ts.UnixMilli(), 10)))
	id := int(h.Sum32() & 0x7fffffff)
	if id == 0 {
		id = 1
	}
	return id
}

// claimedVIN returns the id tag as a VIN when it is one: some stations
// (Autocharge-style plug & charge) present the car's VIN as id tag. The
// claim is the charger's word only (docs/ocpp.md).
func claimedVIN(idTag string) wire.Ident {
	if acl.ValidID(registry.KindVehicle, idTag) {
		return wire.Ident(idTag)
	}
	return nil
}

// setPlugged remembers what a 1.6 connector reported outside a transaction.
func (c *Central) setPlugged(station string, connector uint8, m meter) error {
	ctx, cancel := context.WithTimeout(context.Background(), StoreTimeout)
	defer cancel()
	return c.txns.update(ctx, plugKey(station, connector),
		txn{Connector: connector, SoC: m.soc, HasSoC: m.hasSoC, PowerW: m.powerW, HasPow: m.hasPowr})
}

// takePlugged returns and forgets what setPlugged remembered.
func (c *Central) takePlugged(station string, connector uint8) (meter, error) {
	ctx, cancel := context.WithTimeout(context.Background(), StoreTimeout)
	defer cancel()
	t, _, err := c.txns.take(ctx, plugKey(station, connector))
	return meter{soc: t.SoC, hasSoC: t.HasSoC, powerW: t.PowerW, hasPowr: t.HasPow}, err
}

func clampConnector(n int) uint8 {
	if n < 0 || n > 255 {
		return 0
	}
	return uint8(n)
}

// meter holds what a set of sampled values said.
type meter struct {
	energyWh, powerW, soc      float64
	hasEnergy, hasSoC, hasPowr bool
}

func scale(v float64, unit string) float64 {
	switch unit {
	case "kWh", "kW":
		return v * 1000
	}
	return v
}
