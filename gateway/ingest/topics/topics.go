// Package topics maps MQTT topic names to the ingest classes of the device
// protocol (docs/protocol.md). Parsing is allocation-free: returned ids are
// substrings of the topic.
package topics

import "strings"

// Class of an ingest topic.
type Class uint8

// Ingest classes. ClassNone is anything the gateway does not ingest.
const (
	ClassNone Class = iota
	ClassTelemetry
	ClassDiag
	ClassEvents
	ClassCmdAck
	ClassSession
	ClassStatus
	// NumClasses bounds the class values (for arrays indexed by Class).
	NumClasses
)

var classNames = [NumClasses]string{"none", "telemetry", "diag", "events", "cmd_ack", "session", "status"}

// String is the metric label / documentation name of the class.
func (c Class) String() string {
	if c >= NumClasses {
		return "none"
	}
	return classNames[c]
}

// Classes lists the ingest classes (for pre-creating metric series).
func Classes() []Class {
	return []Class{ClassTelemetry, ClassDiag, ClassEvents, ClassCmdAck, ClassSession, ClassStatus}
}

// Parse splits "vehicles/{vin}/telemetry" style topics. ok is false for any
// other shape (extra levels, empty id, unknown leaf).
func Parse(topic string) (c Class, id string, ok bool) {
	root, rest, found := strings.Cut(topic, "/")
	if !found {
		return ClassNone, "", false
	}
	id, leaf, found := strings.Cut(rest, "/")
	if !found || id == "" || strings.IndexByte(leaf, '/') >= 0 {
		return ClassNone, "", false
	}
	switch root {
	case "vehicles":
		switch leaf {
		case "telemetry":
			return ClassTelemetry, id, true
		case "diag":
			return ClassDiag, id, true
		case "events":
			return ClassEvents, id, true
		case "cmd-ack":
			return ClassCmdAck, id, true
		}
	case "chargers":
		switch leaf {
		case "session":
			return ClassSession, id, true
		case "status":
			return ClassStatus, id, true
		}
	}
	return ClassNone, "", false
}

// Command is the topic on which the cloud sends command name to a vehicle.
func Command(vin, name string) string { return "vehicles/" + vin + "/cmd/" + name }
