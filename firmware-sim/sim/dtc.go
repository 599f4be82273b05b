package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/firmware-sim/drivecycle"
)

// dtcDef is a diagnostic trouble code the simulator can raise.
type dtcDef struct {
	code     string
	ice      bool // needs a combustion engine (PHEV only)
	emission bool // emission related: goes permanent once confirmed
}

// dtcCatalog lists common SAE J2012 generic codes (descriptions are the
// gateway's business; comments are for the reader).
var dtcCatalog = []dtcDef{
	{code: "P0300", ice: true, emission: true}, // random/multiple cylinder misfire
	{code: "P0301", ice: true, emission: true}, // cylinder 1 misfire
	{code: "P0302", ice: true, emission: true}, // cylinder 2 misfire
	{code: "P0171", ice: true, emission: true}, // system too lean, bank 1
	{code: "P0420", ice: true, emission: true}, // catalyst efficiency below threshold, bank 1
	{code: "P0128", ice: true},                 // coolant below thermostat regulating temperature
	{code: "P0442", ice: true, emission: true}, // EVAP small leak
	{code: "P0455", ice: true, emission: true}, // EVAP large leak
	{code: "P0113", ice: true},                 // intake air temperature sensor high
	{code: "P0A80"},                            // replace hybrid/EV battery pack
	{code: "P0AA6"},                            // hybrid/EV battery voltage isolation fault
	{code: "P0562"},                            // system voltage low
	{code: "C0035"},                            // left front wheel speed sensor circuit
	{code: "C0040"},                            // right front wheel speed sensor circuit
	{code: "C0045"},                            // left rear wheel speed sensor circuit
	{code: "B0001"},                            // driver frontal stage 1 deployment control
	{code: "U0100"},                            // lost communication with ECM/PCM "A"
	{code: "U0121"},                            // lost communication with ABS control module
	{code: "U0140"},                            // lost communication with body control module
}

// encodeDTC returns the 2-byte SAE J2012 encoding of a code such as
// "P0301": bits 15-14 are the system (P=0, C=1, B=2, U=3), then the four
// hex digits (the first one 0-3).
func encodeDTC(code string) (uint16, error) {
	if len(code) != 5 {
		return 0, fmt.Errorf("sim: DTC %q: want 5 characters", code)
	}
	var sys uint16
	switch code[0] {
	case 'P':
		sys = 0
	case 'C':
		sys = 1
	case 'B':
		sys = 2
	case 'U':
		sys = 3
	default:
		return 0, fmt.Errorf("sim: DTC %q: unknown system %q", code, code[0])
	}
	v := sys << 14
	for i, c := range []byte(code[1:]) {
		var d uint16
		switch {
		case c >= '0' && c <= '9':
			d = uint16(c - '0')
		case c >= 'A' && c <= 'F':
			d = uint16(c-'A') + 10
		default:
			return 0, fmt.Errorf("sim: DTC %q: bad digit %q", code, c)
		}
		if i == 0 && d > 3 {
			return 0, fmt.Errorf("sim: DTC %q: first digit must be 0-3", code)
		}
		v |= d << (12 - 4*i)
	}
	return v, nil
}

// storedDTC is one code in a vehicle's memory.
type storedDTC struct {
	def        *dtcDef
	code       uint16
	status     uint8
	age        int // reports since raised
	confirmAt  int // age at which a pending code confirms (or clears, if intermittent)
	clearAt    int // age at which the code is cleared
	persistent bool
}

// dtcMemory is a vehicle's fault memory. Each diag report ages the stored
// codes (pending -> confirmed after a report or two -> permanent for
// emission codes -> cleared a few reports later; intermittent faults clear
// while still pending), then maybe raises a new one.
type dtcMemory struct {
	rng    *rand.Rand
	pt     drivecycle.Powertrain
	codes  []storedDTC
	freeze []wire.Signal
}

// report advances the memory by one diag report and returns the snapshot:
// stored codes with their status, MIL and freeze frame. raised is true when
// a new code was stored.
func (m *dtcMemory) report(p float64, s *drivecycle.State) (entries []wire.DTCEntry, mil, raised bool, freeze []wire.Signal) {
	// A code cleared in this report is not raised again in the same one:
	// the snapshot must show it gone at least once.
	var cleared []uint16
	kept := m.codes[:0]
	for _, c := range m.codes {
		c.age++
		switch {
		case c.age >= c.clearAt:
			cleared = append(cleared, c.code) // fault healed, or a workshop cleared it
			continue
		case c.status == wire.DTCPending && c.age >= c.confirmAt:
			if !c.persistent {
				cleared = append(cleared, c.code) // intermittent fault that never matured
				continue
			}
			c.status = wire.DTCConfirmed
		case c.status == wire.DTCConfirmed && c.def.emission && c.age >= c.confirmAt+2:
			c.status = wire.DTCPermanent
		}
		kept = append(kept, c)
	}
	m.codes = kept

	if p > 0 && m.rng.Float64() < p {
		if c, ok := m.pick(cleared); ok {
			m.codes = append(m.codes, c)
			raised = true
		}
	}

	entries = make([]wire.DTCEntry, 0, len(m.codes))
	for _, c := range m.codes {
		entries = append(entries, wire.DTCEntry{Code: c.code, Status: c.status})
		if c.status == wire.DTCConfirmed || c.status == wire.DTCPermanent {
			mil = true
		}
	}
	switch {
	case len(m.codes) == 0:
		m.freeze = nil
	case mil && m.freeze == nil:
		m.freeze = freezeFrame(s)
	}
	return entries, mil, raised, m.freeze
}

// pick chooses a code applicable to the powertrain that is neither stored
// nor in exclude.
func (m *dtcMemory) pick(exclude []uint16) (storedDTC, bool) {
	for range 8 {
		d := &dtcCatalog[m.rng.IntN(len(dtcCatalog))]
		if d.ice && m.pt != drivecycle.PHEV {
			continue
		}
		code, err := encodeDTC(d.code)
		if err != nil {
			continue // the catalog is covered by tests
		}
		dup := slices.Contains(exclude, code)
		for _, c := range m.codes {
			dup = dup || c.code == code
		}
		if dup {
			continue
		}
		confirm := 1 + m.rng.IntN(2)
		return storedDTC{
			def:        d,
			code:       code,
			status:     wire.DTCPending,
			confirmAt:  confirm,
			clearAt:    confirm + 3 + m.rng.IntN(4),
			persistent: m.rng.Float64() < 0.75,
		}, true
	}
	return storedDTC{}, false
}
