package eventsink

// The envelope around these data types is natsbus.Envelope.

import "time"

// DTCEvent is the data of dtc.raised / dtc.updated / dtc.cleared.
type DTCEvent struct {
	VIN         string  `json:"vin"`
	Code        string  `json:"code"`
	Status      string  `json:"status"` // pending|confirmed|permanent ("cleared" for dtc.cleared)
	Previous    string  `json:"previous_status,omitempty"`
	Description string  `json:"description,omitempty"`
	Severity    string  `json:"severity"`
	MIL         bool    `json:"mil"`
	OdometerKm  float64 `json:"odometer_km"`
	ReportSeq   uint64  `json:"report_seq"`
}

// ChargingEvent is the data of charging.session.*.
type ChargingEvent struct {
	Station      string  `json:"station"`
	SessionID    string  `json:"session_id"`
	Connector    uint8   `json:"connector"`
	Event        string  `json:"event"` // started|updated|stopped
	VIN          string  `json:"vin,omitempty"`
	IDTag        string  `json:"id_tag,omitempty"`
	EnergyWh     float64 `json:"energy_wh"`
	PowerW       float64 `json:"power_w"`
	SoCPct       float64 `json:"soc_pct"`
	TargetSoCPct float64 `json:"target_soc_pct"`
	Seq          uint64  `json:"seq"`
	// ReceivedAt is when the gateway received the session frame (the spool
	// record's receive time, set by the gateway, not the charger). The
	// envelope's time is the charger's own clock: services decide
	// freshness, caps and opening hours on ReceivedAt.
	ReceivedAt time.Time `json:"received_at,omitzero"`
}

// ConnectorEvent is the data of charging.status.{station}.
type ConnectorEvent struct {
	Station   string `json:"station"`
	Connector uint8  `json:"connector"`
	Status    string `json:"status"`
	Seq       uint64 `json:"seq"`
}

// ConnectivityEvent is the data of {vehicle|charging}.connectivity.*.
type ConnectivityEvent struct {
	Device    string `json:"device"`
	Kind      string `json:"kind"` // vehicle|charger
	Connected bool   `json:"connected"`
}

// VehicleEvent is the data of vehicle.event.{vin}.
type VehicleEvent struct {
	VIN      string  `json:"vin"`
	Kind     string  `json:"kind"`
	Seq      uint64  `json:"seq"`
	Position *LatLon `json:"position,omitempty"`
	// ReceivedAt is when the gateway received the event (see
	// ChargingEvent.ReceivedAt).
	ReceivedAt time.Time `json:"received_at,omitzero"`
}

// LatLon is a position (only present on consented location events).
type LatLon struct {
	Lat float64 `json:"lat"`
	Lon float64 `json:"lon"`
}

// CommandAckEvent is the data of vehicle.cmdack.{vin}.
type CommandAckEvent struct {
	VIN    string `json:"vin"`
	CmdID  string `json:"cmd_id"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// DeadLetter is the data of deadletter.{class}.{device}. Reason is the
// rejection label (decoders/reject, docs/protocol.md section 8), the same
// value as the reason label of telegate_dead_letters_total and the reason
// field of the InfluxDB dead_letter point; Message explains the label and
// Detail names the element and the rule (never payload bytes).
type DeadLetter struct {
	Client     string    `json:"client"`
	Topic      string    `json:"topic"`
	QoS        byte      `json:"qos"`
	Reason     string    `json:"reason"`
	Message    string    `json:"message"`
	Detail     string    `json:"detail,omitempty"`
	ReceivedAt time.Time `json:"received_at"`
	Payload    []byte    `json:"payload"` // base64 in JSON, at most MaxDeadLetterPayload bytes
	Truncated  bool      `json:"truncated,omitempty"`
	Size       int       `json:"size"`
}

// MaxDeadLetterPayload bounds the payload copy kept in a dead letter.
const MaxDeadLetterPayload = 16 << 10
