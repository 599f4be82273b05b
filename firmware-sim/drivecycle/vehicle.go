package drivecycle

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// ErrOutOfRange is returned by the Vehicle setters for a value outside the
// accepted range.
var ErrOutOfRange = errors.New("drivecycle: value out of range")

// ErrImplausible is returned by State.Check for a value outside its
// plausible range.
var ErrImplausible = errors.New("drivecycle: implausible value")

// Powertrain is the kind of drive a simulated vehicle has.
type Powertrain uint8

// Powertrains.
const (
	// BEV is a battery electric vehicle: single-speed reduction, no engine.
	BEV Powertrain = iota + 1
	// PHEV is a plug-in hybrid: a small traction battery, a combustion
	// engine and a six-speed gearbox. It drives electrically while the
	// battery lasts and switches to charge sustaining below 18 % SoC.
	PHEV
)

// String returns "BEV" or "PHEV".
func (p Powertrain) String() string {
	switch p {
	case BEV:
		return "BEV"
	case PHEV:
		return "PHEV"
	}
	return fmt.Sprintf("Powertrain(%d)", uint8(p))
}

// Tyre positions in State.TyreKPa.
const (
	FrontLeft = iota
	FrontRight
	RearLeft
	RearRight
)

// State is a snapshot of everything a Vehicle reports. Units follow the
// COVESA VSS conventions: km/h, rpm, °C, km, V, A, W, kPa, %, degrees.
type State struct {
	SimTime   time.Duration // simulated time since the vehicle was created
	CycleTime time.Duration // position in the drive cycle

	Ignition bool // ignition on (driving or idling); off while parked
	Moving   bool
	Charging bool // plugged in and charging while parked
	EngineOn bool // combustion engine running (PHEV only)

	SpeedKmh        float64 // 0..300
	AccelMs2        float64 // longitudinal acceleration, m/s²
	LateralAccelMs2 float64 // lateral acceleration, m/s², positive to the left (VSS)
	EngineRPM       float64 // combustion engine speed; 0 when off and for BEVs
	Gear            int     // 0 = neutral/park, 1.. forward gears
	EngineLoadPct   float64
	ThrottlePct     float64 // throttle plate opening (engine only)
	AcceleratorPct  float64 // accelerator pedal position
	BrakePct        float64 // brake pedal position
	SteeringDeg     float64 // steering wheel angle, positive to the left (VSS)
	HeadingDeg      float64 // 0 = north, clockwise, [0, 360)
	Lat, Lon        float64 // WGS84 degrees
	OdometerKm      float64

	CoolantC       float64 // engine coolant (PHEV) or drive-unit coolant (BEV)
	CabinC         float64
	ExteriorC      float64
	CabinSetpointC float64 // driver temperature setpoint

	LowVoltageV   float64 // 12 V system: ~12.6 resting, ~14.2 while the DC-DC/alternator runs
	SoCPct        float64 // traction battery state of charge
	SoHPct        float64 // traction battery state of health
	BatteryTempC  float64
	PackVoltageV  float64
	PackCurrentA  float64 // positive into the battery (charging, regeneration)
	BatteryPowerW float64 // positive into the battery
	RangeKm       float64 // remaining range
	FuelPct       float64 // fuel level; 0 for BEVs (no tank)

	TyreKPa [4]float64 // FrontLeft, FrontRight, RearLeft, RearRight

	ChargeTargetPct     float64 // charge limit
	HeatedSeatLevel     int     // driver seat heating 0 (off) .. 3
	HeatedSteeringWheel bool
}

// Check reports the first value of s outside its plausible range, wrapping
// ErrImplausible.
func (s *State) Check() error {
	type lim struct {
		name   string
		v      float64
		lo, hi float64
	}
	b := func(x bool) float64 {
		if x {
			return 1
		}
		return 0
	}
	for _, l := range []lim{
		{"speed", s.SpeedKmh, 0, 300},
		{"accel", s.AccelMs2, -12, 12},
		{"lateral accel", s.LateralAccelMs2, -12, 12},
		{"engine rpm", s.EngineRPM, 0, 8000},
		{"gear", float64(s.Gear), -1, 10},
		{"engine load", s.EngineLoadPct, 0, 100},
		{"throttle", s.ThrottlePct, 0, 100},
		{"accelerator", s.AcceleratorPct, 0, 100},
		{"brake", s.BrakePct, 0, 100},
		{"steering", s.SteeringDeg, -720, 720},
		{"heading", s.HeadingDeg, 0, 360},
		{"latitude", s.Lat, -90, 90},
		{"longitude", s.Lon, -180, 180},
		{"odometer", s.OdometerKm, 0, 2e6},
		{"coolant", s.CoolantC, -40, 130},
		{"cabin", s.CabinC, -40, 70},
		{"exterior", s.ExteriorC, -50, 60},
		{"setpoint", s.CabinSetpointC, 15, 30},
		{"low voltage", s.LowVoltageV, 11.5, 15},
		{"soc", s.SoCPct, 0, 100},
		{"soh", s.SoHPct, 0, 100},
		{"battery temp", s.BatteryTempC, -40, 80},
		{"pack voltage", s.PackVoltageV, 150, 1000},
		{"pack current", s.PackCurrentA, -2000, 2000},
		{"battery power", s.BatteryPowerW, -400e3, 400e3},
		{"range", s.RangeKm, 0, 2000},
		{"fuel", s.FuelPct, 0, 100},
		{"tyre FL", s.TyreKPa[FrontLeft], 80, 450},
		{"tyre FR", s.TyreKPa[FrontRight], 80, 450},
		{"tyre RL", s.TyreKPa[RearLeft], 80, 450},
		{"tyre RR", s.TyreKPa[RearRight], 80, 450},
		{"charge target", s.ChargeTargetPct, 0, 100},
		{"seat heating", float64(s.HeatedSeatLevel), 0, 3},
		{"moving", b(s.Moving), 0, 1},
	} {
		if math.IsNaN(l.v) || l.v < l.lo || l.v > l.hi {
			return fmt.Errorf("%w: %s = %v, want [%v, %v]", ErrImplausible, l.name, l.v, l.lo, l.hi)
		}
	}
	if s.HeadingDeg == 360 {
		return fmt.Errorf("%w: heading = 360", ErrImplausible)
	}
	return nil
}

// city is a start region: a position and its climate (annual mean and
// seasonal half-amplitude of the daily mean air temperature, °C).
type city struct {
	name      string
	lat, lon  float64
	mean, amp float64
}

// startCities mixes both hemispheres so that season-dependent features see
// summer and winter at the same time.
var startCities = []city{
	{"Munich", 48.137, 11.575, 9, 9.5},
	{"Paris", 48.857, 2.352, 12.5, 8},
	{"Milan", 45.464, 9.190, 13.5, 10},
	{"Madrid", 40.417, -3.704, 15, 10},
	{"Amsterdam", 52.370, 4.895, 10.5, 7},
	{"Stockholm", 59.329, 18.069, 7.5, 10},
	{"Oslo", 59.913, 10.752, 6.5, 10},
	{"Sydney", -33.869, 151.209, 18, 5},
	{"Melbourne", -37.814, 144.963, 15.5, 5},
	{"Sao Paulo", -23.550, -46.633, 20, 3.5},
	{"Cape Town", -33.925, 18.424, 17, 4.5},
	{"Auckland", -36.850, 174.760, 15.5, 4.5},
}

// spec holds the static parameters of one vehicle.
type spec struct {
	pt          Powertrain
	massKg      float64
	cdA         float64 // drag area, m²
	crr         float64 // rolling resistance coefficient
	wheelR      float64 // dynamic wheel radius, m
	wheelbase   float64 // m
	maxPowerW   float64 // peak traction power
	regenMaxW   float64
	batteryWh   float64
	cells       float64 // cells in series
	packOhm     float64
	consWhKm    float64 // typical consumption for the range estimate
	engineMaxW  float64 // PHEV engine
	tankL       float64 // PHEV fuel tank
	gears       []float64
	finalDrive  float64
	shiftKmh    []float64 // upshift speeds
	tyreNominal [4]float64
	tyreLeak    [4]float64 // kPa per second lost (slow leak), usually 0
	sohPct      float64
	climate     city
}

const (
	idleRPM       = 800
	maxRPM        = 6500
	airDensity    = 1.2
	g             = 9.81
	driveEff      = 0.88
	regenEff      = 0.70
	maxLatAccel   = 2.0 // m/s² used when turning
	maxRoadWheel  = 35 * math.Pi / 180
	steeringRatio = 15
	substep       = 0.5 // seconds, while driving
	parkedSubstep = 5   // seconds, while parked (nothing moves fast)
	extRefresh    = 60  // seconds between exterior temperature updates
)

// Vehicle is a simulated car following a drive cycle. It is deterministic
// for a given seed, start time and sequence of Step durations. A Vehicle is
// not safe for concurrent use.
type Vehicle struct {
	rng   *rand.Rand
	cycle *Cycle
	start time.Time
	sp    spec

	t        float64 // simulated seconds
	ct       float64 // seconds into the cycle
	passes   int     // cycle passes left in the current trip
	parkLeft float64 // seconds left parked
	parkedS  float64 // seconds since ignition off
	chargeW  float64 // charger power while parked and charging
	csMode   bool    // PHEV charge sustaining
	warmup   bool    // PHEV engine warming up

	energyWh float64
	fuelL    float64
	tyreCold [4]float64 // cold (20 °C) tyre pressure
	tyreTemp float64
	target   float64 // heading target, degrees (unwrapped)
	heading  float64 // degrees (unwrapped)

	extValid bool    // extTemp is set
	extAt    float64 // simulated second extTemp was computed at
	extTemp  float64

	// Derived by update, used by integrate.
	yaw     float64 // rad/s
	engineW float64
	battOut float64 // W out of the battery (negative: into it)

	s State
}

// NewVehicle returns a vehicle driving cycle, with its parameters, start
// position, climate, initial charge and offset into the cycle drawn from
// seed. start anchors the simulated clock (season and time of day for the
// exterior temperature).
func NewVehicle(cycle *Cycle, seed int64, start time.Time) *Vehicle {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x74656c6567617465)) // "telegate"
	v := &Vehicle{rng: rng, cycle: cycle, start: start}
	u := func(lo, hi float64) float64 { return lo + (hi-lo)*rng.Float64() }

	sp := spec{wheelR: u(0.31, 0.34), wheelbase: u(2.6, 2.95), crr: u(0.009, 0.011)}
	if rng.Float64() < 0.7 {
		sp.pt = BEV
		sp.massKg = u(1600, 2300)
		sp.cdA = u(0.55, 0.70)
		sp.maxPowerW = u(100e3, 250e3)
		sp.regenMaxW = u(50e3, 100e3)
		sp.batteryWh = u(40e3, 100e3)
		sp.cells = 96
		sp.packOhm = 0.05
		sp.consWhKm = u(150, 200)
		sp.gears = []float64{1}
		sp.finalDrive = 9
	} else {
		sp.pt = PHEV
		sp.massKg = u(1700, 2100)
		sp.cdA = u(0.60, 0.72)
		sp.maxPowerW = u(140e3, 200e3)
		sp.regenMaxW = u(30e3, 50e3)
		sp.batteryWh = u(10e3, 18e3)
		sp.cells = 96
		sp.packOhm = 0.12
		sp.consWhKm = u(170, 210)
		sp.engineMaxW = u(90e3, 130e3)
		sp.tankL = u(40, 55)
		sp.gears = []float64{4.4, 2.7, 1.8, 1.4, 1.1, 0.9}
		sp.finalDrive = 3.3
		sp.shiftKmh = []float64{15, 32, 50, 70, 95}
	}
	front := math.Round(u(230, 250))
	sp.tyreNominal = [4]float64{front, front, front + 10, front + 10}
	if rng.Float64() < 0.2 { // a slow puncture on one tyre
		sp.tyreLeak[rng.IntN(4)] = u(2, 6) / 3600
	}
	sp.sohPct = u(86, 100)
	sp.climate = startCities[rng.IntN(len(startCities))]
	v.sp = sp

	v.s.Lat = sp.climate.lat + u(-0.2, 0.2)
	v.s.Lon = sp.climate.lon + u(-0.2, 0.2)
	v.heading = float64(rng.IntN(8)) * 45
	v.target = v.heading
	v.s.OdometerKm = math.Round(u(500, 120000))
	v.energyWh = sp.batteryWh * u(0.35, 0.95)
	if sp.pt == PHEV {
		v.fuelL = sp.tankL * u(0.25, 1)
	}
	v.tyreCold = sp.tyreNominal
	for i := range v.tyreCold {
		v.tyreCold[i] -= u(0, 8) // not all tyres are set exactly
	}
	v.s.CabinSetpointC = []float64{20, 20.5, 21, 21.5, 22, 22.5}[rng.IntN(6)]
	v.s.ChargeTargetPct = []float64{80, 80, 90, 100}[rng.IntN(4)]

	ext := v.exterior()
	v.s.ExteriorC = ext
	v.s.CabinC = ext + u(0, 4)
	v.s.CoolantC = ext + u(5, 25) // driven recently
	if sp.pt == PHEV {
		v.s.CoolantC = ext + u(20, 60)
	}
	v.s.BatteryTempC = ext + u(2, 10)
	v.tyreTemp = ext + 5

	v.ct = u(0, cycle.dur)
	v.passes = 1 + rng.IntN(3)
	v.s.Ignition = true
	v.update(cycle.speedAt(v.ct), cycle.accelAt(v.ct))
	return v
}

// Powertrain returns the vehicle's kind of drive.
func (v *Vehicle) Powertrain() Powertrain { return v.sp.pt }

// BatteryKWh returns the usable traction battery capacity in kWh.
func (v *Vehicle) BatteryKWh() float64 { return v.sp.batteryWh / 1000 }

// Region returns the name of the start region (a city).
func (v *Vehicle) Region() string { return v.sp.climate.name }

// State returns a snapshot of the vehicle's current state.
func (v *Vehicle) State() State { return v.s }

// SetCabinSetpoint sets the driver temperature setpoint (16..28 °C, in
// steps of 0.5 °C like a real climate control; c is rounded).
func (v *Vehicle) SetCabinSetpoint(c float64) error {
	if !(c >= 16 && c <= 28) {
		return fmt.Errorf("%w: setpoint %v °C, want 16..28", ErrOutOfRange, c)
	}
	v.s.CabinSetpointC = math.Round(c*2) / 2
	return nil
}

// SetChargeTarget sets the charge limit (50..100 %, whole percent; pct is
// rounded).
func (v *Vehicle) SetChargeTarget(pct float64) error {
	if !(pct >= 50 && pct <= 100) {
		return fmt.Errorf("%w: charge target %v %%, want 50..100", ErrOutOfRange, pct)
	}
	v.s.ChargeTargetPct = math.Round(pct)
	return nil
}

// SetHeatedSeat sets the driver seat heating level (0 = off .. 3).
func (v *Vehicle) SetHeatedSeat(level int) error {
	if level < 0 || level > 3 {
		return fmt.Errorf("%w: seat heating level %d, want 0..3", ErrOutOfRange, level)
	}
	v.s.HeatedSeatLevel = level
	return nil
}

// SetHeatedSteeringWheel switches the steering wheel heating.
func (v *Vehicle) SetHeatedSteeringWheel(on bool) { v.s.HeatedSteeringWheel = on }

// Step advances the simulation by dt, in sub-steps of at most 0.5 s while
// driving and 5 s while parked. Non-positive durations are ignored.
func (v *Vehicle) Step(dt time.Duration) {
	total := dt.Seconds()
	for total > 1e-9 {
		h := substep
		if !v.s.Ignition {
			h = parkedSubstep
		}
		h = math.Min(total, h)
		v.step(h)
		total -= h
	}
}

// exterior returns the air temperature at the current simulated instant,
// recomputed once a simulated minute.
func (v *Vehicle) exterior() float64 {
	if v.extValid && v.t-v.extAt < extRefresh {
		return v.extTemp
	}
	v.extValid, v.extAt, v.extTemp = true, v.t, v.computeExterior()
	return v.extTemp
}

// computeExterior returns the region's seasonal daily mean plus a diurnal
// swing peaking at 15:00 local solar time.
func (v *Vehicle) computeExterior() float64 {
	now := v.start.Add(time.Duration(v.t * float64(time.Second))).UTC()
	c := v.sp.climate
	peak := 200.0 // warmest day of the year, northern hemisphere (mid July)
	if c.lat < 0 {
		peak = 19 // mid January
	}
	doy := float64(now.YearDay())
	daily := c.mean + c.amp*math.Cos(2*math.Pi*(doy-peak)/365.25)
	solar := float64(now.Hour()) + float64(now.Minute())/60 + v.s.Lon/15
	return daily + 4*math.Sin(2*math.Pi*(solar-9)/24)
}

func clamp(x, lo, hi float64) float64 { return math.Min(math.Max(x, lo), hi) }

// approach moves x toward target with time constant tau over h seconds.
func approach(x, target, tau, h float64) float64 {
	return x + (target-x)*(1-math.Exp(-h/tau))
}

func (v *Vehicle) step(h float64) {
	v.t += h
	if v.s.Ignition {
		v.ct += h
		if v.ct >= v.cycle.dur {
			v.ct = math.Mod(v.ct, v.cycle.dur)
			v.passes--
			if v.passes <= 0 {
				v.park()
			}
		}
	} else {
		v.parkedS += h
		v.parkLeft -= h
		if v.parkLeft <= 0 && !v.s.Charging {
			v.unpark()
		}
	}
	var speed, accel float64
	if v.s.Ignition {
		speed = v.cycle.speedAt(v.ct)
		accel = v.cycle.accelAt(v.ct)
		if speed <= 0 {
			accel = 0
		}
	}
	v.update(speed, accel)
	v.integrate(h)
}

// park switches the ignition off at the end of a trip: the car parks for a
// while, charges if its battery is low and gets fuel and air if needed.
func (v *Vehicle) park() {
	v.s.Ignition = false
	v.parkedS = 0
	v.parkLeft = 120 + 780*v.rng.Float64()
	soc := v.energyWh / v.sp.batteryWh * 100
	// BEV drivers plug in when the battery runs low; PHEV drivers only
	// sometimes (otherwise the car drives on in charge-sustaining mode).
	if (v.sp.pt == BEV && soc < 35) || (v.sp.pt == PHEV && soc < 30 && v.rng.Float64() < 0.6) {
		v.s.Charging = true
		switch {
		case v.sp.pt == PHEV:
			v.chargeW = 3.7e3
		case v.rng.Float64() < 0.5:
			v.chargeW = 11e3
		default:
			v.chargeW = 50e3
		}
	}
	if v.sp.pt == PHEV && v.fuelL < 0.15*v.sp.tankL {
		v.fuelL = v.sp.tankL * (0.95 + 0.05*v.rng.Float64())
	}
	for i := range v.tyreCold {
		if v.tyreCold[i] < 0.85*v.sp.tyreNominal[i] {
			v.tyreCold[i] = v.sp.tyreNominal[i]
		}
	}
}

func (v *Vehicle) unpark() {
	v.s.Ignition = true
	v.s.Charging = false
	v.chargeW = 0
	v.ct = 0
	v.passes = 1 + v.rng.IntN(3)
}

// update derives the instantaneous signals for the given speed (km/h) and
// acceleration (m/s²) from the current state.
func (v *Vehicle) update(speed, accel float64) {
	s := &v.s
	sp := &v.sp
	vms := speed / 3.6
	departing := s.SpeedKmh <= 0 && speed > 0
	s.SpeedKmh = speed
	s.AccelMs2 = accel
	s.Moving = speed > 0.1
	s.SimTime = time.Duration(v.t * float64(time.Second))
	s.CycleTime = time.Duration(v.ct * float64(time.Second))

	// Steering: pick a new direction when pulling away, an occasional bend
	// at speed; turn toward it within the lateral acceleration budget.
	if departing {
		switch r := v.rng.Float64(); {
		case r < 0.25:
			v.target = v.heading + 90
		case r < 0.5:
			v.target = v.heading - 90
		case r < 0.6:
			v.target = v.heading + 45
		case r < 0.7:
			v.target = v.heading - 45
		}
	} else if speed > 60 && math.Abs(v.target-v.heading) < 0.5 && v.rng.Float64() < 0.004 {
		v.target = v.heading + (15+15*v.rng.Float64())*float64(1-2*v.rng.IntN(2))
	}
	var yaw float64 // rad/s, positive clockwise (right)
	if d := v.target - v.heading; vms > 0.5 && math.Abs(d) > 0.01 {
		yaw = math.Min(math.Min(maxLatAccel/vms, 0.35), vms*math.Tan(maxRoadWheel)/sp.wheelbase)
		if d < 0 {
			yaw = -yaw
		}
	}
	s.LateralAccelMs2 = -vms * yaw // yaw is clockwise, VSS lateral is positive left
	if vms > 0.5 {
		s.SteeringDeg = -math.Atan(sp.wheelbase*yaw/vms) * 180 / math.Pi * steeringRatio
	} else {
		s.SteeringDeg = 0
	}

	// Road load at the wheels.
	var fWheel float64
	if s.Moving {
		fWheel = sp.massKg*accel*1.05 + 0.5*airDensity*sp.cdA*vms*vms + sp.crr*sp.massKg*g
	}
	pWheel := fWheel * vms

	// Auxiliary load: electronics, climate, seat and wheel heating.
	var aux float64
	if s.Ignition {
		aux = 250 + clamp(300*math.Abs(s.CabinSetpointC-s.CabinC), 0, 4500) +
			60*float64(s.HeatedSeatLevel)
		if s.HeatedSteeringWheel {
			aux += 100
		}
	}

	soc := v.energyWh / sp.batteryWh * 100
	var battOut, engineW float64 // battery output (positive: discharging), engine output
	s.EngineOn = false
	switch {
	case !s.Ignition:
		if s.Charging {
			battOut = -v.chargeW * taper(soc) * 0.93
		}
	case sp.pt == PHEV:
		if soc < 18 {
			v.csMode = true
		} else if soc > 22 {
			v.csMode = false
		}
		// Hybrid strategy: electric in town, engine at speed or under high
		// load, always in charge sustaining; once started cold the engine
		// runs until the coolant reaches 70 °C (catalyst heating).
		s.EngineOn = (v.csMode && (s.Moving || s.CoolantC < 50)) || speed > 60 || pWheel > 30e3 ||
			(v.warmup && s.Moving)
		if s.EngineOn && s.CoolantC < 70 {
			v.warmup = true
		} else if s.CoolantC >= 70 {
			v.warmup = false
		}
		if s.EngineOn {
			need := math.Max(pWheel, 0)
			want := need / 0.9
			if v.csMode {
				want += 3e3 // charge the battery from the engine
			}
			engineW = math.Min(want, sp.engineMaxW)
			atWheels := engineW * 0.9
			battOut = aux
			if atWheels < need { // the battery covers what the engine cannot
				battOut += (need - atWheels) / driveEff
			} else {
				battOut -= (atWheels - need) * 0.9
			}
			if pWheel < 0 {
				battOut += math.Max(pWheel*regenEff, -sp.regenMaxW)
			}
			break
		}
		fallthrough
	default:
		if pWheel >= 0 {
			battOut = pWheel/driveEff + aux
		} else {
			battOut = math.Max(pWheel*regenEff, -sp.regenMaxW) + aux
		}
	}
	s.BatteryPowerW = -battOut

	// Powertrain speeds and pedals.
	s.Gear, s.EngineRPM, s.EngineLoadPct, s.ThrottlePct = 0, 0, 0, 0
	if s.Ignition {
		s.Gear = 1
		if sp.pt == PHEV {
			for _, k := range sp.shiftKmh {
				if speed > k {
					s.Gear++
				}
			}
		}
	}
	if s.EngineOn {
		wheelRPM := vms / (2 * math.Pi * sp.wheelR) * 60
		s.EngineRPM = clamp(wheelRPM*sp.gears[s.Gear-1]*sp.finalDrive, idleRPM, maxRPM)
		avail := sp.engineMaxW * clamp(s.EngineRPM/5000, 0.3, 1)
		s.EngineLoadPct = clamp(engineW/avail*100, 8, 100)
		s.ThrottlePct = clamp(3+0.9*s.EngineLoadPct, 0, 100)
	}
	s.AcceleratorPct, s.BrakePct = 0, 0
	switch {
	case !s.Ignition:
	case pWheel > 0:
		s.AcceleratorPct = clamp(2+250*pWheel/sp.maxPowerW, 0, 100)
	case accel < -0.05:
		s.BrakePct = clamp(-accel*30, 0, 100)
	case !s.Moving:
		s.BrakePct = 15 // holding the car at a stop
	}

	// Traction battery electrics.
	s.SoCPct = clamp(soc, 0, 100)
	ocv := sp.cells * (3.3 + 0.9*s.SoCPct/100)
	s.PackCurrentA = s.BatteryPowerW / ocv
	s.PackVoltageV = ocv + s.PackCurrentA*sp.packOhm
	s.SoHPct = sp.sohPct

	// Range: electric part plus fuel part.
	s.RangeKm = v.energyWh / sp.consWhKm
	s.FuelPct = 0
	if sp.pt == PHEV {
		s.FuelPct = clamp(v.fuelL/sp.tankL*100, 0, 100)
		s.RangeKm += v.fuelL / 0.055
	}
	s.RangeKm = clamp(s.RangeKm, 0, 2000)

	// 12 V system: the DC-DC converter (or alternator) runs with the
	// ignition or while charging; at rest the battery settles to ~12.6 V.
	switch {
	case s.Ignition || s.Charging:
		s.LowVoltageV = clamp(14.1+0.15*math.Sin(v.t/53)+0.02*v.rng.NormFloat64(), 13.8, 14.4)
	default:
		s.LowVoltageV = clamp(12.6+0.15*math.Exp(-v.parkedS/1800)+0.01*v.rng.NormFloat64(), 12.5, 12.8)
	}

	for i := range s.TyreKPa {
		s.TyreKPa[i] = clamp(v.tyreCold[i]*(v.tyreTemp+273.15)/293.15, 80, 450)
	}
	s.HeadingDeg = math.Mod(v.heading, 360)
	if s.HeadingDeg < 0 {
		s.HeadingDeg += 360
	}
	if s.HeadingDeg >= 360 {
		s.HeadingDeg = 0
	}

	v.yaw = yaw
	v.engineW = engineW
	v.battOut = battOut
}

// taper limits charging power as the battery fills (constant current then
// constant voltage above 80 %).
func taper(soc float64) float64 {
	if soc <= 80 {
		return 1
	}
	return clamp((100-soc)/20, 0.1, 1)
}

// integrate advances the slow state (energy, fuel, temperatures, position,
// tyres) over h seconds using the instantaneous values from update.
func (v *Vehicle) integrate(h float64) {
	s := &v.s
	sp := &v.sp
	vms := s.SpeedKmh / 3.6

	// Position and heading.
	if v.yaw != 0 {
		d := v.yaw * h * 180 / math.Pi
		if math.Abs(d) >= math.Abs(v.target-v.heading) {
			v.heading = v.target
		} else {
			v.heading += d
		}
	}
	if math.Abs(v.heading) > 3600 { // keep the unwrapped angles small
		off := math.Floor(v.heading/360) * 360
		v.heading -= off
		v.target -= off
	}
	if vms > 0 {
		hr := v.heading * math.Pi / 180
		north, east := vms*math.Cos(hr)*h, vms*math.Sin(hr)*h
		s.Lat = clamp(s.Lat+north/111320, -85, 85)
		s.Lon += east / (111320 * math.Cos(s.Lat*math.Pi/180))
		if s.Lon > 180 {
			s.Lon -= 360
		} else if s.Lon < -180 {
			s.Lon += 360
		}
		s.OdometerKm += vms * h / 1000
	}

	// Energy and fuel.
	v.energyWh = clamp(v.energyWh-v.battOut*h/3600, 0, sp.batteryWh)
	if s.Charging && v.energyWh/sp.batteryWh*100 >= s.ChargeTargetPct {
		s.Charging = false
		v.chargeW = 0
	}
	if s.EngineOn {
		gramsPerS := v.engineW / 1000 * 250 / 3600 // 250 g/kWh
		v.fuelL = math.Max(v.fuelL-(gramsPerS/745+0.6/3600)*h, 0)
	}

	// Temperatures.
	ext := v.exterior() + 0.05*v.rng.NormFloat64()
	s.ExteriorC = clamp(ext, -50, 60)
	switch {
	case s.EngineOn:
		tau := 240 / (1 + s.EngineLoadPct/20)
		s.CoolantC = math.Min(approach(s.CoolantC, 90.5, tau, h), 91)
	case sp.pt == BEV && s.Ignition:
		target := 35 + 20*math.Min(1, math.Abs(v.battOut)/50e3) + 0.3*math.Max(ext, 0)
		s.CoolantC = approach(s.CoolantC, target, 600, h)
	case s.Charging:
		s.CoolantC = approach(s.CoolantC, math.Max(ext, 25), 900, h)
	case s.Ignition: // PHEV engine off while driving: the block keeps its heat
		s.CoolantC = approach(s.CoolantC, ext, 3600, h)
	default:
		s.CoolantC = approach(s.CoolantC, ext, 1800, h)
	}
	if s.Ignition {
		s.CabinC = approach(s.CabinC, s.CabinSetpointC, 240, h)
	} else {
		s.CabinC = approach(s.CabinC, ext+2, 1800, h)
	}
	heat := s.PackCurrentA * s.PackCurrentA * sp.packOhm
	s.BatteryTempC += heat * h / 2.5e5
	s.BatteryTempC = approach(s.BatteryTempC, ext, 7200, h)
	switch {
	case s.BatteryTempC > 35:
		s.BatteryTempC = approach(s.BatteryTempC, 35, 300, h) // active cooling
	case s.BatteryTempC < 5 && (s.Ignition || s.Charging):
		s.BatteryTempC = approach(s.BatteryTempC, 15, 1800, h) // pack heater
	}

	// Tyres: slow leaks, warming while driving.
	for i := range v.tyreCold {
		v.tyreCold[i] = math.Max(v.tyreCold[i]-sp.tyreLeak[i]*h, 90)
	}
	if s.Moving {
		v.tyreTemp = approach(v.tyreTemp, ext+10+s.SpeedKmh/12, 600, h)
	} else {
		v.tyreTemp = approach(v.tyreTemp, ext, 1800, h)
	}
}
