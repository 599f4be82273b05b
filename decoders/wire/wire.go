// Package wire defines the MessagePack wire schemas exchanged between devices
// (vehicle head units, EV chargers) and the gateway.
//
// Every payload is a MessagePack array ("tuple" form) whose first element is
// the schema version. Tuple form keeps frames small and lets the decoder walk
// them without field-name lookups. The Go structs below are the source of
// truth; wire_gen.go is generated from them by tinylib/msgp (`make generate`)
// and is committed. See docs/protocol.md for the byte-level description.
//
// Ownership: decoding into a value reuses that value's slices (Signals, DTCs,
// Ident buffers) when they have enough capacity, so a long-lived value decoded
// over and over allocates nothing. Decoded values never alias the input
// buffer: the caller may reuse the payload buffer as soon as a Decode returns.
package wire

//go:generate go tool msgp -file=$GOFILE -o=wire_gen.go -tests=false

// Limits on counts inside one payload; larger arrays are rejected before any
// allocation (msgp checks the declared length against them).
//msgp:limit arrays:512 maps:64

//msgp:tuple TelemetryFrame Signal DiagReport DTCEntry VehicleEvent ChargingSession ChargerStatus Command Param CommandAck

// Version is the only schema version this gateway understands. A payload
// whose first element differs is rejected with ErrUnsupportedVersion.
const Version uint8 = 1

// Signal is one sampled value. ID refers to the signal catalog
// (decoders/catalog), which gives the VSS path, unit, type and valid range.
// Booleans are 0/1, enumerations their numeric code.
type Signal struct {
	ID    uint16
	Value float64
}

// TelemetryFrame is published on vehicles/{vin}/telemetry.
//
//	[version, vin, seq, ts_ms, [[id, value], ...]]
type TelemetryFrame struct {
	Version uint8
	VIN     Ident
	Seq     uint64
	TimeMs  int64 // Unix time of the sample in milliseconds (device clock)
	Signals []Signal
}

// DTC status values (DTCEntry.Status).
const (
	DTCPending   uint8 = 1
	DTCConfirmed uint8 = 2
	DTCPermanent uint8 = 3
)

// DTCEntry is one diagnostic trouble code in its 2-byte SAE J2012 / ISO
// 15031-6 encoding (bits 15-14: P/C/B/U, then four hex digits) with its status.
type DTCEntry struct {
	Code   uint16
	Status uint8
}

// DiagReport is published on vehicles/{vin}/diag. It is a full snapshot: the
// DTCs listed are all the codes currently stored in the vehicle; a code that
// disappears from one report to the next has been cleared.
//
//	[version, vin, seq, ts_ms, mil, odometer_km, [[code, status], ...], [[id, value], ...]]
type DiagReport struct {
	Version    uint8
	VIN        Ident
	Seq        uint64
	TimeMs     int64
	MIL        bool
	OdometerKm float64
	DTCs       []DTCEntry
	Freeze     []Signal // freeze-frame signals captured with the first confirmed DTC
}

// Vehicle event kinds (VehicleEvent.Kind).
const (
	EventIgnitionOn  uint8 = 1
	EventIgnitionOff uint8 = 2
	EventOnline      uint8 = 3
	EventOffline     uint8 = 4
	EventLocation    uint8 = 5 // only sent when the driver consented to location sharing
)

// VehicleEvent is published on vehicles/{vin}/events.
//
//	[version, vin, seq, ts_ms, kind, has_position, lat, lon]
type VehicleEvent struct {
	Version     uint8
	VIN         Ident
	Seq         uint64
	TimeMs      int64
	Kind        uint8
	HasPosition bool
	Lat         float64
	Lon         float64
}

// Charging session event kinds (ChargingSession.Kind).
const (
	SessionStarted uint8 = 1
	SessionUpdated uint8 = 2
	SessionStopped uint8 = 3
)

// ChargingSession is published on chargers/{station}/session.
//
//	[version, station, seq, ts_ms, kind, session_id, connector, id_tag, vin,
//	 energy_wh, power_w, soc_pct, target_soc_pct]
type ChargingSession struct {
	Version      uint8
	Station      Ident
	Seq          uint64
	TimeMs       int64
	Kind         uint8
	SessionID    Ident
	Connector    uint8
	IDTag        Ident // RFID / contract id; may be empty when VIN is known (plug & charge)
	VIN          Ident // may be empty
	EnergyWh     float64
	PowerW       float64
	SoCPct       float64
	TargetSoCPct float64
}

// Connector status values (ChargerStatus.Status).
const (
	ConnectorAvailable   uint8 = 1
	ConnectorOccupied    uint8 = 2
	ConnectorFaulted     uint8 = 3
	ConnectorUnavailable uint8 = 4
)

// ChargerStatus is published on chargers/{station}/status.
//
//	[version, station, seq, ts_ms, connector, status]
type ChargerStatus struct {
	Version   uint8
	Station   Ident
	Seq       uint64
	TimeMs    int64
	Connector uint8
	Status    uint8
}

// Param is one key/value argument of a Command.
type Param struct {
	Key   string
	Value string
}

// Command is sent by the cloud on vehicles/{vin}/cmd/{name}. CmdID is unique
// and makes the command idempotent: a vehicle that sees the same CmdID twice
// applies it once and acks it again.
//
//	[version, cmd_id, ts_ms, name, [[key, value], ...]]
type Command struct {
	Version uint8
	CmdID   string
	TimeMs  int64
	Name    string
	Params  []Param
}

// Command ack status values (CommandAck.Status).
const (
	AckApplied  uint8 = 1
	AckRejected uint8 = 2
	AckFailed   uint8 = 3
)

// CommandAck is published by the vehicle on vehicles/{vin}/cmd-ack.
//
//	[version, cmd_id, vin, ts_ms, status, reason]
type CommandAck struct {
	Version uint8
	CmdID   string
	VIN     Ident
	TimeMs  int64
	Status  uint8
	Reason  string
}
