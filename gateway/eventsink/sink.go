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
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/decoders/dtc"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/metrics"
	"github.com/telegate/telegate/gateway/record"
	"github.com/telegate/telegate/gateway/spool"
	"github.com/telegate/telegate/gateway/topics"
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

// Sink is the NATS event sink.
type Sink struct {
	cons   *spool.Consumer
	pub    Publisher
	store  StateStore
	kinds  Kinds
	m      *metrics.Metrics
	log    *slog.Logger
	recs   []spool.Record
	cache  map[string]DTCState
	dirty  map[string]bool
	out    []outMsg
	dr     wire.DiagReport
	cs     wire.ChargingSession
	st     wire.ChargerStatus
	ve     wire.VehicleEvent
	ack    wire.CommandAck
	Batch  int
	AckTTL time.Duration
}

type outMsg struct {
	subject, id, stream string
	data                []byte
}

// New returns the sink.
func New(cons *spool.Consumer, pub Publisher, store StateStore, kinds Kinds, m *metrics.Metrics, log *slog.Logger) *Sink {
	if log == nil {
		log = slog.Default()
	}
	return &Sink{cons: cons, pub: pub, store: store, kinds: kinds, m: m, log: log,
		cache: map[string]DTCState{}, dirty: map[string]bool{}, Batch: 2000, AckTTL: 10 * time.Second}
}

// Run publishes until ctx is cancelled or the spool closes. drain works as in
// influxsink: after ctx is cancelled the backlog is still published until
// nothing is left or drain is done.
func (s *Sink) Run(ctx, drain context.Context) error {
	for attempt := 0; ; {
		readCtx := ctx
		cancel := context.CancelFunc(func() {})
		if ctx.Err() != nil {
			if drain == nil || drain.Err() != nil {
				return nil
			}
			readCtx, cancel = context.WithTimeout(drain, 200*time.Millisecond)
		}
		var err error
		s.recs, err = s.cons.Read(readCtx, s.recs, s.Batch, 8<<20)
		cancel()
		if err != nil {
			if errors.Is(err, spool.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			continue
		}
		active := ctx
		if drain != nil {
			active = drain // let the batch in flight finish at shutdown
		}
		if err := s.process(active); err != nil {
			s.m.EventErrors.Inc()
			s.cons.Rewind()
			clear(s.cache) // state may be ahead of what was saved
			clear(s.dirty)
			d := influx.Backoff(attempt)
			if attempt%10 == 0 {
				s.log.Warn("NATS publish failed; retrying batch", "attempt", attempt+1, "backoff", d, "err", err)
			}
			attempt++
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-active.Done():
				t.Stop()
				return nil
			}
			continue
		}
		attempt = 0
		if err := s.cons.Commit(s.recs[len(s.recs)-1].Next); err != nil {
			return err
		}
	}
}

func (s *Sink) process(ctx context.Context) error {
	s.out = s.out[:0]
	var rec record.Record
	for i := range s.recs {
		if err := record.Parse(s.recs[i].Data, &rec); err != nil {
			s.m.SinkErrors.WithLabelValues("events", "corrupt_record").Inc()
			continue
		}
		if err := s.events(ctx, &rec); err != nil {
			return err
		}
	}
	futures := make([]jetstream.PubAckFuture, 0, len(s.out))
	for _, o := range s.out {
		f, err := s.pub.PublishAsync(o.subject, o.id, o.data, nil)
		if err != nil {
			return fmt.Errorf("publish %s: %w", o.subject, err)
		}
		futures = append(futures, f)
	}
	timeout := time.NewTimer(s.AckTTL)
	defer timeout.Stop()
	for i, f := range futures {
		select {
		case <-f.Ok():
			s.m.Events.WithLabelValues(s.out[i].stream).Inc()
		case err := <-f.Err():
			return fmt.Errorf("publish %s: %w", s.out[i].subject, err)
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

func (s *Sink) emit(stream, subject, id, typ, source string, tsMs int64, data any) {
	env := Envelope{V: Version, ID: id, Type: typ, Time: time.UnixMilli(tsMs).UTC(), Source: source, Data: data}
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

func (s *Sink) events(ctx context.Context, r *record.Record) error {
	switch r.Kind {
	case record.KindConnect, record.KindDisconnect:
		id := subjectToken(string(r.Client))
		kind := "vehicle"
		if s.kinds != nil {
			kind = s.kinds(string(r.Client))
		}
		state := "connected"
		if r.Kind == record.KindDisconnect {
			state = "disconnected"
		}
		root, stream := "vehicle", "VEHICLE"
		if kind == "charger" {
			root, stream = "charging", "CHARGING"
		}
		msgID := "conn-" + id + "-" + strconv.FormatInt(r.RecvNs, 10)
		s.emit(stream, root+".connectivity."+state+"."+id, msgID, "connectivity."+state, id, r.RecvNs/1e6,
			ConnectivityEvent{Device: id, Kind: kind, Connected: r.Kind == record.KindConnect})
		return nil
	case record.KindDeadLetter:
		class, _, _ := topics.Parse(string(r.Topic))
		id := string(r.Client)
		p := r.Payload
		dl := DeadLetter{Client: id, Topic: string(r.Topic), QoS: r.QoS, Reason: string(r.Reason),
			ReceivedAt: time.Unix(0, r.RecvNs).UTC(), Size: len(p)}
		if len(p) > MaxDeadLetterPayload {
			p, dl.Truncated = p[:MaxDeadLetterPayload], true
		}
		dl.Payload = append([]byte(nil), p...)
		msgID := "dl-" + id + "-" + strconv.FormatInt(r.RecvNs, 10)
		s.emit("DEADLETTER", "deadletter."+class.String()+"."+subjectToken(id), msgID, "deadletter", id, r.RecvNs/1e6, dl)
		return nil
	}
	class, id, _ := topics.Parse(string(r.Topic))
	id = subjectToken(id)
	switch class {
	case topics.ClassDiag:
		if err := wire.DecodeDiag(r.Payload, &s.dr); err != nil {
			return nil // validated at ingest; counted by the influx sink
		}
		return s.diag(ctx, id)
	case topics.ClassSession:
		if err := wire.DecodeChargingSession(r.Payload, &s.cs); err != nil {
			return nil
		}
		c := &s.cs
		ev := pick(sessionEvents[:], c.Kind)
		msgID := "session-" + id + "-" + string(c.SessionID) + "-" + strconv.FormatUint(c.Seq, 10)
		s.emit("CHARGING", "charging.session."+ev+"."+id, msgID, "charging.session."+ev, id, c.TimeMs, ChargingEvent{
			Station: id, SessionID: string(c.SessionID), Connector: c.Connector, Event: ev, VIN: string(c.VIN),
			IDTag: string(c.IDTag), EnergyWh: c.EnergyWh, PowerW: c.PowerW, SoCPct: c.SoCPct, TargetSoCPct: c.TargetSoCPct, Seq: c.Seq})
	case topics.ClassStatus:
		if err := wire.DecodeChargerStatus(r.Payload, &s.st); err != nil {
			return nil
		}
		msgID := "status-" + id + "-" + strconv.FormatUint(s.st.Seq, 10)
		s.emit("CHARGING", "charging.status."+id, msgID, "charging.status", id, s.st.TimeMs,
			ConnectorEvent{Station: id, Connector: s.st.Connector, Status: pick(statusNames[:], s.st.Status), Seq: s.st.Seq})
	case topics.ClassEvents:
		if err := wire.DecodeVehicleEvent(r.Payload, &s.ve); err != nil {
			return nil
		}
		ev := VehicleEvent{VIN: id, Kind: pick(vehicleEvents[:], s.ve.Kind), Seq: s.ve.Seq}
		if s.ve.HasPosition {
			ev.Position = &LatLon{Lat: s.ve.Lat, Lon: s.ve.Lon}
		}
		msgID := "vev-" + id + "-" + strconv.FormatUint(s.ve.Seq, 10)
		s.emit("VEHICLE", "vehicle.event."+id, msgID, "vehicle."+ev.Kind, id, s.ve.TimeMs, ev)
	case topics.ClassCmdAck:
		if err := wire.DecodeCommandAck(r.Payload, &s.ack); err != nil {
			return nil
		}
		st := pick(ackStatus[:], s.ack.Status)
		msgID := "cmdack-" + id + "-" + s.ack.CmdID + "-" + st
		s.emit("VEHICLE", "vehicle.cmdack."+id, msgID, "vehicle.cmdack", id, s.ack.TimeMs,
			CommandAckEvent{VIN: id, CmdID: s.ack.CmdID, Status: st, Reason: s.ack.Reason})
	}
	return nil
}

// diag diffs the report in s.dr against the vehicle's last known DTC set.
func (s *Sink) diag(ctx context.Context, vin string) error {
	prev, ok := s.cache[vin]
	if !ok {
		var err error
		if prev, err = s.store.Load(ctx, vin); err != nil {
			return err
		}
		s.cache[vin] = prev
	}
	d := &s.dr
	seq := strconv.FormatUint(d.Seq, 10)
	next := make(DTCState, len(d.DTCs))
	for _, c := range d.DTCs {
		next[c.Code] = c.Status
	}
	ev := func(typ string, code uint16, status, previous string) {
		codeStr := string(dtc.Append(nil, code))
		desc, sev, _ := dtc.Describe(code)
		id := "dtc-" + typ + "-" + vin + "-" + codeStr + "-" + seq
		s.emit("DTC", "telemetry.dtc."+typ+"."+vin, id, "dtc."+typ, vin, d.TimeMs, DTCEvent{
			VIN: vin, Code: codeStr, Status: status, Previous: previous, Description: desc, Severity: sev.String(),
			MIL: d.MIL, OdometerKm: d.OdometerKm, ReportSeq: d.Seq})
	}
	changed := false
	for code, st := range next {
		old, had := prev[code]
		switch {
		case !had:
			ev("raised", code, dtc.StatusName(st), "")
			changed = true
		case old != st:
			ev("updated", code, dtc.StatusName(st), dtc.StatusName(old))
			changed = true
		}
	}
	for code, old := range prev {
		if _, still := next[code]; !still {
			ev("cleared", code, "cleared", dtc.StatusName(old))
			changed = true
		}
	}
	if changed {
		s.cache[vin] = next
		s.dirty[vin] = true
	}
	return nil
}

// subjectToken makes a device id safe as one subject token.
func subjectToken(id string) string {
	b := []byte(id)
	for i, c := range b {
		if c == '.' || c == '*' || c == '>' || c == ' ' || c < 0x21 || c > 0x7e {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}
