// Package sim simulates a fleet of connected cars and EV chargers talking
// MQTT 3.1.1 to the telematics gateway.
//
// Each vehicle is an MQTT client (client id = username = VIN, password =
// Secret(FleetKey, VIN)) driving the NEDC with a drivecycle.Vehicle model. It
// publishes MessagePack telemetry frames, diagnostics snapshots and lifecycle
// events under vehicles/{vin}/, subscribes to vehicles/{vin}/cmd/# and acks
// commands on vehicles/{vin}/cmd-ack. Each charger (client id = station id)
// publishes charging sessions and connector status under chargers/{station}/.
//
// Devices apply back-pressure: a device never has more than
// Config.InflightPerDevice unacknowledged QoS 1 publishes; it waits for
// PUBACKs before publishing more. Fleet.Summary reports counts, rates and
// publish-to-PUBACK latency percentiles.
package sim

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Errors returned by this package.
var (
	// ErrInvalidConfig wraps every configuration validation failure.
	ErrInvalidConfig = errors.New("sim: invalid config")
	// ErrNoFleetKey is returned when Config.FleetKey is empty.
	ErrNoFleetKey = errors.New("sim: fleet key is required")
	// ErrClosed is returned by Run after Close.
	ErrClosed = errors.New("sim: fleet closed")
	// ErrAlreadyRun is returned by a second call to Run.
	ErrAlreadyRun = errors.New("sim: fleet already run")
	// ErrUnacked is returned by Run when publishes were still
	// unacknowledged when the drain timeout expired.
	ErrUnacked = errors.New("sim: publishes left unacknowledged")
)

// Defaults applied by New for zero Config fields.
const (
	DefaultBroker            = "tcp://127.0.0.1:1883"
	DefaultVINPrefix         = "TGSVS"
	DefaultStationPrefix     = "CS"
	DefaultTelemetryInterval = time.Second
	DefaultDiagInterval      = 30 * time.Second
	DefaultQoS               = 1
	DefaultConnectRate       = 200
	DefaultInflightPerDevice = 16
	DefaultChargeEvery       = 2 * time.Minute
	DefaultSessionInterval   = 5 * time.Second
	DefaultDrainTimeout      = 10 * time.Second
	DefaultConnectTimeout    = 10 * time.Second
	DefaultMaxReconnect      = 10 * time.Second
	DefaultReconnectJitter   = 500 * time.Millisecond
)

// VINLength is the length of a vehicle identification number.
const VINLength = 17

// Config configures a Fleet. Zero fields take the defaults above.
type Config struct {
	Broker string // broker URL: tcp://, ssl://, ws://, wss://; default DefaultBroker
	// Brokers lists several gateway replicas. Each device tries them in its
	// own order (BrokerOrder), so a fleet spreads over the replicas and a
	// device whose replica fails moves to the next one. Broker, if set and
	// not listed, comes first; after withDefaults Brokers holds the full
	// list and Broker its first entry.
	Brokers       []string
	Vehicles      int    // number of vehicles
	Chargers      int    // number of charging stations
	VINPrefix     string // VINs are VINPrefix + zero-padded index to 17 characters
	StationPrefix string // station ids are StationPrefix-0001, ...
	FleetKey      string // device secret = hex(HMAC-SHA256(FleetKey, id)); required

	TelemetryInterval time.Duration // per vehicle; default 1 s
	DiagInterval      time.Duration // per vehicle; default 30 s
	SignalsPerFrame   int           // 0 = all 36 model signals; fewer rotate through the set
	QoS               byte          // 0 or 1; default 1 (set QoSZero to get 0)
	QoSZero           bool          // publish with QoS 0 (QoS is ignored)

	Duration time.Duration // stop after this long; 0 = until ctx is cancelled
	Frames   int           // stop after this many telemetry frames in total; 0 = unlimited
	Seed     int64         // seeds vehicle models, DTCs, sessions (deterministic per seed)

	DTCProbability float64       // per diag report, chance to raise a new DTC
	ChargeEvery    time.Duration // mean idle time between a charger's sessions; default 2 min
	// SessionInterval is the period of charging session meter updates;
	// default 5 s.
	SessionInterval time.Duration
	// ChargeSpeedup multiplies simulated charging time (energy, SoC) per
	// wall-clock second; default 1 (real time).
	ChargeSpeedup float64
	// TimeScale multiplies simulated driving time per wall-clock second;
	// default 1 (real time).
	TimeScale float64

	// RefuseCommands lists command names the vehicles answer with
	// wire.AckRejected.
	RefuseCommands []string
	// RefuseProbability is the chance that a vehicle rejects any command.
	RefuseProbability float64
	// ShareLocation adds the position to ignition events and emits a
	// location event when a vehicle parks (drivers consented).
	ShareLocation bool

	ConnectRate       int           // max new connections per second; default 200
	InflightPerDevice int           // max unacked QoS 1 publishes per device; default 16
	ConnectTimeout    time.Duration // default 10 s
	MaxReconnect      time.Duration // max reconnect backoff; default 10 s
	// ReconnectJitter bounds the random delay a device waits before each
	// reconnection attempt, so that the devices of a failed replica do not
	// all reach the survivors at once; default 500 ms; negative = none.
	ReconnectJitter time.Duration
	DrainTimeout    time.Duration // bound on waiting for outstanding acks at the end; default 10 s
	TLS             *tls.Config   // for ssl:// and wss:// brokers; nil = system defaults

	Progress func(Summary) // called about once per second while running, if set
	Logger   *slog.Logger  // default slog.Default()
}

// qos returns the effective QoS level.
func (c *Config) qos() byte {
	if c.QoSZero {
		return 0
	}
	return c.QoS
}

// withDefaults returns a copy of c with defaults applied and validates it.
func (c Config) withDefaults() (Config, error) {
	c.Brokers = brokerList(c.Broker, c.Brokers)
	c.Broker = c.Brokers[0]
	if c.VINPrefix == "" {
		c.VINPrefix = DefaultVINPrefix
	}
	if c.StationPrefix == "" {
		c.StationPrefix = DefaultStationPrefix
	}
	setDur := func(d *time.Duration, def time.Duration) {
		if *d == 0 {
			*d = def
		}
	}
	setDur(&c.TelemetryInterval, DefaultTelemetryInterval)
	setDur(&c.DiagInterval, DefaultDiagInterval)
	setDur(&c.ChargeEvery, DefaultChargeEvery)
	setDur(&c.SessionInterval, DefaultSessionInterval)
	setDur(&c.DrainTimeout, DefaultDrainTimeout)
	setDur(&c.ConnectTimeout, DefaultConnectTimeout)
	setDur(&c.MaxReconnect, DefaultMaxReconnect)
	setDur(&c.ReconnectJitter, DefaultReconnectJitter)
	if c.ReconnectJitter < 0 {
		c.ReconnectJitter = 0
	}
	if c.SignalsPerFrame == 0 {
		c.SignalsPerFrame = len(signalTable)
	}
	if c.QoS == 0 && !c.QoSZero {
		c.QoS = DefaultQoS
	}
	if c.ChargeSpeedup == 0 {
		c.ChargeSpeedup = 1
	}
	if c.TimeScale == 0 {
		c.TimeScale = 1
	}
	if c.ConnectRate == 0 {
		c.ConnectRate = DefaultConnectRate
	}
	if c.InflightPerDevice == 0 {
		c.InflightPerDevice = DefaultInflightPerDevice
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, c.validate()
}

func (c *Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	for _, b := range c.Brokers {
		if !strings.Contains(b, "://") {
			return bad("broker %q: want a URL such as tcp://host:port", b)
		}
	}
	switch {
	case c.FleetKey == "":
		return ErrNoFleetKey
	case c.Vehicles < 0 || c.Chargers < 0:
		return bad("negative device count")
	case c.Vehicles+c.Chargers == 0:
		return bad("no vehicles or chargers")
	case !validIDPart(c.VINPrefix) || strings.ContainsAny(c.VINPrefix, "-_") || len(c.VINPrefix) >= VINLength:
		return bad("VIN prefix %q: want 1..16 letters or digits", c.VINPrefix)
	case c.Vehicles > 0 && len(fmt.Sprint(c.Vehicles)) > VINLength-len(c.VINPrefix):
		return bad("%d vehicles do not fit in %d VIN digits", c.Vehicles, VINLength-len(c.VINPrefix))
	case !validIDPart(c.StationPrefix) || len(c.StationPrefix) > 40:
		return bad("station prefix %q: want 1..40 letters, digits, '-' or '_'", c.StationPrefix)
	case c.TelemetryInterval < 0 || c.DiagInterval < 0 || c.ChargeEvery < 0 || c.SessionInterval < 0:
		return bad("negative interval")
	case c.SignalsPerFrame < 1 || c.SignalsPerFrame > len(signalTable):
		return bad("signals per frame %d: want 1..%d", c.SignalsPerFrame, len(signalTable))
	case c.qos() > 1:
		return bad("QoS %d: want 0 or 1", c.QoS)
	case c.Duration < 0 || c.Frames < 0:
		return bad("negative duration or frame count")
	case !(c.DTCProbability >= 0 && c.DTCProbability <= 1):
		return bad("DTC probability %v: want 0..1", c.DTCProbability)
	case !(c.RefuseProbability >= 0 && c.RefuseProbability <= 1):
		return bad("refuse probability %v: want 0..1", c.RefuseProbability)
	case !(c.ChargeSpeedup > 0) || !(c.TimeScale > 0):
		return bad("charge speedup and time scale must be positive")
	case c.ConnectRate < 0 || c.InflightPerDevice < 0:
		return bad("negative connect rate or inflight limit")
	case c.InflightPerDevice > 65535:
		return bad("inflight limit %d exceeds the MQTT packet id space", c.InflightPerDevice)
	case c.DrainTimeout < 0 || c.ConnectTimeout < 0 || c.MaxReconnect < 0:
		return bad("negative timeout")
	}
	return nil
}

// brokerList merges Broker and Brokers into one list without empty or
// repeated entries: broker first if set; DefaultBroker if both are empty.
// It never modifies brokers.
func brokerList(broker string, brokers []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, b := range append([]string{broker}, brokers...) {
		if b = strings.TrimSpace(b); b != "" && !seen[b] {
			seen[b] = true
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		out = []string{DefaultBroker}
	}
	return out
}

// BrokerOrder returns the order in which device number index (0-based,
// vehicles and chargers counted separately) tries brokers: the list
// rotated so that devices start evenly on every replica, and the
// remaining replicas rotated again by index/len(brokers), so that the
// devices of one failed replica spread evenly over the survivors instead
// of all moving to the next one. A device keeps the replica it reached
// until that connection is lost; paho tries the list from the start on
// every reconnection attempt.
func BrokerOrder(brokers []string, index int) []string {
	n := len(brokers)
	if n <= 1 {
		return append([]string(nil), brokers...)
	}
	first := index % n
	out := make([]string, 0, n)
	out = append(out, brokers[first])
	rest := n - 1
	shift := (index / n) % rest
	for i := 0; i < rest; i++ {
		out = append(out, brokers[(first+1+(i+shift)%rest)%n])
	}
	return out
}

// validIDPart reports whether s is non-empty and uses only characters that
// are safe in MQTT topic levels and client ids.
func validIDPart(s string) bool {
	return s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}) < 0
}
