package natsbus

// The gateway's streams, and the subjects of its events: the one place
// where they are spelled (docs/data-model.md lists them for consumers).
// Subject builders take raw ids (VIN, station id, device id, customer ref)
// and escape them with Token exactly once; never pass a Token result back
// to a builder.

// Stream names.
const (
	StreamDTC        = "DTC"
	StreamCharging   = "CHARGING"
	StreamVehicle    = "VEHICLE"
	StreamProfile    = "PROFILE"
	StreamPartners   = "PARTNERS"
	StreamDeadLetter = "DEADLETTER"
)

// Subject prefixes and filters. A prefix ends with "." and is followed by
// the remaining tokens; the stream's own filters are in Streams.
const (
	PrefixDTC              = "telemetry.dtc."
	PrefixChargingSession  = "charging.session."
	PrefixChargerStatus    = "charging.status."
	PrefixVehicleEvent     = "vehicle.event."
	PrefixCommand          = "vehicle.cmd."
	PrefixCommandAck       = "vehicle.cmdack."
	PrefixCommandResult    = "vehicle.cmdresult."
	PrefixVehicleConnected = "vehicle.connectivity."
	PrefixDeadLetter       = "deadletter."
	PrefixProfile          = "profile.events."
	PrefixPartners         = "partners."
)

// Token makes a device id (or any id) safe as one subject token, KV key or
// message-id part, and keeps distinct ids distinct: every byte outside
// [A-Za-z0-9-] is written as _XX (upper-case hex), so "DE.1" and "DE_1" give
// "DE_2E1" and "DE_5F1"; "" gives "_". VINs, station ids and customer refs
// usually contain no such byte and appear unchanged. This is the only
// escaping function for subjects: the gateway's sinks and the services use
// it, so a subject built on either side matches.
func Token(id string) string {
	clean := id != ""
	for i := 0; i < len(id); i++ {
		if !tokenByte(id[i]) {
			clean = false
			break
		}
	}
	if clean {
		return id
	}
	if id == "" {
		return "_"
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(id)+8)
	for i := 0; i < len(id); i++ {
		c := id[i]
		if tokenByte(c) {
			b = append(b, c)
			continue
		}
		b = append(b, '_', hex[c>>4], hex[c&15])
	}
	return string(b)
}

func tokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
}

// SubjectDTC is telemetry.dtc.{change}.{vin}, change raised|updated|cleared
// (stream DTC).
func SubjectDTC(change, vin string) string { return PrefixDTC + change + "." + Token(vin) }

// SubjectChargingSession is charging.session.{event}.{station}, event
// started|updated|stopped (stream CHARGING).
func SubjectChargingSession(event, station string) string {
	return PrefixChargingSession + event + "." + Token(station)
}

// SubjectChargerStatus is charging.status.{station} (stream CHARGING).
func SubjectChargerStatus(station string) string { return PrefixChargerStatus + Token(station) }

// SubjectVehicleEvent is vehicle.event.{vin} (stream VEHICLE).
func SubjectVehicleEvent(vin string) string { return PrefixVehicleEvent + Token(vin) }

// SubjectCommand is vehicle.cmd.{vin}: a command request (stream VEHICLE).
func SubjectCommand(vin string) string { return PrefixCommand + Token(vin) }

// SubjectCommandAck is vehicle.cmdack.{vin} (stream VEHICLE).
func SubjectCommandAck(vin string) string { return PrefixCommandAck + Token(vin) }

// SubjectCommandResult is vehicle.cmdresult.{vin} (stream VEHICLE).
func SubjectCommandResult(vin string) string { return PrefixCommandResult + Token(vin) }

// SubjectConnectivity is {vehicle|charging}.connectivity.{connected|
// disconnected}.{device} and its stream: CHARGING for kind "charger",
// VEHICLE otherwise.
func SubjectConnectivity(kind string, connected bool, device string) (stream, subject string) {
	root, stream := "vehicle", StreamVehicle
	if kind == "charger" {
		root, stream = "charging", StreamCharging
	}
	return stream, root + ".connectivity." + ConnectivityState(connected) + "." + Token(device)
}

// ConnectivityState is "connected" or "disconnected".
func ConnectivityState(connected bool) string {
	if connected {
		return "connected"
	}
	return "disconnected"
}

// SubjectDeadLetter is deadletter.{class}.{device} (stream DEADLETTER).
func SubjectDeadLetter(class, device string) string {
	return PrefixDeadLetter + class + "." + Token(device)
}

// SubjectProfile is profile.events.{ref} (stream PROFILE).
func SubjectProfile(ref string) string { return PrefixProfile + Token(ref) }
