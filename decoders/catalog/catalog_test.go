package catalog_test

import (
	"math"
	"strings"
	"testing"

	"github.com/telegate/telegate/decoders/catalog"
)

// expected pins every id, its constant and its VSS path: ids are a public
// contract and must never move.
var expected = []struct {
	id   uint16
	path string
	typ  catalog.Type
}{
	{catalog.Speed, "Vehicle.Speed", catalog.Float},
	{catalog.EngineSpeed, "Vehicle.Powertrain.CombustionEngine.Speed", catalog.Float},
	{catalog.CoolantTemp, "Vehicle.Powertrain.CombustionEngine.ECT", catalog.Float},
	{catalog.Odometer, "Vehicle.TraveledDistance", catalog.Float},
	{catalog.LowVoltageBattery, "Vehicle.LowVoltageBattery.CurrentVoltage", catalog.Float},
	{catalog.TractionSoC, "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", catalog.Float},
	{catalog.TractionPower, "Vehicle.Powertrain.TractionBattery.CurrentPower", catalog.Float},
	{catalog.TirePressureFL, "Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.Pressure", catalog.Float},
	{catalog.TirePressureFR, "Vehicle.Chassis.Axle.Row1.Wheel.Right.Tire.Pressure", catalog.Float},
	{catalog.TirePressureRL, "Vehicle.Chassis.Axle.Row2.Wheel.Left.Tire.Pressure", catalog.Float},
	{catalog.TirePressureRR, "Vehicle.Chassis.Axle.Row2.Wheel.Right.Tire.Pressure", catalog.Float},
	{catalog.CabinTemp, "Vehicle.Cabin.HVAC.AmbientAirTemperature", catalog.Float},
	{catalog.ExteriorTemp, "Vehicle.Exterior.AirTemperature", catalog.Float},
	{catalog.Latitude, "Vehicle.CurrentLocation.Latitude", catalog.Float},
	{catalog.Longitude, "Vehicle.CurrentLocation.Longitude", catalog.Float},
	{catalog.Heading, "Vehicle.CurrentLocation.Heading", catalog.Float},
	{catalog.FuelLevel, "Vehicle.Powertrain.FuelSystem.RelativeLevel", catalog.Float},
	{catalog.TractionSoH, "Vehicle.Powertrain.TractionBattery.StateOfHealth", catalog.Float},
	{catalog.TractionBatteryTemp, "Vehicle.Powertrain.TractionBattery.Temperature.Average", catalog.Float},
	{catalog.TractionVoltage, "Vehicle.Powertrain.TractionBattery.CurrentVoltage", catalog.Float},
	{catalog.TractionCurrent, "Vehicle.Powertrain.TractionBattery.CurrentCurrent", catalog.Float},
	{catalog.Range, "Vehicle.Powertrain.Range", catalog.Float},
	{catalog.AccelLongitudinal, "Vehicle.Acceleration.Longitudinal", catalog.Float},
	{catalog.AccelLateral, "Vehicle.Acceleration.Lateral", catalog.Float},
	{catalog.AcceleratorPedal, "Vehicle.Chassis.Accelerator.PedalPosition", catalog.Float},
	{catalog.BrakePedal, "Vehicle.Chassis.Brake.PedalPosition", catalog.Float},
	{catalog.CurrentGear, "Vehicle.Powertrain.Transmission.CurrentGear", catalog.Int},
	{catalog.SteeringAngle, "Vehicle.Chassis.SteeringWheel.Angle", catalog.Float},
	{catalog.EngineLoad, "Vehicle.OBD.EngineLoad", catalog.Float},
	{catalog.ThrottlePosition, "Vehicle.OBD.ThrottlePosition", catalog.Float},
	{catalog.IsMoving, "Vehicle.IsMoving", catalog.Bool},
	{catalog.IsCharging, "Vehicle.Powertrain.TractionBattery.Charging.IsCharging", catalog.Bool},
	{catalog.DriverTempSetpoint, "Vehicle.Cabin.HVAC.Station.Row1.Driver.Temperature", catalog.Float},
	{catalog.ChargeTargetSoC, "Vehicle.Powertrain.TractionBattery.Charging.ChargeLimit", catalog.Int},
	{catalog.HeatedSeatDriverLevel, "Vehicle.Cabin.Seat.Row1.DriverSide.HeatingCooling", catalog.Int},
	{catalog.HeatedSteeringWheel, "Vehicle.Chassis.SteeringWheel.HeatingCooling", catalog.Int},
}

func TestTableMatchesContract(t *testing.T) {
	if len(expected) != int(catalog.MaxID) {
		t.Fatalf("expected %d entries, MaxID is %d", len(expected), catalog.MaxID)
	}
	for i, e := range expected {
		if e.id != uint16(i+1) {
			t.Fatalf("constant for %s is %d, want %d", e.path, e.id, i+1)
		}
		s, ok := catalog.Lookup(e.id)
		if !ok {
			t.Fatalf("Lookup(%d) missing", e.id)
		}
		if s.ID != e.id || s.Path != e.path || s.Type != e.typ {
			t.Errorf("id %d = {%d %q %v}, want {%d %q %v}", e.id, s.ID, s.Path, s.Type, e.id, e.path, e.typ)
		}
	}
}

func TestTableWellFormed(t *testing.T) {
	all := catalog.All()
	if len(all) != int(catalog.MaxID) {
		t.Fatalf("All() has %d entries, want %d", len(all), catalog.MaxID)
	}
	paths := map[string]uint16{}
	for i, s := range all {
		if s.ID != uint16(i+1) {
			t.Errorf("All()[%d].ID = %d", i, s.ID)
		}
		if prev, dup := paths[s.Path]; dup {
			t.Errorf("path %q used by ids %d and %d", s.Path, prev, s.ID)
		}
		paths[s.Path] = s.ID
		if !strings.HasPrefix(s.Path, "Vehicle.") || strings.Contains(s.Path, "..") || strings.HasSuffix(s.Path, ".") {
			t.Errorf("id %d: %q is not a VSS path", s.ID, s.Path)
		}
		// Line protocol escapes commas, equals signs and spaces in field
		// keys; VSS paths must need no escaping since FieldKey == Path.
		for _, r := range s.Path {
			if !(r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				t.Errorf("id %d: path %q contains %q", s.ID, s.Path, r)
			}
		}
		if s.FieldKey != s.Path {
			t.Errorf("id %d: FieldKey %q != Path %q", s.ID, s.FieldKey, s.Path)
		}
		if !(s.Min < s.Max) || math.IsInf(s.Min, 0) || math.IsInf(s.Max, 0) {
			t.Errorf("id %d: bad range [%v, %v]", s.ID, s.Min, s.Max)
		}
		switch s.Type {
		case catalog.Bool:
			if s.Min != 0 || s.Max != 1 || s.Unit != "" {
				t.Errorf("id %d: Bool must be [0,1] without unit", s.ID)
			}
		case catalog.Int:
			if s.Min != math.Trunc(s.Min) || s.Max != math.Trunc(s.Max) {
				t.Errorf("id %d: Int range must be integral", s.ID)
			}
		case catalog.Float:
			if s.Unit == "" {
				t.Errorf("id %d: Float signal without unit", s.ID)
			}
		default:
			t.Errorf("id %d: bad type %d", s.ID, s.Type)
		}
		if s.Description == "" || !strings.HasSuffix(s.Description, ".") {
			t.Errorf("id %d: description %q must be a sentence", s.ID, s.Description)
		}
		got, ok := catalog.ByPath(s.Path)
		if !ok || got.ID != s.ID {
			t.Errorf("ByPath(%q) = %v, %v", s.Path, got, ok)
		}
	}
}

func TestAllReturnsCopy(t *testing.T) {
	all := catalog.All()
	all[0].Path = "mutated"
	if s, _ := catalog.Lookup(catalog.Speed); s.Path != "Vehicle.Speed" {
		t.Fatal("All() exposes the internal table")
	}
}

func TestLookupMisses(t *testing.T) {
	for _, id := range []uint16{0, catalog.MaxID + 1, 255, 65535} {
		if s, ok := catalog.Lookup(id); ok || s != nil {
			t.Errorf("Lookup(%d) = %v, %v", id, s, ok)
		}
	}
	for _, p := range []string{"", "Vehicle", "vehicle.speed", "Vehicle.Speed ", "Vehicle.Speed.Current"} {
		if s, ok := catalog.ByPath(p); ok || s != nil {
			t.Errorf("ByPath(%q) = %v, %v", p, s, ok)
		}
	}
}

func TestValid(t *testing.T) {
	tests := []struct {
		id   uint16
		v    float64
		want bool
	}{
		{catalog.Speed, 0, true},
		{catalog.Speed, 130.5, true},
		{catalog.Speed, 300, true},
		{catalog.Speed, 300.01, false},
		{catalog.Speed, -1, false},
		{catalog.Speed, math.NaN(), false},
		{catalog.Speed, math.Inf(1), false},
		{catalog.Speed, math.Inf(-1), false},
		{catalog.TractionPower, -150000, true}, // driving
		{catalog.TractionPower, 11000, true},   // AC charging
		{catalog.Latitude, -90, true},
		{catalog.Latitude, 90.0001, false},
		{catalog.Longitude, -180, true},
		{catalog.Longitude, 180.5, false},
		{catalog.IsMoving, 0, true},
		{catalog.IsMoving, 1, true},
		{catalog.IsMoving, 0.5, false},
		{catalog.IsMoving, 2, false},
		{catalog.IsCharging, -1, false},
		{catalog.CurrentGear, -1, true},
		{catalog.CurrentGear, 0, true},
		{catalog.CurrentGear, 6, true},
		{catalog.CurrentGear, 2.5, false},
		{catalog.CurrentGear, 100, false},
		{catalog.ChargeTargetSoC, 80, true},
		{catalog.ChargeTargetSoC, 80.5, false},
		{catalog.ChargeTargetSoC, 101, false},
		{catalog.HeatedSeatDriverLevel, -100, true},
		{catalog.HeatedSeatDriverLevel, 66, true},
		{catalog.HeatedSeatDriverLevel, 100.5, false},
		{catalog.HeatedSteeringWheel, 100, true},
		{catalog.DriverTempSetpoint, 21.5, true},
		{catalog.TractionSoC, math.Copysign(0, -1), true},
	}
	for _, tt := range tests {
		s, _ := catalog.Lookup(tt.id)
		if got := s.Valid(tt.v); got != tt.want {
			t.Errorf("%s.Valid(%v) = %v, want %v", s.Path, tt.v, got, tt.want)
		}
	}
}

func TestAppendField(t *testing.T) {
	tests := []struct {
		id   uint16
		v    float64
		want string
	}{
		{catalog.Speed, 87.25, "Vehicle.Speed=87.25"},
		{catalog.Speed, 0, "Vehicle.Speed=0"},
		{catalog.Odometer, 123456.7, "Vehicle.TraveledDistance=123456.7"},
		{catalog.TractionPower, -42000, "Vehicle.Powertrain.TractionBattery.CurrentPower=-42000"},
		{catalog.Range, 1e6, "Vehicle.Powertrain.Range=1e+06"},
		{catalog.CurrentGear, -1, "Vehicle.Powertrain.Transmission.CurrentGear=-1i"},
		{catalog.ChargeTargetSoC, 80, "Vehicle.Powertrain.TractionBattery.Charging.ChargeLimit=80i"},
		{catalog.IsMoving, 1, "Vehicle.IsMoving=true"},
		{catalog.IsCharging, 0, "Vehicle.Powertrain.TractionBattery.Charging.IsCharging=false"},
	}
	for _, tt := range tests {
		s, _ := catalog.Lookup(tt.id)
		if got := string(s.AppendField([]byte(nil), tt.v)); got != tt.want {
			t.Errorf("AppendField(%s, %v) = %q, want %q", s.Path, tt.v, got, tt.want)
		}
	}
}

func TestZeroAlloc(t *testing.T) {
	buf := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		for id := uint16(0); id <= catalog.MaxID+1; id++ {
			s, ok := catalog.Lookup(id)
			if ok && s.Valid(1) {
				buf = s.AppendField(buf[:0], 1.5)
			}
		}
		_, _ = catalog.ByPath("Vehicle.Powertrain.TractionBattery.StateOfCharge.Current")
	})
	if allocs != 0 {
		t.Fatalf("Lookup/Valid/AppendField/ByPath allocate %v times per run", allocs)
	}
}

func TestTypeString(t *testing.T) {
	for typ, want := range map[catalog.Type]string{catalog.Float: "float", catalog.Int: "int", catalog.Bool: "bool", 0: "unknown"} {
		if got := typ.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", typ, got, want)
		}
	}
}

func BenchmarkCatalogLookup(b *testing.B) {
	b.ReportAllocs()
	var id uint16 = 1
	var n int
	for b.Loop() {
		s, ok := catalog.Lookup(id)
		if ok && s.Valid(42) {
			n++
		}
		if id++; id > catalog.MaxID {
			id = 1
		}
	}
	_ = n
}

func BenchmarkCatalogByPath(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := catalog.ByPath("Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"); !ok {
			b.Fatal("missing")
		}
	}
}

func BenchmarkCatalogAppendField(b *testing.B) {
	s, _ := catalog.Lookup(catalog.TractionSoC)
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = s.AppendField(buf[:0], 76.4)
	}
}
