// Package drivecycle provides standard chassis-dynamometer drive cycles as
// data and a small vehicle model driven by them.
//
// A Cycle is a piecewise-linear speed trace given by its published
// breakpoints (time in seconds, speed in km/h). Speed interpolates between
// breakpoints and loops, so a cycle can drive a simulated vehicle forever.
// NEDC returns the New European Driving Cycle (four ECE-15 urban cycles
// followed by the EUDC extra-urban cycle) as defined in UNECE Regulation
// No. 83 / No. 101, Annex 4a.
//
// Vehicle is a deterministic (for a given seed and sequence of steps)
// longitudinal model that turns the speed trace into the signals a
// telematics unit reports: engine speed, state of charge, temperatures,
// tyre pressures, position and so on. See vehicle.go.
package drivecycle

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"
)

// ErrInvalidCycle is returned by New for a malformed speed trace.
var ErrInvalidCycle = errors.New("drivecycle: invalid cycle")

// MaxCycleSpeed is the highest speed (km/h) a cycle breakpoint may have.
const MaxCycleSpeed = 300

// Point is one breakpoint of a piecewise-linear speed trace.
type Point struct {
	T float64 // seconds from the start of the cycle
	V float64 // speed in km/h
}

// Cycle is an immutable piecewise-linear speed trace. It is safe for
// concurrent use.
type Cycle struct {
	name string
	pts  []Point
	dur  float64
	max  float64
	dist float64 // km
}

// New validates pts and returns the cycle they define. The first point must
// be at T = 0, times must be strictly increasing and speeds must lie in
// [0, MaxCycleSpeed]. The cycle lasts until the last point's time.
func New(name string, pts []Point) (*Cycle, error) {
	if len(pts) < 2 {
		return nil, fmt.Errorf("%w: %q: need at least 2 points", ErrInvalidCycle, name)
	}
	if pts[0].T != 0 {
		return nil, fmt.Errorf("%w: %q: first point at t=%v, want 0", ErrInvalidCycle, name, pts[0].T)
	}
	c := &Cycle{name: name, pts: append([]Point(nil), pts...)}
	for i, p := range c.pts {
		if math.IsNaN(p.T) || math.IsInf(p.T, 0) || math.IsNaN(p.V) || p.V < 0 || p.V > MaxCycleSpeed {
			return nil, fmt.Errorf("%w: %q: point %d (%v s, %v km/h) out of range", ErrInvalidCycle, name, i, p.T, p.V)
		}
		if i > 0 {
			prev := c.pts[i-1]
			if p.T <= prev.T {
				return nil, fmt.Errorf("%w: %q: time not increasing at point %d", ErrInvalidCycle, name, i)
			}
			c.dist += (p.V + prev.V) / 2 * (p.T - prev.T) / 3600
		}
		c.max = math.Max(c.max, p.V)
	}
	c.dur = c.pts[len(c.pts)-1].T
	return c, nil
}

// Name returns the cycle's name.
func (c *Cycle) Name() string { return c.name }

// Duration returns the length of one pass through the cycle.
func (c *Cycle) Duration() time.Duration {
	return time.Duration(c.dur * float64(time.Second))
}

// MaxSpeed returns the highest speed of the cycle in km/h.
func (c *Cycle) MaxSpeed() float64 { return c.max }

// Distance returns the distance covered in one pass, in km.
func (c *Cycle) Distance() float64 { return c.dist }

// Points returns a copy of the cycle's breakpoints.
func (c *Cycle) Points() []Point { return append([]Point(nil), c.pts...) }

// Speed returns the speed in km/h at t, interpolating linearly between
// breakpoints. t is taken modulo the cycle's duration, so the cycle loops
// (negative t counts back from the end).
func (c *Cycle) Speed(t time.Duration) float64 { return c.speedAt(c.wrap(t.Seconds())) }

// Acceleration returns the longitudinal acceleration in m/s² at t: the slope
// of the segment containing t (looping like Speed).
func (c *Cycle) Acceleration(t time.Duration) float64 { return c.accelAt(c.wrap(t.Seconds())) }

func (c *Cycle) wrap(s float64) float64 {
	s = math.Mod(s, c.dur)
	if s < 0 {
		s += c.dur
	}
	return s
}

// segment returns i such that pts[i-1].T <= s < pts[i].T (1 <= i < len).
func (c *Cycle) segment(s float64) int {
	i := sort.Search(len(c.pts), func(i int) bool { return c.pts[i].T > s })
	switch {
	case i <= 0:
		return 1
	case i >= len(c.pts):
		return len(c.pts) - 1
	}
	return i
}

// speedAt returns the speed (km/h) at s seconds, 0 <= s < dur.
func (c *Cycle) speedAt(s float64) float64 {
	i := c.segment(s)
	a, b := c.pts[i-1], c.pts[i]
	f := (s - a.T) / (b.T - a.T)
	f = math.Min(math.Max(f, 0), 1)
	return a.V + (b.V-a.V)*f
}

// accelAt returns the segment slope (m/s²) at s seconds, 0 <= s < dur.
func (c *Cycle) accelAt(s float64) float64 {
	i := c.segment(s)
	a, b := c.pts[i-1], c.pts[i]
	return (b.V - a.V) / 3.6 / (b.T - a.T)
}
