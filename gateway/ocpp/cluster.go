package ocpp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
)

// ErrRouted: a routed command got no usable answer from the replica
// holding the charge point.
var ErrRouted = errors.New("ocpp: routed command failed")

// natsState is what UseNATS set up (fields set once, before Serve).
type natsState struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	cons jetstream.ConsumeContext
	// routeMu guards routes: the cluster.ocpp.cmd.{station} subscription
	// of every station whose socket this replica holds.
	routeMu sync.Mutex
	routes  map[string]*nats.Subscription
}

// UseNATS makes the central system cluster-wide (call before the mux
// serves): the transaction table moves to the ocpp_txn KV bucket, command
// results are published on charging.cmdresult.{station} and read back from
// the CHARGING stream (every replica lists every result), and commands for
// a station whose socket another replica holds are routed to it over
// cluster.ocpp.cmd.{station}. nc must be the natsbus.RoleOCPP connection.
func (c *Central) UseNATS(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) error {
	kv, err := js.KeyValue(ctx, TxnBucket)
	if err != nil {
		return fmt.Errorf("%w: bucket %s: %w", ErrTxnStore, TxnBucket, err)
	}
	oc, err := js.OrderedConsumer(ctx, natsbus.StreamCharging,
		jetstream.OrderedConsumerConfig{FilterSubjects: []string{natsbus.PrefixChargerCmdResult + ">"}})
	if err != nil {
		return fmt.Errorf("ocpp: command results consumer: %w", err)
	}
	cons, err := oc.Consume(func(m jetstream.Msg) {
		var r CommandResult
		if json.Unmarshal(m.Data(), &r) != nil {
			return
		}
		c.addResult(r)
	})
	if err != nil {
		return fmt.Errorf("ocpp: command results consumer: %w", err)
	}
	c.txns = kvStore{kv}
	c.bus = &natsState{nc: nc, js: js, cons: cons, routes: map[string]*nats.Subscription{}}
	c.Mux.OnConnChange = c.syncRoute
	return nil
}

// syncRoute subscribes to the station's command subject while this replica
// holds its socket, and unsubscribes when it no longer does.
func (c *Central) syncRoute(id string) {
	b := c.bus
	if b == nil {
		return
	}
	b.routeMu.Lock()
	defer b.routeMu.Unlock()
	_, held := c.Mux.Connected(id)
	sub := b.routes[id]
	switch {
	case held && sub == nil:
		s, err := b.nc.Subscribe(natsbus.SubjectOCPPCommand(id), func(m *nats.Msg) { go c.serveRouted(id, m) })
		if err != nil {
			c.log.Warn("OCPP command route not subscribed; commands from other replicas get 409", "station", id, "err", err)
			return
		}
		b.routes[id] = s
	case !held && sub != nil:
		_ = sub.Unsubscribe()
		delete(b.routes, id)
	}
}

// routed is a routed command's answer.
type routed struct {
	Result *CommandResult `json:"result,omitempty"`
	Error  string         `json:"error,omitempty"`
	Code   string         `json:"code,omitempty"` // offline, bad_command, failed
}

func (c *Central) serveRouted(station string, m *nats.Msg) {
	var cmd Command
	var ans routed
	if err := json.Unmarshal(m.Data, &cmd); err != nil {
		ans = routed{Code: "bad_command", Error: "invalid command"}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
		res, err := c.sendLocal(ctx, station, cmd)
		cancel()
		switch {
		case errors.Is(err, ErrOffline):
			ans = routed{Code: "offline"}
		case errors.Is(err, ErrBadCommand):
			ans = routed{Code: "bad_command", Error: err.Error()}
		case err != nil:
			ans = routed{Code: "failed"}
		default:
			ans = routed{Result: &res}
		}
	}
	b, _ := json.Marshal(ans)
	if err := m.Respond(b); err != nil {
		c.log.Warn("OCPP routed command answer not sent", "station", station, "err", err)
	}
}

// RouteTimeout bounds the wait for a routed command's answer.
const RouteTimeout = CommandTimeout + 5*time.Second

// sendRouted asks the replica holding station's socket to send cmd.
func (c *Central) sendRouted(ctx context.Context, station string, cmd Command) (CommandResult, error) {
	body, err := json.Marshal(cmd)
	if err != nil {
		return CommandResult{}, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	ctx, cancel := context.WithTimeout(ctx, RouteTimeout)
	defer cancel()
	m, err := c.bus.nc.RequestWithContext(ctx, natsbus.SubjectOCPPCommand(station), body)
	if errors.Is(err, nats.ErrNoResponders) {
		return CommandResult{}, fmt.Errorf("%w: %s", ErrOffline, station)
	}
	if err != nil {
		return CommandResult{}, fmt.Errorf("%w: %w", ErrRouted, err)
	}
	var ans routed
	if err := json.Unmarshal(m.Data, &ans); err != nil {
		return CommandResult{}, fmt.Errorf("%w: unreadable answer", ErrRouted)
	}
	switch {
	case ans.Result != nil:
		return *ans.Result, nil
	case ans.Code == "offline":
		return CommandResult{}, fmt.Errorf("%w: %s", ErrOffline, station)
	case ans.Code == "bad_command":
		return CommandResult{}, fmt.Errorf("%w: %s", ErrBadCommand, ans.Error)
	}
	return CommandResult{}, fmt.Errorf("%w: %s", ErrRouted, ans.Code)
}

// recordResult keeps res: published on charging.cmdresult.{station} with
// NATS (every replica's consumer adds it to its list), else in memory.
func (c *Central) recordResult(res CommandResult) {
	if c.bus == nil {
		c.addResult(res)
		return
	}
	b, err := json.Marshal(res)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), StoreTimeout)
		_, err = c.bus.js.Publish(ctx, natsbus.SubjectChargerCommandResult(res.Station), b)
		cancel()
	}
	if err != nil {
		c.m.Commands.WithLabelValues(res.Action, "unrecorded").Inc()
		c.log.Warn("OCPP command result not recorded on NATS; kept on this replica only", "station", res.Station, "action", res.Action, "err", err)
		c.addResult(res)
	}
}

func (c *Central) addResult(r CommandResult) {
	c.cmdMu.Lock()
	defer c.cmdMu.Unlock()
	c.cmds = append(c.cmds, r)
	if len(c.cmds) > MaxCommandResults {
		c.cmds = c.cmds[len(c.cmds)-MaxCommandResults:]
	}
}

// closeNATS stops the results consumer and the command routes.
func (c *Central) closeNATS() {
	b := c.bus
	if b == nil {
		return
	}
	b.cons.Stop()
	b.routeMu.Lock()
	defer b.routeMu.Unlock()
	for id, s := range b.routes {
		_ = s.Unsubscribe()
		delete(b.routes, id)
	}
}
