package wire

import (
	"fmt"

	"github.com/tinylib/msgp/msgp"
)

// checkVersion peeks at the tuple header and the version element without
// consuming anything, so a payload from a future schema is rejected with a
// typed error instead of a confusing field-level decode error.
func checkVersion(b []byte) error {
	if msgp.NextType(b) != msgp.ArrayType {
		return ErrNotTuple
	}
	n, o, err := msgp.ReadArrayHeaderBytes(b)
	if err != nil {
		return fmt.Errorf("wire: header: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("wire: empty tuple: %w", ErrUnsupportedVersion)
	}
	v, _, err := msgp.ReadUint8Bytes(o)
	if err != nil {
		return fmt.Errorf("wire: version: %w", err)
	}
	if v != Version {
		return fmt.Errorf("%w: %d", ErrUnsupportedVersion, v)
	}
	return nil
}

type unmarshaler interface {
	UnmarshalMsg([]byte) ([]byte, error)
}

func decode(b []byte, v unmarshaler) error {
	if err := checkVersion(b); err != nil {
		return err
	}
	rest, err := v.UnmarshalMsg(b)
	if err != nil {
		return fmt.Errorf("wire: decode: %w", err)
	}
	if len(rest) != 0 {
		return ErrTrailingBytes
	}
	return nil
}

// DecodeTelemetry decodes b into f, reusing f's buffers. It allocates nothing
// once f has grown to the frame's size. f is left partially filled on error.
func DecodeTelemetry(b []byte, f *TelemetryFrame) error { return decode(b, f) }

// DecodeDiag decodes a diagnostics report into d, reusing d's buffers.
func DecodeDiag(b []byte, d *DiagReport) error { return decode(b, d) }

// DecodeVehicleEvent decodes a vehicle lifecycle event into e.
func DecodeVehicleEvent(b []byte, e *VehicleEvent) error { return decode(b, e) }

// DecodeChargingSession decodes a charging session event into s.
func DecodeChargingSession(b []byte, s *ChargingSession) error { return decode(b, s) }

// DecodeChargerStatus decodes a connector status update into s.
func DecodeChargerStatus(b []byte, s *ChargerStatus) error { return decode(b, s) }

// DecodeCommand decodes a cloud-to-vehicle command into c (allocates strings).
func DecodeCommand(b []byte, c *Command) error { return decode(b, c) }

// DecodeCommandAck decodes a command acknowledgement into a (allocates strings).
func DecodeCommandAck(b []byte, a *CommandAck) error { return decode(b, a) }
