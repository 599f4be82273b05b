// Package offers turns charging sessions into charging-partner offers. On
// charging.session.started.{station} it estimates the driver's dwell from
// SoC, target SoC, power and the vehicle's battery capacity, and for each
// partner picks the nearest venue in range of the station that is open,
// available and whose minimum dwell is met. If the driver holds the
// separate "partner_offers" consent and the venue's daily cap for that
// driver is not reached, it publishes a partners.Trigger on
// partners.{partner}.triggers, sends the offer to the vehicle's head unit
// (a command "offer" through vehicle.cmd.{vin}) and records it in the
// customer's profile. Partners redeem offers through the HTTP API.
//
// Everything is idempotent on the offer id, derived from the session,
// partner and venue: a redelivered session event re-publishes the same
// trigger (same Nats-Msg-Id / Idempotency-Key) and never counts twice
// against the cap. The head-unit command's id is an HMAC of the offer id
// under the token key (Tokens.CommandID): stable, but not computable by
// the charger.
package offers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/cluster/kvstate"
	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/commands"
	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/partners"
	"github.com/telegate/telegate/gateway/services/profile"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/gateway/sink/eventsink"
)

// Bucket holds offer records (o.{ref}.{offer}) and the offer index
// (i.{offer}); ref is the customer's pseudonym (customers.Customer.Ref),
// never the id. CapBucket holds the daily cap counters
// (cap.{ref}.{partner}.{venue}.{date}), one per driver, venue and local
// day: they expire CapTTL after their last write (a day is over well
// before), so the bucket does not grow by a key a day forever.
const (
	Bucket    = "offers"
	CapBucket = "offer_caps"
	CapTTL    = 3 * 24 * time.Hour
)

// Errors of the engine.
var (
	ErrUnknownOffer = fmt.Errorf("unknown offer: %w", svc.ErrNotFound)
	ErrWrongCode    = fmt.Errorf("offer code does not match: %w", svc.ErrInvalid)
)

// Customers is what the engine needs from the customer registry.
type Customers interface {
	Lookup(vin string) (customers.Owner, bool)
	Consented(id, consent string) bool
	TokenSalt(id string) string
	IDTagOwner(tag string) (string, bool)
	VINs(customerID string) []string
}

// Partners is what the engine needs from the partner registry.
type Partners interface {
	Partners() []partners.Partner
}

// Record is an offer as stored (internal: it links to the customer's
// pseudonym; erasure deletes it).
type Record struct {
	ID      string `json:"id"`
	Ref     string `json:"ref"`
	VIN     string `json:"vin"`
	Partner string `json:"partner"`
	Venue   string `json:"venue"`
	Station string `json:"station"`
	Code    string `json:"offer_code"`
	Text    string `json:"offer_text"`
	Token   string `json:"driver_token"`
	// CmdID is the head-unit command's id (Tokens.CommandID), fixed when
	// the offer is created; empty in records made before it existed.
	CmdID      string     `json:"cmd_id,omitempty"`
	DwellMin   int        `json:"expected_dwell_min"`
	SentAt     time.Time  `json:"sent_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
	RedeemedAt *time.Time `json:"redeemed_at,omitempty"`
}

// Stats counts the engine's decisions.
type Stats struct {
	Sessions, Triggers, NoOwner, NoConsent, UnknownStation, NoVenue, Capped atomic.Int64
	// Unverified counts sessions whose attribution the charger alone
	// claims: they trigger nothing.
	Unverified atomic.Int64
	// Evaluated counts sessions whose evaluation has finished (Sessions
	// counts those started).
	Evaluated atomic.Int64
}

// Config configures the engine.
type Config struct {
	Stations map[string]Station
	Tokens   *Tokens
	Clock    svc.Clock
	// Attribution configures the session attribution (Stations is taken
	// from above).
	Attribution AttributionConfig
}

// Engine is the offer engine.
type Engine struct {
	cfg  Config
	js   jetstream.JetStream
	kv   svc.KV
	caps svc.KV // CapBucket
	pub  svc.Publisher
	cust Customers
	part Partners
	log  *slog.Logger
	// Attributor decides which sessions belong to a customer (shared with
	// the profile feeder).
	Attributor *Attributor

	// inflight is read-held by every evaluation; Barrier takes it for
	// writing so that when a consent withdrawal or an erasure returns, no
	// evaluation that saw the old consent is still publishing.
	inflight sync.RWMutex

	Stats Stats
}

// Barrier waits for the evaluations in flight. The customer registry calls
// it after storing a withdrawal or an erasure.
func (e *Engine) Barrier(context.Context, string) error {
	e.inflight.Lock()
	e.inflight.Unlock() //nolint:staticcheck // an empty critical section is the point
	return nil
}

// NewEngine opens the offers bucket.
func NewEngine(ctx context.Context, js jetstream.JetStream, replicas int, cust Customers, part Partners, cfg Config, log *slog.Logger) (*Engine, error) {
	if cfg.Tokens == nil {
		return nil, ErrNoTokenKey
	}
	kv, err := svc.OpenKV(ctx, js, Bucket, "Partner offers sent to drivers, redemptions and daily caps", replicas)
	if err != nil {
		return nil, err
	}
	caps, err := svc.OpenKVTTL(ctx, js, CapBucket, "Partner offer daily caps per driver, venue and local day", replicas, CapTTL)
	if err != nil {
		return nil, err
	}
	acfg := cfg.Attribution
	acfg.Stations = cfg.Stations
	attr, err := NewAttributor(ctx, js, replicas, cust, acfg)
	if err != nil {
		return nil, err
	}
	return &Engine{cfg: cfg, js: js, kv: kv, caps: caps, pub: svc.Publisher{JS: js}, cust: cust, part: part, log: log, Attributor: attr}, nil
}

// Run consumes charging.session.started.> (durable "offers-sessions",
// new sessions only) until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	return svc.Consume(ctx, e.js, svc.ConsumerSpec{Stream: natsbus.StreamCharging, Durable: "offers-sessions",
		Filter: natsbus.PrefixChargingSession + "started.>", New: true}, e.log, func(ctx context.Context, m jetstream.Msg) error {
		ev, err := svc.Decode(m.Data())
		if err != nil {
			return err
		}
		var d eventsink.ChargingEvent
		if err := jsonUnmarshal(ev.Data, &d); err != nil {
			return fmt.Errorf("%w: session: %w", svc.ErrInvalid, err)
		}
		_, err = e.HandleSession(ctx, ev.Time, d)
		return err
	})
}

// OfferID is the id of the offer a session at station makes for a
// partner's venue.
func OfferID(station, session, partner, venue string) string {
	return offerID(station, session, partner, venue)
}

// offerID derives the offer id from the session, partner and venue.
func offerID(station, session, partner, venue string) string {
	h := sha256.Sum256([]byte(station + "\x00" + session + "\x00" + partner + "\x00" + venue))
	return "ofr-" + hex.EncodeToString(h[:12])
}

// HandleSession evaluates a started session and returns the triggers sent.
// deviceAt is the charger's timestamp (the envelope's time); everything is
// decided on the gateway's receive time d.ReceivedAt (opening hours, the
// cap's local day, the offer's times), and a session whose deviceAt is
// far from it is not attributed (Attributor.Skewed).
func (e *Engine) HandleSession(ctx context.Context, deviceAt time.Time, d eventsink.ChargingEvent) (int, error) {
	e.inflight.RLock()
	defer e.inflight.RUnlock()
	e.Stats.Sessions.Add(1)
	defer e.Stats.Evaluated.Add(1)
	if d.SessionID == "" {
		e.Stats.NoOwner.Add(1)
		return 0, nil
	}
	d.Event = "started"
	o, attr, err := e.Attributor.Attribute(ctx, deviceAt, d)
	if err != nil {
		return 0, err
	}
	if attr == AttrUnverified {
		if _, known := e.cust.Lookup(d.VIN); !known {
			// Neither a bound id tag nor a registered VIN: an anonymous
			// RFID card, or a vehicle that is not a customer's.
			e.Stats.NoOwner.Add(1)
			return 0, nil
		}
		e.Stats.Unverified.Add(1)
		e.log.Info("charging session not attributed: nothing corroborates the charger's vehicle", "station", d.Station,
			"session", d.SessionID)
		return 0, nil
	}
	d.VIN = o.Vehicle.VIN // the attributed vehicle (an OCPP station may name none)
	if !e.cust.Consented(o.CustomerID, customers.ConsentPartnerOffers) {
		e.Stats.NoConsent.Add(1)
		return 0, nil
	}
	st, ok := e.cfg.Stations[d.Station]
	if !ok {
		e.Stats.UnknownStation.Add(1)
		e.log.Debug("session at unknown station", "station", d.Station)
		return 0, nil
	}
	at := d.ReceivedAt // set: Attribute refuses a session without one
	dwell := ExpectedDwell(d.SoCPct, d.TargetSoCPct, d.PowerW, o.Vehicle.Battery())
	sent := 0
	for _, p := range e.part.Partners() {
		v, ok := pickVenue(p, st, at, dwell)
		if !ok {
			e.Stats.NoVenue.Add(1)
			continue
		}
		n, err := e.offer(ctx, at, d, o, p, v, dwell)
		if err != nil {
			return sent, err
		}
		sent += n
	}
	return sent, nil
}

// pickVenue returns the partner's nearest eligible venue.
func pickVenue(p partners.Partner, st Station, at time.Time, dwellMin float64) (partners.Venue, bool) {
	best, bestD := partners.Venue{}, math.Inf(1)
	for _, v := range p.Venues {
		dist := DistanceM(st.Lat, st.Lon, v.Lat, v.Lon)
		if dist > v.RadiusM || !v.Available || !v.OpenAt(at) || dwellMin <= 0 ||
			time.Duration(dwellMin*float64(time.Minute)) < time.Duration(v.MinDwell) {
			continue
		}
		if dist < bestD {
			best, bestD = v, dist
		}
	}
	return best, !math.IsInf(bestD, 1)
}

func (e *Engine) offer(ctx context.Context, at time.Time, d eventsink.ChargingEvent, o customers.Owner, p partners.Partner, v partners.Venue, dwell float64) (int, error) {
	id := offerID(d.Station, d.SessionID, p.ID, v.ID)
	recKey := "o." + o.Ref + "." + id
	var rec Record
	_, err := e.kv.Get(ctx, recKey, &rec)
	switch {
	case errors.Is(err, svc.ErrNotFound):
		capKey := "cap." + o.Ref + "." + p.ID + "." + v.ID + "." + v.Day(at)
		// The cap is counted by compare-and-set (kvstate.Increment): two
		// replicas evaluating sessions of one driver at once never count
		// past it, and a lost race is retried, not failed.
		if v.DailyCap <= 0 {
			e.Stats.Capped.Add(1)
			return 0, nil
		}
		if _, ok, err := kvstate.Increment(ctx, e.caps.B, capKey, v.DailyCap); err != nil {
			return 0, err
		} else if !ok {
			e.Stats.Capped.Add(1)
			return 0, nil
		}
		rec = Record{ID: id, Ref: o.Ref, VIN: d.VIN, Partner: p.ID, Venue: v.ID, Station: d.Station,
			Code: v.Offer.Code, Text: v.Offer.Text, DwellMin: int(math.Round(dwell)), SentAt: at.UTC(),
			ExpiresAt: at.UTC().Add(time.Duration(dwell * float64(time.Minute))).Truncate(time.Second),
			Token:     e.cfg.Tokens.Driver(p.ID, o.CustomerID, e.cust.TokenSalt(o.CustomerID)), CmdID: e.cfg.Tokens.CommandID(id)}
		if err := e.kv.Put(ctx, "i."+id, map[string]string{"ref": o.Ref}); err != nil {
			return 0, err
		}
		if err := e.kv.Put(ctx, recKey, rec); err != nil {
			return 0, err
		}
	case err != nil:
		return 0, err
	}
	// Consent is checked again right before anything leaves (a withdrawal
	// or erasure may have happened since the first check, or before a
	// redelivery).
	if !e.cust.Consented(o.CustomerID, customers.ConsentPartnerOffers) {
		e.Stats.NoConsent.Add(1)
		return 0, nil
	}
	tr := partners.Trigger{V: 1, ID: id, Type: partners.TriggerType, Time: rec.SentAt, Partner: p.ID, Venue: v.ID,
		Station: rec.Station, DriverToken: rec.Token, ExpectedDwellMin: rec.DwellMin, OfferCode: rec.Code, ExpiresAt: rec.ExpiresAt}
	b, err := jsonMarshal(tr)
	if err != nil {
		return 0, err
	}
	if err := e.pub.PublishRaw(ctx, partners.Subject(p.ID), id, b); err != nil {
		return 0, err
	}
	exp := rec.ExpiresAt
	cmdID := rec.CmdID
	if cmdID == "" {
		cmdID = e.cfg.Tokens.CommandID(id)
	}
	if err := commands.Send(ctx, e.pub, rec.SentAt, commands.Request{VIN: rec.VIN, CmdID: cmdID,
		Name: "offer", Origin: "offers", ExpiresAt: &exp, Params: []commands.Param{
			{Key: "partner", Value: p.Name}, {Key: "venue", Value: v.Name}, {Key: "text", Value: rec.Text},
			{Key: "code", Value: rec.Code}, {Key: "offer_id", Value: id},
			{Key: "expires", Value: strconv.FormatInt(exp.Unix(), 10)}}}); err != nil {
		return 0, err
	}
	if err := e.pub.Publish(ctx, customers.ProfileSubject(o.Ref), "offer-sent-"+id, profile.TypeOfferSent, o.Ref,
		rec.SentAt, profile.OfferSent{OfferID: id, Partner: p.ID, Venue: v.ID, Station: rec.Station, Code: rec.Code}); err != nil {
		return 0, err
	}
	e.Stats.Triggers.Add(1)
	return 1, nil
}

// Redeem marks an offer of partner redeemed (idempotent). It returns the
// partner's view of the offer.
func (e *Engine) Redeem(ctx context.Context, partner, id, code string) (partners.Trigger, bool, error) {
	var idx map[string]string
	if !strings.HasPrefix(id, "ofr-") || !svc.ValidID(id) {
		return partners.Trigger{}, false, fmt.Errorf("%w: offer id", svc.ErrInvalid)
	}
	if _, err := e.kv.Get(ctx, "i."+id, &idx); err != nil {
		return partners.Trigger{}, false, fmt.Errorf("%s: %w", id, ErrUnknownOffer)
	}
	key := "o." + idx["ref"] + "." + id
	var rec Record
	rev, err := e.kv.Get(ctx, key, &rec)
	if err != nil || rec.Partner != partner {
		return partners.Trigger{}, false, fmt.Errorf("%s: %w", id, ErrUnknownOffer)
	}
	if rec.Code != code {
		return partners.Trigger{}, false, ErrWrongCode
	}
	view := partners.Trigger{V: 1, ID: rec.ID, Type: partners.TriggerType, Time: rec.SentAt, Partner: rec.Partner, Venue: rec.Venue,
		Station: rec.Station, DriverToken: rec.Token, ExpectedDwellMin: rec.DwellMin, OfferCode: rec.Code, ExpiresAt: rec.ExpiresAt}
	if rec.RedeemedAt != nil {
		return view, false, nil
	}
	now := e.cfg.Clock.Now().UTC()
	rec.RedeemedAt = &now
	if err := e.kv.Update(ctx, key, rec, rev); err != nil {
		return view, false, err
	}
	if err := e.pub.Publish(ctx, customers.ProfileSubject(rec.Ref), "offer-redeemed-"+id, profile.TypeOfferRedeemed,
		rec.Ref, now, profile.OfferRedeemed{OfferID: id}); err != nil {
		return view, true, err
	}
	return view, true, nil
}

// Erase forgets a customer's offers and caps (customers.ErasureHook): their
// tokens can no longer be redeemed or linked. It adds the offer ids and
// partner tokens to the erasure's needles, so that the triggers already in
// the PARTNERS stream (and their dead letters) are deleted too, and the
// purge markers of o.{ref}.*, cap.{ref}.* and i.{offer} are scrubbed.
func (e *Engine) Erase(ctx context.Context, er *customers.Erasure) error {
	_ = e.Barrier(ctx, er.Customer.ID)
	ref := er.Customer.Ref
	if ref == "" {
		return nil
	}
	var errs []error
	// cap.* in Bucket: counters written before CapBucket existed.
	for _, kp := range []struct {
		kv     svc.KV
		prefix string
	}{{e.kv, "o." + ref + ".>"}, {e.kv, "cap." + ref + ".>"}, {e.caps, "cap." + ref + ".>"}} {
		l, err := kp.kv.B.ListKeysFiltered(ctx, kp.prefix)
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for k := range l.Keys() {
			if id, ok := strings.CutPrefix(k, "o."+ref+"."); ok {
				var rec Record
				if _, err := e.kv.Get(ctx, k, &rec); err == nil && rec.Token != "" {
					er.Needles = append(er.Needles, rec.Token)
				}
				er.Needles = append(er.Needles, id)
				errs = append(errs, e.kv.Purge(ctx, "i."+id))
			}
			errs = append(errs, kp.kv.Purge(ctx, k))
		}
	}
	return errors.Join(errs...)
}
