package wire

import (
	"errors"
	"strconv"

	"github.com/tinylib/msgp/msgp"
)

// checkVersion inspects the tuple header and the version element without
// consuming anything, so a payload from a future schema is rejected with a
// typed error instead of a confusing field-level decode error.
func checkVersion(b []byte) error {
	// Fast path: fixarray with at least one element whose first element is
	// the positive fixint Version. This is what every encoder emits.
	if len(b) >= 2 && b[0] > 0x90 && b[0] <= 0x9f && b[1] == Version {
		return nil
	}
	if len(b) == 0 {
		return fail(ErrNotTuple, "empty payload", nil)
	}
	if t := msgp.NextType(b); t != msgp.ArrayType {
		return fail(ErrNotTuple, "the payload is a MessagePack "+typeName(t)+", not an array", nil)
	}
	n, o, err := msgp.ReadArrayHeaderBytes(b)
	if err != nil {
		return fail(ErrMalformed, "array header truncated", err)
	}
	if n == 0 {
		return fail(ErrUnsupportedVersion, "empty tuple: element 0 (version) missing", nil)
	}
	v, _, err := msgp.ReadUint8Bytes(o)
	if err != nil {
		if errors.Is(err, msgp.ErrShortBytes) {
			return fail(ErrMalformed, "element 0 (version): payload truncated", err)
		}
		// A version that is not a small unsigned integer cannot be ours.
		return fail(ErrUnsupportedVersion, "element 0 (version) is not an unsigned integer below 256", err)
	}
	if v != Version {
		return fail(ErrUnsupportedVersion, "element 0 (version) is "+strconv.Itoa(int(v))+"; this gateway understands "+
			strconv.Itoa(int(Version)), nil)
	}
	return nil
}

type unmarshaler interface {
	UnmarshalMsg([]byte) ([]byte, error)
}

// decode runs the version check and the generated decoder, and classifies
// errors under the package's sentinel values.
func decode(b []byte, v unmarshaler) error {
	if err := checkVersion(b); err != nil {
		return err
	}
	rest, err := v.UnmarshalMsg(b)
	if err != nil {
		return classify(v, b, err)
	}
	if len(rest) != 0 {
		return fail(ErrTrailingBytes, strconv.Itoa(len(rest))+" bytes after the tuple", nil)
	}
	return nil
}

// invalid reports a value outside its element's documented domain; detail
// names the element (element(...)) and the rule, with at most the offending
// number (never a position or an identifier).
func invalid(at, rule string) error { return fail(ErrInvalidValue, at+": "+rule, nil) }

func nonFinite(at string) error {
	return fail(ErrNonFinite, at+": NaN or ±Infinity", nil)
}

func u8(v uint8) string { return strconv.Itoa(int(v)) }

// DecodeTelemetry decodes b into f, reusing f's buffers. It allocates nothing
// once f has grown to the frame's size. f is left partially filled on error.
// Signal values must be finite; ids and ranges are not checked here (see
// decoders/catalog).
func DecodeTelemetry(b []byte, f *TelemetryFrame) error { return decode(b, f) }

// DecodeDiag decodes a diagnostics report into d, reusing d's buffers. DTC
// statuses must be DTCPending, DTCConfirmed or DTCPermanent and the odometer
// finite and non-negative.
func DecodeDiag(b []byte, d *DiagReport) error {
	if err := decode(b, d); err != nil {
		return err
	}
	if !finite(d.OdometerKm) {
		return nonFinite(element(d, "OdometerKm"))
	}
	if d.OdometerKm < 0 {
		return invalid(element(d, "OdometerKm"), "negative")
	}
	for i := range d.DTCs {
		if s := d.DTCs[i].Status; s < DTCPending || s > DTCPermanent {
			return invalid(element(d, "DTCs", strconv.Itoa(i), "Status"), "is "+u8(s)+", not 1, 2 or 3")
		}
	}
	return nil
}

// DecodeVehicleEvent decodes a vehicle lifecycle event into e. Kind must be
// one of the Event constants; Lat and Lon must be finite and, when
// HasPosition is set, within ±90 and ±180 degrees.
func DecodeVehicleEvent(b []byte, e *VehicleEvent) error {
	if err := decode(b, e); err != nil {
		return err
	}
	if e.Kind < EventIgnitionOn || e.Kind > EventLocation {
		return invalid(element(e, "Kind"), "is "+u8(e.Kind)+", not 1..5")
	}
	if !finite(e.Lat) {
		return nonFinite(element(e, "Lat"))
	}
	if !finite(e.Lon) {
		return nonFinite(element(e, "Lon"))
	}
	// The detail never carries the coordinates: they are personal data.
	if e.HasPosition && (e.Lat < -90 || e.Lat > 90) {
		return invalid(element(e, "Lat"), "outside -90..90 while has_position is true")
	}
	if e.HasPosition && (e.Lon < -180 || e.Lon > 180) {
		return invalid(element(e, "Lon"), "outside -180..180 while has_position is true")
	}
	return nil
}

// DecodeChargingSession decodes a charging session event into s. Kind must be
// one of the Session constants; all floats finite, EnergyWh non-negative,
// SoCPct and TargetSoCPct within 0..100 (PowerW may be negative: vehicle to
// grid).
func DecodeChargingSession(b []byte, s *ChargingSession) error {
	if err := decode(b, s); err != nil {
		return err
	}
	if s.Kind < SessionStarted || s.Kind > SessionStopped {
		return invalid(element(s, "Kind"), "is "+u8(s.Kind)+", not 1, 2 or 3")
	}
	for _, f := range [...]struct {
		name string
		v    float64
	}{{"EnergyWh", s.EnergyWh}, {"PowerW", s.PowerW}, {"SoCPct", s.SoCPct}, {"TargetSoCPct", s.TargetSoCPct}} {
		if !finite(f.v) {
			return nonFinite(element(s, f.name))
		}
	}
	if s.EnergyWh < 0 {
		return invalid(element(s, "EnergyWh"), "negative")
	}
	if s.SoCPct < 0 || s.SoCPct > 100 {
		return invalid(element(s, "SoCPct"), "outside 0..100")
	}
	if s.TargetSoCPct < 0 || s.TargetSoCPct > 100 {
		return invalid(element(s, "TargetSoCPct"), "outside 0..100")
	}
	return nil
}

// DecodeChargerStatus decodes a connector status update into s. Status must
// be one of the Connector constants.
func DecodeChargerStatus(b []byte, s *ChargerStatus) error {
	if err := decode(b, s); err != nil {
		return err
	}
	if s.Status < ConnectorAvailable || s.Status > ConnectorUnavailable {
		return invalid(element(s, "Status"), "is "+u8(s.Status)+", not 1..4")
	}
	return nil
}

// DecodeCommand decodes a cloud-to-vehicle command into c (allocates
// strings). CmdID and Name must not be empty.
func DecodeCommand(b []byte, c *Command) error {
	if err := decode(b, c); err != nil {
		return err
	}
	if c.CmdID == "" {
		return invalid(element(c, "CmdID"), "empty")
	}
	if c.Name == "" {
		return invalid(element(c, "Name"), "empty")
	}
	return nil
}

// DecodeCommandAck decodes a command acknowledgement into a (allocates
// strings). CmdID must not be empty and Status must be one of the Ack
// constants.
func DecodeCommandAck(b []byte, a *CommandAck) error {
	if err := decode(b, a); err != nil {
		return err
	}
	if a.CmdID == "" {
		return invalid(element(a, "CmdID"), "empty")
	}
	if a.Status < AckApplied || a.Status > AckFailed {
		return invalid(element(a, "Status"), "is "+u8(a.Status)+", not 1, 2 or 3")
	}
	return nil
}
