package wire

import (
	"errors"
	"fmt"

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
		return fmt.Errorf("%w: empty payload", ErrNotTuple)
	}
	if msgp.NextType(b) != msgp.ArrayType {
		return ErrNotTuple
	}
	n, o, err := msgp.ReadArrayHeaderBytes(b)
	if err != nil {
		return fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: empty tuple", ErrUnsupportedVersion)
	}
	v, _, err := msgp.ReadUint8Bytes(o)
	if err != nil {
		if errors.Is(err, msgp.ErrShortBytes) {
			return fmt.Errorf("%w: version: %w", ErrMalformed, err)
		}
		// A version that is not a small unsigned integer cannot be ours.
		return fmt.Errorf("%w: version: %w", ErrUnsupportedVersion, err)
	}
	if v != Version {
		return fmt.Errorf("%w: %d", ErrUnsupportedVersion, v)
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
		return classify(err)
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d bytes", ErrTrailingBytes, len(rest))
	}
	return nil
}

// classify wraps an error from a generated or hand-written UnmarshalMsg.
func classify(err error) error {
	switch {
	case errors.Is(err, ErrIdentTooLong), errors.Is(err, ErrNonFinite):
		return fmt.Errorf("wire: decode: %w", err)
	case errors.Is(err, msgp.ErrLimitExceeded):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	default:
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
}

func invalid(field string, v any) error {
	return fmt.Errorf("%w: %s = %v", ErrInvalidValue, field, v)
}

func nonFinite(field string, v float64) error {
	return fmt.Errorf("%w: %s = %v", ErrNonFinite, field, v)
}

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
		return nonFinite("odometer_km", d.OdometerKm)
	}
	if d.OdometerKm < 0 {
		return invalid("odometer_km", d.OdometerKm)
	}
	for i := range d.DTCs {
		if s := d.DTCs[i].Status; s < DTCPending || s > DTCPermanent {
			return invalid("dtc status", s)
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
		return invalid("kind", e.Kind)
	}
	if !finite(e.Lat) {
		return nonFinite("lat", e.Lat)
	}
	if !finite(e.Lon) {
		return nonFinite("lon", e.Lon)
	}
	if e.HasPosition && (e.Lat < -90 || e.Lat > 90 || e.Lon < -180 || e.Lon > 180) {
		return invalid("position", [2]float64{e.Lat, e.Lon})
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
		return invalid("kind", s.Kind)
	}
	for _, f := range [...]struct {
		name string
		v    float64
	}{{"energy_wh", s.EnergyWh}, {"power_w", s.PowerW}, {"soc_pct", s.SoCPct}, {"target_soc_pct", s.TargetSoCPct}} {
		if !finite(f.v) {
			return nonFinite(f.name, f.v)
		}
	}
	if s.EnergyWh < 0 {
		return invalid("energy_wh", s.EnergyWh)
	}
	if s.SoCPct < 0 || s.SoCPct > 100 {
		return invalid("soc_pct", s.SoCPct)
	}
	if s.TargetSoCPct < 0 || s.TargetSoCPct > 100 {
		return invalid("target_soc_pct", s.TargetSoCPct)
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
		return invalid("status", s.Status)
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
		return invalid("cmd_id", `""`)
	}
	if c.Name == "" {
		return invalid("name", `""`)
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
		return invalid("cmd_id", `""`)
	}
	if a.Status < AckApplied || a.Status > AckFailed {
		return invalid("status", a.Status)
	}
	return nil
}
