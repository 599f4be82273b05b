package sim

import (
	"fmt"
	"math"
	"time"

	"github.com/telegate/telegate/decoders/wire"
)

func sessionTopic(station string) string { return "chargers/" + station + "/session" }
func statusTopic(station string) string  { return "chargers/" + station + "/status" }

// chargerConnector is the connector number of the simulated single-outlet
// stations.
const chargerConnector = 1

// session is an ongoing charging session.
type session struct {
	id        string
	vin       string
	idTag     string
	capWh     float64 // vehicle battery capacity
	vehicleW  float64 // max power the vehicle accepts
	socPct    float64
	targetPct float64
	energyWh  float64
	powerW    float64
	last      time.Time
}

// chargerDev is one simulated charging station with one connector. It
// starts a session about every ChargeEvery, meters it every
// SessionInterval and stops at the target SoC.
type chargerDev struct {
	*device
	station  string
	ident    wire.Ident
	maxW     float64 // station power
	vins     []string
	status   uint8
	sess     *session
	sessions int

	seqSession, seqStatus uint64
}

// stationPowers are typical station ratings: AC 11/22 kW, DC 50/150 kW.
var stationPowers = []float64{11e3, 22e3, 50e3, 150e3}

func newCharger(f *Fleet, index int, station string, vins []string) *chargerDev {
	c := &chargerDev{
		device:  newDevice(f, station, KindCharger, index, f.cfg.Seed*1_000_033+int64(index)+7919),
		station: station,
		ident:   wire.Ident(station),
		vins:    vins,
		status:  wire.ConnectorAvailable,
	}
	c.maxW = stationPowers[c.rng.IntN(len(stationPowers))]
	return c
}

// gap returns the idle time before the next session: ChargeEvery ±25 %.
func (c *chargerDev) gap() time.Duration {
	every := float64(c.f.cfg.ChargeEvery)
	return time.Duration(every * (0.75 + 0.5*c.rng.Float64()))
}

func (c *chargerDev) run() {
	if err := c.connect(); err != nil {
		c.finish(false)
		return
	}
	cfg := &c.f.cfg
	start := time.NewTimer(time.Duration(c.rng.Int64N(int64(cfg.ChargeEvery) + 1)))
	defer start.Stop()
	meter := time.NewTicker(cfg.SessionInterval)
	defer meter.Stop()

loop:
	for {
		select {
		case <-c.f.stop:
			break loop
		case <-c.online:
			if !c.sendStatus() {
				break loop
			}
		case now := <-start.C:
			if !c.startSession(now) {
				break loop
			}
		case now := <-meter.C:
			if c.sess == nil {
				continue
			}
			done := c.advance(now)
			kind := wire.SessionUpdated
			if done {
				kind = wire.SessionStopped
			}
			if !c.sendSession(kind) {
				break loop
			}
			if done {
				c.sess = nil
				c.status = wire.ConnectorAvailable
				if !c.sendStatus() {
					break loop
				}
				start.Reset(c.gap())
			}
		}
	}
	c.finish(true)
}

// startSession plugs in a vehicle: one of the fleet's VINs with its Plug &
// Charge contract id as id tag, or an unknown RFID tag alone.
func (c *chargerDev) startSession(now time.Time) bool {
	c.sessions++
	c.f.stats.sessions.Add(1)
	s := &session{
		id:        fmt.Sprintf("%s-%d-%d", c.station, now.UnixMilli(), c.sessions),
		capWh:     (40 + 60*c.rng.Float64()) * 1e3,
		socPct:    math.Round(10 + 40*c.rng.Float64()),
		targetPct: []float64{80, 80, 90, 100}[c.rng.IntN(4)],
		last:      now,
	}
	s.vehicleW = math.Min(c.maxW, []float64{11e3, 50e3, 100e3, 150e3}[c.rng.IntN(4)])
	if len(c.vins) > 0 && c.rng.Float64() < 0.7 {
		s.vin = c.vins[c.rng.IntN(len(c.vins))]
		s.idTag = ContractID(c.f.cfg.FleetKey, s.vin) // Plug & Charge: the vehicle's contract id
	} else {
		s.idTag = fmt.Sprintf("RFID-%08X", c.rng.Uint32())
	}
	s.powerW = c.power(s)
	c.sess = s
	c.status = wire.ConnectorOccupied
	return c.sendStatus() && c.sendSession(wire.SessionStarted)
}

// power is the charging power at the session's SoC: the lower of station
// and vehicle limits, tapering above 80 %.
func (c *chargerDev) power(s *session) float64 {
	p := math.Min(c.maxW, s.vehicleW)
	if s.socPct > 80 {
		p *= math.Max((100-s.socPct)/20, 0.1)
	}
	return p
}

// advance meters the session up to now (in simulated time, ChargeSpeedup
// times faster) and reports whether the target SoC has been reached.
func (c *chargerDev) advance(now time.Time) bool {
	s := c.sess
	total := now.Sub(s.last).Seconds() * c.f.cfg.ChargeSpeedup
	s.last = now
	for total > 0 && s.socPct < s.targetPct {
		h := math.Min(total, 10)
		total -= h
		s.powerW = c.power(s)
		wh := s.powerW * h / 3600
		s.energyWh += wh
		s.socPct = math.Min(s.socPct+wh*0.93/s.capWh*100, 100)
	}
	if s.socPct >= s.targetPct {
		s.socPct = s.targetPct
		s.powerW = 0
		return true
	}
	return false
}

func (c *chargerDev) sendSession(kind uint8) bool {
	if !c.acquire() {
		return false
	}
	s := c.sess
	c.seqSession++
	return c.send(topicSession, sessionTopic(c.station), &wire.ChargingSession{
		Version:      wire.Version,
		Station:      c.ident,
		Seq:          c.seqSession,
		TimeMs:       time.Now().UnixMilli(),
		Kind:         kind,
		SessionID:    wire.Ident(s.id),
		Connector:    chargerConnector,
		IDTag:        wire.Ident(s.idTag),
		VIN:          wire.Ident(s.vin),
		EnergyWh:     round(s.energyWh, 1),
		PowerW:       round(s.powerW, 0),
		SoCPct:       round(s.socPct, 1),
		TargetSoCPct: s.targetPct,
	})
}

func (c *chargerDev) sendStatus() bool {
	if !c.acquire() {
		return false
	}
	c.seqStatus++
	return c.send(topicStatus, statusTopic(c.station), &wire.ChargerStatus{
		Version:   wire.Version,
		Station:   c.ident,
		Seq:       c.seqStatus,
		TimeMs:    time.Now().UnixMilli(),
		Connector: chargerConnector,
		Status:    c.status,
	})
}
