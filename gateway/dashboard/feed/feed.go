// Package feed keeps the dashboard's fleet state current: it loads the
// state from InfluxDB at start (last connectivity, last diagnostics report,
// DTC first/last seen, last telemetry per vehicle), then follows NATS
// JetStream (DTC raised/updated/cleared, vehicle connectivity, commands
// sent by the dashboard or requested by the services, and acks) with ordered consumers that start a little before the load, and
// the in-process live hub for telemetry. Ordered consumers are ephemeral,
// so any number of gateway replicas can each keep their own projection.
package feed

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/dashboard/fleetstate"
	"github.com/telegate/telegate/gateway/dashboard/history"
	"github.com/telegate/telegate/gateway/dashboard/remotecmd"
	"github.com/telegate/telegate/gateway/sink/live"
)

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("feed: closed")

// Config configures a Feed.
type Config struct {
	// Lookback is how far back the initial load looks.
	Lookback time.Duration
	// Overlap: the NATS consumers start this long before the load began,
	// so nothing between the load and the subscription is missed (events
	// are applied idempotently, ordered by their own timestamps).
	Overlap time.Duration
	// RefreshEvery re-reads DTC last-seen times from InfluxDB (events only
	// mark changes; every report carrying a code is a `dtc` point).
	RefreshEvery time.Duration
}

// Feed feeds a fleet state.
type Feed struct {
	cfg   Config
	st    *fleetstate.State
	hist  *history.Store
	js    jetstream.JetStream
	hub   *live.Hub
	cmds  *remotecmd.Log
	log   *slog.Logger
	ready atomic.Bool

	mu      sync.Mutex
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closed  bool
	stops   []jetstream.ConsumeContext
	applied atomic.Uint64
}

// New returns a feed; Start starts it.
func New(cfg Config, st *fleetstate.State, hist *history.Store, js jetstream.JetStream, hub *live.Hub, cmds *remotecmd.Log, log *slog.Logger) *Feed {
	if cfg.Lookback <= 0 {
		cfg.Lookback = 30 * 24 * time.Hour
	}
	if cfg.Overlap <= 0 {
		cfg.Overlap = 2 * time.Minute
	}
	if cfg.RefreshEvery <= 0 {
		cfg.RefreshEvery = 30 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	return &Feed{cfg: cfg, st: st, hist: hist, js: js, hub: hub, cmds: cmds, log: log}
}

// Ready reports whether the initial load finished (successfully or not)
// and the NATS consumers run.
func (f *Feed) Ready() bool { return f.ready.Load() }

// Applied counts events applied (tests, logs).
func (f *Feed) Applied() uint64 { return f.applied.Load() }

// Start subscribes to the live hub at once and loads + subscribes to NATS
// in the background (InfluxDB being slow or down never delays the gateway).
func (f *Feed) Start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	if f.hub != nil {
		ch, unsub := f.hub.Subscribe("", 4096)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer unsub()
			for {
				select {
				case <-ctx.Done():
					return
				case u := <-ch:
					f.st.Telemetry(u.VIN, u.TimeMs, u.Signals)
				}
			}
		}()
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.run(ctx)
	}()
	return nil
}

func (f *Feed) run(ctx context.Context) {
	began := time.Now()
	f.load(ctx)
	if ctx.Err() != nil {
		return
	}
	startAt := began.Add(-f.cfg.Overlap)
	if err := f.subscribe(ctx, startAt); err != nil {
		if ctx.Err() == nil {
			f.log.Error("dashboard: NATS consumers failed; fleet state follows telemetry only", "err", err)
		}
	}
	f.ready.Store(true)
	f.log.Info("dashboard fleet state ready", "state", f.st.String(), "load", time.Since(began).Round(time.Millisecond))
	t := time.NewTicker(f.cfg.RefreshEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.refreshDTCSeen(ctx, 2*f.cfg.RefreshEvery+time.Minute)
		}
	}
}

// load reads the state from InfluxDB, retrying a few times while it is
// starting. A vehicle's failure to load only costs history, not events.
func (f *Feed) load(ctx context.Context) {
	if f.hist == nil {
		return
	}
	for attempt := 0; attempt < 5; attempt++ {
		err := f.loadOnce(ctx)
		if err == nil {
			return
		}
		f.log.Warn("dashboard: loading the fleet state from InfluxDB failed", "attempt", attempt+1, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(attempt+1) * time.Second):
		}
	}
}

func (f *Feed) loadOnce(ctx context.Context) error {
	lb := f.cfg.Lookback
	conns, err := f.hist.LastConnectivity(ctx, lb)
	if err != nil {
		return err
	}
	for _, c := range conns {
		f.st.Connectivity(c.Device, c.Connected, c.Time)
	}
	seen, err := f.hist.LastSeen(ctx, lb)
	if err != nil {
		return err
	}
	for vin, t := range seen {
		f.st.Seen(vin, t)
	}
	diags, err := f.hist.LastDiag(ctx, lb)
	if err != nil {
		return err
	}
	for _, d := range diags {
		f.st.Diag(d.VIN, d.Time, d.MIL, d.OdometerKm, d.DTCs)
	}
	codes, err := f.hist.DTCSeen(ctx, "", lb)
	if err != nil {
		return err
	}
	for _, c := range codes {
		f.st.DTCSeen(c.VIN, c.Code, c.First, c.Last)
	}
	return nil
}

func (f *Feed) refreshDTCSeen(ctx context.Context, lookback time.Duration) {
	if f.hist == nil { // no InfluxDB (as in load)
		return
	}
	codes, err := f.hist.DTCSeen(ctx, "", lookback)
	if err != nil {
		if ctx.Err() == nil {
			f.log.Debug("dashboard: DTC last-seen refresh failed", "err", err)
		}
		return
	}
	for _, c := range codes {
		f.st.DTCSeen(c.VIN, c.Code, time.Time{}, c.Last)
	}
}

type envelope struct {
	Type string          `json:"type"`
	Time time.Time       `json:"time"`
	Data json.RawMessage `json:"data"`
}

func (f *Feed) subscribe(ctx context.Context, startAt time.Time) error {
	if f.js == nil {
		return nil
	}
	subs := []struct {
		stream  string
		filters []string
		all     bool
	}{
		{"DTC", []string{"telemetry.dtc.>"}, false},
		{"VEHICLE", []string{"vehicle.connectivity.>"}, false},
		{"VEHICLE", []string{remotecmd.SubjectPrefix + ">", "vehicle.cmd.>", "vehicle.cmdack.>", "vehicle.cmdresult.>"}, true},
	}
	for _, s := range subs {
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: s.filters, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &startAt}
		if s.all {
			cfg = jetstream.OrderedConsumerConfig{FilterSubjects: s.filters, DeliverPolicy: jetstream.DeliverAllPolicy}
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cons, err := f.js.OrderedConsumer(cctx, s.stream, cfg)
		cancel()
		if err != nil {
			return err
		}
		cc, err := cons.Consume(f.handle, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			f.log.Debug("dashboard consumer", "err", err)
		}))
		if err != nil {
			return err
		}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			cc.Stop()
			return ErrClosed
		}
		f.stops = append(f.stops, cc)
		f.mu.Unlock()
	}
	return nil
}

// handle applies one event. Malformed events are skipped (logged).
func (f *Feed) handle(m jetstream.Msg) {
	var env envelope
	if err := json.Unmarshal(m.Data(), &env); err != nil {
		f.log.Debug("dashboard: bad event", "subject", m.Subject(), "err", err)
		return
	}
	subj := m.Subject()
	// The subject's VIN is the authenticated one (the event sink takes it
	// from the device's MQTT topic, which the broker's ACL ties to the
	// device): acks are applied to that vehicle's commands only, whatever
	// VIN the payload names.
	vin := subj[strings.LastIndexByte(subj, '.')+1:]
	switch {
	case strings.HasPrefix(subj, "telemetry.dtc."):
		var d struct {
			Code       string  `json:"code"`
			Status     string  `json:"status"`
			MIL        bool    `json:"mil"`
			OdometerKm float64 `json:"odometer_km"`
		}
		if json.Unmarshal(env.Data, &d) != nil || d.Code == "" {
			return
		}
		if strings.HasPrefix(subj, "telemetry.dtc.cleared.") {
			d.Status = "cleared"
		}
		f.st.DTCEvent(vin, d.Code, d.Status, d.MIL, d.OdometerKm, env.Time)
	case strings.HasPrefix(subj, "vehicle.connectivity."):
		var d struct {
			Connected bool `json:"connected"`
		}
		if json.Unmarshal(env.Data, &d) != nil {
			return
		}
		f.st.Connectivity(vin, d.Connected, env.Time)
	case strings.HasPrefix(subj, "vehicle.cmdack."):
		var d struct {
			CmdID  string `json:"cmd_id"`
			Status string `json:"status"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal(env.Data, &d) != nil || d.CmdID == "" {
			return
		}
		f.cmds.Ack(vin, d.CmdID, d.Status, d.Reason, env.Time)
	case strings.HasPrefix(subj, "vehicle.cmdresult."):
		// The services' dispatcher closed one of its commands: its final
		// state (superseded and expired included) replaces "pending".
		var d struct {
			CmdID  string          `json:"cmd_id"`
			Name   string          `json:"name"`
			Params json.RawMessage `json:"params"`
			Origin string          `json:"origin"`
			State  string          `json:"state"`
			Reason string          `json:"reason"`
		}
		if json.Unmarshal(env.Data, &d) != nil || d.CmdID == "" || d.State == "" {
			return
		}
		src := d.Origin
		if src == "" {
			src = "other"
		}
		f.cmds.Result(remotecmd.Record{CmdID: d.CmdID, VIN: vin, Name: d.Name, Params: paramMap(d.Params), Source: src,
			Status: d.State, Reason: d.Reason}, env.Time)
	case strings.HasPrefix(subj, remotecmd.SubjectPrefix), strings.HasPrefix(subj, "vehicle.cmd."):
		// Ours (vehicle.cmdsent: params as an object) or the services'
		// requests (vehicle.cmd: params as a list of {key, value}).
		var d struct {
			CmdID  string          `json:"cmd_id"`
			Name   string          `json:"name"`
			Params json.RawMessage `json:"params"`
			User   string          `json:"user"`
			Source string          `json:"source"`
			Origin string          `json:"origin"`
			Status string          `json:"status"`
		}
		if json.Unmarshal(env.Data, &d) != nil || d.CmdID == "" {
			return
		}
		src := d.Source
		if src == "" {
			src = d.Origin
		}
		if src == "" {
			src = "other"
		}
		status := remotecmd.StatusSent // published to the vehicle by the dashboard
		if !strings.HasPrefix(subj, remotecmd.SubjectPrefix) || d.Status == remotecmd.StatusPending {
			// Queued at the services' dispatcher (its requests, and the
			// dashboard's commands handed to it for another replica).
			status = remotecmd.StatusPending
		}
		f.cmds.Add(remotecmd.Record{CmdID: d.CmdID, VIN: vin, Name: d.Name, Params: paramMap(d.Params), User: d.User,
			Source: src, Sent: env.Time.UTC(), Status: status})
	default:
		return
	}
	f.applied.Add(1)
}

// paramMap decodes params given as an object (vehicle.cmdsent) or as a
// list of {key, value} (the services' vehicle.cmd and vehicle.cmdresult).
func paramMap(raw json.RawMessage) map[string]string {
	params := map[string]string{}
	if len(raw) == 0 || json.Unmarshal(raw, &params) == nil {
		return params
	}
	var list []struct{ Key, Value string }
	if json.Unmarshal(raw, &list) == nil {
		for _, p := range list {
			params[p.Key] = p.Value
		}
	}
	return params
}

// Close stops the consumers and goroutines. Safe to call more than once.
func (f *Feed) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	stops := f.stops
	f.stops = nil
	if f.cancel != nil {
		f.cancel()
	}
	f.mu.Unlock()
	for _, s := range stops {
		s.Stop()
	}
	f.wg.Wait()
}
