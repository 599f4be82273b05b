// Package commands delivers cloud-to-vehicle commands. Services publish a
// Request on NATS (vehicle.cmd.{vin}); the Dispatcher, which runs inside the
// gateway next to the MQTT broker, stores it (bucket "commands"), publishes
// it as a wire.Command on vehicles/{vin}/cmd/{name} at QoS 1 when the
// vehicle is online, keeps it waiting while the vehicle is offline and
// delivers it when the vehicle reconnects (vehicle.connectivity.connected.*
// and the vehicle's "online" event), re-sends unacknowledged commands
// periodically, and closes it on the vehicle's ack (vehicle.cmdack.{vin}).
// Every closed command is announced on vehicle.cmdresult.{vin} so that the
// service that asked for it can record the outcome.
//
// Several gateway replicas: the bucket is the only source of truth. Every
// replica's Dispatcher watches it (its open map mirrors the open records of
// the whole cluster), and only the replica that holds the vehicle's MQTT
// session (Config.Session) delivers: a request consumed by replica A for a
// vehicle connected to B is stored by A and delivered by B as soon as B's
// watcher sees it, and a vehicle that reconnects to another replica gets
// its open commands there. A delivery first marks the record sent, for that
// session, by compare-and-set at the revision it read and publishes only if
// that write won, so two replicas (or two triggers on one replica) never
// deliver one attempt twice; a command is sent again only to a new session
// (the previous connection's in-flight message is gone with it) or after
// RetryInterval. The vehicle deduplicates on CmdID, and the ack closes the
// record once (compare-and-set again), so the command is applied and its
// result announced once.
//
// Commands are idempotent: the command id is the Nats-Msg-Id of the request,
// the key of its record, and the CmdID the vehicle deduplicates on. A
// request whose id is already open is ignored; one whose id is already
// closed is not delivered again, its final state is announced again on
// vehicle.cmdresult.{vin}. So a requester must draw a new id for every new
// decision (features: generation + random, see features.newCmdID) and reuse
// it only to retry the same decision.
package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/gateway/sink/eventsink"
)

// Bucket holds the command records (key c.{vin}.{cmd_id}).
const Bucket = "commands"

// Event types.
const (
	TypeRequest = "vehicle.cmd"
	TypeResult  = "vehicle.cmdresult"
)

// Command states.
const (
	StatePending  = "pending"  // waiting for the vehicle to be online
	StateSent     = "sent"     // published over MQTT, not yet acknowledged
	StateApplied  = "applied"  // acked: applied
	StateRejected = "rejected" // acked: rejected
	StateFailed   = "failed"   // acked: failed
	StateExpired  = "expired"  // not delivered before ExpiresAt
	// StateSuperseded: a later request with the same Key for the vehicle
	// replaced it before the vehicle acknowledged it.
	StateSuperseded = "superseded"
)

// Param is a command parameter.
type Param struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Request is the data of vehicle.cmd.{vin}.
type Request struct {
	VIN       string     `json:"vin"`
	CmdID     string     `json:"cmd_id"`
	Name      string     `json:"name"`
	Params    []Param    `json:"params,omitempty"`
	Origin    string     `json:"origin"` // service that asked: features, offers, ...
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Key groups requests that replace each other (e.g. one feature's
	// on/off): a new request closes the vehicle's open ones with the same
	// Key as superseded, so a vehicle coming back online gets only the
	// latest.
	Key string `json:"key,omitempty"`
}

// Validate checks a request.
func (r Request) Validate() error {
	switch {
	case !svc.ValidID(r.VIN):
		return fmt.Errorf("%w: vin %q", svc.ErrInvalid, r.VIN)
	case !svc.ValidID(r.CmdID):
		return fmt.Errorf("%w: cmd_id %q", svc.ErrInvalid, r.CmdID)
	case !svc.ValidID(r.Name) || strings.ContainsAny(r.Name, "/+#"):
		return fmt.Errorf("%w: name %q", svc.ErrInvalid, r.Name)
	case len(r.Key) > 128:
		return fmt.Errorf("%w: key too long", svc.ErrInvalid)
	case len(r.Params) > 32:
		return fmt.Errorf("%w: more than 32 params", svc.ErrInvalid)
	}
	for _, p := range r.Params {
		if len(p.Key) == 0 || len(p.Key) > 64 || len(p.Value) > 1024 {
			return fmt.Errorf("%w: param %q", svc.ErrInvalid, p.Key)
		}
	}
	return nil
}

// Subject is the request subject of a vehicle.
func Subject(vin string) string { return natsbus.SubjectCommand(vin) }

// ResultSubject is the result subject of a vehicle.
func ResultSubject(vin string) string { return natsbus.SubjectCommandResult(vin) }

// Send publishes a request (idempotent on CmdID).
func Send(ctx context.Context, pub svc.Publisher, at time.Time, r Request) error {
	if err := r.Validate(); err != nil {
		return err
	}
	return pub.Publish(ctx, Subject(r.VIN), r.CmdID, TypeRequest, r.Origin, at, r)
}

// Record is a command's stored state.
type Record struct {
	Request
	State     string     `json:"state"`
	Attempts  int        `json:"attempts"`
	Created   time.Time  `json:"created"`
	LastSent  *time.Time `json:"last_sent,omitempty"`
	ClosedAt  *time.Time `json:"closed_at,omitempty"`
	Reason    string     `json:"reason,omitempty"`
	AckStatus string     `json:"ack_status,omitempty"`
	// Session is the MQTT session (Config.Session) the last attempt was
	// published to.
	Session string `json:"session,omitempty"`
}

// Open reports whether the command still waits for the vehicle.
func (r Record) Open() bool { return r.State == StatePending || r.State == StateSent }

// Result is the data of vehicle.cmdresult.{vin}.
type Result struct {
	Request
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// MQTT publishes to the broker (broker.Broker.Publish).
type MQTT interface {
	Publish(topic string, payload []byte, qos byte) error
}

// Config configures the Dispatcher.
type Config struct {
	// RetryInterval: an unacknowledged command to an online vehicle is sent
	// again after this long (default 30 s).
	RetryInterval time.Duration
	// Online reports whether a vehicle has a live MQTT session on this
	// replica; used when Session is nil (the session is then "online").
	Online func(vin string) bool
	// Session identifies the vehicle's live MQTT session on this replica,
	// ready for commands (subscribed to its command topics), unique per
	// connection; "" when it has none here. Only the replica that returns
	// a session delivers.
	Session func(vin string) string
	Clock   svc.Clock
}

// Stats are the Dispatcher's counters.
type Stats struct {
	Delivered atomic.Uint64 // attempts published to this replica's MQTT broker
}

// Stats returns the live counters.
func (d *Dispatcher) Stats() *Stats { return &d.stats }

// Dispatcher delivers commands; see the package comment.
type Dispatcher struct {
	cfg  Config
	js   jetstream.JetStream
	nc   *nats.Conn
	kv   svc.KV
	mqtt MQTT
	pub  svc.Publisher
	log  *slog.Logger

	stats Stats

	mu sync.Mutex
	// open: vin → open cmd id → its ExpiresAt (zero: none), a mirror of the
	// bucket's open records kept by the watcher (Run); guarded by mu.
	open map[string]map[string]time.Time
	vmu  sync.Map // vin → *sync.Mutex (serialises this replica's work on one vehicle's records)
}

// NewDispatcher opens the bucket.
func NewDispatcher(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, replicas int, mqtt MQTT, cfg Config, log *slog.Logger) (*Dispatcher, error) {
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 30 * time.Second
	}
	if cfg.Online == nil {
		cfg.Online = func(string) bool { return true }
	}
	if cfg.Session == nil {
		online := cfg.Online
		cfg.Session = func(vin string) string {
			if online(vin) {
				return "online"
			}
			return ""
		}
	}
	kv, err := svc.OpenKV(ctx, js, Bucket, "Cloud-to-vehicle commands and their state", replicas)
	if err != nil {
		return nil, err
	}
	// Run's watcher loads the open commands and keeps them up to date.
	return &Dispatcher{cfg: cfg, js: js, nc: nc, kv: kv, mqtt: mqtt, pub: svc.Publisher{JS: js}, log: log,
		open: map[string]map[string]time.Time{}}, nil
}

func key(vin, cmd string) string { return "c." + vin + "." + cmd }

func (d *Dispatcher) lock(vin string) func() {
	m, _ := d.vmu.LoadOrStore(vin, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

func (d *Dispatcher) markOpen(rec Record) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.open[rec.VIN] == nil {
		d.open[rec.VIN] = map[string]time.Time{}
	}
	var exp time.Time
	if rec.ExpiresAt != nil {
		exp = *rec.ExpiresAt
	}
	d.open[rec.VIN][rec.CmdID] = exp
}

func (d *Dispatcher) markClosed(vin, cmd string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.open[vin], cmd)
	if len(d.open[vin]) == 0 {
		delete(d.open, vin)
	}
}

// openIDs returns vin's open command ids; expiredBy non-zero: only those
// whose ExpiresAt is before it.
func (d *Dispatcher) openIDs(vin string, expiredBy time.Time) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.open[vin]))
	for id, exp := range d.open[vin] {
		if expiredBy.IsZero() || !exp.IsZero() && expiredBy.After(exp) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// watch mirrors the bucket's open records into d.open and delivers a new
// pending record if its vehicle is connected here, until ctx ends.
func (d *Dispatcher) watch(ctx context.Context) error {
	return d.kv.Watch(ctx, "c.>", func(e jetstream.KeyValueEntry) {
		if e.Operation() != jetstream.KeyValuePut {
			if vin, cmd, ok := splitKey(e.Key()); ok {
				d.markClosed(vin, cmd)
			}
			return
		}
		var rec Record
		if err := jsonUnmarshal(e.Value(), &rec); err != nil {
			return
		}
		if !rec.Open() {
			d.markClosed(rec.VIN, rec.CmdID)
			return
		}
		d.markOpen(rec)
		if rec.State == StatePending && d.cfg.Session(rec.VIN) != "" {
			go d.flush(ctx, rec.VIN)
		}
	})
}

// splitKey parses c.{vin}.{cmd_id}.
func splitKey(k string) (vin, cmd string, ok bool) {
	rest, ok := strings.CutPrefix(k, "c.")
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, ".")
}

// Kick delivers vin's open commands if it has a session here (the gateway
// calls it when a vehicle's session is established on this replica).
func (d *Dispatcher) Kick(ctx context.Context, vin string) { d.flush(ctx, vin) }

// Run consumes requests and acks, watches the bucket and connectivity and
// re-sends until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) error {
	kick := func(m *nats.Msg) {
		vin := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		if strings.HasPrefix(m.Subject, natsbus.PrefixVehicleEvent) {
			ev, err := svc.Decode(m.Data)
			if err != nil || ev.Type != "vehicle.online" {
				return
			}
		}
		go d.flush(ctx, vin)
	}
	var subs []*nats.Subscription
	for _, s := range []string{natsbus.PrefixVehicleConnected + "connected.*", natsbus.PrefixVehicleEvent + "*"} {
		sub, err := d.nc.Subscribe(s, kick)
		if err != nil {
			return err
		}
		subs = append(subs, sub)
	}
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	errc := make(chan error, 3)
	go func() { errc <- d.watch(ctx) }()
	go func() {
		errc <- svc.Consume(ctx, d.js, svc.ConsumerSpec{Stream: natsbus.StreamVehicle, Durable: "cmd-dispatcher", Filter: natsbus.PrefixCommand + ">"},
			d.log, d.handleRequest)
	}()
	go func() {
		errc <- svc.Consume(ctx, d.js, svc.ConsumerSpec{Stream: natsbus.StreamVehicle, Durable: "cmd-acks", Filter: natsbus.PrefixCommandAck + ">"},
			d.log, d.handleAck)
	}()
	t := time.NewTicker(min(d.cfg.RetryInterval/2, 5*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return errors.Join(<-errc, <-errc, <-errc)
		case <-t.C:
			d.mu.Lock()
			vins := make([]string, 0, len(d.open))
			for v := range d.open {
				vins = append(vins, v)
			}
			d.mu.Unlock()
			for _, v := range vins {
				d.flush(ctx, v)
			}
		}
	}
}

func (d *Dispatcher) handleRequest(ctx context.Context, m jetstream.Msg) error {
	ev, err := svc.Decode(m.Data())
	if err != nil {
		return err
	}
	var r Request
	if err := jsonUnmarshal(ev.Data, &r); err != nil {
		return fmt.Errorf("%w: request: %w", svc.ErrInvalid, err)
	}
	if err := r.Validate(); err != nil {
		return err
	}
	if m.Subject() != Subject(r.VIN) {
		return fmt.Errorf("%w: subject %s for vin %s", svc.ErrInvalid, m.Subject(), r.VIN)
	}
	unlock := d.lock(r.VIN)
	var rec Record
	_, err = d.kv.Get(ctx, key(r.VIN, r.CmdID), &rec)
	switch {
	case err == nil:
		unlock()
		if rec.Open() {
			return nil // known command (redelivery or duplicate request)
		}
		// A request for a command already closed is not delivered again;
		// announcing the final state again tells the requester so (a
		// decision must never silently vanish). Results are idempotent.
		// The announcement gets its own Nats-Msg-Id (the request message's
		// stream sequence) so the stream does not drop it as a duplicate of
		// the first one; a redelivery of this request reuses it.
		d.log.Debug("request for a closed command", "vin", r.VIN, "cmd_id", r.CmdID, "state", rec.State)
		again := "again"
		if md, err := m.Metadata(); err == nil {
			again += strconv.FormatUint(md.Sequence.Stream, 10)
		}
		return d.announceID(ctx, rec, resultID(rec)+"-"+again)
	case !errors.Is(err, svc.ErrNotFound):
		unlock()
		return err
	}
	now := d.cfg.Clock.Now().UTC()
	if r.Key != "" {
		// The bucket, not the mirror: a command opened a moment ago by
		// another replica may not have reached this one's watcher yet.
		ids, err := d.storedIDs(ctx, r.VIN)
		if err != nil {
			unlock()
			return err
		}
		for _, id := range ids {
			var old Record
			rev, err := d.kv.Get(ctx, key(r.VIN, id), &old)
			if err != nil || !old.Open() || old.Key != r.Key {
				continue
			}
			old.State, old.ClosedAt = StateSuperseded, &now
			if err := d.kv.Update(ctx, key(r.VIN, id), old, rev); err != nil {
				unlock()
				return err
			}
			d.markClosed(r.VIN, id)
			if err := d.announce(ctx, old); err != nil {
				d.log.Warn("command result not announced", "vin", r.VIN, "cmd_id", id, "state", old.State, "err", err)
			}
		}
	}
	rec = Record{Request: r, State: StatePending, Created: now}
	if _, err := d.kv.Swap(ctx, key(r.VIN, r.CmdID), rec, 0); err != nil {
		unlock()
		if errors.Is(err, svc.ErrConflict) {
			return nil // stored meanwhile by another replica (a redelivery)
		}
		return err
	}
	d.markOpen(rec)
	unlock()
	d.flush(ctx, r.VIN)
	return nil
}

// storedIDs lists the command ids stored for vin.
func (d *Dispatcher) storedIDs(ctx context.Context, vin string) ([]string, error) {
	l, err := d.kv.B.ListKeysFiltered(ctx, "c."+vin+".>")
	if err != nil {
		return nil, err
	}
	var out []string
	for k := range l.Keys() {
		if _, id, ok := splitKey(k); ok {
			out = append(out, id)
		}
	}
	return out, nil
}

// flush closes the expired open commands of vin and, if vin has a session
// on this replica, delivers the others: pending ones, sent ones whose last
// attempt went to another session (the vehicle reconnected; that
// connection's in-flight message is gone), and sent ones whose last attempt
// is RetryInterval old. An offline vehicle's commands expire too, so their
// requesters (and the dashboard's history) learn it without waiting for
// the vehicle to come back.
//
// Each attempt is recorded (state sent, session, attempts) by
// compare-and-set at the revision read before it is published: of two
// replicas, or two triggers on one, that read the same revision only the
// one whose write wins publishes.
func (d *Dispatcher) flush(ctx context.Context, vin string) {
	session := d.cfg.Session(vin)
	unlock := d.lock(vin)
	defer unlock()
	now := d.cfg.Clock.Now().UTC()
	var ids []string
	if session != "" {
		ids = d.openIDs(vin, time.Time{})
	} else {
		ids = d.openIDs(vin, now) // only the expired ones: no KV reads otherwise
	}
	for _, id := range ids {
		var rec Record
		rev, err := d.kv.Get(ctx, key(vin, id), &rec)
		if err != nil && !errors.Is(err, svc.ErrNotFound) {
			continue // transient: still open, next flush
		}
		if err != nil || !rec.Open() {
			d.markClosed(vin, id)
			continue
		}
		if rec.ExpiresAt != nil && now.After(*rec.ExpiresAt) {
			rec.State, rec.ClosedAt = StateExpired, &now
			if d.kv.Update(ctx, key(vin, id), rec, rev) == nil {
				d.markClosed(vin, id)
				if err := d.announce(ctx, rec); err != nil {
					d.log.Warn("command result not announced", "vin", vin, "cmd_id", id, "state", rec.State, "err", err)
				}
			}
			continue
		}
		if session == "" {
			continue
		}
		if rec.State == StateSent && rec.Session == session && rec.LastSent != nil && now.Sub(*rec.LastSent) < d.cfg.RetryInterval {
			continue
		}
		rec.State, rec.LastSent, rec.Session = StateSent, &now, session
		rec.Attempts++
		if err := d.kv.Update(ctx, key(vin, id), rec, rev); err != nil {
			// Another replica or trigger recorded an attempt (or closed
			// it) since we read it: it delivers, not us.
			d.log.Debug("command attempt not recorded", "vin", vin, "cmd_id", id, "err", err)
			continue
		}
		d.stats.Delivered.Add(1)
		if err := d.deliver(rec, now); err != nil {
			d.log.Warn("command delivery failed; retried after the retry interval", "vin", vin, "cmd_id", id, "err", err)
		}
	}
}

func (d *Dispatcher) deliver(rec Record, now time.Time) error {
	c := wire.Command{Version: wire.Version, CmdID: rec.CmdID, TimeMs: now.UnixMilli(), Name: rec.Name}
	for _, p := range rec.Params {
		c.Params = append(c.Params, wire.Param{Key: p.Key, Value: p.Value})
	}
	b, err := c.MarshalMsg(nil)
	if err != nil {
		return err
	}
	return d.mqtt.Publish("vehicles/"+rec.VIN+"/cmd/"+rec.Name, b, 1)
}

func (d *Dispatcher) handleAck(ctx context.Context, m jetstream.Msg) error {
	ev, err := svc.Decode(m.Data())
	if err != nil {
		return err
	}
	var a eventsink.CommandAckEvent
	if err := jsonUnmarshal(ev.Data, &a); err != nil {
		return fmt.Errorf("%w: ack: %w", svc.ErrInvalid, err)
	}
	if !svc.ValidID(a.VIN) || !svc.ValidID(a.CmdID) {
		return nil // not a command of ours
	}
	if m.Subject() != natsbus.SubjectCommandAck(a.VIN) {
		// The subject's VIN is the authenticated one (from the device's
		// MQTT topic); records are keyed by (VIN, cmd id), so an ack only
		// ever closes a command of the vehicle that sent it.
		return nil
	}
	unlock := d.lock(a.VIN)
	defer unlock()
	var rec Record
	rev, err := d.kv.Get(ctx, key(a.VIN, a.CmdID), &rec)
	if errors.Is(err, svc.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if rec.Open() {
		now := d.cfg.Clock.Now().UTC()
		rec.AckStatus, rec.Reason, rec.ClosedAt = a.Status, a.Reason, &now
		switch a.Status {
		case "applied":
			rec.State = StateApplied
		case "rejected":
			rec.State = StateRejected
		default:
			rec.State = StateFailed
		}
		if err := d.kv.Update(ctx, key(a.VIN, a.CmdID), rec, rev); err != nil {
			return err
		}
		d.markClosed(a.VIN, a.CmdID)
	}
	return d.announce(ctx, rec)
}

// resultID is the Nats-Msg-Id of a command's result.
func resultID(rec Record) string { return "cmdresult-" + rec.CmdID + "-" + rec.State }

func (d *Dispatcher) announce(ctx context.Context, rec Record) error {
	return d.announceID(ctx, rec, resultID(rec))
}

func (d *Dispatcher) announceID(ctx context.Context, rec Record, id string) error {
	at := d.cfg.Clock.Now()
	if rec.ClosedAt != nil {
		at = *rec.ClosedAt
	}
	return d.pub.Publish(ctx, ResultSubject(rec.VIN), id, TypeResult, rec.VIN, at,
		Result{Request: rec.Request, State: rec.State, Reason: rec.Reason})
}

// Get returns a command record.
func (d *Dispatcher) Get(ctx context.Context, vin, cmd string) (Record, error) {
	var rec Record
	_, err := d.kv.Get(ctx, key(vin, cmd), &rec)
	return rec, err
}

// List returns a vehicle's command records (at most 500, newest first).
func (d *Dispatcher) List(ctx context.Context, vin string) ([]Record, error) {
	l, err := d.kv.B.ListKeysFiltered(ctx, "c."+vin+".>")
	if err != nil {
		return nil, err
	}
	var out []Record
	for k := range l.Keys() {
		var rec Record
		if _, err := d.kv.Get(ctx, k, &rec); err == nil {
			out = append(out, rec)
		}
	}
	slices.SortFunc(out, func(a, b Record) int { return b.Created.Compare(a.Created) })
	if len(out) > 500 {
		out = out[:500]
	}
	return out, nil
}

// Mount adds GET /api/v1/vehicles/{vin}/commands (admin).
func (d *Dispatcher) Mount(mux *http.ServeMux, auth *svc.Auth) {
	mux.HandleFunc("GET /api/v1/vehicles/{vin}/commands", auth.Admin(func(w http.ResponseWriter, r *http.Request, _ svc.Principal) {
		vin := r.PathValue("vin")
		if !svc.ValidID(vin) {
			svc.Error(w, http.StatusBadRequest, "invalid vin")
			return
		}
		recs, err := d.List(r.Context(), vin)
		if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
			svc.Fail(w, err)
			return
		}
		if recs == nil {
			recs = []Record{}
		}
		svc.JSON(w, http.StatusOK, map[string]any{"vin": vin, "commands": recs})
	}))
}
