package influxsink

import (
	"strconv"
	"time"
	"unsafe"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/dtc"
	"github.com/telegate/telegate/decoders/reject"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/ingest/topics"
	"github.com/telegate/telegate/gateway/sink/live"
	"github.com/telegate/telegate/gateway/spool/record"
)

// Measurements written by the sink (docs/data-model.md).
const (
	MTelemetry     = "telemetry"
	MDiag          = "diag"
	MDTC           = "dtc"
	MFreezeFrame   = "freeze_frame"
	MVehicleEvent  = "vehicle_event"
	MCommandAck    = "command_ack"
	MCharging      = "charging"
	MChargerStatus = "charger_status"
	MConnectivity  = "connectivity"
	MDeadLetter    = "dead_letter"
)

var eventNames = [...]string{"", "ignition_on", "ignition_off", "online", "offline", "location"}
var sessionNames = [...]string{"", "started", "updated", "stopped"}
var connectorNames = [...]string{"", "available", "occupied", "faulted", "unavailable"}
var ackNames = [...]string{"", "applied", "rejected", "failed"}

func name(tab []string, i uint8) string {
	if int(i) < len(tab) {
		return tab[i]
	}
	return "unknown"
}

// encoder turns spool records into line protocol. It owns reusable decode
// targets, so encoding a telemetry record allocates nothing.
type encoder struct {
	enc     influx.Encoder
	tf      wire.TelemetryFrame
	dr      wire.DiagReport
	ve      wire.VehicleEvent
	cs      wire.ChargingSession
	st      wire.ChargerStatus
	ack     wire.CommandAck
	scratch []byte
	live    *live.Hub // optional
	num     [8]byte

	// counters of the last encode, read by the sink for metrics
	invalidUnknown, invalidRange int
	points                       [numMeasurements]int
}

const (
	iTelemetry = iota
	iDiag
	iDTC
	iFreeze
	iEvent
	iAck
	iCharging
	iStatus
	iConn
	iDead
	numMeasurements
)

var measurementNames = [numMeasurements]string{MTelemetry, MDiag, MDTC, MFreezeFrame, MVehicleEvent, MCommandAck, MCharging, MChargerStatus, MConnectivity, MDeadLetter}

// add encodes one spool record. Records that no longer decode (they were
// validated at ingest, so this means a gateway upgrade changed the rules)
// are reported by the returned error and skipped by the caller.
func (e *encoder) add(r *record.Record) error {
	switch r.Kind {
	case record.KindConnect, record.KindDisconnect:
		e.enc.Measurement(MConnectivity)
		e.enc.Tag("device", r.Client)
		e.enc.FieldBool("connected", r.Kind == record.KindConnect)
		e.endNs(iConn, r.RecvNs)
		return nil
	case record.KindDeadLetter:
		class, _, _ := topics.Parse(string(r.Topic))
		e.enc.Measurement(MDeadLetter)
		e.enc.TagString("class", class.String())
		e.enc.FieldString("client", r.Client)
		e.enc.FieldString("topic", r.Topic)
		// reason is the rejection label (decoders/reject), the same value as
		// the metric's reason label and the NATS dead letter's reason.
		label, detail := reject.ParseReason(r.Reason)
		e.enc.FieldText("reason", label.String())
		e.enc.FieldText("message", label.Message())
		if detail != "" {
			e.enc.FieldText("detail", detail)
		}
		e.enc.FieldInt("bytes", int64(len(r.Payload)))
		e.endNs(iDead, r.RecvNs)
		return nil
	}
	class, _, _ := topics.Parse(string(r.Topic))
	switch class {
	case topics.ClassTelemetry:
		if err := wire.DecodeTelemetry(r.Payload, &e.tf); err != nil {
			return err
		}
		e.enc.Measurement(MTelemetry)
		e.enc.Tag("vin", e.tf.VIN)
		for _, s := range e.tf.Signals {
			e.signal(s)
		}
		e.enc.FieldInt("seq", int64(e.tf.Seq))
		e.end(iTelemetry, e.tf.TimeMs, e.tf.Seq)
		e.live.Publish(e.tf.VIN, e.tf.TimeMs, e.tf.Seq, e.tf.Signals)
	case topics.ClassDiag:
		if err := wire.DecodeDiag(r.Payload, &e.dr); err != nil {
			return err
		}
		d := &e.dr
		confirmed := 0
		e.scratch = e.scratch[:0]
		for i, c := range d.DTCs {
			if c.Status >= wire.DTCConfirmed {
				confirmed++
			}
			if i > 0 {
				e.scratch = append(e.scratch, ',')
			}
			e.scratch = dtc.Append(e.scratch, c.Code)
			e.scratch = append(e.scratch, ':')
			e.scratch = append(e.scratch, dtc.StatusName(c.Status)...)
		}
		e.enc.Measurement(MDiag)
		e.enc.Tag("vin", d.VIN)
		e.enc.FieldBool("mil", d.MIL)
		e.enc.FieldFloat("odometer_km", d.OdometerKm)
		e.enc.FieldInt("dtc_count", int64(len(d.DTCs)))
		e.enc.FieldInt("confirmed_count", int64(confirmed))
		e.enc.FieldString("dtcs", e.scratch)
		e.enc.FieldInt("seq", int64(d.Seq))
		e.end(iDiag, d.TimeMs, d.Seq)
		for _, c := range d.DTCs {
			var code [5]byte
			e.enc.Measurement(MDTC)
			e.enc.Tag("code", dtc.Append(code[:0], c.Code))
			e.enc.Tag("vin", d.VIN)
			e.enc.FieldInt("status", int64(c.Status))
			e.enc.FieldString("status_name", stringBytes(dtc.StatusName(c.Status)))
			_, sev, _ := dtc.Describe(c.Code)
			e.enc.FieldString("severity", stringBytes(sev.String()))
			e.end(iDTC, d.TimeMs, d.Seq)
		}
		if len(d.Freeze) > 0 {
			e.enc.Measurement(MFreezeFrame)
			e.enc.Tag("vin", d.VIN)
			for _, s := range d.Freeze {
				e.signal(s)
			}
			e.end(iFreeze, d.TimeMs, d.Seq)
		}
	case topics.ClassEvents:
		if err := wire.DecodeVehicleEvent(r.Payload, &e.ve); err != nil {
			return err
		}
		e.enc.Measurement(MVehicleEvent)
		e.enc.TagString("kind", name(eventNames[:], e.ve.Kind))
		e.enc.Tag("vin", e.ve.VIN)
		e.enc.FieldInt("seq", int64(e.ve.Seq))
		if e.ve.HasPosition {
			e.enc.FieldFloat("lat", e.ve.Lat)
			e.enc.FieldFloat("lon", e.ve.Lon)
		}
		e.end(iEvent, e.ve.TimeMs, e.ve.Seq)
	case topics.ClassCmdAck:
		if err := wire.DecodeCommandAck(r.Payload, &e.ack); err != nil {
			return err
		}
		e.enc.Measurement(MCommandAck)
		e.enc.Tag("vin", e.ack.VIN)
		e.enc.FieldString("cmd_id", stringBytes(e.ack.CmdID))
		e.enc.FieldInt("status", int64(e.ack.Status))
		e.enc.FieldString("status_name", stringBytes(name(ackNames[:], e.ack.Status)))
		e.enc.FieldString("reason", stringBytes(e.ack.Reason))
		// Several acks in one millisecond must stay distinct points: the
		// command id decides the nanosecond part (deterministic on replay).
		e.end(iAck, e.ack.TimeMs, uint64(fnv32(e.ack.CmdID)))
	case topics.ClassSession:
		if err := wire.DecodeChargingSession(r.Payload, &e.cs); err != nil {
			return err
		}
		s := &e.cs
		e.enc.Measurement(MCharging)
		e.enc.Tag("connector", strconv.AppendUint(e.num[:0], uint64(s.Connector), 10))
		e.enc.TagString("event", name(sessionNames[:], s.Kind))
		e.enc.Tag("station", s.Station)
		e.enc.FieldString("session_id", s.SessionID)
		e.enc.FieldString("vin", s.VIN)
		e.enc.FieldString("id_tag", s.IDTag)
		e.enc.FieldFloat("energy_wh", s.EnergyWh)
		e.enc.FieldFloat("power_w", s.PowerW)
		e.enc.FieldFloat("soc_pct", s.SoCPct)
		e.enc.FieldFloat("target_soc_pct", s.TargetSoCPct)
		e.enc.FieldInt("seq", int64(s.Seq))
		e.end(iCharging, s.TimeMs, s.Seq)
	case topics.ClassStatus:
		if err := wire.DecodeChargerStatus(r.Payload, &e.st); err != nil {
			return err
		}
		e.enc.Measurement(MChargerStatus)
		e.enc.Tag("connector", strconv.AppendUint(e.num[:0], uint64(e.st.Connector), 10))
		e.enc.Tag("station", e.st.Station)
		e.enc.FieldInt("status", int64(e.st.Status))
		e.enc.FieldString("status_name", stringBytes(name(connectorNames[:], e.st.Status)))
		e.enc.FieldInt("seq", int64(e.st.Seq))
		e.end(iStatus, e.st.TimeMs, e.st.Seq)
	}
	return nil
}

// signalKeys holds the field key of every catalog signal (its VSS path),
// checked and escaped once; indexed by signal id.
var signalKeys = func() (keys [catalog.MaxID + 1]influx.Key) {
	for _, s := range catalog.All() {
		keys[s.ID], _ = influx.NewKey(s.Path) // a path that is not a valid key stays the zero Key: never written
	}
	return keys
}()

// signal writes one catalog signal as a field named by its VSS path,
// skipping (and counting) unknown ids and out-of-range values.
func (e *encoder) signal(s wire.Signal) {
	d, ok := catalog.Lookup(s.ID)
	if !ok {
		e.invalidUnknown++
		return
	}
	if !d.Valid(s.Value) {
		e.invalidRange++
		return
	}
	k := signalKeys[s.ID]
	switch d.Type {
	case catalog.Int:
		e.enc.FieldIntKey(k, int64(s.Value))
	case catalog.Bool:
		e.enc.FieldBoolKey(k, s.Value != 0)
	default:
		e.enc.FieldFloatKey(k, s.Value)
	}
}

// end finishes a device-stamped line. The timestamp is the device time in
// milliseconds plus the frame's sequence number modulo 10^6 as nanoseconds:
// two frames a device stamps with the same millisecond stay two points, and a
// replayed frame still lands on exactly the same timestamp (idempotent).
func (e *encoder) end(i int, tsMs int64, seq uint64) {
	e.endNs(i, tsMs*int64(time.Millisecond)+int64(seq%1_000_000))
}

func (e *encoder) endNs(i int, ns int64) {
	if e.enc.EndUnixNano(ns) {
		e.points[i]++
	}
}

// stringBytes converts a string for the []byte-taking encoder API without
// copying. The encoder only reads it.
func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// fnv32 is FNV-1a over s (allocation-free).
func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
