// Package commands sends operator commands from the dashboard to vehicles
// (MQTT vehicles/{vin}/cmd/{name}, wire.Command in MessagePack, QoS 1),
// records each one on NATS (vehicle.cmdsent.{vin}, Nats-Msg-Id = cmd id, so
// the history survives restarts and is shared by replicas) and keeps a
// bounded per-vehicle history joined with the vehicles' acks
// (vehicle.cmdack.{vin}). vehicle.cmd.{vin} belongs to the post-purchase
// services' command dispatcher (requests it will send): the dashboard only
// reads those, to show them in the history, and follows each one to the
// final state the dispatcher announces on vehicle.cmdresult.{vin}
// (applied, rejected, failed, expired, superseded).
//
// Several gateway replicas: a command to a vehicle whose MQTT session is on
// this replica is published to this replica's broker (the fast path). One
// to a vehicle with no session here (connected to another replica, or
// offline) is handed to the services' dispatcher (vehicle.cmd.{vin}, Origin
// "dashboard", the dashboard's own cmd id): the replica holding the
// vehicle's session delivers it once, and its final state comes back on
// vehicle.cmdresult.{vin} to every replica's history. Without the services
// such a command is refused with ErrOtherReplica (see WithCluster).
package remotecmd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/decoders/dtc"
	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/services/commands"
	"github.com/telegate/telegate/gateway/services/svc"
)

// Errors returned by Send.
var (
	ErrUnknownCommand = errors.New("commands: unknown command")
	ErrBadParam       = errors.New("commands: bad parameter")
	ErrPublish        = errors.New("commands: publish to the vehicle failed")
	// ErrOtherReplica: the vehicle has no MQTT session on this replica
	// (connected to another replica, or offline) and no dispatcher is
	// available to deliver it there (the services are disabled).
	ErrOtherReplica = errors.New("commands: vehicle connected to another replica")
)

// Spec describes a command operators may send.
type Spec struct {
	Name        string   `json:"name"`
	Title       string   `json:"title"`
	Description string   `json:"description"`
	Params      []string `json:"params"`
}

// Specs are the commands the dashboard offers.
var Specs = []Spec{
	{Name: "clear_dtc_reminder", Title: "Clear DTC reminder",
		Description: "Dismiss the in-car service reminder of one diagnostic trouble code (the code stays stored in the ECU).",
		Params:      []string{"code"}},
	{Name: "diagnostics_snapshot", Title: "Request diagnostics snapshot",
		Description: "Ask the vehicle to send a full diagnostics report now (DTCs, MIL, freeze frame)."},
	{Name: "ping", Title: "Ping", Description: "Check that the vehicle receives and acknowledges commands."},
}

// Lookup returns the spec of name.
func Lookup(name string) (Spec, bool) {
	for _, s := range Specs {
		if s.Name == name {
			return s, true
		}
	}
	return Spec{}, false
}

// Record is one command in a vehicle's history.
type Record struct {
	CmdID  string            `json:"cmd_id"`
	VIN    string            `json:"vin"`
	Name   string            `json:"name"`
	Params map[string]string `json:"params,omitempty"`
	User   string            `json:"user,omitempty"`
	Source string            `json:"source"`
	Sent   time.Time         `json:"sent_at,omitzero"`
	// Status: dashboard commands: sent, then the vehicle's ack (applied |
	// rejected | failed) or publish_failed. Services' requests: pending
	// (queued at the dispatcher), then the dispatcher's final state
	// (applied | rejected | failed | expired | superseded).
	Status  string    `json:"status"`
	Reason  string    `json:"reason,omitempty"`
	AckTime time.Time `json:"acked_at,omitzero"`
	// AckStatus is the vehicle's own ack when it differs from Status
	// (e.g. a late ack of a command the dispatcher had superseded).
	AckStatus string `json:"ack_status,omitempty"`
	// Closed is when the dispatcher closed the command (services' requests).
	Closed time.Time `json:"closed_at,omitzero"`
}

// Status values a record may take.
const (
	StatusSent          = "sent"
	StatusPending       = "pending"
	StatusPublishFailed = "publish_failed"
)

// Log is the bounded per-vehicle command history.
type Log struct {
	mu     sync.Mutex           // guards perVIN and byID
	perVIN map[string][]*Record // oldest first
	byID   map[recKey]*Record   // (VIN, cmd id): a vehicle's ack only ever reaches its own commands
	max    int
}

// recKey identifies a record: a command id is only meaningful together
// with the vehicle it was sent to, so an ack from vehicle B carrying
// vehicle A's command id never touches A's record.
type recKey struct{ vin, cmdID string }

// NewLog keeps at most perVehicle records per vehicle.
func NewLog(perVehicle int) *Log {
	return &Log{perVIN: map[string][]*Record{}, byID: map[recKey]*Record{}, max: max(perVehicle, 1)}
}

// Add records a sent command (idempotent on CmdID: a known record keeps its
// ack and gains the missing details).
func (l *Log) Add(r Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur := l.byID[recKey{r.VIN, r.CmdID}]; cur != nil {
		if cur.Name == "" {
			cur.Name, cur.Params, cur.User, cur.Source, cur.Sent = r.Name, r.Params, r.User, r.Source, r.Sent
		}
		if r.Status == StatusPublishFailed {
			cur.Status = r.Status
		}
		return
	}
	cp := r
	l.insertLocked(&cp)
}

func (l *Log) insertLocked(r *Record) {
	list := l.perVIN[r.VIN]
	list = append(list, r)
	if len(list) > l.max {
		delete(l.byID, recKey{list[0].VIN, list[0].CmdID})
		list = slices.Delete(list, 0, 1)
	}
	l.perVIN[r.VIN] = list
	l.byID[recKey{r.VIN, r.CmdID}] = r
}

// Ack applies a vehicle's ack. vin must be the vehicle the ack came from
// as authenticated by the broker (the vehicle.cmdack.{vin} subject, itself
// from the MQTT topic the device's ACL allows), never a VIN from the
// payload: acks are matched by (VIN, command id), so a vehicle can only
// ever change the state of its own commands. An ack for a command the log
// does not know for that vehicle (sent by another component, or older than
// the history) creates a record in that vehicle's history.
// The state the dispatcher closed a command with (Result) is final: a
// later ack is kept as AckStatus only.
func (l *Log) Ack(vin, cmdID, status, reason string, t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.byID[recKey{vin, cmdID}]
	if r == nil {
		r = &Record{CmdID: cmdID, VIN: vin, Source: "vehicle ack"}
		l.insertLocked(r)
	}
	r.AckTime = t.UTC()
	if !r.Closed.IsZero() {
		if status != r.Status {
			r.AckStatus = status
		}
		return
	}
	r.Status, r.Reason = status, reason
}

// Result applies the dispatcher's final state of a services' command
// (vehicle.cmdresult.{vin}); r carries the request's details, used when the
// log has no record of it (older than the history's horizon).
func (l *Log) Result(r Record, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := l.byID[recKey{r.VIN, r.CmdID}]
	if cur == nil {
		cp := r
		cur = &cp
		l.insertLocked(cur)
	}
	cur.Status, cur.Closed = r.Status, at.UTC()
	if r.Reason != "" || cur.Reason == "" {
		cur.Reason = r.Reason
	}
}

// List returns vin's history, newest first, at most limit.
func (l *Log) List(vin string, limit int) []Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	list := l.perVIN[vin]
	out := make([]Record, 0, min(limit, len(list)))
	for i := len(list) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, *list[i])
	}
	sort.SliceStable(out, func(i, j int) bool { return recTime(out[i]).After(recTime(out[j])) })
	return out
}

func recTime(r Record) time.Time {
	if !r.Sent.IsZero() {
		return r.Sent
	}
	return r.AckTime
}

// Publisher sends an MQTT message to devices (the embedded broker).
type Publisher interface {
	Publish(topic string, payload []byte, qos byte) error
}

// DispatchFunc hands a command (r: VIN, CmdID, Name, Params) to the
// services' dispatcher, which delivers it from the replica holding the
// vehicle's session. ServicesDispatch is the real one.
type DispatchFunc func(ctx context.Context, r Record, at time.Time) error

// DispatchTTL is how long a command handed to the dispatcher waits for an
// offline vehicle before it expires (state expired in the history).
const DispatchTTL = 10 * time.Minute

// ServicesDispatch publishes the command as a services' request
// (commands.Send on vehicle.cmd.{vin}, Origin "dashboard", the dashboard's
// cmd id, expiring after DispatchTTL).
func ServicesDispatch(js jetstream.JetStream) DispatchFunc {
	return func(ctx context.Context, r Record, at time.Time) error {
		exp := at.Add(DispatchTTL)
		req := commands.Request{VIN: r.VIN, CmdID: r.CmdID, Name: r.Name, Origin: "dashboard", ExpiresAt: &exp}
		for _, k := range sortedKeys(r.Params) {
			req.Params = append(req.Params, commands.Param{Key: k, Value: r.Params[k]})
		}
		return commands.Send(ctx, svc.Publisher{JS: js}, at, req)
	}
}

// Sender validates, sends and records commands.
type Sender struct {
	pub Publisher
	js  jetstream.JetStream // nil: not recorded on NATS
	log *Log
	lg  *slog.Logger
	now func() time.Time
	// local reports whether a vehicle has its MQTT session on this replica
	// (nil: always, a single replica); dispatch delivers the others (nil:
	// refused with ErrOtherReplica). Set once by WithCluster before use.
	local    func(vin string) bool
	dispatch DispatchFunc
}

// WithClock sets the clock of s (sent times, dispatched commands' expiry;
// default time.Now). Call before the first Send.
func (s *Sender) WithClock(now func() time.Time) *Sender {
	s.now = now
	return s
}

// WithCluster makes s cluster-aware: a command to a vehicle for which
// local returns false is handed to dispatch (nil: refused with
// ErrOtherReplica). Call before the first Send.
func (s *Sender) WithCluster(local func(vin string) bool, dispatch DispatchFunc) *Sender {
	s.local, s.dispatch = local, dispatch
	return s
}

// NewSender returns a Sender.
func NewSender(pub Publisher, js jetstream.JetStream, log *Log, lg *slog.Logger) *Sender {
	if lg == nil {
		lg = slog.Default()
	}
	return &Sender{pub: pub, js: js, log: log, lg: lg, now: time.Now}
}

// SubjectPrefix is where sent commands are recorded: SubjectPrefix + vin.
const SubjectPrefix = "vehicle.cmdsent."

// Event is the data of a vehicle.cmdsent.{vin} message.
type Event struct {
	VIN    string            `json:"vin"`
	CmdID  string            `json:"cmd_id"`
	Name   string            `json:"name"`
	Params map[string]string `json:"params,omitempty"`
	User   string            `json:"user,omitempty"`
	Source string            `json:"source,omitempty"`
	// Status is "pending" for a command handed to the services' dispatcher
	// (empty: published to the vehicle, "sent").
	Status string `json:"status,omitempty"`
}

// Envelope is the JSON envelope of events (docs/data-model.md).
type Envelope struct {
	V      int             `json:"v"`
	ID     string          `json:"id"`
	Type   string          `json:"type"`
	Time   time.Time       `json:"time"`
	Source string          `json:"source"`
	Data   json.RawMessage `json:"data"`
}

// Validate checks name and params against Specs.
func Validate(name string, params map[string]string) error {
	spec, ok := Lookup(name)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownCommand, name)
	}
	for k, v := range params {
		if !slices.Contains(spec.Params, k) {
			return fmt.Errorf("%w: %s takes no parameter %q", ErrBadParam, name, k)
		}
		if len(v) > 64 {
			return fmt.Errorf("%w: %s is too long", ErrBadParam, k)
		}
	}
	for _, k := range spec.Params {
		if params[k] == "" {
			return fmt.Errorf("%w: %s needs parameter %q", ErrBadParam, name, k)
		}
	}
	if c, ok := params["code"]; ok {
		if _, err := dtc.Parse(c); err != nil {
			return fmt.Errorf("%w: code %q is not a DTC such as P0301", ErrBadParam, c)
		}
	}
	return nil
}

// newCmdID returns an unguessable command id: 128 bits from crypto/rand
// (acks are matched by VIN and id as well, so even a known id is useless
// to another vehicle).
func newCmdID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "dash-" + hex.EncodeToString(b)
}

// Send validates the command, records it and publishes it to the vehicle.
func (s *Sender) Send(ctx context.Context, vin, name string, params map[string]string, user string) (Record, error) {
	if err := Validate(name, params); err != nil {
		return Record{}, err
	}
	now := s.now().UTC()
	r := Record{CmdID: newCmdID(), VIN: vin, Name: name, Params: params, User: user, Source: "dashboard", Sent: now, Status: "sent"}
	if s.local != nil && !s.local(vin) {
		return s.sendRemote(ctx, r, now)
	}
	cmd := wire.Command{Version: wire.Version, CmdID: r.CmdID, TimeMs: now.UnixMilli(), Name: name}
	for _, k := range sortedKeys(params) {
		cmd.Params = append(cmd.Params, wire.Param{Key: k, Value: params[k]})
	}
	payload, err := cmd.MarshalMsg(nil)
	if err != nil {
		return Record{}, fmt.Errorf("commands: encode: %w", err)
	}
	s.log.Add(r)
	s.record(ctx, r, now)
	if err := s.pub.Publish("vehicles/"+vin+"/cmd/"+name, payload, 1); err != nil {
		r.Status = "publish_failed"
		r.Reason = err.Error()
		s.log.Add(r)
		s.lg.Error("dashboard command not published", "vin", vin, "cmd", name, "cmd_id", r.CmdID, "user", user, "err", err)
		return r, fmt.Errorf("%w: %w", ErrPublish, err)
	}
	s.lg.Info("dashboard command sent", "vin", vin, "cmd", name, "cmd_id", r.CmdID, "user", user)
	return r, nil
}

// sendRemote hands r to the dispatcher: the vehicle has no session here.
// It is recorded pending (on NATS too, with the operator's name), and the
// dispatcher's result on vehicle.cmdresult.{vin} closes it.
func (s *Sender) sendRemote(ctx context.Context, r Record, now time.Time) (Record, error) {
	if s.dispatch == nil {
		s.lg.Info("dashboard command refused: vehicle not connected to this replica", "vin", r.VIN, "cmd", r.Name, "user", r.User)
		return Record{}, ErrOtherReplica
	}
	r.Status = StatusPending
	s.log.Add(r)
	s.record(ctx, r, now)
	if err := s.dispatch(ctx, r, now); err != nil {
		r.Status, r.Reason = StatusPublishFailed, err.Error()
		s.log.Add(r)
		s.lg.Error("dashboard command not handed to the dispatcher", "vin", r.VIN, "cmd", r.Name, "cmd_id", r.CmdID, "user", r.User, "err", err)
		return r, fmt.Errorf("%w: %w", ErrPublish, err)
	}
	s.lg.Info("dashboard command handed to the dispatcher", "vin", r.VIN, "cmd", r.Name, "cmd_id", r.CmdID, "user", r.User)
	return r, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (s *Sender) record(ctx context.Context, r Record, now time.Time) {
	if s.js == nil {
		return
	}
	var status string
	if r.Status == StatusPending {
		status = StatusPending
	}
	data, _ := json.Marshal(Event{VIN: r.VIN, CmdID: r.CmdID, Name: r.Name, Params: r.Params, User: r.User, Source: r.Source, Status: status})
	env, _ := json.Marshal(Envelope{V: 1, ID: "cmdsent-" + r.CmdID, Type: "vehicle.cmdsent", Time: now, Source: r.VIN, Data: data})
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.js.Publish(ctx, SubjectPrefix+r.VIN, env, jetstream.WithMsgID("cmdsent-"+r.CmdID)); err != nil {
		// The command still goes out; only the shared history misses it.
		s.lg.Warn("dashboard command not recorded on NATS", "vin", r.VIN, "cmd_id", r.CmdID, "err", err)
	}
}
