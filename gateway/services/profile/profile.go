// Package profile builds the consolidated customer profile from the events
// on profile.events.{customer} and keeps it in the JetStream key-value bucket
// "profiles". Applying an event is idempotent on its id (the profile keeps
// the ids it applied), and Apply is deterministic, so replaying the stream
// rebuilds the same profile.
//
// The Feeder turns gateway events (charging sessions, DTCs) of registered
// vehicles into profile events.
package profile

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/svc"
)

// Bucket is the key-value bucket of the profiles (key = the customer's
// pseudonym, customers.Customer.Ref).
const Bucket = "profiles"

// MaxAppliedIDs bounds the event ids a profile remembers for idempotency.
// JetStream's duplicate window removes duplicates published close together;
// the ids catch redeliveries and replays of the recent past.
const MaxAppliedIDs = 4096

// MaxRecentOffers bounds the offers listed in a profile.
const MaxRecentOffers = 50

// Event types of profile.events.{customer}.
const (
	TypeRegistered     = "customer.registered"
	TypeVehicleLinked  = "vehicle.linked"
	TypeConsentChanged = "consent.changed"
	TypeFeatureChanged = "feature.changed"
	TypeChargingSess   = "charging.session"
	TypeDTC            = "diag.dtc"
	TypeOfferSent      = "offer.sent"
	TypeOfferRedeemed  = "offer.redeemed"
)

// Profile is the one consolidated record of a customer.
type Profile struct {
	CustomerID   string                             `json:"customer_id"`
	Name         string                             `json:"name,omitempty"`
	Region       string                             `json:"region,omitempty"`
	Entitlements []string                           `json:"entitlements,omitempty"`
	Vehicles     map[string]Vehicle                 `json:"vehicles"`
	Consents     map[string]ConsentRecord           `json:"consents"`
	Features     map[string]map[string]FeatureState `json:"features"` // vin → feature → state
	Charging     ChargingSummary                    `json:"charging"`
	Diagnostics  map[string]DiagSummary             `json:"diagnostics"` // vin → last summary
	Offers       OfferSummary                       `json:"offers"`
	Events       int                                `json:"events"`
	UpdatedAt    time.Time                          `json:"updated_at"`
	Applied      []string                           `json:"applied_ids"`
}

// Vehicle is a vehicle in a profile.
type Vehicle struct {
	Model      string    `json:"model,omitempty"`
	BatteryKWh float64   `json:"battery_kwh"`
	LinkedAt   time.Time `json:"linked_at"`
}

// ConsentRecord is a consent's current state and history.
type ConsentRecord struct {
	Granted     bool            `json:"granted"`
	GrantedAt   *time.Time      `json:"granted_at,omitempty"`
	WithdrawnAt *time.Time      `json:"withdrawn_at,omitempty"`
	Source      string          `json:"source"`
	History     []ConsentChange `json:"history"`
}

// ConsentChange is one grant or withdrawal.
type ConsentChange struct {
	Granted bool      `json:"granted"`
	At      time.Time `json:"at"`
	Source  string    `json:"source"`
}

// FeatureState is a seasonal feature's state on a vehicle.
type FeatureState struct {
	Active bool      `json:"active"`
	CmdID  string    `json:"cmd_id"`
	Since  time.Time `json:"since"`
}

// FeatureChanged is the data of feature.changed (published once the
// vehicle acknowledged the command).
type FeatureChanged struct {
	VIN     string `json:"vin"`
	Feature string `json:"feature"`
	Active  bool   `json:"active"`
	CmdID   string `json:"cmd_id"`
}

// ChargingSummary totals the customer's charging sessions.
type ChargingSummary struct {
	Sessions      int        `json:"sessions"`
	EnergyKWh     float64    `json:"energy_kwh"`
	LastSessionAt *time.Time `json:"last_session_at,omitempty"`
	LastStation   string     `json:"last_station,omitempty"`
}

// ChargingSession is the data of charging.session (a finished session).
type ChargingSession struct {
	VIN       string  `json:"vin"`
	Station   string  `json:"station"`
	SessionID string  `json:"session_id"`
	EnergyKWh float64 `json:"energy_kwh"`
}

// DiagSummary is a vehicle's last diagnostics summary.
type DiagSummary struct {
	OpenDTCs  []string  `json:"open_dtcs"`
	UpdatedAt time.Time `json:"updated_at"`
}

// DTCChanged is the data of diag.dtc.
type DTCChanged struct {
	VIN     string `json:"vin"`
	Code    string `json:"code"`
	Status  string `json:"status"` // pending|confirmed|permanent|cleared
	Cleared bool   `json:"cleared"`
}

// OfferSummary counts the partner offers sent to and redeemed by the
// customer, with the most recent ones.
type OfferSummary struct {
	Sent     int          `json:"sent"`
	Redeemed int          `json:"redeemed"`
	Recent   []OfferEntry `json:"recent"`
}

// OfferEntry is one offer in the profile.
type OfferEntry struct {
	OfferID    string     `json:"offer_id"`
	Partner    string     `json:"partner"`
	Venue      string     `json:"venue"`
	Station    string     `json:"station"`
	Code       string     `json:"offer_code"`
	SentAt     time.Time  `json:"sent_at"`
	RedeemedAt *time.Time `json:"redeemed_at,omitempty"`
}

// OfferSent is the data of offer.sent.
type OfferSent struct {
	OfferID string `json:"offer_id"`
	Partner string `json:"partner"`
	Venue   string `json:"venue"`
	Station string `json:"station"`
	Code    string `json:"offer_code"`
}

// OfferRedeemed is the data of offer.redeemed.
type OfferRedeemed struct {
	OfferID string `json:"offer_id"`
}

// New returns an empty profile.
func New(id string) Profile {
	return Profile{CustomerID: id, Vehicles: map[string]Vehicle{}, Consents: map[string]ConsentRecord{},
		Features: map[string]map[string]FeatureState{}, Diagnostics: map[string]DiagSummary{}, Applied: []string{},
		Offers: OfferSummary{Recent: []OfferEntry{}}}
}

// Apply applies ev to p and reports whether it changed p (false for an
// event id already applied, or an unknown type). It is deterministic.
func Apply(p *Profile, ev natsbus.Event) (bool, error) {
	if slices.Contains(p.Applied, ev.ID) {
		return false, nil
	}
	dec := func(v any) error {
		if err := json.Unmarshal(ev.Data, v); err != nil {
			return fmt.Errorf("%w: %s data: %w", svc.ErrInvalid, ev.Type, err)
		}
		return nil
	}
	t := ev.Time.UTC()
	switch ev.Type {
	case TypeRegistered:
		var d struct {
			CustomerID   string   `json:"customer_id"`
			Name         string   `json:"name"`
			Region       string   `json:"region"`
			Entitlements []string `json:"entitlements"`
		}
		if err := dec(&d); err != nil {
			return false, err
		}
		p.Name, p.Region, p.Entitlements = d.Name, d.Region, d.Entitlements
		if d.CustomerID != "" {
			p.CustomerID = d.CustomerID
		}
	case TypeVehicleLinked:
		var d customers.VehicleLinked
		if err := dec(&d); err != nil {
			return false, err
		}
		p.Vehicles[d.VIN] = Vehicle{Model: d.Model, BatteryKWh: d.BatteryKWh, LinkedAt: t}
	case TypeConsentChanged:
		var d customers.ConsentChanged
		if err := dec(&d); err != nil {
			return false, err
		}
		c := p.Consents[d.Consent]
		at := d.At.UTC()
		c.Granted, c.Source = d.Granted, d.Source
		if d.Granted {
			c.GrantedAt = &at
		} else {
			c.WithdrawnAt = &at
		}
		c.History = append(c.History, ConsentChange{Granted: d.Granted, At: at, Source: d.Source})
		p.Consents[d.Consent] = c
	case TypeFeatureChanged:
		var d FeatureChanged
		if err := dec(&d); err != nil {
			return false, err
		}
		m := p.Features[d.VIN]
		if m == nil {
			m = map[string]FeatureState{}
			p.Features[d.VIN] = m
		}
		m[d.Feature] = FeatureState{Active: d.Active, CmdID: d.CmdID, Since: t}
	case TypeChargingSess:
		var d ChargingSession
		if err := dec(&d); err != nil {
			return false, err
		}
		p.Charging.Sessions++
		p.Charging.EnergyKWh = round3(p.Charging.EnergyKWh + d.EnergyKWh)
		p.Charging.LastSessionAt, p.Charging.LastStation = &t, d.Station
	case TypeDTC:
		var d DTCChanged
		if err := dec(&d); err != nil {
			return false, err
		}
		s := p.Diagnostics[d.VIN]
		s.OpenDTCs = slices.DeleteFunc(slices.Clone(s.OpenDTCs), func(c string) bool { return c == d.Code })
		if !d.Cleared {
			s.OpenDTCs = append(s.OpenDTCs, d.Code)
			slices.Sort(s.OpenDTCs)
		}
		if s.OpenDTCs == nil {
			s.OpenDTCs = []string{}
		}
		s.UpdatedAt = t
		p.Diagnostics[d.VIN] = s
	case TypeOfferSent:
		var d OfferSent
		if err := dec(&d); err != nil {
			return false, err
		}
		p.Offers.Sent++
		p.Offers.Recent = append(p.Offers.Recent, OfferEntry{OfferID: d.OfferID, Partner: d.Partner, Venue: d.Venue,
			Station: d.Station, Code: d.Code, SentAt: t})
		if n := len(p.Offers.Recent); n > MaxRecentOffers {
			p.Offers.Recent = slices.Clone(p.Offers.Recent[n-MaxRecentOffers:])
		}
	case TypeOfferRedeemed:
		var d OfferRedeemed
		if err := dec(&d); err != nil {
			return false, err
		}
		p.Offers.Redeemed++
		for i := range p.Offers.Recent {
			if p.Offers.Recent[i].OfferID == d.OfferID {
				p.Offers.Recent[i].RedeemedAt = &t
			}
		}
	default:
		return false, nil
	}
	p.Events++
	if t.After(p.UpdatedAt) {
		p.UpdatedAt = t
	}
	p.Applied = append(p.Applied, ev.ID)
	if n := len(p.Applied); n > MaxAppliedIDs {
		p.Applied = slices.Clone(p.Applied[n-MaxAppliedIDs:])
	}
	return true, nil
}

func round3(x float64) float64 {
	return float64(int64(x*1000+0.5)) / 1000
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
