// Package eventsink tails the spool and publishes domain events to NATS
// JetStream: DTC raised/updated/cleared (from diagnostics snapshots, with
// per-vehicle state kept in a KV bucket), charging session and connector
// events, vehicle lifecycle events, command acks, device connectivity, and
// dead letters. Every event carries a deterministic Nats-Msg-Id derived from
// the source frame, so a replayed spool record is deduplicated by the stream.
//
// Order of effects per batch: publish all events and wait for every ack →
// save changed DTC state → commit the spool cursor. A crash between any two
// steps replays the batch; the same message ids are recomputed and JetStream
// drops the duplicates (within nats.dedup_window).
package eventsink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/decoders/dtc"
	"github.com/telegate/telegate/decoders/reject"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/ingest/topics"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/sink"
	"github.com/telegate/telegate/gateway/spool"
	"github.com/telegate/telegate/gateway/spool/record"
)

// ConsumerName is the spool consumer this sink uses.
const ConsumerName = "events"

// ErrAckTimeout is returned when JetStream did not acknowledge a batch in time.
var ErrAckTimeout = errors.New("eventsink: publish ack timeout")

// Publisher publishes with a message id (gateway/natsbus.Bus).
type Publisher interface {
	PublishAsync(subject, msgID string, data []byte, hdr nats.Header) (jetstream.PubAckFuture, error)
}

// Kinds tells whether a device id is a vehicle or a charger (registry).
type Kinds func(id string) string

// Sink is the NATS event sink: a sink.Runner over a Processor that turns
// spool records into events.
type Sink struct {
	*sink.Runner
	p *processor
}

// processor publishes the events of a batch. Its state is owned by the
// runner's goroutine.
type processor struct {
	pub    Publisher
	store  StateStore
	kinds  Kinds
	m      *metrics.Metrics
	log    *slog.Logger
	cache  map[string]DTCState // DTC states read or computed in the current batch only
	dirty  map[string]bool     // cache keys to save at the end of the batch
	out    []outMsg
	dr     wire.DiagReport
	cs     wire.ChargingSession
	st     wire.ChargerStatus
	ve     wire.VehicleEvent
	ack    wire.CommandAck
	ackTTL time.Duration // bound on the wait for a batch's publish acks
}

type outMsg struct {
	subject, id, stream string
	data                []byte
}

// New returns the sink.
func New(cons sink.Source, pub Publisher, store StateStore, kinds Kinds, m *metrics.Metrics, log *slog.Logger) *Sink {
	if log == nil {
		log = slog.Default()
	}
	p := &processor{pub: pub, store: store, kinds: kinds, m: m, log: log,
		cache: map[string]DTCState{}, dirty: map[string]bool{}, ackTTL: 10 * time.Second}
	r := sink.NewRunner(sink.Config{Name: ConsumerName, BatchRecords: 2000, BatchBytes: 8 << 20, CommitInterval: sink.DefaultCommitInterval,
		Linger: sink.DefaultLinger, LingerRecords: sink.DefaultLingerRecords}, cons, p, m, log)
	return &Sink{Runner: r, p: p}
}

// Run publishes until ctx is cancelled or the spool closes; then, when
// drain is non-nil, publishes the backlog until nothing is left or drain is
// done (sink.Runner.Run and Drain). Failures are retried with backoff, in
// order, never skipped.
func (s *Sink) Run(ctx, drain context.Context) error {
	if err := s.Runner.Run(ctx); err != nil || drain == nil {
		return err
	}
	return s.Drain(drain)
}

// Reset implements sink.Processor: the DTC state cache may be ahead of
// what was saved.
func (p *processor) Reset() {
	clear(p.cache)
	clear(p.dirty)
}

// Process implements sink.Processor. Order of effects: publish every event
// of the batch and wait for all acks, then save the changed DTC state. A
// returned error is retryable (the runner replays the batch; message ids
// deduplicate); events that can never be published are counted and skipped.
func (p *processor) Process(ctx context.Context, recs []spool.Record) (int, error) {
	if err := p.process(ctx, recs); err != nil {
		if ctx.Err() == nil {
			p.m.EventErrors.Inc()
		}
		return 0, err
	}
	return len(recs), nil
}

func (s *processor) process(ctx context.Context, recs []spool.Record) error {
	s.out = s.out[:0]
	// The DTC states are read from the store once per batch, never trusted
	// from an earlier batch: another replica may have handled the vehicle
	// since (it reconnected there and back), and diffing against this
	// replica's old view would raise or clear codes wrongly.
	// TestDTCCacheNotTrustedAcrossBatches.
	clear(s.cache)
	var rec record.Record
	for i := range recs {
		if err := record.Parse(recs[i].Data, &rec); err != nil {
			s.m.SinkErrors.WithLabelValues("events", "corrupt_record").Inc()
			continue
		}
		if err := s.events(ctx, &rec); err != nil {
			return err
		}
	}
	futures := make([]jetstream.PubAckFuture, 0, len(s.out))
	sent := s.out[:0:0]
	for _, o := range s.out {
		f, err := s.pub.PublishAsync(o.subject, o.id, o.data, nil)
		if err != nil {
			if permanent(err) {
				// Retrying cannot help (e.g. larger than the server's max
				// payload): count it loudly and move on.
				s.m.SinkErrors.WithLabelValues("events", "unpublishable").Inc()
				s.log.Error("event cannot be published; skipping it", "subject", o.subject, "id", o.id, "bytes", len(o.data), "err", err)
				continue
			}
			return fmt.Errorf("publish %s: %w", o.subject, err)
		}
		futures = append(futures, f)
		sent = append(sent, o)
	}
	timeout := time.NewTimer(s.ackTTL)
	defer timeout.Stop()
	for i, f := range futures {
		select {
		case <-f.Ok():
			s.m.Events.WithLabelValues(sent[i].stream).Inc()
		case err := <-f.Err():
			return fmt.Errorf("publish %s: %w", sent[i].subject, err)
		case <-timeout.C:
			return ErrAckTimeout
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for vin := range s.dirty {
		if err := s.store.Save(ctx, vin, s.cache[vin]); err != nil {
			return err
		}
	}
	clear(s.dirty)
	return nil
}

// permanent tells publish errors that no retry can fix.
func permanent(err error) bool {
	return errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject) || errors.Is(err, nats.ErrInvalidMsg)
}

func (s *processor) emit(stream, subject, id, typ, source string, tsMs int64, data any) {
	env := natsbus.NewEnvelope(id, typ, source, time.UnixMilli(tsMs), data)
	b, err := json.Marshal(env)
	if err != nil {
		s.log.Error("event not encodable", "type", typ, "err", err)
		return
	}
	s.out = append(s.out, outMsg{subject: subject, id: id, stream: stream, data: b})
}

var statusNames = [...]string{"", "available", "occupied", "faulted", "unavailable"}
var sessionEvents = [...]string{"", "started", "updated", "stopped"}
var vehicleEvents = [...]string{"", "ignition_on", "ignition_off", "online", "offline", "location"}
var ackStatus = [...]string{"", "applied", "rejected", "failed"}

func pick(tab []string, i uint8) string {
	if int(i) < len(tab) {
		return tab[i]
	}
	return "unknown"
}

func (s *processor) events(ctx context.Context, r *record.Record) error {
	switch r.Kind {
	case record.KindConnect, record.KindDisconnect:
		raw := string(r.Client)
		id := natsbus.Token(raw)
		kind := "vehicle"
		if s.kinds != nil {
			kind = s.kinds(string(r.Client))
		}
		connected := r.Kind == record.KindConnect
		state := natsbus.ConnectivityState(connected)
		stream, subject := natsbus.SubjectConnectivity(kind, connected, raw)
		msgID := "conn-" + id + "-" + strconv.FormatInt(r.RecvNs, 10)
		s.emit(stream, subject, msgID, "connectivity."+state, id, r.RecvNs/1e6,
			ConnectivityEvent{Device: raw, Kind: kind, Connected: connected})
		return nil
	case record.KindDeadLetter:
		class, _, _ := topics.Parse(string(r.Topic))
		id := string(r.Client)
		p := r.Payload
		label, detail := reject.ParseReason(r.Reason)
		dl := DeadLetter{Client: id, Topic: string(r.Topic), QoS: r.QoS, Reason: label.String(), Message: label.Message(), Detail: detail,
			ReceivedAt: time.Unix(0, r.RecvNs).UTC(), Size: len(p)}
		if len(p) > MaxDeadLetterPayload {
			p, dl.Truncated = p[:MaxDeadLetterPayload], true
		}
		dl.Payload = append([]byte(nil), p...)
		msgID := "dl-" + id + "-" + strconv.FormatInt(r.RecvNs, 10)
		s.emit(natsbus.StreamDeadLetter, natsbus.SubjectDeadLetter(class.String(), id), msgID, "deadletter", id, r.RecvNs/1e6, dl)
		return nil
	}
	class, rawID, _ := topics.Parse(string(r.Topic))
	id := natsbus.Token(rawID) // message ids; payloads carry rawID
	switch class {
	case topics.ClassDiag:
		if err := wire.DecodeDiag(r.Payload, &s.dr); err != nil {
			return nil //nolint:nilerr // skipped: validated at ingest, counted by the influx sink
		}
		return s.diag(ctx, rawID, id)
	case topics.ClassSession:
		if err := wire.DecodeChargingSession(r.Payload, &s.cs); err != nil {
			return nil //nolint:nilerr // skipped like a bad diag record above
		}
		c := &s.cs
		ev := pick(sessionEvents[:], c.Kind)
		msgID := "session-" + id + "-" + string(c.SessionID) + "-" + strconv.FormatUint(c.Seq, 10)
		s.emit(natsbus.StreamCharging, natsbus.SubjectChargingSession(ev, rawID), msgID, "charging.session."+ev, id, c.TimeMs, ChargingEvent{
			Station: rawID, SessionID: string(c.SessionID), Connector: c.Connector, Event: ev, VIN: string(c.VIN),
			IDTag: string(c.IDTag), EnergyWh: c.EnergyWh, PowerW: c.PowerW, SoCPct: c.SoCPct, TargetSoCPct: c.TargetSoCPct, Seq: c.Seq,
			ReceivedAt: time.Unix(0, r.RecvNs).UTC()})
	case topics.ClassStatus:
		if err := wire.DecodeChargerStatus(r.Payload, &s.st); err != nil {
			return nil //nolint:nilerr // skipped like a bad diag record above
		}
		msgID := "status-" + id + "-" + strconv.FormatUint(s.st.Seq, 10)
		s.emit(natsbus.StreamCharging, natsbus.SubjectChargerStatus(rawID), msgID, "charging.status", id, s.st.TimeMs,
			ConnectorEvent{Station: rawID, Connector: s.st.Connector, Status: pick(statusNames[:], s.st.Status), Seq: s.st.Seq})
	case topics.ClassEvents:
		if err := wire.DecodeVehicleEvent(r.Payload, &s.ve); err != nil {
			return nil //nolint:nilerr // skipped like a bad diag record above
		}
		ev := VehicleEvent{VIN: rawID, Kind: pick(vehicleEvents[:], s.ve.Kind), Seq: s.ve.Seq, ReceivedAt: time.Unix(0, r.RecvNs).UTC()}
		if s.ve.HasPosition {
			ev.Position = &LatLon{Lat: s.ve.Lat, Lon: s.ve.Lon}
		}
		msgID := "vev-" + id + "-" + strconv.FormatUint(s.ve.Seq, 10)
		s.emit(natsbus.StreamVehicle, natsbus.SubjectVehicleEvent(rawID), msgID, "vehicle."+ev.Kind, id, s.ve.TimeMs, ev)
	case topics.ClassCmdAck:
		if err := wire.DecodeCommandAck(r.Payload, &s.ack); err != nil {
			return nil //nolint:nilerr // skipped like a bad diag record above
		}
		st := pick(ackStatus[:], s.ack.Status)
		msgID := "cmdack-" + id + "-" + s.ack.CmdID + "-" + st
		s.emit(natsbus.StreamVehicle, natsbus.SubjectCommandAck(rawID), msgID, "vehicle.cmdack", id, s.ack.TimeMs,
			CommandAckEvent{VIN: rawID, CmdID: s.ack.CmdID, Status: st, Reason: s.ack.Reason})
	}
	return nil
}

// diag diffs the report in s.dr against the vehicle's last known DTC set.
// vin is the raw id (payloads), key its subject-safe form (subjects, ids, KV).
//
// A report not newer (device time, then sequence number) than the last one
// applied to the stored state is skipped: after a crash between saving the
// state and committing the spool cursor, the replayed reports would
// otherwise be diffed against the newer state and yield wrong events.
func (s *processor) diag(ctx context.Context, vin, key string) error {
	prev, ok := s.cache[key]
	if !ok {
		var err error
		if prev, err = s.store.Load(ctx, key); err != nil {
			return err
		}
		s.cache[key] = prev
	}
	d := &s.dr
	if d.TimeMs < prev.TimeMs || d.TimeMs == prev.TimeMs && d.Seq <= prev.Seq && prev.TimeMs != 0 {
		return nil
	}
	seq := strconv.FormatUint(d.Seq, 10)
	next := DTCState{Codes: make(map[uint16]uint8, len(d.DTCs)), TimeMs: d.TimeMs, Seq: d.Seq}
	for _, c := range d.DTCs {
		next.Codes[c.Code] = c.Status
	}
	ev := func(typ string, code uint16, status, previous string) {
		codeStr := string(dtc.Append(nil, code))
		desc, sev, _ := dtc.Describe(code)
		id := "dtc-" + typ + "-" + key + "-" + codeStr + "-" + seq
		s.emit(natsbus.StreamDTC, natsbus.SubjectDTC(typ, vin), id, "dtc."+typ, vin, d.TimeMs, DTCEvent{
			VIN: vin, Code: codeStr, Status: status, Previous: previous, Description: desc, Severity: sev.String(),
			MIL: d.MIL, OdometerKm: d.OdometerKm, ReportSeq: d.Seq})
	}
	// Deterministic order: the report's own order, then cleared codes
	// ascending.
	changed := false
	for _, c := range d.DTCs {
		st := next.Codes[c.Code]
		if st != c.Status {
			continue // a code listed twice: the last status wins, emitted once
		}
		old, had := prev.Codes[c.Code]
		switch {
		case !had:
			ev("raised", c.Code, dtc.StatusName(st), "")
			changed = true
		case old != st:
			ev("updated", c.Code, dtc.StatusName(st), dtc.StatusName(old))
			changed = true
		}
	}
	var cleared []uint16
	for code := range prev.Codes {
		if _, still := next.Codes[code]; !still {
			cleared = append(cleared, code)
		}
	}
	slices.Sort(cleared)
	for _, code := range cleared {
		ev("cleared", code, "cleared", dtc.StatusName(prev.Codes[code]))
		changed = true
	}
	s.cache[key] = next
	if changed {
		s.dirty[key] = true
	}
	return nil
}
