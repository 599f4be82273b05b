package drivecycle

import "sync"

// The tables below transcribe the operating cycles of UNECE Regulation
// No. 83 (and No. 101, which uses the same cycle), Annex 4a: Table 1
// "Elementary urban cycle" (Part One, 195 s, run four times) and Table 2
// "Extra-urban cycle" (Part Two, 400 s). Each row of those tables (idling,
// acceleration, steady speed, gear change, deceleration) is one linear
// segment; the breakpoints below are the segment ends, cumulative time in
// seconds and speed in km/h. During a gear change the speed is held, except
// at 176-178 s of the urban cycle where the vehicle coasts from 35 to 32 km/h
// before decelerating.

// ece15 is the elementary urban cycle (Part One), 195 s, max 50 km/h.
var ece15 = []Point{
	{0, 0}, {11, 0}, // idling
	{15, 15}, {23, 15}, // accelerate to 15, steady
	{25, 10}, {28, 0}, // decelerate, clutch disengaged
	{49, 0},            // idling
	{54, 15}, {56, 15}, // accelerate, gear change
	{61, 32}, {85, 32}, // accelerate to 32, steady
	{93, 10}, {96, 0}, // decelerate
	{117, 0},             // idling
	{122, 15}, {124, 15}, // accelerate, gear change
	{133, 35}, {135, 35}, // accelerate, gear change
	{143, 50}, {155, 50}, // accelerate to 50, steady
	{163, 35}, {176, 35}, // decelerate to 35, steady
	{178, 32}, {185, 10}, {188, 0}, // gear change, decelerate
	{195, 0}, // idling
}

// eudc is the extra-urban cycle (Part Two), 400 s, max 120 km/h.
var eudc = []Point{
	{0, 0}, {20, 0}, // idling
	{25, 15}, {27, 15}, // accelerate, gear change
	{36, 35}, {38, 35}, // accelerate, gear change
	{46, 50}, {48, 50}, // accelerate, gear change
	{61, 70}, {111, 70}, // accelerate to 70, steady
	{119, 50}, {188, 50}, // decelerate to 50, steady
	{201, 70}, {251, 70}, // accelerate to 70, steady
	{286, 100}, {316, 100}, // accelerate to 100, steady
	{336, 120}, {346, 120}, // accelerate to 120, steady
	{362, 80}, {370, 50}, {380, 0}, // decelerate (last part clutch disengaged)
	{400, 0}, // idling
}

// concat joins traces end to end; the first point of each following trace
// (t = 0) coincides with the last point of the previous one and is dropped.
func concat(parts ...[]Point) []Point {
	var out []Point
	var off float64
	for i, p := range parts {
		start := 0
		if i > 0 {
			start = 1
		}
		for _, q := range p[start:] {
			out = append(out, Point{T: q.T + off, V: q.V})
		}
		off = out[len(out)-1].T
	}
	return out
}

func mustNew(name string, pts []Point) *Cycle {
	c, err := New(name, pts)
	if err != nil {
		panic(err) // the tables above are constants; covered by tests
	}
	return c
}

var (
	ece15Cycle = sync.OnceValue(func() *Cycle { return mustNew("ECE-15", ece15) })
	eudcCycle  = sync.OnceValue(func() *Cycle { return mustNew("EUDC", eudc) })
	nedcCycle  = sync.OnceValue(func() *Cycle {
		return mustNew("NEDC", concat(ece15, ece15, ece15, ece15, eudc))
	})
)

// ECE15 returns the elementary urban cycle (UNECE R83 Annex 4a, Part One):
// 195 s, 50 km/h maximum, about 1.01 km.
func ECE15() *Cycle { return ece15Cycle() }

// EUDC returns the extra-urban driving cycle (UNECE R83 Annex 4a, Part
// Two): 400 s, 120 km/h maximum, about 6.96 km.
func EUDC() *Cycle { return eudcCycle() }

// NEDC returns the New European Driving Cycle: four ECE-15 cycles followed
// by one EUDC, 1180 s, 120 km/h maximum, about 11 km.
func NEDC() *Cycle { return nedcCycle() }
