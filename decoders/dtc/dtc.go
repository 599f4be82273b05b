// Package dtc converts diagnostic trouble codes between their two-byte
// encoding (SAE J2012 / ISO 15031-6, as carried in wire.DTCEntry.Code and in
// OBD-II mode 03 responses) and their five-character form ("P0301"), and
// describes the common generic codes.
//
// Encoding of the 16-bit code, most significant bit first:
//
//	bits 15-14  system letter: 00 P (powertrain), 01 C (chassis), 10 B (body), 11 U (network)
//	bits 13-12  first digit 0-3 (0 and 2 are SAE-defined, 1 and 3 manufacturer-defined, mostly)
//	bits 11-0   three hexadecimal digits
//
// so 0x0301 is "P0301", 0x4123 "C0123", 0x8123 "B0123" and 0xC100 "U0100".
// Every 16-bit value maps to exactly one code string and back.
//
// Severity is this project's triage level, not part of J2012; see Severity.
package dtc

import (
	"errors"
	"fmt"
	"slices"
)

// ErrInvalidCode is returned (wrapped) by Parse for anything that is not a
// five-character DTC.
var ErrInvalidCode = errors.New("dtc: invalid code")

// Len is the length of a code in text form.
const Len = 5

const (
	systemLetters = "PCBU"
	hexDigits     = "0123456789ABCDEF"
)

// Append appends the five-character form of code (e.g. "P0301") to dst. It
// does not allocate when dst has room for Len more bytes.
func Append(dst []byte, code uint16) []byte {
	return append(dst,
		systemLetters[code>>14],
		'0'+byte(code>>12&0x3),
		hexDigits[code>>8&0xF],
		hexDigits[code>>4&0xF],
		hexDigits[code&0xF],
	)
}

// String returns the five-character form of code (allocates; use Append on
// hot paths).
func String(code uint16) string {
	var b [Len]byte
	return string(Append(b[:0], code))
}

// Parse converts a five-character code such as "P0301" to its two-byte
// encoding. The letter and the hexadecimal digits may be lower case. Errors
// wrap ErrInvalidCode.
func Parse(s string) (uint16, error) {
	if len(s) != Len {
		return 0, fmt.Errorf("%w: %q: want %d characters", ErrInvalidCode, s, Len)
	}
	var code uint16
	switch s[0] {
	case 'P', 'p':
		code = 0x0000
	case 'C', 'c':
		code = 0x4000
	case 'B', 'b':
		code = 0x8000
	case 'U', 'u':
		code = 0xC000
	default:
		return 0, fmt.Errorf("%w: %q: system letter must be P, C, B or U", ErrInvalidCode, s)
	}
	if s[1] < '0' || s[1] > '3' {
		return 0, fmt.Errorf("%w: %q: second character must be 0-3", ErrInvalidCode, s)
	}
	code |= uint16(s[1]-'0') << 12
	for i := 2; i < Len; i++ {
		d, ok := hexValue(s[i])
		if !ok {
			return 0, fmt.Errorf("%w: %q: character %d must be a hexadecimal digit", ErrInvalidCode, s, i+1)
		}
		code |= uint16(d) << (4 * (Len - 1 - i))
	}
	return code, nil
}

func hexValue(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// Severity is the triage level shown to service teams.
//
// The rule used for the table:
//   - Critical: driving on may damage the engine, transmission, catalytic
//     converter or high-voltage system, or a safety-relevant controller is
//     unreachable. Misfires (a misfire that sets a code is, by the OBD
//     definition, one that can damage the catalyst or raise emissions),
//     engine or transmission over-temperature, engine overspeed, turbo
//     overboost, low oil pressure, loss of the crankshaft position signal,
//     high-voltage isolation faults, CAN bus-off and lost communication with
//     the engine, transmission, brake, battery or restraint controllers.
//   - Warning: faults that light the MIL but do not cause immediate damage:
//     emissions-only faults (catalyst efficiency, EVAP leaks, EGR, oxygen
//     sensors, fuel trim), sensor circuits, transmission solenoids, idle
//     control. Codes not in the table are reported as Warning too.
//   - Info: comfort and convenience functions with no effect on emissions or
//     safety (air conditioning, cruise control).
type Severity uint8

// Severity levels, in increasing order of urgency.
const (
	Info Severity = iota + 1
	Warning
	Critical
)

// String returns "info", "warning", "critical" or "unknown".
func (s Severity) String() string {
	switch s {
	case Info:
		return "info"
	case Warning:
		return "warning"
	case Critical:
		return "critical"
	default:
		return "unknown"
	}
}

// Describe returns the generic (SAE J2012) description and the severity of
// code. ok is false for codes not in the table (manufacturer-specific or
// uncommon generic codes): desc is then "" and sev is Warning. Describe does
// not allocate.
func Describe(code uint16) (desc string, sev Severity, ok bool) {
	i, found := slices.BinarySearchFunc(codes[:], code, func(e entry, c uint16) int {
		return int(e.code) - int(c)
	})
	if !found {
		return "", Warning, false
	}
	return codes[i].desc, codes[i].sev, true
}

// Count returns the number of codes with a description.
func Count() int { return len(codes) }

// DTC status values, identical to wire.DTCPending, wire.DTCConfirmed and
// wire.DTCPermanent.
const (
	StatusPending   uint8 = 1 // detected once; not yet confirmed (MIL off)
	StatusConfirmed uint8 = 2 // confirmed (stored); MIL on if emissions-related
	StatusPermanent uint8 = 3 // cannot be cleared by a scan tool, only by a passing monitor
)

// StatusName returns "pending", "confirmed", "permanent" or "unknown".
func StatusName(status uint8) string {
	switch status {
	case StatusPending:
		return "pending"
	case StatusConfirmed:
		return "confirmed"
	case StatusPermanent:
		return "permanent"
	default:
		return "unknown"
	}
}
