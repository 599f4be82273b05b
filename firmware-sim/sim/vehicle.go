package sim

import (
	"errors"
	"strconv"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/telegate/telegate/decoders/dtc"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/firmware-sim/drivecycle"
)

// Topic layout (see docs/ and the package README).
func telemetryTopic(vin string) string { return "vehicles/" + vin + "/telemetry" }
func diagTopic(vin string) string      { return "vehicles/" + vin + "/diag" }
func eventsTopic(vin string) string    { return "vehicles/" + vin + "/events" }
func cmdFilter(vin string) string      { return "vehicles/" + vin + "/cmd/#" }
func cmdAckTopic(vin string) string    { return "vehicles/" + vin + "/cmd-ack" }

// maxRememberedCmds bounds the per-vehicle memory of command ids used to
// make commands idempotent.
const maxRememberedCmds = 1024

// cmdMsg is a command as received from the broker.
type cmdMsg struct {
	topic   string
	payload []byte
}

// ackResult is the remembered outcome of a command id.
type ackResult struct {
	status uint8
	reason string
}

// vehicleDev is one simulated vehicle: its model, fault memory, features
// and MQTT device.
type vehicleDev struct {
	*device
	vin    string
	ident  wire.Ident
	model  *drivecycle.Vehicle
	dtcs   dtcMemory
	cmds   chan cmdMsg
	refuse map[string]bool

	features map[string]bool
	acks     map[string]ackResult
	ackOrder []string

	seqTelemetry, seqDiag, seqEvents uint64
	frameNo                          int
	frame                            wire.TelemetryFrame
	ignition                         bool
	announced                        bool // ignition state sent after the first connect
	topics                           [numTopics]string
}

func newVehicle(f *Fleet, index int, vin string) *vehicleDev {
	seed := f.cfg.Seed*1_000_003 + int64(index)
	v := &vehicleDev{
		device:   newDevice(f, vin, KindVehicle, index, seed),
		vin:      vin,
		ident:    wire.Ident(vin),
		model:    drivecycle.NewVehicle(drivecycle.NEDC(), seed, time.Now()),
		cmds:     make(chan cmdMsg, 16),
		refuse:   make(map[string]bool, len(f.cfg.RefuseCommands)),
		features: map[string]bool{},
		acks:     map[string]ackResult{},
	}
	for _, n := range f.cfg.RefuseCommands {
		v.refuse[strings.ToLower(strings.TrimSpace(n))] = true
	}
	v.dtcs = dtcMemory{rng: v.rng, pt: v.model.Powertrain()}
	v.topics = [numTopics]string{
		topicTelemetry: telemetryTopic(vin),
		topicDiag:      diagTopic(vin),
		topicEvents:    eventsTopic(vin),
		topicCmdAck:    cmdAckTopic(vin),
	}
	v.ignition = v.model.State().Ignition
	v.onConnect = v.subscribe
	return v
}

// subscribe (re)subscribes to the command topics; it runs on every
// connection, before the online event.
func (v *vehicleDev) subscribe(c mqtt.Client) {
	tok := c.Subscribe(cmdFilter(v.vin), 1, v.handleCmd)
	if !tok.WaitTimeout(v.f.cfg.ConnectTimeout) {
		v.log.Warn("subscribe timed out")
		return
	}
	if err := tok.Error(); err != nil {
		v.log.Warn("subscribe failed", "err", err)
	}
}

// handleCmd runs in a paho goroutine (OrderMatters is off): hand the
// message to the vehicle's loop.
func (v *vehicleDev) handleCmd(_ mqtt.Client, m mqtt.Message) {
	msg := cmdMsg{topic: m.Topic(), payload: append([]byte(nil), m.Payload()...)}
	select {
	case v.cmds <- msg:
	case <-v.f.stop:
	}
}

// run is the vehicle's main loop.
func (v *vehicleDev) run() {
	if err := v.connect(); err != nil {
		v.finish(false)
		return
	}
	cfg := &v.f.cfg
	// Spread the fleet's publishes evenly over the interval.
	nextTele := time.Now().Add(time.Duration(v.rng.Int64N(int64(cfg.TelemetryInterval))))
	tele := time.NewTimer(time.Until(nextTele))
	defer tele.Stop()
	diag := time.NewTimer(time.Duration(v.rng.Int64N(int64(cfg.DiagInterval))))
	defer diag.Stop()
	last := time.Now()

loop:
	for {
		select {
		case <-v.f.stop:
			break loop
		case <-v.online:
			if !v.event(wire.EventOnline, false) {
				break loop
			}
			if !v.announced && v.ignition {
				v.announced = true
				if !v.event(wire.EventIgnitionOn, cfg.ShareLocation) {
					break loop
				}
			}
		case m := <-v.cmds:
			if !v.command(m) {
				break loop
			}
		case now := <-tele.C:
			nextTele = nextTele.Add(cfg.TelemetryInterval)
			if behind := now.Sub(nextTele); behind > cfg.TelemetryInterval {
				nextTele = now.Add(cfg.TelemetryInterval) // don't burst after a stall
			}
			n, ok := v.f.reserveFrame()
			if !ok {
				continue // frame budget spent; wait for the stop signal
			}
			tele.Reset(time.Until(nextTele))
			v.model.Step(time.Duration(float64(now.Sub(last)) * cfg.TimeScale))
			last = now
			if !v.ignitionEvents() || !v.telemetry() {
				break loop
			}
			v.f.frameDone(n)
		case <-diag.C:
			diag.Reset(cfg.DiagInterval)
			if !v.diag() {
				break loop
			}
		}
	}
	if v.up.Load() {
		v.event(wire.EventOffline, false)
	}
	v.finish(true)
}

// ignitionEvents publishes ignition on/off when the model's state changed.
func (v *vehicleDev) ignitionEvents() bool {
	s := v.model.State()
	if s.Ignition == v.ignition {
		return true
	}
	v.ignition = s.Ignition
	if !s.Ignition {
		v.f.stats.ignitionOffs.Add(1)
		if !v.event(wire.EventIgnitionOff, v.f.cfg.ShareLocation) {
			return false
		}
		if v.f.cfg.ShareLocation && !v.event(wire.EventLocation, true) {
			return false
		}
		return true
	}
	return v.event(wire.EventIgnitionOn, v.f.cfg.ShareLocation)
}

func (v *vehicleDev) telemetry() bool {
	if !v.acquire() {
		return false
	}
	s := v.model.State()
	n := v.f.cfg.SignalsPerFrame
	first := (v.frameNo * n) % len(signalTable)
	v.frameNo++
	v.seqTelemetry++
	v.frame = wire.TelemetryFrame{
		Version: wire.Version,
		VIN:     v.ident,
		Seq:     v.seqTelemetry,
		TimeMs:  time.Now().UnixMilli(),
		Signals: appendSignals(v.frame.Signals[:0], &s, first, n),
	}
	ok := v.send(topicTelemetry, v.topics[topicTelemetry], &v.frame)
	v.f.teleSeq[v.vin].Store(v.seqTelemetry)
	return ok
}

func (v *vehicleDev) diag() bool {
	if !v.acquire() {
		return false
	}
	s := v.model.State()
	dtcs, mil, raised, freeze := v.dtcs.report(v.f.cfg.DTCProbability, &s)
	if raised {
		v.f.stats.dtcsRaised.Add(1)
	}
	v.seqDiag++
	return v.send(topicDiag, v.topics[topicDiag], &wire.DiagReport{
		Version:    wire.Version,
		VIN:        v.ident,
		Seq:        v.seqDiag,
		TimeMs:     time.Now().UnixMilli(),
		MIL:        mil,
		OdometerKm: round(s.OdometerKm, 3),
		DTCs:       dtcs,
		Freeze:     freeze,
	})
}

func (v *vehicleDev) event(kind uint8, withPosition bool) bool {
	if !v.acquire() {
		return false
	}
	v.seqEvents++
	e := &wire.VehicleEvent{
		Version: wire.Version,
		VIN:     v.ident,
		Seq:     v.seqEvents,
		TimeMs:  time.Now().UnixMilli(),
		Kind:    kind,
	}
	if withPosition {
		s := v.model.State()
		e.HasPosition, e.Lat, e.Lon = true, round(s.Lat, 6), round(s.Lon, 6)
	}
	return v.send(topicEvents, v.topics[topicEvents], e)
}

// command decodes, applies (once per cmd id) and acknowledges a command.
func (v *vehicleDev) command(m cmdMsg) bool {
	st := &v.f.stats
	var c wire.Command
	var res ackResult
	err := wire.DecodeCommand(m.payload, &c)
	switch prev, seen := v.acks[c.CmdID]; {
	case err != nil:
		st.badCommands.Add(1)
		v.log.Warn("invalid command", "topic", m.topic, "err", err)
		if !errors.Is(err, wire.ErrInvalidValue) || c.CmdID == "" {
			return true // nothing to acknowledge
		}
		// Well-formed but invalid (e.g. no name): tell the cloud.
		res = ackResult{wire.AckRejected, "invalid command: " + err.Error()}
	case seen:
		st.cmdReceived.Add(1)
		res = prev
		st.cmdDuplicate.Add(1)
		v.log.Debug("duplicate command", "cmd_id", c.CmdID, "name", c.Name)
	default:
		st.cmdReceived.Add(1)
		res = v.apply(&c)
		v.remember(c.CmdID, res)
		if res.status == wire.AckApplied {
			st.cmdApplied.Add(1)
		} else {
			st.cmdRejected.Add(1)
		}
		v.log.Info("command", "cmd_id", c.CmdID, "name", c.Name, "status", res.status, "reason", res.reason)
	}
	if !v.acquire() {
		return false
	}
	return v.send(topicCmdAck, v.topics[topicCmdAck], &wire.CommandAck{
		Version: wire.Version,
		CmdID:   c.CmdID,
		VIN:     v.ident,
		TimeMs:  time.Now().UnixMilli(),
		Status:  res.status,
		Reason:  res.reason,
	})
}

func (v *vehicleDev) remember(id string, r ackResult) {
	if len(v.ackOrder) >= maxRememberedCmds {
		delete(v.acks, v.ackOrder[0])
		v.ackOrder = v.ackOrder[1:]
	}
	v.acks[id] = r
	v.ackOrder = append(v.ackOrder, id)
}

// apply executes a command against the vehicle's state. Supported names:
//
//	feature (params feature=<id>, state=on|off[, level=0..3]),
//	feature.activate / feature.deactivate / activate / deactivate (param feature=<id>),
//	climate (setpoint=<16..28 °C>), charge_target (soc=<50..100 %>), ping.
//
// Any feature id is accepted and remembered; heated_seats and
// heated_steering_wheel also change the reported signals.
func (v *vehicleDev) apply(c *wire.Command) ackResult {
	name := strings.ToLower(c.Name)
	if v.refuse[name] || (v.f.cfg.RefuseProbability > 0 && v.rng.Float64() < v.f.cfg.RefuseProbability) {
		return ackResult{wire.AckRejected, "refused by vehicle policy"}
	}
	param := func(keys ...string) (string, bool) {
		for _, k := range keys {
			for _, p := range c.Params {
				if strings.EqualFold(p.Key, k) {
					return p.Value, true
				}
			}
		}
		return "", false
	}
	number := func(keys ...string) (float64, bool) {
		s, ok := param(keys...)
		if !ok {
			return 0, false
		}
		f, err := strconv.ParseFloat(s, 64)
		return f, err == nil
	}
	switch name {
	case "feature", "feature.activate", "feature.deactivate", "activate", "deactivate":
		id, ok := param("feature", "feature_id", "id")
		if !ok || id == "" {
			return ackResult{wire.AckRejected, "missing feature parameter"}
		}
		var on bool
		switch {
		case strings.HasSuffix(name, "deactivate"):
			on = false
		case strings.HasSuffix(name, "activate"):
			on = true
		default:
			s, _ := param("state", "enabled", "active", "value")
			on, ok = parseOnOff(s)
			if !ok {
				return ackResult{wire.AckRejected, "state must be on or off"}
			}
		}
		return v.setFeature(strings.ToLower(id), on, param)
	case "climate", "set_temperature":
		t, ok := number("setpoint", "temperature", "value")
		if !ok {
			return ackResult{wire.AckRejected, "missing setpoint"}
		}
		if err := v.model.SetCabinSetpoint(t); err != nil {
			return ackResult{wire.AckRejected, err.Error()}
		}
	case "charge_target", "set_charge_limit":
		t, ok := number("soc", "target", "value")
		if !ok {
			return ackResult{wire.AckRejected, "missing soc"}
		}
		if err := v.model.SetChargeTarget(t); err != nil {
			return ackResult{wire.AckRejected, err.Error()}
		}
	case "clear_dtc_reminder":
		// Dismisses the in-car service reminder; the code stays stored.
		code, ok := param("code", "dtc")
		if !ok {
			return ackResult{wire.AckRejected, "missing code"}
		}
		if _, err := dtc.Parse(code); err != nil {
			return ackResult{wire.AckRejected, err.Error()}
		}
	case "offer":
		// A partner offer shown on the head unit: nothing to change in the
		// vehicle model; the ack tells the cloud it was displayed.
		if _, ok := param("offer_code", "code", "offer"); !ok && len(c.Params) == 0 {
			return ackResult{wire.AckRejected, "offer without content"}
		}
	case "diagnostics_snapshot":
		// Sends a diagnostics report now instead of at the next interval.
		if !v.diag() {
			return ackResult{wire.AckFailed, "diagnostics report not sent"}
		}
	case "ping":
	default:
		return ackResult{wire.AckRejected, "unsupported command " + strconv.Quote(c.Name)}
	}
	return ackResult{wire.AckApplied, ""}
}

func (v *vehicleDev) setFeature(id string, on bool, param func(...string) (string, bool)) ackResult {
	switch id {
	case "heated_seats", "heated_seat", "seat_heating":
		level := 0
		if on {
			level = 2
			if s, ok := param("level"); ok {
				n, err := strconv.Atoi(s)
				if err != nil {
					return ackResult{wire.AckRejected, "level must be 0..3"}
				}
				level = n
			}
		}
		if err := v.model.SetHeatedSeat(level); err != nil {
			return ackResult{wire.AckRejected, err.Error()}
		}
	case "heated_steering_wheel", "steering_wheel_heating":
		v.model.SetHeatedSteeringWheel(on)
	}
	v.features[id] = on
	return ackResult{wire.AckApplied, ""}
}

func parseOnOff(s string) (on, ok bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "on", "true", "1", "enabled", "enable", "active", "activate", "yes":
		return true, true
	case "off", "false", "0", "disabled", "disable", "inactive", "deactivate", "no":
		return false, true
	}
	return false, false
}
