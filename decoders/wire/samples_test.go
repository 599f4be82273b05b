package wire_test

import (
	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/tinylib/msgp/msgp"
)

// Realistic sample payloads shared by the golden, malformed-input, fuzz and
// benchmark tests.

const (
	sampleVIN  = "WVWZZZE1ZPP012345"
	sampleTsMs = int64(1767225600000) // 2026-01-01T00:00:00Z
)

// telemetry32 is a 32-signal frame from a plug-in hybrid on the move: the
// frame size the product brief's decoder figure refers to.
func telemetry32() *wire.TelemetryFrame {
	values := map[uint16]float64{
		catalog.Speed:               87.5,
		catalog.EngineSpeed:         2150.25,
		catalog.CoolantTemp:         91,
		catalog.Odometer:            48213.7,
		catalog.LowVoltageBattery:   14.2,
		catalog.TractionSoC:         76.4,
		catalog.TractionPower:       -18250,
		catalog.TirePressureFL:      241,
		catalog.TirePressureFR:      239.5,
		catalog.TirePressureRL:      252,
		catalog.TirePressureRR:      250.5,
		catalog.CabinTemp:           21.8,
		catalog.ExteriorTemp:        -3.5,
		catalog.Latitude:            48.137154,
		catalog.Longitude:           11.576124,
		catalog.Heading:             271.3,
		catalog.FuelLevel:           63.1,
		catalog.TractionSoH:         97.2,
		catalog.TractionBatteryTemp: 24.6,
		catalog.TractionVoltage:     382.4,
		catalog.TractionCurrent:     -47.7,
		catalog.Range:               412000,
		catalog.AccelLongitudinal:   0.42,
		catalog.AccelLateral:        -0.13,
		catalog.AcceleratorPedal:    18.5,
		catalog.BrakePedal:          0,
		catalog.CurrentGear:         5,
		catalog.SteeringAngle:       -4.5,
		catalog.EngineLoad:          34.1,
		catalog.ThrottlePosition:    16.9,
		catalog.IsMoving:            1,
		catalog.IsCharging:          0,
	}
	f := &wire.TelemetryFrame{Version: wire.Version, VIN: wire.Ident(sampleVIN), Seq: 184467, TimeMs: sampleTsMs}
	for id := uint16(1); id <= 32; id++ {
		f.Signals = append(f.Signals, wire.Signal{ID: id, Value: values[id]})
	}
	return f
}

func sampleDiag() *wire.DiagReport {
	return &wire.DiagReport{
		Version: wire.Version, VIN: wire.Ident(sampleVIN), Seq: 912, TimeMs: sampleTsMs + 1500,
		MIL: true, OdometerKm: 48213.7,
		DTCs: []wire.DTCEntry{
			{Code: 0x0301, Status: wire.DTCConfirmed}, // P0301
			{Code: 0x0420, Status: wire.DTCPending},   // P0420
			{Code: 0xC100, Status: wire.DTCPermanent}, // U0100
		},
		Freeze: []wire.Signal{
			{ID: catalog.Speed, Value: 64},
			{ID: catalog.EngineSpeed, Value: 2480},
			{ID: catalog.CoolantTemp, Value: 94},
			{ID: catalog.EngineLoad, Value: 71.8},
		},
	}
}

func sampleEvent() *wire.VehicleEvent {
	return &wire.VehicleEvent{
		Version: wire.Version, VIN: wire.Ident(sampleVIN), Seq: 77, TimeMs: sampleTsMs + 60000,
		Kind: wire.EventLocation, HasPosition: true, Lat: 48.137154, Lon: 11.576124,
	}
}

func sampleSession() *wire.ChargingSession {
	return &wire.ChargingSession{
		Version: wire.Version, Station: wire.Ident("DE*ION*E123456"), Seq: 3, TimeMs: sampleTsMs + 120000,
		Kind: wire.SessionUpdated, SessionID: wire.Ident("01JGZK6V4N3Q8R2T5W7Y9A1C3E"), Connector: 2,
		IDTag: wire.Ident("04A2B3C4D5E6F7"), VIN: wire.Ident(sampleVIN),
		EnergyWh: 12850.5, PowerW: 49800, SoCPct: 58.2, TargetSoCPct: 80,
	}
}

func sampleChargerStatus() *wire.ChargerStatus {
	return &wire.ChargerStatus{
		Version: wire.Version, Station: wire.Ident("DE*ION*E123456"), Seq: 41, TimeMs: sampleTsMs + 5000,
		Connector: 2, Status: wire.ConnectorOccupied,
	}
}

func sampleCommand() *wire.Command {
	return &wire.Command{
		Version: wire.Version, CmdID: "cmd-2026-01-01-000042", TimeMs: sampleTsMs + 7000, Name: "feature.activate",
		Params: []wire.Param{
			{Key: "feature", Value: "heated_steering_wheel"},
			{Key: "season", Value: "winter"},
		},
	}
}

func sampleCommandAck() *wire.CommandAck {
	return &wire.CommandAck{
		Version: wire.Version, CmdID: "cmd-2026-01-01-000042", VIN: wire.Ident(sampleVIN), TimeMs: sampleTsMs + 9500,
		Status: wire.AckRejected, Reason: "feature not installed",
	}
}

// payload is one decodable message: a fresh value, its Decode function.
type payload interface {
	msgp.Marshaler
	msgp.Encodable
	msgp.Decodable
}

// codec describes one payload type generically for table-driven tests.
type codec struct {
	name   string
	sample func() payload
	fresh  func() payload
	decode func(b []byte, v payload) error
}

var codecs = []codec{
	{
		name:   "telemetry",
		sample: func() payload { return telemetry32() },
		fresh:  func() payload { return new(wire.TelemetryFrame) },
		decode: func(b []byte, v payload) error { return wire.DecodeTelemetry(b, v.(*wire.TelemetryFrame)) },
	},
	{
		name:   "diag",
		sample: func() payload { return sampleDiag() },
		fresh:  func() payload { return new(wire.DiagReport) },
		decode: func(b []byte, v payload) error { return wire.DecodeDiag(b, v.(*wire.DiagReport)) },
	},
	{
		name:   "event",
		sample: func() payload { return sampleEvent() },
		fresh:  func() payload { return new(wire.VehicleEvent) },
		decode: func(b []byte, v payload) error { return wire.DecodeVehicleEvent(b, v.(*wire.VehicleEvent)) },
	},
	{
		name:   "charging_session",
		sample: func() payload { return sampleSession() },
		fresh:  func() payload { return new(wire.ChargingSession) },
		decode: func(b []byte, v payload) error { return wire.DecodeChargingSession(b, v.(*wire.ChargingSession)) },
	},
	{
		name:   "charger_status",
		sample: func() payload { return sampleChargerStatus() },
		fresh:  func() payload { return new(wire.ChargerStatus) },
		decode: func(b []byte, v payload) error { return wire.DecodeChargerStatus(b, v.(*wire.ChargerStatus)) },
	},
	{
		name:   "command",
		sample: func() payload { return sampleCommand() },
		fresh:  func() payload { return new(wire.Command) },
		decode: func(b []byte, v payload) error { return wire.DecodeCommand(b, v.(*wire.Command)) },
	},
	{
		name:   "command_ack",
		sample: func() payload { return sampleCommandAck() },
		fresh:  func() payload { return new(wire.CommandAck) },
		decode: func(b []byte, v payload) error { return wire.DecodeCommandAck(b, v.(*wire.CommandAck)) },
	},
}

func codecByName(name string) codec {
	for _, c := range codecs {
		if c.name == name {
			return c
		}
	}
	panic("no codec " + name)
}

func mustMarshal(v msgp.Marshaler) []byte {
	b, err := v.MarshalMsg(nil)
	if err != nil {
		panic(err)
	}
	return b
}
