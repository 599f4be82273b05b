package partners

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/svc"
)

// NATS delivery of triggers: every partner with NATS credentials has a
// durable pull consumer "partner-{id}" on the PARTNERS stream, filtered to
// partners.{id}.>, with explicit acks. A partner that is offline when
// triggers are produced receives them when it fetches again (at least
// once; the trigger id is the idempotency key).
const (
	// TriggerStream is the JetStream stream holding partner triggers.
	TriggerStream = "PARTNERS"
	// ReservedPartnerID cannot be a partner id: "partner-webhooks" is the
	// webhook deliverer's durable on the same stream.
	ReservedPartnerID = "webhooks"

	natsDeadLetterSubject = "deadletter.nats." // + partner id
	natsDLType            = "partner.nats.undeliverable"
	maxDeliveriesAdvisory = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + TriggerStream + ".*"
	durablePrefix         = "partner-"
)

// Durable is the name of partner id's pull consumer on TriggerStream.
func Durable(id string) string { return durablePrefix + id }

// InboxPrefix is the reply-inbox prefix partner id's client may use
// (nats.CustomInboxPrefix); the default "_INBOX" works as well: inboxes are
// private to the partner's own NATS account.
func InboxPrefix(id string) string { return "_INBOX_" + id }

// NATSAPIPrefix is the JetStream API prefix of partner clients
// (jetstream.NewWithAPIPrefix; nats CLI --js-api-prefix): the gateway's
// consumer API is imported into the partner's account under it, apart from
// the server's own $JS.API.> (which answers "JetStream not enabled" there).
const NATSAPIPrefix = "telegate.API"

// NATSImports are what the gateway account exports to partner id's NATS
// account, and nothing else (the "share a pull consumer as a service"
// pattern of NATS cross-account JetStream):
//
//	service $JS.API.CONSUMER.MSG.NEXT.PARTNERS.partner-{id}  fetch (a stream of answers),
//	        as telegate.API.CONSUMER.MSG.NEXT.PARTNERS.partner-{id}
//	service $JS.API.CONSUMER.INFO.PARTNERS.partner-{id}      consumer info (js.Consumer),
//	        as telegate.API.CONSUMER.INFO.PARTNERS.partner-{id}
//	service $JS.ACK.PARTNERS.partner-{id}.>                   ack / nak / term / in-progress
//	stream  partners.{id}.triggers                            live (core NATS) triggers
//
// Answers to the partner's requests are mapped by the server back into the
// partner's own account: whatever reply subject the partner names, nothing
// reaches the gateway's subjects, buckets or streams.
//
// The ack subject is nats-server's v1 format ($JS.ACK.<stream>.<consumer>.
// <delivered>.<stream seq>.<consumer seq>.<ns>.<pending>), the default up to
// at least v2.15; a server with the js_ack_fc_v2 feature flag would need
// $JS.ACK._.<account hash>.PARTNERS.partner-{id}.> instead.
func NATSImports(id string) []natsbus.Import {
	d := Durable(id)
	return []natsbus.Import{
		{Subject: "$JS.API.CONSUMER.MSG.NEXT." + TriggerStream + "." + d, StreamResponse: true,
			To: NATSAPIPrefix + ".CONSUMER.MSG.NEXT." + TriggerStream + "." + d},
		{Subject: "$JS.API.CONSUMER.INFO." + TriggerStream + "." + d, To: NATSAPIPrefix + ".CONSUMER.INFO." + TriggerStream + "." + d},
		{Subject: "$JS.ACK." + TriggerStream + "." + d + ".>"},
		{Subject: Subject(id), Stream: true},
	}
}

// NATSPermissions are the allow lists of partner id's user inside its own
// account (defence in depth; the account is the isolation): the imported
// subjects, and its inboxes.
func NATSPermissions(id string) (publish, subscribe []string) {
	d := Durable(id)
	publish = []string{
		NATSAPIPrefix + ".CONSUMER.MSG.NEXT." + TriggerStream + "." + d,
		NATSAPIPrefix + ".CONSUMER.INFO." + TriggerStream + "." + d,
		"$JS.ACK." + TriggerStream + "." + d + ".>",
	}
	subscribe = []string{"_INBOX.>", InboxPrefix(id) + ".>", "partners." + id + ".>"}
	return publish, subscribe
}

// NATSDeliveryConfig configures the partners' consumers.
type NATSDeliveryConfig struct {
	AckWait       time.Duration // redelivery after this without ack (default 30 s)
	MaxDeliver    int           // deliveries before a trigger is given up (default 20)
	MaxAckPending int           // unacknowledged triggers per partner (default 1000)
	Clock         svc.Clock
}

// NATSDelivery provisions the partners' durable consumers and records the
// triggers a partner never acknowledged within MaxDeliver deliveries
// (published to deadletter.nats.{partner}, counted in NATSStatus).
type NATSDelivery struct {
	cfg NATSDeliveryConfig
	nc  *nats.Conn
	js  jetstream.JetStream
	reg *Registry
	pub svc.Publisher
	log *slog.Logger

	mu      sync.Mutex
	ensured map[string]bool // partner ids whose consumer exists (this process)

	ready     chan struct{} // closed when Run listens to advisories
	readyOnce sync.Once
}

// NewNATSDelivery returns the provisioner; call Ensure, then Run.
func NewNATSDelivery(nc *nats.Conn, js jetstream.JetStream, reg *Registry, cfg NATSDeliveryConfig, log *slog.Logger) *NATSDelivery {
	if cfg.AckWait <= 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.MaxDeliver <= 0 {
		cfg.MaxDeliver = 20
	}
	if cfg.MaxAckPending <= 0 {
		cfg.MaxAckPending = 1000
	}
	return &NATSDelivery{cfg: cfg, nc: nc, js: js, reg: reg, pub: svc.Publisher{JS: js}, log: log, ensured: map[string]bool{},
		ready: make(chan struct{})}
}

// ConsumerConfig is partner id's durable consumer.
func (d *NATSDelivery) ConsumerConfig(id string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       Durable(id),
		Description:   "Triggers of partner " + id + " (pull, explicit ack)",
		FilterSubject: "partners." + id + ".>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       d.cfg.AckWait,
		MaxDeliver:    d.cfg.MaxDeliver,
		MaxAckPending: d.cfg.MaxAckPending,
		// Bound what one pull request of the partner may hold on the
		// server (the clients' defaults: 500 messages, 30 s).
		MaxRequestBatch:   500,
		MaxRequestExpires: 2 * time.Minute,
	}
}

// Ensure creates (or updates to the current configuration) the durable
// consumer of every partner with NATS credentials that this process has
// not provisioned yet. Idempotent; an existing consumer keeps its position.
func (d *NATSDelivery) Ensure(ctx context.Context) error {
	var errs []error
	for _, p := range d.reg.Partners() {
		if p.NATS == nil {
			continue
		}
		d.mu.Lock()
		done := d.ensured[p.ID]
		d.mu.Unlock()
		if done {
			continue
		}
		if _, err := d.js.CreateOrUpdateConsumer(ctx, TriggerStream, d.ConsumerConfig(p.ID)); err != nil {
			errs = append(errs, fmt.Errorf("partner %s: consumer %s: %w", p.ID, Durable(p.ID), err))
			continue
		}
		d.mu.Lock()
		d.ensured[p.ID] = true
		d.mu.Unlock()
	}
	return errors.Join(errs...)
}

// maxDeliverAdvisory is nats-server's io.nats.jetstream.advisory.v1.max_deliver.
type maxDeliverAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// Run listens to the server's max-deliveries advisories for the partners'
// consumers until ctx ends and dead-letters the trigger each one names.
// Advisories are core NATS: one raised while the gateway is down is not
// seen (the trigger stays in the stream, unacknowledged).
func (d *NATSDelivery) Run(ctx context.Context) error {
	ch := make(chan *nats.Msg, 256)
	sub, err := d.nc.ChanSubscribe(maxDeliveriesAdvisory, ch)
	if err != nil {
		return fmt.Errorf("partner nats advisories: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := d.nc.Flush(); err != nil {
		d.log.Warn("partner nats advisories: flush", "err", err)
	}
	d.readyOnce.Do(func() { close(d.ready) })
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-ch:
			var a maxDeliverAdvisory
			if err := json.Unmarshal(m.Data, &a); err != nil {
				continue
			}
			d.undeliverable(ctx, a)
		}
	}
}

// Listening is closed once Run receives advisories.
func (d *NATSDelivery) Listening() <-chan struct{} { return d.ready }

func (d *NATSDelivery) undeliverable(ctx context.Context, a maxDeliverAdvisory) {
	if a.Stream != TriggerStream || len(a.Consumer) <= len(durablePrefix) || a.Consumer[:len(durablePrefix)] != durablePrefix {
		return
	}
	pid := a.Consumer[len(durablePrefix):]
	if _, ok := d.reg.Get(pid); !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var payload []byte
	var t Trigger
	if st, err := d.js.Stream(ctx, TriggerStream); err == nil {
		if raw, err := st.GetMsg(ctx, a.StreamSeq); err == nil {
			payload = raw.Data
			_ = json.Unmarshal(raw.Data, &t)
		}
	}
	id := t.ID
	if id == "" {
		id = fmt.Sprintf("seq-%d", a.StreamSeq)
	}
	d.log.Warn("partner did not acknowledge a trigger: given up", "partner", pid, "trigger", id,
		"deliveries", a.Deliveries, "stream_seq", a.StreamSeq)
	if err := d.pub.Publish(ctx, natsDeadLetterSubject+pid, "dl-nats-"+id, natsDLType, pid, d.cfg.Clock.Now(),
		map[string]any{"partner": pid, "trigger_id": id, "deliveries": a.Deliveries, "stream_seq": a.StreamSeq,
			"payload": string(payload)}); err != nil {
		d.log.Warn("nats dead letter not published", "partner", pid, "err", err)
	}
}

// NATSStatus is the state of a partner's NATS delivery.
type NATSStatus struct {
	Stream      string `json:"stream"`
	Durable     string `json:"durable"`
	Filter      string `json:"filter_subject"`
	InboxPrefix string `json:"inbox_prefix"`
	// Pending: triggers not yet delivered; AckPending: delivered, not yet
	// acknowledged; Redelivered: delivered more than once, not yet acked.
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
	MaxDeliver  int    `json:"max_deliver"`
	AckWaitSec  int    `json:"ack_wait_s"`
	// Undeliverable counts triggers given up after MaxDeliver deliveries
	// (messages on deadletter.nats.{partner} in DEADLETTER).
	Undeliverable uint64 `json:"undeliverable"`
}

// Status reports partner id's consumer state.
func (d *NATSDelivery) Status(ctx context.Context, id string) (NATSStatus, error) {
	p, ok := d.reg.Get(id)
	if !ok {
		return NATSStatus{}, fmt.Errorf("%s: %w", id, ErrUnknownPartner)
	}
	if p.NATS == nil {
		return NATSStatus{}, fmt.Errorf("%s: no NATS credentials: %w", id, svc.ErrNotFound)
	}
	cfg := d.ConsumerConfig(id)
	st := NATSStatus{Stream: TriggerStream, Durable: cfg.Durable, Filter: cfg.FilterSubject, InboxPrefix: InboxPrefix(id),
		MaxDeliver: cfg.MaxDeliver, AckWaitSec: int(cfg.AckWait / time.Second)}
	c, err := d.js.Consumer(ctx, TriggerStream, cfg.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return st, fmt.Errorf("consumer %s: %w", cfg.Durable, svc.ErrNotFound)
	}
	if err != nil {
		return st, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return st, err
	}
	st.Pending, st.AckPending, st.Redelivered = info.NumPending, info.NumAckPending, info.NumRedelivered
	subj := natsDeadLetterSubject + id
	if dl, err := d.js.Stream(ctx, "DEADLETTER"); err == nil {
		if si, err := dl.Info(ctx, jetstream.WithSubjectFilter(subj)); err == nil {
			st.Undeliverable = si.State.Subjects[subj]
		}
	}
	return st, nil
}

// Mount adds
//
//	GET /api/v1/partners/{partner}/nats   admin or that partner: NATSStatus
func (d *NATSDelivery) Mount(mux *http.ServeMux, auth *svc.Auth) {
	mux.HandleFunc("GET /api/v1/partners/{partner}/nats", auth.AdminOrPartner(func(w http.ResponseWriter, r *http.Request, _ svc.Principal) {
		st, err := d.Status(r.Context(), r.PathValue("partner"))
		if err != nil {
			svc.Fail(w, err)
			return
		}
		svc.JSON(w, http.StatusOK, st)
	}))
}
