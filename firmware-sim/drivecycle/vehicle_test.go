package drivecycle

import (
	"errors"
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2025, time.January, 15, 8, 0, 0, 0, time.UTC)

// TestVehicleRangesOverAnHour drives a few vehicles of each powertrain for
// a simulated hour and checks every sample against plausible ranges.
func TestVehicleRangesOverAnHour(t *testing.T) {
	seen := map[Powertrain]int{}
	for seed := int64(1); seed <= 12; seed++ {
		v := NewVehicle(NEDC(), seed, t0)
		seen[v.Powertrain()]++
		s := v.State()
		if err := s.Check(); err != nil {
			t.Fatalf("seed %d initial: %v", seed, err)
		}
		odo, odo0 := s.OdometerKm, s.OdometerKm
		var maxCoolant, maxSpeed float64
		for i := 0; i < 3600; i++ {
			v.Step(time.Second)
			s = v.State()
			if err := s.Check(); err != nil {
				t.Fatalf("seed %d at %v: %v\n%+v", seed, s.SimTime, err, s)
			}
			if s.LowVoltageV < 12.4 || s.LowVoltageV > 14.4 {
				t.Fatalf("seed %d: 12 V battery at %v V", seed, s.LowVoltageV)
			}
			if s.OdometerKm < odo {
				t.Fatalf("seed %d: odometer went back %v -> %v", seed, odo, s.OdometerKm)
			}
			odo = s.OdometerKm
			if s.Ignition && s.Moving != (s.SpeedKmh > 0.1) {
				t.Fatalf("seed %d: moving=%v at %v km/h", seed, s.Moving, s.SpeedKmh)
			}
			if !s.Ignition && (s.SpeedKmh != 0 || s.EngineRPM != 0 || s.Gear != 0) {
				t.Fatalf("seed %d: parked but %+v", seed, s)
			}
			if v.Powertrain() == BEV && (s.EngineRPM != 0 || s.FuelPct != 0) {
				t.Fatalf("seed %d: BEV with engine/fuel: %+v", seed, s)
			}
			if s.EngineOn && (s.EngineRPM < idleRPM || s.EngineRPM > maxRPM) {
				t.Fatalf("seed %d: engine at %v rpm", seed, s.EngineRPM)
			}
			maxCoolant = math.Max(maxCoolant, s.CoolantC)
			maxSpeed = math.Max(maxSpeed, s.SpeedKmh)
		}
		if s.SimTime != time.Hour {
			t.Errorf("seed %d: sim time %v", seed, s.SimTime)
		}
		if maxSpeed > 120 {
			t.Errorf("seed %d: max speed %v", seed, maxSpeed)
		}
		t.Logf("seed %2d %-4s %-9s odo +%.1f km soc %.1f%% fuel %.0f%% coolant max %.1f cabin %.1f ext %.1f lat %.4f lon %.4f",
			seed, v.Powertrain(), v.Region(), s.OdometerKm-odo0, s.SoCPct, s.FuelPct, maxCoolant, s.CabinC, s.ExteriorC, s.Lat, s.Lon)
	}
	if seen[BEV] == 0 || seen[PHEV] == 0 {
		t.Errorf("powertrain mix %v, want both", seen)
	}
}

// TestVehicleLongRun covers parking, charging, refuelling and tyre leaks
// over two simulated days with coarse steps.
func TestVehicleLongRun(t *testing.T) {
	var parked, charged, engine bool
	for seed := int64(100); seed < 106; seed++ {
		v := NewVehicle(NEDC(), seed, t0)
		prevIgn := true
		for i := 0; i < 48*360; i++ {
			v.Step(10 * time.Second)
			s := v.State()
			if err := s.Check(); err != nil {
				t.Fatalf("seed %d at %v: %v", seed, s.SimTime, err)
			}
			if s.Ignition != prevIgn && !s.Ignition {
				parked = true
			}
			prevIgn = s.Ignition
			charged = charged || s.Charging
			engine = engine || s.EngineOn
			if s.EngineOn && s.CoolantC > 91.01 {
				t.Fatalf("coolant %v", s.CoolantC)
			}
		}
	}
	if !parked || !charged || !engine {
		t.Errorf("parked=%v charged=%v engine=%v: long run did not exercise the model", parked, charged, engine)
	}
}

func TestVehicleDeterministic(t *testing.T) {
	a, b := NewVehicle(NEDC(), 42, t0), NewVehicle(NEDC(), 42, t0)
	c := NewVehicle(NEDC(), 43, t0)
	for i := 0; i < 600; i++ {
		a.Step(100 * time.Millisecond)
		b.Step(100 * time.Millisecond)
	}
	if a.State() != b.State() {
		t.Errorf("same seed diverged:\n%+v\n%+v", a.State(), b.State())
	}
	if a.State().CycleTime == NewVehicle(NEDC(), 43, t0).State().CycleTime && a.State() == c.State() {
		t.Errorf("different seeds gave the same vehicle")
	}
	offsets := map[time.Duration]bool{}
	for seed := int64(0); seed < 20; seed++ {
		offsets[NewVehicle(NEDC(), seed, t0).State().CycleTime] = true
	}
	if len(offsets) < 19 {
		t.Errorf("only %d distinct cycle offsets for 20 seeds", len(offsets))
	}
}

func TestCoolantWarmsUp(t *testing.T) {
	n := 0
	for seed := int64(1); seed < 200 && n < 4; seed++ {
		v := NewVehicle(NEDC(), seed, t0)
		if v.Powertrain() != PHEV {
			continue
		}
		n++
		var top float64
		for i := 0; i < 6*3600; i++ {
			v.Step(time.Second)
			top = math.Max(top, v.State().CoolantC)
		}
		t.Logf("seed %d: coolant peak %.1f °C", seed, top)
		if top < 85 || top > 91.01 {
			t.Errorf("seed %d: PHEV coolant peaked at %.1f °C, want ~90", seed, top)
		}
	}
	if n == 0 {
		t.Fatal("no PHEV in 200 seeds")
	}
}

func TestSetters(t *testing.T) {
	v := NewVehicle(NEDC(), 1, t0)
	for _, err := range []error{
		v.SetCabinSetpoint(35), v.SetChargeTarget(20), v.SetHeatedSeat(4), v.SetCabinSetpoint(math.NaN()),
	} {
		if !errors.Is(err, ErrOutOfRange) {
			t.Errorf("err = %v, want ErrOutOfRange", err)
		}
	}
	if err := v.SetCabinSetpoint(19.5); err != nil {
		t.Fatal(err)
	}
	if err := v.SetHeatedSeat(2); err != nil {
		t.Fatal(err)
	}
	v.SetHeatedSteeringWheel(true)
	if err := v.SetChargeTarget(90); err != nil {
		t.Fatal(err)
	}
	v.Step(time.Second)
	s := v.State()
	if s.CabinSetpointC != 19.5 || s.HeatedSeatLevel != 2 || !s.HeatedSteeringWheel || s.ChargeTargetPct != 90 {
		t.Errorf("setters not applied: %+v", s)
	}
}
