// Package ocpp simulates standard charging stations speaking OCPP 1.6J or
// 2.0.1 over WebSocket to the gateway's central system, built on the
// charge-point side of lorenzodonini/ocpp-go.
//
// A Station boots (BootNotification), reports its connector
// (StatusNotification), sends Heartbeats at the interval the central system
// gave, and runs realistic sessions: a car plugs in (status
// Preparing/Occupied, and for 1.6 a connector meter value with the car's
// SoC), the driver presents an id tag, the transaction starts
// (1.6 StartTransaction / 2.0.1 TransactionEvent Started), meter values
// with energy register, power and SoC follow every MeterInterval, and the
// transaction stops at the car's target SoC. It answers RemoteStart/Stop
// (2.0.1 RequestStart/StopTransaction), ChangeAvailability and Reset.
//
// Identity: basic auth with username = station id and password = the
// device secret (security profiles 1 and 2), or a client certificate
// (profile 3) in Config.TLS.
package ocpp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lorenzodonini/ocpp-go/ws"
)

// Versions.
const (
	V16  = "1.6"
	V201 = "2.0.1"
)

// Defaults for zero Config fields.
const (
	DefaultURL           = "ws://127.0.0.1:8887/ocpp"
	DefaultChargeEvery   = 2 * time.Minute
	DefaultMeterInterval = 5 * time.Second
	DefaultRetry         = 2 * time.Second
)

// Errors.
var (
	ErrConfig = errors.New("ocpp sim: invalid config")
	ErrBusy   = errors.New("ocpp sim: connector busy")
)

// Config of one simulated station.
type Config struct {
	URL      string // central system URL without the station id (ws:// or wss://)
	ID       string // charge point id
	Version  string // V16 or V201
	Secret   string // basic-auth password (profiles 1 and 2); empty: none
	TLS      *tls.Config
	IDTags   []string // tags drivers present; a tag that is a VIN claims the vehicle (docs/ocpp.md)
	Seed     int64
	MaxPower float64 // station rating in W; 0: picked from 11/22/50/150 kW
	// ChargeEvery is the mean idle time between sessions (±25 %); negative:
	// no automatic sessions (only RemoteStart).
	ChargeEvery   time.Duration
	MeterInterval time.Duration
	ChargeSpeedup float64 // simulated charging seconds per wall-clock second
	Retry         time.Duration
	Now           func() time.Time
	Log           *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.URL == "" {
		c.URL = DefaultURL
	}
	if c.ID == "" || (c.Version != V16 && c.Version != V201) {
		return c, fmt.Errorf("%w: id %q version %q", ErrConfig, c.ID, c.Version)
	}
	if c.ChargeEvery == 0 {
		c.ChargeEvery = DefaultChargeEvery
	}
	if c.MeterInterval <= 0 {
		c.MeterInterval = DefaultMeterInterval
	}
	if c.ChargeSpeedup <= 0 {
		c.ChargeSpeedup = 1
	}
	if c.Retry <= 0 {
		c.Retry = DefaultRetry
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Stats of a station (read with Station.Stats).
type Stats struct {
	Connects, Boots, Sessions, Stopped, Requests, Failed, Commands int64
}

// session is the car on the connector.
type session struct {
	tx        string // transaction id (1.6: the central system's integer)
	idTag     string
	capWh     float64
	vehicleW  float64
	socPct    float64
	targetPct float64
	energyWh  float64 // delivered in this session
	powerW    float64
	seq       int // 2.0.1 seqNo
	last      time.Time
}

// command is a CSMS request handed from ocpp-go's goroutine to Run's loop.
type command struct {
	kind  string // start, stop, available, unavailable, reset
	idTag string
}

// driver is the version-specific side.
type driver interface {
	start(url string) error
	stop()
	boot() (time.Duration, error)
	heartbeat() error
	status(st connStatus, at time.Time) error
	plugged(s *session, at time.Time) error // 1.6: connector meter value with SoC
	startTx(s *session, register float64, at time.Time) error
	meter(s *session, register float64, at time.Time) error
	stopTx(s *session, register float64, at time.Time, reason string) error
}

type connStatus int

const (
	stAvailable connStatus = iota
	stPreparing
	stCharging
	stFinishing
	stUnavailable
)

// Station is one simulated charging station with one connector (1.6
// connector 1, 2.0.1 EVSE 1 connector 1).
type Station struct {
	cfg Config
	rng *rand.Rand // used by Run's goroutine only
	drv driver     // used by Run's goroutine only (replaced on Reset)
	up  bool       // drv was started and not yet stopped (Run's goroutine only)
	// mu guards sess, operative and register for the CSMS handlers.
	mu        sync.Mutex
	sess      *session
	operative bool
	register  float64 // energy meter register, Wh
	maxW      float64
	cmds      chan command
	stats     struct{ connects, boots, sessions, stopped, requests, failed, commands atomic.Int64 }
}

// New returns a station (not connected: call Run).
func New(cfg Config) (*Station, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Station{cfg: cfg, rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x0C99)), operative: true, cmds: make(chan command, 8)}
	s.register = math.Round(1e6 + s.rng.Float64()*5e6)
	s.maxW = cfg.MaxPower
	if s.maxW <= 0 {
		s.maxW = []float64{11e3, 22e3, 50e3, 150e3}[s.rng.IntN(4)]
	}
	s.drv = s.newDriver()
	return s, nil
}

// newDriver builds a fresh ocpp-go charge point (ocpp-go's clients are
// not restartable after Stop, so a reset builds a new one).
func (s *Station) newDriver() driver {
	var client *ws.Client
	if s.cfg.TLS != nil {
		client = ws.NewTLSClient(s.cfg.TLS)
	} else {
		client = ws.NewClient()
	}
	if s.cfg.Secret != "" {
		client.SetBasicAuth(s.cfg.ID, s.cfg.Secret)
	}
	if s.cfg.Version == V16 {
		return newDriver16(s, client)
	}
	return newDriver201(s, client)
}

// ID is the charge point id.
func (s *Station) ID() string { return s.cfg.ID }

// Stats returns the counters.
func (s *Station) Stats() Stats {
	return Stats{Connects: s.stats.connects.Load(), Boots: s.stats.boots.Load(), Sessions: s.stats.sessions.Load(),
		Stopped: s.stats.stopped.Load(), Requests: s.stats.requests.Load(), Failed: s.stats.failed.Load(),
		Commands: s.stats.commands.Load()}
}

// Charging reports the running transaction id ("" when idle).
func (s *Station) Charging() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess == nil {
		return ""
	}
	return s.sess.tx
}

// counted runs one request and counts it.
func (s *Station) counted(what string, err error) error {
	s.stats.requests.Add(1)
	if err != nil {
		s.stats.failed.Add(1)
		s.cfg.Log.Warn("OCPP request failed", "station", s.cfg.ID, "request", what, "err", err)
	}
	return err
}

// Run connects and simulates until ctx ends; a running session is stopped
// (reason Local) before it returns.
func (s *Station) Run(ctx context.Context) error {
	for {
		err := s.drv.start(s.cfg.URL)
		if err == nil {
			break
		}
		s.cfg.Log.Warn("OCPP connect failed", "station", s.cfg.ID, "err", err)
		s.drv = s.newDriver()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.cfg.Retry):
		}
	}
	s.stats.connects.Add(1)
	s.up = true
	defer func() {
		if s.up {
			s.drv.stop()
		}
	}()
	hbEvery := s.bootUntilAccepted(ctx)
	if ctx.Err() != nil {
		return nil
	}
	_ = s.counted("StatusNotification", s.drv.status(stAvailable, s.cfg.Now()))
	hb := time.NewTicker(hbEvery)
	defer hb.Stop()
	meter := time.NewTicker(s.cfg.MeterInterval)
	defer meter.Stop()
	plug := time.NewTimer(s.firstGap())
	defer plug.Stop()
	if s.cfg.ChargeEvery < 0 {
		plug.Stop()
	}
	for {
		select {
		case <-ctx.Done():
			s.finish("Local")
			return nil
		case <-hb.C:
			_ = s.counted("Heartbeat", s.drv.heartbeat())
		case <-plug.C:
			s.mu.Lock()
			idle := s.sess == nil && s.operative
			s.mu.Unlock()
			if idle {
				s.plugIn(s.pickTag())
			}
		case <-meter.C:
			if s.advance() {
				s.finish("EVDisconnected")
				if s.cfg.ChargeEvery > 0 {
					plug.Reset(s.gap())
				}
			}
		case c := <-s.cmds:
			s.handle(ctx, c)
		}
	}
}

func (s *Station) bootUntilAccepted(ctx context.Context) time.Duration {
	for {
		iv, err := s.drv.boot()
		if s.counted("BootNotification", err) == nil {
			s.stats.boots.Add(1)
			if iv <= 0 {
				iv = 5 * time.Minute
			}
			return iv
		}
		select {
		case <-ctx.Done():
			return time.Minute
		case <-time.After(s.cfg.Retry):
		}
	}
}

func (s *Station) firstGap() time.Duration {
	if s.cfg.ChargeEvery <= 0 {
		return time.Hour
	}
	return time.Duration(s.rng.Int64N(int64(s.cfg.ChargeEvery)/2 + 1))
}

func (s *Station) gap() time.Duration {
	return time.Duration(float64(s.cfg.ChargeEvery) * (0.75 + 0.5*s.rng.Float64()))
}

// pickTag: one of the configured tags (70 %) or an anonymous RFID card.
func (s *Station) pickTag() string {
	if len(s.cfg.IDTags) > 0 && s.rng.Float64() < 0.7 {
		return s.cfg.IDTags[s.rng.IntN(len(s.cfg.IDTags))]
	}
	return fmt.Sprintf("RFID%08X", s.rng.Uint32())
}

func (s *Station) handle(ctx context.Context, c command) {
	switch c.kind {
	case "start":
		s.plugIn(c.idTag)
	case "stop":
		s.finish("Remote")
	case "unavailable", "available":
		s.mu.Lock()
		s.operative = c.kind == "available"
		busy := s.sess != nil
		s.mu.Unlock()
		if !busy {
			st := stAvailable
			if c.kind == "unavailable" {
				st = stUnavailable
			}
			_ = s.counted("StatusNotification", s.drv.status(st, s.cfg.Now()))
		}
	case "reset":
		s.finish(c.idTag)                  // idTag carries the stop reason
		time.Sleep(200 * time.Millisecond) // let ocpp-go send the Reset answer first
		s.drv.stop()
		s.up = false
		s.drv = s.newDriver()
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.Retry):
		}
		for s.drv.start(s.cfg.URL) != nil {
			s.drv = s.newDriver()
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.cfg.Retry):
			}
		}
		s.up = true
		s.stats.connects.Add(1)
		s.bootUntilAccepted(ctx)
		_ = s.counted("StatusNotification", s.drv.status(stAvailable, s.cfg.Now()))
	}
}

// plugIn: a car arrives, the driver presents idTag, the transaction starts.
func (s *Station) plugIn(idTag string) {
	now := s.cfg.Now()
	ss := &session{
		idTag:     idTag,
		capWh:     (40 + 60*s.rng.Float64()) * 1e3,
		socPct:    math.Round(10 + 40*s.rng.Float64()),
		targetPct: []float64{80, 80, 90, 100}[s.rng.IntN(4)],
		last:      now,
	}
	ss.vehicleW = math.Min(s.maxW, []float64{11e3, 50e3, 100e3, 150e3}[s.rng.IntN(4)])
	ss.powerW = s.power(ss)
	s.mu.Lock()
	if s.sess != nil {
		s.mu.Unlock()
		return
	}
	s.sess = ss
	reg := s.register
	s.mu.Unlock()
	_ = s.counted("StatusNotification", s.drv.status(stPreparing, now))
	_ = s.counted("MeterValues", s.drv.plugged(ss, now))
	if err := s.counted("StartTransaction", s.drv.startTx(ss, reg, now)); err != nil {
		s.mu.Lock()
		s.sess = nil
		s.mu.Unlock()
		_ = s.counted("StatusNotification", s.drv.status(stAvailable, now))
		return
	}
	s.stats.sessions.Add(1)
	_ = s.counted("StatusNotification", s.drv.status(stCharging, now))
}

func (s *Station) power(ss *session) float64 {
	p := math.Min(s.maxW, ss.vehicleW)
	if ss.socPct > 80 {
		p *= math.Max((100-ss.socPct)/20, 0.1)
	}
	return p
}

// advance meters the session up to now and reports whether the target SoC
// has been reached.
func (s *Station) advance() bool {
	now := s.cfg.Now()
	s.mu.Lock()
	ss := s.sess
	if ss == nil {
		s.mu.Unlock()
		return false
	}
	total := now.Sub(ss.last).Seconds() * s.cfg.ChargeSpeedup
	ss.last = now
	for total > 0 && ss.socPct < ss.targetPct {
		h := math.Min(total, 10)
		total -= h
		ss.powerW = s.power(ss)
		wh := ss.powerW * h / 3600
		ss.energyWh += wh
		s.register += wh
		ss.socPct = math.Min(ss.socPct+wh*0.93/ss.capWh*100, 100)
	}
	done := ss.socPct >= ss.targetPct
	if done {
		ss.socPct, ss.powerW = ss.targetPct, 0
	}
	reg := s.register
	s.mu.Unlock()
	if !done {
		_ = s.counted("MeterValues", s.drv.meter(ss, reg, now))
	}
	return done
}

// finish stops the running transaction, if any, and frees the connector.
func (s *Station) finish(reason string) {
	s.mu.Lock()
	ss := s.sess
	s.sess = nil
	reg := s.register
	operative := s.operative
	s.mu.Unlock()
	if ss == nil {
		return
	}
	now := s.cfg.Now()
	if s.counted("StopTransaction", s.drv.stopTx(ss, reg, now, reason)) == nil {
		s.stats.stopped.Add(1)
	}
	_ = s.counted("StatusNotification", s.drv.status(stFinishing, now))
	st := stAvailable
	if !operative {
		st = stUnavailable
	}
	_ = s.counted("StatusNotification", s.drv.status(st, now))
}

// offer hands a CSMS command to Run's loop; it reports false when the
// loop is not taking commands.
func (s *Station) offer(c command) bool {
	s.stats.commands.Add(1)
	select {
	case s.cmds <- c:
		return true
	default:
		return false
	}
}

// canStart is what a RemoteStart is answered with.
func (s *Station) canStart() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sess == nil && s.operative
}

// running returns the running transaction id.
func (s *Station) running() string { return s.Charging() }

func trimTag(t string, n int) string {
	if len(t) > n {
		return t[:n]
	}
	return strings.TrimSpace(t)
}
