// Package catalog maps the numeric signal ids carried in telemetry frames to
// COVESA Vehicle Signal Specification (VSS) paths, units, types and valid
// ranges. The table is fixed at build time; ids are never reused.
//
// Paths follow VSS 4.1 (the two heating signals, 35 and 36, only exist from
// 4.1 on; everything else is also valid in 4.0). Units use the VSS unit
// names. Where this catalog narrows a VSS range (VSS often gives none) the
// range is a plausibility bound for passenger cars, not a physical limit.
//
// Sign conventions are VSS's: TractionPower and TractionCurrent are positive
// when energy flows into the battery (charging) and negative when it flows
// out (driving); SteeringAngle is positive to the left; CurrentGear is
// negative for reverse gears and 0 for neutral; the heating signals use VSS's
// HeatingCooling scale, -100 (maximum cooling) .. 0 (off) .. 100 (maximum
// heating), so a heated-only seat reports 0..100.
//
// InfluxDB: the VSS path is the field key, used verbatim. VSS paths contain
// only letters, digits and dots, none of which line protocol escapes in a
// field key, so Signal.FieldKey equals Signal.Path and can be appended to a
// line buffer without escaping or allocating. AppendField writes a complete
// `key=value` pair with the line-protocol type suffix for the signal's Type.
//
// Everything here is read-only after package initialisation and safe for
// concurrent use. Lookup and ByPath return pointers into the static table:
// callers must not modify the Signal they point to.
package catalog

import (
	"math"
	"strconv"
)

// Type is the value type of a signal. Every value travels as a float64 on
// the wire; Type says how to interpret it.
type Type uint8

// Signal types.
const (
	Float Type = iota + 1
	Int
	Bool
)

// String returns "float", "int", "bool" or "unknown".
func (t Type) String() string {
	switch t {
	case Float:
		return "float"
	case Int:
		return "int"
	case Bool:
		return "bool"
	default:
		return "unknown"
	}
}

// Signal ids. Stable: add new ids at the end, never renumber.
const (
	Speed                 uint16 = 1
	EngineSpeed           uint16 = 2
	CoolantTemp           uint16 = 3
	Odometer              uint16 = 4
	LowVoltageBattery     uint16 = 5
	TractionSoC           uint16 = 6
	TractionPower         uint16 = 7
	TirePressureFL        uint16 = 8
	TirePressureFR        uint16 = 9
	TirePressureRL        uint16 = 10
	TirePressureRR        uint16 = 11
	CabinTemp             uint16 = 12
	ExteriorTemp          uint16 = 13
	Latitude              uint16 = 14
	Longitude             uint16 = 15
	Heading               uint16 = 16
	FuelLevel             uint16 = 17
	TractionSoH           uint16 = 18
	TractionBatteryTemp   uint16 = 19
	TractionVoltage       uint16 = 20
	TractionCurrent       uint16 = 21
	Range                 uint16 = 22
	AccelLongitudinal     uint16 = 23
	AccelLateral          uint16 = 24
	AcceleratorPedal      uint16 = 25
	BrakePedal            uint16 = 26
	CurrentGear           uint16 = 27
	SteeringAngle         uint16 = 28
	EngineLoad            uint16 = 29
	ThrottlePosition      uint16 = 30
	IsMoving              uint16 = 31
	IsCharging            uint16 = 32
	DriverTempSetpoint    uint16 = 33
	ChargeTargetSoC       uint16 = 34
	HeatedSeatDriverLevel uint16 = 35
	HeatedSteeringWheel   uint16 = 36
)

// MaxID is the highest signal id in the catalog.
const MaxID = HeatedSteeringWheel

// Signal describes one catalog entry.
type Signal struct {
	ID          uint16
	Path        string // COVESA VSS path, e.g. "Vehicle.Speed"
	Unit        string // VSS unit name ("km/h", "celsius", ...); "" for Bool and unitless Int
	Type        Type
	Min, Max    float64 // inclusive valid range
	Description string
	// FieldKey is the InfluxDB line-protocol field key for the signal,
	// already escaped. It is the VSS path (nothing in a VSS path needs
	// escaping; a test enforces it).
	FieldKey string
}

// Valid reports whether v is an acceptable value for s: finite, within
// [Min, Max], 0 or 1 for Bool, integral for Int.
func (s *Signal) Valid(v float64) bool {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < s.Min || v > s.Max {
		return false
	}
	switch s.Type {
	case Bool:
		return v == 0 || v == 1
	case Int:
		return v == math.Trunc(v)
	}
	return true
}

// AppendField appends the line-protocol field `<FieldKey>=<value>` for v to
// dst: a float for Float ("12.5"), an integer for Int ("3i"), a boolean for
// Bool ("true"/"false", v != 0 is true). It does not check Valid and does
// not allocate when dst has room. Writing each signal with a fixed field
// type keeps the InfluxDB field type stable across frames.
func (s *Signal) AppendField(dst []byte, v float64) []byte {
	dst = append(dst, s.FieldKey...)
	dst = append(dst, '=')
	switch s.Type {
	case Int:
		dst = strconv.AppendInt(dst, int64(v), 10)
		return append(dst, 'i')
	case Bool:
		return strconv.AppendBool(dst, v != 0)
	default:
		return strconv.AppendFloat(dst, v, 'g', -1, 64)
	}
}

// Lookup returns the catalog entry for id in O(1) without allocating.
func Lookup(id uint16) (*Signal, bool) {
	if id == 0 || int(id) >= len(table) {
		return nil, false
	}
	return &table[id], true
}

// ByPath returns the catalog entry whose VSS path is path.
func ByPath(path string) (*Signal, bool) {
	s, ok := byPath[path]
	return s, ok
}

// All returns a copy of every catalog entry, ordered by id.
func All() []Signal {
	out := make([]Signal, 0, MaxID)
	for id := uint16(1); id <= MaxID; id++ {
		out = append(out, table[id])
	}
	return out
}

var byPath = func() map[string]*Signal {
	m := make(map[string]*Signal, MaxID)
	for id := uint16(1); id <= MaxID; id++ {
		s := &table[id]
		s.FieldKey = s.Path
		m[s.Path] = s
	}
	return m
}()

// Range bounds shared by several entries.
const (
	pctMin, pctMax = 0, 100
)

// table is indexed by id; entry 0 is unused.
var table = [MaxID + 1]Signal{
	Speed: {ID: Speed, Path: "Vehicle.Speed", Unit: "km/h", Type: Float, Min: 0, Max: 300,
		Description: "Vehicle speed over ground."},
	EngineSpeed: {ID: EngineSpeed, Path: "Vehicle.Powertrain.CombustionEngine.Speed", Unit: "rpm", Type: Float, Min: 0, Max: 12000,
		Description: "Combustion engine crankshaft speed."},
	CoolantTemp: {ID: CoolantTemp, Path: "Vehicle.Powertrain.CombustionEngine.ECT", Unit: "celsius", Type: Float, Min: -40, Max: 215,
		Description: "Engine coolant temperature (OBD PID 0x05 range)."},
	Odometer: {ID: Odometer, Path: "Vehicle.TraveledDistance", Unit: "km", Type: Float, Min: 0, Max: 2_000_000,
		Description: "Odometer: total distance traveled by the vehicle."},
	LowVoltageBattery: {ID: LowVoltageBattery, Path: "Vehicle.LowVoltageBattery.CurrentVoltage", Unit: "V", Type: Float, Min: 0, Max: 60,
		Description: "Voltage of the 12/24/48 V supply battery."},
	TractionSoC: {ID: TractionSoC, Path: "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", Unit: "percent", Type: Float, Min: pctMin, Max: pctMax,
		Description: "Physical state of charge of the traction battery, relative to net capacity."},
	TractionPower: {ID: TractionPower, Path: "Vehicle.Powertrain.TractionBattery.CurrentPower", Unit: "W", Type: Float, Min: -1_000_000, Max: 1_000_000,
		Description: "Power flowing into (positive, charging) or out of (negative, driving) the traction battery."},
	TirePressureFL: {ID: TirePressureFL, Path: "Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.Pressure", Unit: "kPa", Type: Float, Min: 0, Max: 1000,
		Description: "Front left tire pressure."},
	TirePressureFR: {ID: TirePressureFR, Path: "Vehicle.Chassis.Axle.Row1.Wheel.Right.Tire.Pressure", Unit: "kPa", Type: Float, Min: 0, Max: 1000,
		Description: "Front right tire pressure."},
	TirePressureRL: {ID: TirePressureRL, Path: "Vehicle.Chassis.Axle.Row2.Wheel.Left.Tire.Pressure", Unit: "kPa", Type: Float, Min: 0, Max: 1000,
		Description: "Rear left tire pressure."},
	TirePressureRR: {ID: TirePressureRR, Path: "Vehicle.Chassis.Axle.Row2.Wheel.Right.Tire.Pressure", Unit: "kPa", Type: Float, Min: 0, Max: 1000,
		Description: "Rear right tire pressure."},
	CabinTemp: {ID: CabinTemp, Path: "Vehicle.Cabin.HVAC.AmbientAirTemperature", Unit: "celsius", Type: Float, Min: -50, Max: 100,
		Description: "Air temperature inside the cabin."},
	ExteriorTemp: {ID: ExteriorTemp, Path: "Vehicle.Exterior.AirTemperature", Unit: "celsius", Type: Float, Min: -60, Max: 70,
		Description: "Outside air temperature."},
	Latitude: {ID: Latitude, Path: "Vehicle.CurrentLocation.Latitude", Unit: "degrees", Type: Float, Min: -90, Max: 90,
		Description: "Current latitude, WGS 84."},
	Longitude: {ID: Longitude, Path: "Vehicle.CurrentLocation.Longitude", Unit: "degrees", Type: Float, Min: -180, Max: 180,
		Description: "Current longitude, WGS 84."},
	Heading: {ID: Heading, Path: "Vehicle.CurrentLocation.Heading", Unit: "degrees", Type: Float, Min: 0, Max: 360,
		Description: "Current heading relative to geographic north."},
	FuelLevel: {ID: FuelLevel, Path: "Vehicle.Powertrain.FuelSystem.RelativeLevel", Unit: "percent", Type: Float, Min: pctMin, Max: pctMax,
		Description: "Fuel tank level relative to tank capacity."},
	TractionSoH: {ID: TractionSoH, Path: "Vehicle.Powertrain.TractionBattery.StateOfHealth", Unit: "percent", Type: Float, Min: pctMin, Max: pctMax,
		Description: "Traction battery state of health."},
	TractionBatteryTemp: {ID: TractionBatteryTemp, Path: "Vehicle.Powertrain.TractionBattery.Temperature.Average", Unit: "celsius", Type: Float, Min: -50, Max: 100,
		Description: "Average temperature of the traction battery cells."},
	TractionVoltage: {ID: TractionVoltage, Path: "Vehicle.Powertrain.TractionBattery.CurrentVoltage", Unit: "V", Type: Float, Min: 0, Max: 1500,
		Description: "Traction battery voltage."},
	TractionCurrent: {ID: TractionCurrent, Path: "Vehicle.Powertrain.TractionBattery.CurrentCurrent", Unit: "A", Type: Float, Min: -2000, Max: 2000,
		Description: "Traction battery current: positive into the battery (charging), negative out of it (driving)."},
	Range: {ID: Range, Path: "Vehicle.Powertrain.Range", Unit: "m", Type: Float, Min: 0, Max: 3_000_000,
		Description: "Remaining range using all energy sources."},
	AccelLongitudinal: {ID: AccelLongitudinal, Path: "Vehicle.Acceleration.Longitudinal", Unit: "m/s^2", Type: Float, Min: -100, Max: 100,
		Description: "Longitudinal acceleration, positive forward."},
	AccelLateral: {ID: AccelLateral, Path: "Vehicle.Acceleration.Lateral", Unit: "m/s^2", Type: Float, Min: -100, Max: 100,
		Description: "Lateral acceleration, positive to the left."},
	AcceleratorPedal: {ID: AcceleratorPedal, Path: "Vehicle.Chassis.Accelerator.PedalPosition", Unit: "percent", Type: Float, Min: pctMin, Max: pctMax,
		Description: "Accelerator pedal position: 0 released, 100 fully depressed."},
	BrakePedal: {ID: BrakePedal, Path: "Vehicle.Chassis.Brake.PedalPosition", Unit: "percent", Type: Float, Min: pctMin, Max: pctMax,
		Description: "Brake pedal position: 0 released, 100 fully depressed."},
	CurrentGear: {ID: CurrentGear, Path: "Vehicle.Powertrain.Transmission.CurrentGear", Unit: "", Type: Int, Min: -4, Max: 16,
		Description: "Engaged gear: 0 neutral, positive forward, negative reverse."},
	SteeringAngle: {ID: SteeringAngle, Path: "Vehicle.Chassis.SteeringWheel.Angle", Unit: "degrees", Type: Float, Min: -1080, Max: 1080,
		Description: "Steering wheel angle, positive to the left."},
	EngineLoad: {ID: EngineLoad, Path: "Vehicle.OBD.EngineLoad", Unit: "percent", Type: Float, Min: pctMin, Max: pctMax,
		Description: "Calculated engine load (OBD PID 0x04)."},
	ThrottlePosition: {ID: ThrottlePosition, Path: "Vehicle.OBD.ThrottlePosition", Unit: "percent", Type: Float, Min: pctMin, Max: pctMax,
		Description: "Absolute throttle position (OBD PID 0x11)."},
	IsMoving: {ID: IsMoving, Path: "Vehicle.IsMoving", Unit: "", Type: Bool, Min: 0, Max: 1,
		Description: "1 while the vehicle is moving."},
	IsCharging: {ID: IsCharging, Path: "Vehicle.Powertrain.TractionBattery.Charging.IsCharging", Unit: "", Type: Bool, Min: 0, Max: 1,
		Description: "1 while energy flows from a charger into the vehicle."},
	DriverTempSetpoint: {ID: DriverTempSetpoint, Path: "Vehicle.Cabin.HVAC.Station.Row1.Driver.Temperature", Unit: "celsius", Type: Float, Min: 0, Max: 50,
		Description: "Climate control temperature setpoint for the driver zone (half degrees allowed)."},
	ChargeTargetSoC: {ID: ChargeTargetSoC, Path: "Vehicle.Powertrain.TractionBattery.Charging.ChargeLimit", Unit: "percent", Type: Int, Min: pctMin, Max: pctMax,
		Description: "Target state of charge at which charging stops."},
	HeatedSeatDriverLevel: {ID: HeatedSeatDriverLevel, Path: "Vehicle.Cabin.Seat.Row1.DriverSide.HeatingCooling", Unit: "percent", Type: Int, Min: -100, Max: 100,
		Description: "Driver seat heating/ventilation: -100 max cooling, 0 off, 100 max heating (heated-only seats report 0..100)."},
	HeatedSteeringWheel: {ID: HeatedSteeringWheel, Path: "Vehicle.Chassis.SteeringWheel.HeatingCooling", Unit: "percent", Type: Int, Min: -100, Max: 100,
		Description: "Steering wheel heating: -100 max cooling, 0 off, 100 max heating (heated-only wheels report 0..100)."},
}
