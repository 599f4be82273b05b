package partners

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/internal/loglimit"
)

// Webhook headers.
const (
	HeaderTimestamp   = "X-Telegate-Timestamp"   // Unix seconds
	HeaderSignature   = "X-Telegate-Signature"   // "v1=" + hex(HMAC-SHA256(secret, timestamp + "." + body))
	HeaderIdempotency = "Idempotency-Key"        // the trigger id
	HeaderAttempt     = "X-Telegate-Attempt"     // 1, 2, ...
	DeliveriesBucket  = "webhook_deliveries"     // delivery status, key {partner}.{trigger id}
	deadLetterSubject = "deadletter.webhook."    // + partner id
	webhookConsumer   = "partner-webhooks"       // durable consumer on PARTNERS
	maxWebhookBody    = 64 << 10                 // response bytes read (and discarded)
	signatureVersion  = "v1="                    // signature scheme prefix
	webhookUserAgent  = "telegate-webhooks/1"    // User-Agent
	maxBackoff        = 10 * time.Minute         // cap of the exponential backoff
	webhookParallel   = 16                       // deliveries in flight
	webhookReqTimeout = 10 * time.Second         // per attempt
	statusDelivered   = "delivered"              // Delivery.Status values
	statusRetrying    = "retrying"               //
	statusDeadLetter  = "dead_lettered"          //
	triggersWildcard  = "partners.*.triggers"    // consumer filter
	dlType            = "partner.webhook.failed" // dead-letter event type
	// DeliveriesTTL is how long a delivery status is kept after its last
	// update (the bucket's TTL, docs/data-model.md).
	DeliveriesTTL = 7 * 24 * time.Hour
	// DeliveriesListed bounds GET .../deliveries: the newest statuses
	// among the last DeliveriesScanned updates of the bucket (all
	// partners'); the listing never reads more than that.
	DeliveriesListed  = 500
	DeliveriesScanned = 10000
)

// ErrBadSignature is returned by VerifySignature.
var ErrBadSignature = errors.New("webhook: bad signature")

// Sign returns the signature header value for body sent at ts.
func Sign(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return signatureVersion + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature is what a partner runs on receipt: it checks the
// signature in constant time and that the timestamp is within tolerance of
// now (replay protection).
func VerifySignature(secret []byte, ts, sig string, body []byte, now time.Time, tolerance time.Duration) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp", ErrBadSignature)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: timestamp outside tolerance", ErrBadSignature)
	}
	if !hmac.Equal([]byte(Sign(secret, ts, body)), []byte(sig)) {
		return ErrBadSignature
	}
	return nil
}

// Delivery is the status of one trigger's webhook delivery.
type Delivery struct {
	Partner   string `json:"partner"`
	TriggerID string `json:"trigger_id"`
	Status    string `json:"status"` // delivered | retrying | dead_lettered
	Attempts  int    `json:"attempts"`
	// LastError is the last failed attempt's outcome label (Outcome*:
	// http_4xx, http_5xx, redirect_refused, address_refused, timeout,
	// tls_error, ...): never a status code, address or error text, so a
	// partner learns nothing about what its endpoint may point at.
	LastError string    `json:"last_error,omitempty"`
	Updated   time.Time `json:"updated"`
	NextRetry time.Time `json:"next_retry,omitzero"`
}

// WebhookConfig configures the webhook deliverer.
type WebhookConfig struct {
	MaxAttempts    int           // dead-letter after this many failed attempts (default 8)
	InitialBackoff time.Duration // first retry delay, doubled each time (default 1 s)
	// Egress limits where deliveries connect (zero value: public https
	// endpoints only, system roots).
	Egress Egress
	Clock  svc.Clock
}

// Webhooks delivers triggers to partners' HTTPS endpoints, at least once:
// a trigger is acknowledged on the stream only after a 2xx response or
// after it was dead-lettered (deadletter.webhook.{partner}).
type Webhooks struct {
	cfg    WebhookConfig
	client *http.Client // Egress.Client: no redirects, checked addresses
	js     jetstream.JetStream
	reg    *Registry
	kv     svc.KV
	pub    svc.Publisher
	log    *slog.Logger
	// listed and scanned bound Deliveries (DeliveriesListed,
	// DeliveriesScanned); set at construction, tests lower them.
	listed, scanned int
}

// NewWebhooks opens the deliveries bucket.
func NewWebhooks(ctx context.Context, js jetstream.JetStream, replicas int, reg *Registry, cfg WebhookConfig, log *slog.Logger) (*Webhooks, error) {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 8
	}
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = time.Second
	}
	kv, err := svc.OpenKVTTL(ctx, js, DeliveriesBucket, "Partner webhook delivery status", replicas, DeliveriesTTL)
	if err != nil {
		return nil, err
	}
	return &Webhooks{cfg: cfg, client: cfg.Egress.Client(webhookReqTimeout), js: js, reg: reg, kv: kv, pub: svc.Publisher{JS: js}, log: log,
		listed: DeliveriesListed, scanned: DeliveriesScanned}, nil
}

// Backoff is the delay before attempt n+1 after n failed attempts.
func (w *Webhooks) Backoff(n int) time.Duration {
	d := w.cfg.InitialBackoff << min(n-1, 20)
	return min(d, maxBackoff)
}

// Run consumes partners.*.triggers until ctx ends.
func (w *Webhooks) Run(ctx context.Context) error {
	cons, err := w.js.CreateOrUpdateConsumer(ctx, "PARTNERS", jetstream.ConsumerConfig{
		Durable: webhookConsumer, FilterSubject: triggersWildcard, AckPolicy: jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverNewPolicy, AckWait: 2 * webhookReqTimeout, MaxAckPending: 1024, MaxDeliver: -1,
	})
	if err != nil {
		return fmt.Errorf("webhook consumer: %w", err)
	}
	sem := make(chan struct{}, webhookParallel)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		go func() {
			defer func() { <-sem }()
			w.handle(ctx, m)
		}()
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
	for range webhookParallel {
		sem <- struct{}{}
	}
	return nil
}

func (w *Webhooks) handle(ctx context.Context, m jetstream.Msg) {
	parts := strings.Split(m.Subject(), ".")
	if len(parts) != 3 {
		_ = m.Term()
		return
	}
	p, ok := w.reg.Get(parts[1])
	if !ok || p.Webhook == nil {
		_ = m.Ack() // partner consumes over NATS only
		return
	}
	md, err := m.Metadata()
	if err != nil {
		_ = m.Nak()
		return
	}
	id := m.Headers().Get("Nats-Msg-Id")
	if !svc.ValidID(id) {
		id = strconv.FormatUint(md.Sequence.Stream, 10)
	}
	attempt := int(md.NumDelivered)
	code, err := w.post(ctx, p, id, attempt, m.Data())
	label := outcome(code, err)
	now := w.cfg.Clock.Now().UTC()
	d := Delivery{Partner: p.ID, TriggerID: id, Attempts: attempt, Updated: now}
	switch {
	case err == nil:
		d.Status = statusDelivered
		_ = m.Ack()
	case attempt >= w.cfg.MaxAttempts:
		d.Status, d.LastError = statusDeadLetter, label
		if perr := w.pub.Publish(ctx, deadLetterSubject+p.ID, "dl-webhook-"+id, dlType, p.ID, now,
			map[string]any{"partner": p.ID, "trigger_id": id, "attempts": attempt, "last_error": label,
				"payload": string(m.Data())}); perr != nil {
			w.log.Warn("webhook dead letter not published", "partner", p.ID, "err", perr)
			_ = m.NakWithDelay(w.Backoff(attempt))
			return
		}
		_ = m.Term()
		w.log.Warn("webhook dead-lettered", "partner", p.ID, "url", loglimit.URL(p.Webhook.URL), "trigger", id,
			"attempts", attempt, "outcome", label)
	default:
		back := w.Backoff(attempt)
		d.Status, d.LastError, d.NextRetry = statusRetrying, label, now.Add(back)
		w.log.Debug("webhook attempt failed", "partner", p.ID, "url", loglimit.URL(p.Webhook.URL), "trigger", id,
			"attempt", attempt, "outcome", label)
		_ = m.NakWithDelay(back)
	}
	if err := w.kv.Put(ctx, p.ID+"."+id, d); err != nil && ctx.Err() == nil {
		w.log.Warn("webhook status not stored", "partner", p.ID, "err", err)
	}
}

// post sends one attempt to the partner's registered URL. It returns the
// endpoint's status code (0 when none) and nil only for a 2xx; a 3xx is
// ErrRedirectRefused (never followed).
func (w *Webhooks) post(ctx context.Context, p Partner, id string, attempt int, body []byte) (int, error) {
	if err := checkURL(p.Webhook.URL); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, webhookReqTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Webhook.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	ts := strconv.FormatInt(w.cfg.Clock.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", webhookUserAgent)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign([]byte(p.Webhook.Secret), ts, body))
	req.Header.Set(HeaderIdempotency, id)
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("post: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxWebhookBody))
	_ = resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		return resp.StatusCode, ErrRedirectRefused
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// Deliveries lists a partner's delivery statuses, newest first: at most
// DeliveriesListed, taken from the last DeliveriesScanned updates of the
// bucket. The work is bounded whatever the partner's history: the bucket
// keeps one message per key (its latest status), so its stream's tail holds
// the most recently updated statuses; one ephemeral consumer filtered on
// the partner's keys reads that tail once, values included (no read per
// key).
func (w *Webhooks) Deliveries(ctx context.Context, partner string) ([]Delivery, error) {
	stream := "KV_" + DeliveriesBucket
	st, err := w.js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("deliveries: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("deliveries: %w", err)
	}
	out := []Delivery{}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return out, nil
	}
	start := uint64(1)
	if last > uint64(w.scanned) {
		start = last - uint64(w.scanned) + 1
	}
	prefix := "$KV." + DeliveriesBucket + "."
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{FilterSubject: prefix + partner + ".>",
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start, AckPolicy: jetstream.AckNonePolicy,
		MemoryStorage: true, InactiveThreshold: time.Minute})
	if err != nil {
		return nil, fmt.Errorf("deliveries: %w", err)
	}
	defer func() { _ = st.DeleteConsumer(context.WithoutCancel(ctx), cons.CachedInfo().Name) }()
	pending := int(min(cons.CachedInfo().NumPending, last-start+1))
	for got := 0; got < pending; {
		batch, err := cons.FetchNoWait(min(pending-got, 256))
		if err != nil {
			return nil, fmt.Errorf("deliveries: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if op := m.Headers().Get("KV-Operation"); op != "" {
				continue // DEL or PURGE marker
			}
			var d Delivery
			if json.Unmarshal(m.Data(), &d) == nil && d.Partner == partner {
				out = append(out, d)
			}
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("deliveries: %w", err)
		}
		if n == 0 {
			break // expired or purged since the consumer was created
		}
		got += n
	}
	slices.SortFunc(out, func(a, b Delivery) int { return b.Updated.Compare(a.Updated) })
	if len(out) > w.listed {
		out = out[:w.listed]
	}
	return out, nil
}

// Mount adds GET /api/v1/partners/{partner}/deliveries (admin or that
// partner).
func (w *Webhooks) Mount(mux *http.ServeMux, auth *svc.Auth) {
	mux.HandleFunc("GET /api/v1/partners/{partner}/deliveries", auth.AdminOrPartner(func(rw http.ResponseWriter, r *http.Request, _ svc.Principal) {
		p := r.PathValue("partner")
		if _, ok := w.reg.Get(p); !ok {
			svc.Fail(rw, ErrUnknownPartner)
			return
		}
		ds, err := w.Deliveries(r.Context(), p)
		if err != nil {
			svc.Fail(rw, err)
			return
		}
		svc.JSON(rw, http.StatusOK, map[string]any{"partner": p, "deliveries": ds})
	}))
}
