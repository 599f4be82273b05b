// Package catalog maps the numeric signal ids carried in telemetry frames to
// COVESA Vehicle Signal Specification (VSS) paths, units, types and valid
// ranges. The table is fixed at build time; ids are never reused.
package catalog

// Type is the value type of a signal. Every value travels as a float64 on
// the wire; Type says how to interpret it.
type Type uint8

// Signal types.
const (
	Float Type = iota + 1
	Int
	Bool
)

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
