package offers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/gateway/sink/eventsink"
)

// Attribution of a charging session to a vehicle's owner. A charger says
// which vehicle it charges; it is not believed on its word: a session is
// attributed to the VIN's owner only when something the charger cannot
// make up corroborates it.
const (
	// AttrUnverified: only the charger's claim (or no VIN). Stored, counted,
	// attributed to nobody: no profile entry, no partner offer.
	AttrUnverified = "unverified"
	// AttrIDTag: the session carries an id tag (RFID card, Plug & Charge
	// contract id) bound to the VIN's owner in the customer registry.
	AttrIDTag = "id_tag"
	// AttrVehicle: the vehicle itself placed itself at the station: its
	// latest event with a position (vehicle.event.{vin}) is within
	// AttributionConfig.RadiusM of the station and was received by the
	// gateway within Window of the session (gateway receive times, never
	// the devices' own clocks).
	AttrVehicle = "vehicle_corroborated"
)

// Session time. A charger sets its session's timestamp itself (the ingest
// accepts any from 2000 to now + 1 h; OCPP timestamps are the station's
// too), so the services never decide on it: freshness, daily caps and
// opening hours use the gateway's receive time (ChargingEvent.ReceivedAt,
// the spool record's). A session whose own timestamp is more than
// MaxSkew away from its receive time, or that carries no receive time, is
// attributed to nobody (AttrUnverified, counted in AttributionStats.Skewed).

// AttributionBucket keeps the decision taken when a session started
// (key {station}.{session}, value {"attribution": ...}; no VIN, no
// customer), so that the session's later events get the same one.
const AttributionBucket = "charging_attribution"

// Defaults of AttributionConfig.
const (
	DefaultAttributionWindow = 15 * time.Minute
	DefaultAttributionRadius = 500.0
	DefaultMaxSkew           = 15 * time.Minute
	attributionTTL           = 7 * 24 * time.Hour
)

// AttributionConfig configures the Attributor.
type AttributionConfig struct {
	Stations map[string]Station
	// Window bounds |vehicle event receive time - session receive time|
	// (default 15 min).
	Window time.Duration
	// MaxSkew bounds |session device time - session receive time| (default
	// 15 min); beyond it the session is AttrUnverified.
	MaxSkew time.Duration
	// RadiusM bounds the vehicle's distance to the station (default 500 m).
	RadiusM float64
}

// AttributionCustomers is what the Attributor needs from the registry.
type AttributionCustomers interface {
	Lookup(vin string) (customers.Owner, bool)
	IDTagOwner(tag string) (string, bool)
	VINs(customerID string) []string
}

// AttributionStats counts the decisions.
type AttributionStats struct {
	Unverified, IDTag, Vehicle atomic.Int64
	// Skewed counts the sessions refused (and counted in Unverified too)
	// because their device time is more than MaxSkew from the gateway's
	// receive time, or they carry no receive time.
	Skewed atomic.Int64
}

// Attributor decides whether a charging session belongs to the owner of
// the VIN its charger names (see the Attr* constants).
type Attributor struct {
	cfg  AttributionConfig
	js   jetstream.JetStream
	kv   svc.KV
	cust AttributionCustomers

	Stats AttributionStats
}

// NewAttributor opens the attribution bucket.
func NewAttributor(ctx context.Context, js jetstream.JetStream, replicas int, cust AttributionCustomers, cfg AttributionConfig) (*Attributor, error) {
	if cfg.Window <= 0 {
		cfg.Window = DefaultAttributionWindow
	}
	if cfg.RadiusM <= 0 {
		cfg.RadiusM = DefaultAttributionRadius
	}
	if cfg.MaxSkew <= 0 {
		cfg.MaxSkew = DefaultMaxSkew
	}
	b, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: AttributionBucket,
		Description: "Charging session attribution decided at session start", Storage: jetstream.FileStorage,
		Replicas: max(replicas, 1), History: 1, TTL: attributionTTL})
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", AttributionBucket, err)
	}
	return &Attributor{cfg: cfg, js: js, kv: svc.KV{B: b}, cust: cust}, nil
}

type attributionRecord struct {
	Attribution string `json:"attribution"`
}

// Attribute returns the session's attribution and, unless it is
// AttrUnverified, the owner it is attributed to. at is the session's device
// time (the envelope's), checked against d.ReceivedAt (see MaxSkew). The decision taken at
// the session's start is kept and reused for its later events (a vehicle
// parked for an hour is still the one that was corroborated at the start);
// a session whose start was not seen is decided on the event at hand.
func (a *Attributor) Attribute(ctx context.Context, at time.Time, d eventsink.ChargingEvent) (customers.Owner, string, error) {
	key := natsbus.Token(d.Station) + "." + natsbus.Token(d.SessionID)
	if d.Event != "started" && d.SessionID != "" {
		var rec attributionRecord
		_, err := a.kv.Get(ctx, key, &rec)
		switch {
		case err == nil:
			if rec.Attribution == AttrIDTag {
				if o, ok := a.byTag(d); ok {
					return o, AttrIDTag, nil
				}
				return customers.Owner{}, AttrUnverified, nil
			}
			o, ok := a.cust.Lookup(d.VIN)
			if !ok || rec.Attribution == AttrUnverified || d.VIN == "" {
				return customers.Owner{}, AttrUnverified, nil
			}
			return o, rec.Attribution, nil
		case !errors.Is(err, svc.ErrNotFound):
			return customers.Owner{}, AttrUnverified, err
		}
	}
	o, attr := a.decide(ctx, at, d)
	switch attr {
	case AttrIDTag:
		a.Stats.IDTag.Add(1)
	case AttrVehicle:
		a.Stats.Vehicle.Add(1)
	default:
		a.Stats.Unverified.Add(1)
	}
	if d.Event == "started" && d.SessionID != "" {
		if err := a.kv.Put(ctx, key, attributionRecord{Attribution: attr}); err != nil {
			return customers.Owner{}, AttrUnverified, err
		}
	}
	if attr == AttrUnverified {
		return customers.Owner{}, attr, nil
	}
	return o, attr, nil
}

// Skewed reports whether a session's device time at is too far from the
// gateway's receive time to be trusted (or there is no receive time).
func (a *Attributor) Skewed(at time.Time, d eventsink.ChargingEvent) bool {
	return d.ReceivedAt.IsZero() || absDur(at.Sub(d.ReceivedAt)) > a.cfg.MaxSkew
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func (a *Attributor) decide(ctx context.Context, at time.Time, d eventsink.ChargingEvent) (customers.Owner, string) {
	if a.Skewed(at, d) {
		a.Stats.Skewed.Add(1)
		return customers.Owner{}, AttrUnverified
	}
	if o, ok := a.byTag(d); ok {
		return o, AttrIDTag
	}
	if d.VIN == "" {
		return customers.Owner{}, AttrUnverified
	}
	o, ok := a.cust.Lookup(d.VIN)
	if !ok {
		return customers.Owner{}, AttrUnverified
	}
	if a.vehicleAt(ctx, d) {
		return o, AttrVehicle
	}
	return customers.Owner{}, AttrUnverified
}

// byTag attributes a session by its id tag: the tag must be bound to a
// customer (customers.yaml id_tags), and the session's vehicle is then the
// VIN the charger names if it is that customer's, or, when the charger
// names none (an OCPP station reports only the id tag), the customer's only
// vehicle. A VIN the charger names that belongs to someone else, or a
// customer with several vehicles and no VIN, is not attributed by the tag.
func (a *Attributor) byTag(d eventsink.ChargingEvent) (customers.Owner, bool) {
	if d.IDTag == "" {
		return customers.Owner{}, false
	}
	id, ok := a.cust.IDTagOwner(d.IDTag)
	if !ok {
		return customers.Owner{}, false
	}
	vin := d.VIN
	if vin == "" {
		vins := a.cust.VINs(id)
		if len(vins) != 1 {
			return customers.Owner{}, false
		}
		vin = vins[0]
	}
	o, ok := a.cust.Lookup(vin)
	if !ok || o.CustomerID != id {
		return customers.Owner{}, false
	}
	return o, true
}

// vehicleAt reports whether the vehicle's latest event with a position
// puts it at the station around the session's receive time. The vehicle's
// event time is its receive time too (the envelope's device time only for
// an event without one, published before receive times were carried).
func (a *Attributor) vehicleAt(ctx context.Context, d eventsink.ChargingEvent) bool {
	st, ok := a.cfg.Stations[d.Station]
	if !ok || !svc.ValidID(d.VIN) {
		return false
	}
	s, err := a.js.Stream(ctx, natsbus.StreamVehicle)
	if err != nil {
		return false
	}
	m, err := s.GetLastMsgForSubject(ctx, natsbus.SubjectVehicleEvent(d.VIN))
	if err != nil {
		return false
	}
	ev, err := svc.Decode(m.Data)
	if err != nil {
		return false
	}
	var ve eventsink.VehicleEvent
	if json.Unmarshal(ev.Data, &ve) != nil || ve.Position == nil || ve.VIN != d.VIN {
		return false
	}
	vt := ve.ReceivedAt
	if vt.IsZero() {
		vt = ev.Time
	}
	if absDur(vt.Sub(d.ReceivedAt)) > a.cfg.Window {
		return false
	}
	return DistanceM(st.Lat, st.Lon, ve.Position.Lat, ve.Position.Lon) <= a.cfg.RadiusM
}
