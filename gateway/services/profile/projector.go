package profile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/gateway/sink/eventsink"
)

// Stream and subjects of profile events (natsbus.SubjectProfile builds one).
const (
	Stream        = natsbus.StreamProfile
	SubjectPrefix = natsbus.PrefixProfile
)

// ErrUnknownProfile is returned for a customer without profile.
var ErrUnknownProfile = fmt.Errorf("unknown profile: %w", svc.ErrNotFound)

// Refs maps customers to their pseudonyms and back (customers.Registry).
// Profiles and profile subjects are keyed by the pseudonym (ref), never by
// the customer id; an unknown ref is a customer that was erased (or never
// registered), whose events are dropped.
type Refs interface {
	ByRef(ref string) (customerID string, ok bool)
	Ref(customerID string) string
}

// Projector applies profile events to the profiles bucket.
type Projector struct {
	js     jetstream.JetStream
	kv     svc.KV
	erased Refs
	log    *slog.Logger
}

// NewProjector opens the profiles bucket.
func NewProjector(ctx context.Context, js jetstream.JetStream, replicas int, erased Refs, log *slog.Logger) (*Projector, error) {
	kv, err := svc.OpenKV(ctx, js, Bucket, "Customer profiles (projection of profile.events.>)", replicas)
	if err != nil {
		return nil, err
	}
	return &Projector{js: js, kv: kv, erased: erased, log: log}, nil
}

// Run consumes profile.events.> (durable consumer "profile-projector")
// until ctx ends.
func (p *Projector) Run(ctx context.Context) error {
	return svc.Consume(ctx, p.js, svc.ConsumerSpec{Stream: Stream, Durable: "profile-projector", Filter: SubjectPrefix + ">"},
		p.log, func(ctx context.Context, m jetstream.Msg) error { return p.Handle(ctx, m.Subject(), m.Data()) })
}

// live reports whether ref belongs to a registered customer.
func (p *Projector) live(ref string) bool {
	if p.erased == nil {
		return true
	}
	_, ok := p.erased.ByRef(ref)
	return ok
}

// Handle applies one profile event published on subject (the key is the
// subject's last token, the customer's ref).
func (p *Projector) Handle(ctx context.Context, subject string, data []byte) error {
	id := strings.TrimPrefix(subject, SubjectPrefix)
	if id == subject || !svc.ValidID(id) {
		return fmt.Errorf("%w: subject %s", svc.ErrInvalid, subject)
	}
	if !p.live(id) {
		return nil // erased (or unknown): nothing may be written for it
	}
	ev, err := svc.Decode(data)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		prof := New(id)
		rev, err := p.kv.Get(ctx, id, &prof)
		if err != nil && !errors.Is(err, svc.ErrNotFound) {
			return err
		}
		changed, err := Apply(&prof, ev)
		if err != nil || !changed {
			return err
		}
		err = p.kv.Update(ctx, id, prof, rev)
		if errors.Is(err, svc.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	// An erasure that raced with this event: remove what was just written
	// (Erase scrubs the purge marker, whose key is the ref).
	if !p.live(id) {
		return p.kv.Purge(ctx, id)
	}
	return nil
}

// Get returns the stored profile of customer id.
func (p *Projector) Get(ctx context.Context, id string) (Profile, error) {
	ref := id
	if p.erased != nil {
		ref = p.erased.Ref(id)
	}
	prof := New(id)
	if ref == "" {
		return prof, fmt.Errorf("%s: %w", id, ErrUnknownProfile)
	}
	if _, err := p.kv.Get(ctx, ref, &prof); err != nil {
		if errors.Is(err, svc.ErrNotFound) {
			return prof, fmt.Errorf("%s: %w", id, ErrUnknownProfile)
		}
		return prof, err
	}
	prof.CustomerID = id
	return prof, nil
}

// Erase removes the customer's profile events from the stream and the
// profile itself (customers.ErasureHook); customers.Registry.EraseWith
// then scrubs the purge markers, whose keys and subjects carry the ref.
func (p *Projector) Erase(ctx context.Context, e *customers.Erasure) error {
	ref := e.Customer.Ref
	if ref == "" {
		return nil
	}
	s, err := p.js.Stream(ctx, Stream)
	if err != nil {
		return err
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(SubjectPrefix+ref)); err != nil {
		return fmt.Errorf("purge profile events: %w", err)
	}
	return p.kv.Purge(ctx, ref)
}

// Replay rebuilds every profile from the stream in memory (without
// touching the bucket), e.g. to verify or rebuild the projection.
func (p *Projector) Replay(ctx context.Context) (map[string]Profile, error) {
	out := map[string]Profile{}
	cons, err := p.js.OrderedConsumer(ctx, Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{SubjectPrefix + ">"}})
	if err != nil {
		return nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	pending := info.NumPending
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 256)))
		if err != nil {
			return nil, err
		}
		for m := range batch.Messages() {
			id := strings.TrimPrefix(m.Subject(), SubjectPrefix)
			ev, err := svc.Decode(m.Data())
			if err == nil && p.live(id) {
				prof, ok := out[id]
				if !ok {
					prof = New(id)
				}
				if _, err := Apply(&prof, ev); err == nil {
					out[id] = prof
				}
			}
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			pending = md.NumPending
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Mount adds GET /api/v1/customers/{id}/profile (admin) to mux.
func (p *Projector) Mount(mux *http.ServeMux, auth *svc.Auth) {
	mux.HandleFunc("GET /api/v1/customers/{id}/profile", auth.Admin(func(w http.ResponseWriter, r *http.Request, _ svc.Principal) {
		id := r.PathValue("id")
		if !svc.ValidID(id) {
			svc.Error(w, http.StatusBadRequest, "invalid customer id")
			return
		}
		prof, err := p.Get(r.Context(), id)
		if err != nil {
			svc.Fail(w, err)
			return
		}
		svc.JSON(w, http.StatusOK, prof)
	}))
}

// Owners maps a VIN to its owner (customers.Registry).
type Owners interface {
	Lookup(vin string) (customers.Owner, bool)
}

// SessionAttributor decides whether a charging session belongs to the
// owner of the VIN its charger names (offers.Attributor): attribution is
// "unverified", "id_tag" or "vehicle_corroborated", and the owner is set
// unless it is "unverified".
type SessionAttributor interface {
	Attribute(ctx context.Context, at time.Time, d eventsink.ChargingEvent) (o customers.Owner, attribution string, err error)
}

// Feeder turns gateway events of registered vehicles into profile events:
// finished charging sessions (charging.session.stopped.>) that the
// Attributor attributes to the VIN's owner (a charger's word alone is not
// enough: without an Attributor no session reaches a profile) and DTC
// changes (telemetry.dtc.>). Event ids derive from the source event's id.
type Feeder struct {
	js     jetstream.JetStream
	pub    svc.Publisher
	owners Owners
	log    *slog.Logger
	// Attributor is set before Run (nil: no charging session is attributed).
	Attributor SessionAttributor
}

// NewFeeder returns a Feeder.
func NewFeeder(js jetstream.JetStream, owners Owners, log *slog.Logger) *Feeder {
	return &Feeder{js: js, pub: svc.Publisher{JS: js}, owners: owners, log: log}
}

// Run consumes the gateway's streams until ctx ends.
func (f *Feeder) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() {
		errc <- svc.Consume(ctx, f.js, svc.ConsumerSpec{Stream: natsbus.StreamCharging, Durable: "profile-feeder-charging",
			Filter: natsbus.PrefixChargingSession + "stopped.>"}, f.log, f.charging)
	}()
	go func() {
		errc <- svc.Consume(ctx, f.js, svc.ConsumerSpec{Stream: natsbus.StreamDTC, Durable: "profile-feeder-dtc",
			Filter: natsbus.PrefixDTC + ">"}, f.log, f.dtc)
	}()
	return errors.Join(<-errc, <-errc)
}

func (f *Feeder) charging(ctx context.Context, m jetstream.Msg) error {
	ev, d, err := decodeData[eventsink.ChargingEvent](m.Data())
	if err != nil {
		return err
	}
	if _, ok := f.owners.Lookup(d.VIN); d.VIN == "" || !ok || f.Attributor == nil {
		return nil
	}
	o, attr, err := f.Attributor.Attribute(ctx, ev.Time, d)
	if err != nil {
		return err
	}
	if o.Ref == "" {
		f.log.Debug("charging session not attributed", "station", d.Station, "session", d.SessionID, "attribution", attr)
		return nil
	}
	return f.pub.Publish(ctx, customers.ProfileSubject(o.Ref), "chg-"+ev.ID, TypeChargingSess, o.Ref, ev.Time,
		ChargingSession{VIN: d.VIN, Station: d.Station, SessionID: d.SessionID, EnergyKWh: d.EnergyWh / 1000})
}

func (f *Feeder) dtc(ctx context.Context, m jetstream.Msg) error {
	ev, d, err := decodeData[eventsink.DTCEvent](m.Data())
	if err != nil {
		return err
	}
	o, ok := f.owners.Lookup(d.VIN)
	if !ok {
		return nil
	}
	return f.pub.Publish(ctx, customers.ProfileSubject(o.Ref), "dtc-"+ev.ID, TypeDTC, o.Ref, ev.Time,
		DTCChanged{VIN: d.VIN, Code: d.Code, Status: d.Status, Cleared: ev.Type == "dtc.cleared"})
}

func decodeData[T any](b []byte) (natsbus.Event, T, error) {
	var d T
	ev, err := svc.Decode(b)
	if err != nil {
		return ev, d, err
	}
	if err := jsonUnmarshal(ev.Data, &d); err != nil {
		return ev, d, fmt.Errorf("%w: %s: %w", svc.ErrInvalid, ev.Type, err)
	}
	return ev, d, nil
}
