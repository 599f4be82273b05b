package drivecycle

import (
	"errors"
	"math"
	"testing"
	"time"
)

func sec(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func TestNEDCData(t *testing.T) {
	c := NEDC()
	if got := c.Duration(); got != 1180*time.Second {
		t.Errorf("duration = %v, want 1180s", got)
	}
	if got := c.MaxSpeed(); got != 120 {
		t.Errorf("max speed = %v, want 120", got)
	}
	// Published theoretical distances: 4 x 1.013 km + 6.955 km (R83 Annex 4a).
	if d := c.Distance(); d < 10.9 || d > 11.1 {
		t.Errorf("distance = %.3f km, want ~11.0", d)
	}
	for _, p := range c.Points() {
		if p.V < 0 || p.V > 120 {
			t.Fatalf("point %+v out of range", p)
		}
	}
	for s := 0.0; s < 1180; s += 0.25 {
		v := c.Speed(sec(s))
		if v < 0 || v > 120 || math.IsNaN(v) {
			t.Fatalf("speed(%v) = %v", s, v)
		}
		if a := c.Acceleration(sec(s)); math.Abs(a) > 1.5 {
			t.Fatalf("accel(%v) = %v m/s²", s, a)
		}
	}
}

func TestPartsData(t *testing.T) {
	for _, tc := range []struct {
		c        *Cycle
		dur      time.Duration
		max, km  float64
		tolerKm  float64
		idleSecs float64
	}{
		{ECE15(), 195 * time.Second, 50, 1.013, 0.01, 60},
		{EUDC(), 400 * time.Second, 120, 6.955, 0.01, 40},
	} {
		if tc.c.Duration() != tc.dur || tc.c.MaxSpeed() != tc.max {
			t.Errorf("%s: duration %v max %v", tc.c.Name(), tc.c.Duration(), tc.c.MaxSpeed())
		}
		if math.Abs(tc.c.Distance()-tc.km) > tc.tolerKm {
			t.Errorf("%s: distance %.4f km, want %.3f", tc.c.Name(), tc.c.Distance(), tc.km)
		}
		var idle float64
		for s := 0.0; s < tc.dur.Seconds(); s += 0.5 {
			if tc.c.Speed(sec(s+0.25)) == 0 {
				idle += 0.5
			}
		}
		if idle != tc.idleSecs {
			t.Errorf("%s: %v s standing, want %v", tc.c.Name(), idle, tc.idleSecs)
		}
	}
}

func TestSpeedInterpolationAndLoop(t *testing.T) {
	c := NEDC()
	for _, tc := range []struct {
		s, want float64
	}{
		{0, 0}, {11, 0}, {13, 7.5}, {15, 15}, {70, 32}, {150, 50},
		{780 + 100, 70}, {780 + 340, 120}, {780 + 366, 65}, {1179.9, 0},
		{1180 + 13, 7.5}, {2*1180 + 150, 50}, {-1180 + 13, 7.5}, {-10, 0},
	} {
		if got := c.Speed(sec(tc.s)); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("Speed(%vs) = %v, want %v", tc.s, got, tc.want)
		}
	}
	if a := c.Acceleration(sec(12)); math.Abs(a-15/3.6/4) > 1e-9 {
		t.Errorf("accel at 12 s = %v", a)
	}
	if a := c.Acceleration(sec(70)); a != 0 {
		t.Errorf("accel at 70 s = %v", a)
	}
}

func TestNewValidates(t *testing.T) {
	for name, pts := range map[string][]Point{
		"short":      {{0, 0}},
		"late start": {{1, 0}, {2, 0}},
		"backwards":  {{0, 0}, {5, 10}, {5, 0}},
		"negative":   {{0, 0}, {5, -1}},
		"too fast":   {{0, 0}, {5, 301}},
		"nan":        {{0, 0}, {math.NaN(), 1}},
	} {
		if _, err := New(name, pts); !errors.Is(err, ErrInvalidCycle) {
			t.Errorf("%s: err = %v, want ErrInvalidCycle", name, err)
		}
	}
	c, err := New("ok", []Point{{0, 0}, {10, 36}, {20, 0}})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(c.Distance()-0.1) > 1e-12 || c.Speed(5*time.Second) != 18 {
		t.Errorf("distance %v speed %v", c.Distance(), c.Speed(5*time.Second))
	}
}
