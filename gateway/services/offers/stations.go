package offers

import (
	"fmt"
	"math"

	"github.com/telegate/telegate/gateway/services/svc"
)

// Station is a charging station with its position.
type Station struct {
	ID   string  `yaml:"id" json:"id"`
	Name string  `yaml:"name" json:"name"`
	Lat  float64 `yaml:"lat" json:"lat"`
	Lon  float64 `yaml:"lon" json:"lon"`
}

// StationsFile is the stations.yaml format.
type StationsFile struct {
	Stations []Station `yaml:"stations"`
}

// LoadStations reads and validates stations.yaml.
func LoadStations(path string) (map[string]Station, error) {
	var f StationsFile
	if err := svc.LoadYAML(path, &f); err != nil {
		return nil, err
	}
	out := make(map[string]Station, len(f.Stations))
	for _, s := range f.Stations {
		if !svc.ValidID(s.ID) || s.Lat < -90 || s.Lat > 90 || s.Lon < -180 || s.Lon > 180 || math.IsNaN(s.Lat+s.Lon) {
			return nil, fmt.Errorf("%s: %w: station %q: id or lat/lon", path, svc.ErrInvalid, s.ID)
		}
		if _, dup := out[s.ID]; dup {
			return nil, fmt.Errorf("%s: %w: station %s listed twice", path, svc.ErrInvalid, s.ID)
		}
		out[s.ID] = s
	}
	return out, nil
}

// DistanceM is the great-circle distance in metres.
func DistanceM(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371000.0
	rad := math.Pi / 180
	dlat, dlon := (lat2-lat1)*rad, (lon2-lon1)*rad
	a := math.Sin(dlat/2)*math.Sin(dlat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dlon/2)*math.Sin(dlon/2)
	return 2 * r * math.Asin(math.Min(1, math.Sqrt(a)))
}

// ChargeEfficiency is the share of the charger's energy that reaches the
// battery.
const ChargeEfficiency = 0.93

// DefaultTargetSoC is assumed when a session reports no target SoC (0):
// OCPP stations never report one.
const DefaultTargetSoC = 80

// ExpectedDwell estimates the charging time from SoC to target SoC at
// powerW for a battery of batteryKWh (0 when it cannot be estimated). Above
// 80 % the power tapers linearly to 10 % at 100 %, as DC chargers do. A
// target of 0 means unknown: DefaultTargetSoC.
func ExpectedDwell(socPct, targetPct, powerW, batteryKWh float64) (minutes float64) {
	if targetPct == 0 {
		targetPct = DefaultTargetSoC
	}
	if powerW <= 0 || batteryKWh <= 0 || targetPct <= socPct || math.IsNaN(socPct+targetPct+powerW) {
		return 0
	}
	targetPct = math.Min(targetPct, 100)
	hours := 0.0
	for s := math.Max(socPct, 0); s < targetPct; s++ {
		step := math.Min(1, targetPct-s)
		p := powerW
		if s >= 80 {
			p *= math.Max((100-s)/20, 0.1)
		}
		hours += step / 100 * batteryKWh * 1000 / (p * ChargeEfficiency)
	}
	return hours * 60
}
