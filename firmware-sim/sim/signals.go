package sim

import (
	"math"

	"github.com/telegate/telegate/decoders/catalog"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/firmware-sim/drivecycle"
)

// signalSource maps one catalog signal to the model state. decimals is the
// resolution the device reports (values are rounded to it).
type signalSource struct {
	id       uint16
	decimals int
	get      func(s *drivecycle.State) float64
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// signalTable lists every signal the model produces, in catalog id order,
// in the catalog's units and sign conventions (VSS): km/h, rpm, °C, km, V,
// %, W and A positive into the battery, kPa, degrees, m (range), m/s²
// (lateral positive to the left), steering angle positive to the left,
// heating on the -100..100 HeatingCooling scale. BEVs report 0 for engine
// speed, engine load, throttle and fuel level, and their drive-unit coolant
// as the coolant temperature.
var signalTable = []signalSource{
	{catalog.Speed, 1, func(s *drivecycle.State) float64 { return s.SpeedKmh }},
	{catalog.EngineSpeed, 0, func(s *drivecycle.State) float64 { return s.EngineRPM }},
	{catalog.CoolantTemp, 1, func(s *drivecycle.State) float64 { return s.CoolantC }},
	{catalog.Odometer, 3, func(s *drivecycle.State) float64 { return s.OdometerKm }},
	{catalog.LowVoltageBattery, 2, func(s *drivecycle.State) float64 { return s.LowVoltageV }},
	{catalog.TractionSoC, 2, func(s *drivecycle.State) float64 { return s.SoCPct }},
	{catalog.TractionPower, 0, func(s *drivecycle.State) float64 { return s.BatteryPowerW }},
	{catalog.TirePressureFL, 1, func(s *drivecycle.State) float64 { return s.TyreKPa[drivecycle.FrontLeft] }},
	{catalog.TirePressureFR, 1, func(s *drivecycle.State) float64 { return s.TyreKPa[drivecycle.FrontRight] }},
	{catalog.TirePressureRL, 1, func(s *drivecycle.State) float64 { return s.TyreKPa[drivecycle.RearLeft] }},
	{catalog.TirePressureRR, 1, func(s *drivecycle.State) float64 { return s.TyreKPa[drivecycle.RearRight] }},
	{catalog.CabinTemp, 1, func(s *drivecycle.State) float64 { return s.CabinC }},
	{catalog.ExteriorTemp, 1, func(s *drivecycle.State) float64 { return s.ExteriorC }},
	{catalog.Latitude, 6, func(s *drivecycle.State) float64 { return s.Lat }},
	{catalog.Longitude, 6, func(s *drivecycle.State) float64 { return s.Lon }},
	{catalog.Heading, 1, func(s *drivecycle.State) float64 { return s.HeadingDeg }},
	{catalog.FuelLevel, 1, func(s *drivecycle.State) float64 { return s.FuelPct }},
	{catalog.TractionSoH, 1, func(s *drivecycle.State) float64 { return s.SoHPct }},
	{catalog.TractionBatteryTemp, 1, func(s *drivecycle.State) float64 { return s.BatteryTempC }},
	{catalog.TractionVoltage, 1, func(s *drivecycle.State) float64 { return s.PackVoltageV }},
	{catalog.TractionCurrent, 1, func(s *drivecycle.State) float64 { return s.PackCurrentA }},
	{catalog.Range, 0, func(s *drivecycle.State) float64 { return s.RangeKm * 1000 }},
	{catalog.AccelLongitudinal, 2, func(s *drivecycle.State) float64 { return s.AccelMs2 }},
	{catalog.AccelLateral, 2, func(s *drivecycle.State) float64 { return s.LateralAccelMs2 }},
	{catalog.AcceleratorPedal, 0, func(s *drivecycle.State) float64 { return s.AcceleratorPct }},
	{catalog.BrakePedal, 0, func(s *drivecycle.State) float64 { return s.BrakePct }},
	{catalog.CurrentGear, 0, func(s *drivecycle.State) float64 { return float64(s.Gear) }},
	{catalog.SteeringAngle, 0, func(s *drivecycle.State) float64 { return s.SteeringDeg }},
	{catalog.EngineLoad, 0, func(s *drivecycle.State) float64 { return s.EngineLoadPct }},
	{catalog.ThrottlePosition, 0, func(s *drivecycle.State) float64 { return s.ThrottlePct }},
	{catalog.IsMoving, 0, func(s *drivecycle.State) float64 { return b2f(s.Moving) }},
	{catalog.IsCharging, 0, func(s *drivecycle.State) float64 { return b2f(s.Charging) }},
	{catalog.DriverTempSetpoint, 1, func(s *drivecycle.State) float64 { return s.CabinSetpointC }},
	{catalog.ChargeTargetSoC, 0, func(s *drivecycle.State) float64 { return s.ChargeTargetPct }},
	{catalog.HeatedSeatDriverLevel, 0, func(s *drivecycle.State) float64 { return float64(s.HeatedSeatLevel) * 100 / 3 }},
	{catalog.HeatedSteeringWheel, 0, func(s *drivecycle.State) float64 { return 100 * b2f(s.HeatedSteeringWheel) }},
}

// NumSignals is the number of distinct signals the vehicle model reports
// (the default Config.SignalsPerFrame).
const NumSignals = 36

var pow10 = [...]float64{1, 10, 100, 1e3, 1e4, 1e5, 1e6}

func round(x float64, decimals int) float64 {
	p := pow10[decimals]
	r := math.Round(x*p) / p
	if r == 0 {
		return 0 // no negative zero on the wire
	}
	return r
}

// appendSignals appends n signals of s to dst, starting at table index
// first and wrapping around, so that successive frames with a rotating
// first index cover every signal. Non-finite values are omitted.
func appendSignals(dst []wire.Signal, s *drivecycle.State, first, n int) []wire.Signal {
	for j := range n {
		src := &signalTable[(first+j)%len(signalTable)]
		v := round(src.get(s), src.decimals)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		dst = append(dst, wire.Signal{ID: src.id, Value: v})
	}
	return dst
}

// freezeFrame returns the signals captured with the first confirmed DTC.
func freezeFrame(s *drivecycle.State) []wire.Signal {
	ids := []uint16{catalog.Speed, catalog.EngineSpeed, catalog.CoolantTemp, catalog.EngineLoad,
		catalog.LowVoltageBattery, catalog.TractionSoC, catalog.ExteriorTemp}
	out := make([]wire.Signal, 0, len(ids))
	for _, id := range ids {
		for i := range signalTable {
			if signalTable[i].id == id {
				out = append(out, wire.Signal{ID: id, Value: round(signalTable[i].get(s), signalTable[i].decimals)})
				break
			}
		}
	}
	return out
}
