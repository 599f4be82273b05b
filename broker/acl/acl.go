// Package acl decides which MQTT topics a device may publish to and which
// topic filters it may subscribe to.
//
// The rules are deliberately small and closed: a device may only use its own
// subtree, and only the leaves listed below. Everything else is denied.
//
//	vehicle {vin}:     publish   vehicles/{vin}/telemetry
//	                             vehicles/{vin}/diag
//	                             vehicles/{vin}/events
//	                             vehicles/{vin}/cmd-ack
//	                   subscribe vehicles/{vin}/cmd/<filter>
//	charger {station}: publish   chargers/{station}/session
//	                             chargers/{station}/status
//	                   subscribe chargers/{station}/cmd/<filter>
//
// Matching is segment-exact: identities are validated (see ValidID) so they
// can never contain '/', '+', '#' or NUL, and topics are compared whole, so an
// identity "ABC" never matches a topic under "vehicles/ABCD/". The package has
// no dependency on the broker and is safe for concurrent use.
package acl

import "strings"

// Device kinds.
const (
	KindVehicle = "vehicle"
	KindCharger = "charger"
)

// Limits on identities and subscription filters.
const (
	// VINLength is the length of a vehicle identification number (ISO 3779).
	VINLength = 17
	// MaxStationIDLength is the longest accepted charger station id.
	MaxStationIDLength = 64
	// MaxFilterDepth is the largest number of levels a device may put below
	// its cmd/ root in a subscription filter.
	MaxFilterDepth = 8
)

var (
	vehiclePublish = []string{"telemetry", "diag", "events", "cmd-ack"}
	chargerPublish = []string{"session", "status"}
)

// ValidKind reports whether kind is a known device kind.
func ValidKind(kind string) bool {
	return kind == KindVehicle || kind == KindCharger
}

// ValidID reports whether id is a well-formed identity for a device of the
// given kind. A vehicle id is a VIN: 17 characters from 0-9 and A-Z without
// I, O and Q. A charger id is 1 to 64 characters from A-Z, a-z, 0-9, '.', '_'
// and '-'. Neither can contain a topic separator, a wildcard or NUL.
func ValidID(kind, id string) bool {
	switch kind {
	case KindVehicle:
		if len(id) != VINLength {
			return false
		}
		for i := 0; i < len(id); i++ {
			c := id[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'A' && c <= 'Z' && c != 'I' && c != 'O' && c != 'Q':
			default:
				return false
			}
		}
		return true
	case KindCharger:
		if len(id) == 0 || len(id) > MaxStationIDLength {
			return false
		}
		for i := 0; i < len(id); i++ {
			c := id[i]
			switch {
			case c >= '0' && c <= '9', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
			case c == '.' || c == '_' || c == '-':
			default:
				return false
			}
		}
		return true
	default:
		return false
	}
}

// Root returns the topic root of a device ("vehicles/{id}" or
// "chargers/{id}"), or "" when kind or id is invalid.
func Root(kind, id string) string {
	if !ValidID(kind, id) {
		return ""
	}
	switch kind {
	case KindVehicle:
		return "vehicles/" + id
	case KindCharger:
		return "chargers/" + id
	}
	return ""
}

// CommandRoot returns the prefix, without the trailing slash, under which
// cloud-to-device commands for the device are published
// ("vehicles/{id}/cmd"), or "" when kind or id is invalid.
func CommandRoot(kind, id string) string {
	root := Root(kind, id)
	if root == "" {
		return ""
	}
	return root + "/cmd"
}

// CanPublish reports whether a device of the given kind and id may publish
// to topic. Only the exact topics listed in the package documentation are
// allowed; wildcards, $-topics and anything outside the device's own
// subtree are denied.
func CanPublish(kind, id, topic string) bool {
	// Root(kind, id) + "/", compared piecewise: no allocation per publish.
	var base string
	allowed := vehiclePublish
	switch kind {
	case KindVehicle:
		base = "vehicles/"
	case KindCharger:
		base, allowed = "chargers/", chargerPublish
	default:
		return false
	}
	if !ValidID(kind, id) {
		return false
	}
	n := len(base) + len(id)
	if len(topic) <= n+1 || topic[:len(base)] != base || topic[len(base):n] != id || topic[n] != '/' {
		return false
	}
	leaf := topic[n+1:]
	for _, a := range allowed {
		if leaf == a {
			return true
		}
	}
	return false
}

// CanSubscribe reports whether a device of the given kind and id may
// subscribe to filter. The filter must lie strictly inside the device's
// command subtree ("vehicles/{id}/cmd/..." or "chargers/{id}/cmd/..."); '+'
// and '#' are allowed there only as whole levels ('#' only last), empty
// levels, NUL and more than MaxFilterDepth levels are denied. Shared
// subscriptions ($share/...) and $SYS are denied because they are outside
// the subtree.
//
// The same rule is used to check delivery of a concrete topic to a
// subscriber, which is why a concrete topic inside the subtree is allowed.
func CanSubscribe(kind, id, filter string) bool {
	prefix := CommandRoot(kind, id)
	if prefix == "" || len(filter) <= len(prefix)+1 {
		return false
	}
	if filter[:len(prefix)] != prefix || filter[len(prefix)] != '/' {
		return false
	}
	rest := filter[len(prefix)+1:]
	if strings.IndexByte(rest, 0) >= 0 {
		return false
	}
	levels := strings.Split(rest, "/")
	if len(levels) > MaxFilterDepth {
		return false
	}
	for i, lv := range levels {
		switch {
		case lv == "":
			return false
		case lv == "#":
			if i != len(levels)-1 {
				return false
			}
		case lv == "+":
		case strings.ContainsAny(lv, "+#"):
			return false
		}
	}
	return true
}
