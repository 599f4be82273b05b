// Package suite wires the post-purchase services together: customer
// registry, profile projector and feeder, command dispatcher, seasonal
// feature scheduler, partner registry, offer engine and webhook delivery,
// and their HTTP API. The gateway starts a Suite in-process
// (gateway/app/ext_services.go); any other process with a NATS connection
// can start one too (without MQTT it leaves command delivery to the
// gateway, whose Dispatcher consumes the same vehicle.cmd.> subjects).
package suite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/telegate/telegate/gateway/cluster/lease"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/commands"
	"github.com/telegate/telegate/gateway/services/customers"
	"github.com/telegate/telegate/gateway/services/features"
	"github.com/telegate/telegate/gateway/services/offers"
	"github.com/telegate/telegate/gateway/services/partners"
	"github.com/telegate/telegate/gateway/services/profile"
	"github.com/telegate/telegate/gateway/services/svc"
)

// ErrConfig wraps configuration problems found at start.
var ErrConfig = errors.New("services: config")

// Config configures the suite: the operator Settings (the gateway's
// services section) and what the embedding process supplies.
type Config struct {
	Settings
	TokenKeyFile string // where a generated key is kept when TokenKey is empty
	// WebhookEgress is where webhooks may connect (zero: public https
	// only); Start adds Settings.WebhookAllow() to its Allow list.
	WebhookEgress partners.Egress
	PartnerNATS   partners.NATSDeliveryConfig // consumers of NATS partners (defaults: 30 s, 20 deliveries)
	Replicas      int
	// Telemetry, when set, lets an erasure also delete the vehicles'
	// telemetry (DELETE /api/v1/customers/{id}?delete_telemetry=true).
	Telemetry customers.TelemetryEraser
	Clock     svc.Clock // nil: time.Now
	// SchedulerClock is the feature scheduler's date source (nil: Clock).
	// Tests pin it to chosen dates; SchedulerDaysPerTick starts from it.
	SchedulerClock svc.Clock
	// Cluster runs the feature scheduler's ticks under a lease shared by
	// every gateway replica (zero: ticks in this process alone). Its KV
	// is opened on the features role's connection (that role's bucket).
	Cluster lease.Cluster
}

// Deps are the connections the suite runs on.
type Deps struct {
	// Client, when set, gives each service its own connection: the
	// service's role (natsbus.ServiceRoles) with that role's least rights
	// on the embedded server. The gateway passes its per-role clients;
	// the suite does not close them.
	Client func(role string) (*natsbus.Client, error)
	// NC and JS are every service's connection when Client is nil (a
	// process connected as one user of an external server).
	NC *nats.Conn
	JS jetstream.JetStream
	// MQTT delivers commands (nil: no Dispatcher in this process).
	MQTT commands.MQTT
	// Online reports whether a vehicle is connected to MQTT.
	Online func(vin string) bool
	// Session identifies a vehicle's MQTT session on this replica, ready
	// for commands ("" when none): commands.Config.Session.
	Session func(vin string) string
	// Bus, when embedded, receives the partners' NATS accounts (may be nil).
	Bus *natsbus.Bus
}

// Suite is the running set of services.
type Suite struct {
	Customers  *customers.Registry
	Profiles   *profile.Projector
	Feeder     *profile.Feeder
	Dispatcher *commands.Dispatcher
	Scheduler  *features.Scheduler
	Partners   *partners.Registry
	Offers     *offers.Engine
	Webhooks   *partners.Webhooks
	NATS       *partners.NATSDelivery
	Auth       *svc.Auth

	cfg   Config
	deps  Deps
	log   *slog.Logger
	group *svc.Group

	changeMu sync.Mutex // serialises partnersChanged
}

// Start builds and starts every service.
func Start(ctx context.Context, cfg Config, deps Deps, log *slog.Logger) (_ *Suite, err error) {
	cfg.applyDefaults()
	cfg.WebhookEgress.Allow = slices.Concat(cfg.WebhookEgress.Allow, cfg.WebhookAllow())
	s := &Suite{cfg: cfg, deps: deps, log: log, group: svc.NewGroup(log)}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	r, clock := cfg.Replicas, cfg.Clock
	// conn is role's connection (Deps.Client) or the shared one.
	conn := func(role string) (*nats.Conn, jetstream.JetStream, error) {
		if deps.Client == nil {
			return deps.NC, deps.JS, nil
		}
		c, err := deps.Client(role)
		if err != nil {
			return nil, nil, err
		}
		return c.Conn(), c.JetStream(), nil
	}
	_, js, err := conn(natsbus.RoleCustomers)
	if err != nil {
		return nil, err
	}
	if s.Customers, err = customers.Open(ctx, js, r, clock, log.With("service", "customers")); err != nil {
		return nil, err
	}
	if cfg.Telemetry != nil {
		s.Customers.SetTelemetryEraser(cfg.Telemetry)
	}
	if cfg.CustomersFile != "" {
		n, err := s.Customers.RegisterFile(ctx, cfg.CustomersFile)
		if err != nil {
			return nil, fmt.Errorf("%w: customers: %w", ErrConfig, err)
		}
		log.Info("customers registered from file", "new", n, "file", cfg.CustomersFile)
	}
	if _, js, err = conn(natsbus.RoleProfile); err != nil {
		return nil, err
	}
	if s.Profiles, err = profile.NewProjector(ctx, js, r, s.Customers, log.With("service", "profile")); err != nil {
		return nil, err
	}
	s.Customers.OnErase(s.Profiles.Erase)
	s.Feeder = profile.NewFeeder(js, s.Customers, log.With("service", "profile-feeder"))

	if deps.MQTT != nil {
		nc, js, err := conn(natsbus.RoleCommands)
		if err != nil {
			return nil, err
		}
		if s.Dispatcher, err = commands.NewDispatcher(ctx, nc, js, r, deps.MQTT, commands.Config{
			RetryInterval: cfg.CommandRetry, Online: deps.Online, Session: deps.Session, Clock: clock}, log.With("service", "commands")); err != nil {
			return nil, err
		}
	}

	var catalog []features.Feature
	if cfg.FeaturesFile != "" {
		if catalog, err = features.LoadCatalog(cfg.FeaturesFile); err != nil {
			return nil, fmt.Errorf("%w: features: %w", ErrConfig, err)
		}
	}
	schedClock := clock
	if cfg.SchedulerClock != nil {
		schedClock = cfg.SchedulerClock
	}
	if cfg.SchedulerDaysPerTick > 0 {
		schedClock = demoClock(schedClock.Now(), cfg.SchedulerInterval, cfg.SchedulerDaysPerTick)
	}
	nc, js, err := conn(natsbus.RoleFeatures)
	if err != nil {
		return nil, err
	}
	if s.Scheduler, err = features.NewScheduler(ctx, nc, js, r, s.Customers, features.Config{Catalog: catalog,
		Interval: cfg.SchedulerInterval, DryRun: cfg.FeaturesDryRun, Clock: schedClock, Cluster: cfg.Cluster}, log.With("service", "features")); err != nil {
		return nil, err
	}
	s.Customers.OnErase(s.Scheduler.Erase)
	s.Customers.OnWithdraw(s.Scheduler.Withdrawn)

	if _, js, err = conn(natsbus.RolePartners); err != nil {
		return nil, err
	}
	if s.Partners, err = partners.Open(ctx, js, r, cfg.PartnersFile, log.With("service", "partners")); err != nil {
		return nil, fmt.Errorf("%w: partners: %w", ErrConfig, err)
	}
	stations := map[string]offers.Station{}
	if cfg.StationsFile != "" {
		if stations, err = offers.LoadStations(cfg.StationsFile); err != nil {
			return nil, fmt.Errorf("%w: stations: %w", ErrConfig, err)
		}
	}
	key, err := tokenKey(cfg)
	if err != nil {
		return nil, err
	}
	tokens, err := offers.NewTokens([]offers.TokenKey{{ID: cfg.TokenKeyID, Secret: key}})
	if err != nil {
		return nil, err
	}
	if _, js, err = conn(natsbus.RoleOffers); err != nil {
		return nil, err
	}
	if s.Offers, err = offers.NewEngine(ctx, js, r, s.Customers, s.Partners, offers.Config{Stations: stations, Tokens: tokens,
		Clock: clock}, log.With("service", "offers")); err != nil {
		return nil, err
	}
	s.Customers.OnErase(s.Offers.Erase)
	s.Feeder.Attributor = s.Offers.Attributor
	s.Customers.OnWithdraw(s.Offers.Barrier)
	if _, js, err = conn(natsbus.RoleWebhooks); err != nil {
		return nil, err
	}
	if s.Webhooks, err = partners.NewWebhooks(ctx, js, r, s.Partners, partners.WebhookConfig{MaxAttempts: cfg.WebhookMaxAttempts,
		InitialBackoff: cfg.WebhookBackoff, Egress: cfg.WebhookEgress, Clock: clock}, log.With("service", "webhooks")); err != nil {
		return nil, err
	}

	natsCfg := cfg.PartnerNATS
	natsCfg.Clock = clock
	if nc, js, err = conn(natsbus.RolePartnerNATS); err != nil {
		return nil, err
	}
	s.NATS = partners.NewNATSDelivery(nc, js, s.Partners, natsCfg, log.With("service", "partner-nats"))
	s.Auth = svc.NewAuth(nil)
	s.partnersChanged() // creates the partners' consumers, then their users
	s.Partners.OnChange(s.partnersChanged)
	if cfg.AdminToken == "" {
		log.Warn("services API: no admin token configured (services.admin_token); admin routes answer 401")
	}

	s.group.Go("customers", s.Customers.Run)
	s.group.Go("profile", s.Profiles.Run)
	s.group.Go("partners", s.Partners.Run)
	s.group.Go("profile-feeder", s.Feeder.Run)
	if s.Dispatcher != nil {
		s.group.Go("commands", s.Dispatcher.Run)
	}
	s.group.Go("features", s.Scheduler.Run)
	s.group.Go("offers", s.Offers.Run)
	s.group.Go("webhooks", s.Webhooks.Run)
	s.group.Go("partner-nats", s.NATS.Run)
	log.Info("services started", "customers", len(s.Customers.IDs()), "partners", len(s.Partners.Partners()),
		"features", len(catalog), "stations", len(stations), "commands", s.Dispatcher != nil)
	return s, nil
}

// partnersChanged refreshes API tokens, partner NATS consumers (created
// before the accounts that read them) and partner NATS accounts.
func (s *Suite) partnersChanged() {
	// Called by the API's write and by the registry's watch (and on other
	// replicas): one at a time, so consumers, tokens and accounts are
	// applied in order.
	s.changeMu.Lock()
	defer s.changeMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := s.NATS.Ensure(ctx); err != nil {
		s.log.Error("partner NATS consumers not created", "err", err)
	}
	cancel()
	toks := []svc.APIToken{}
	if s.cfg.AdminToken != "" {
		toks = append(toks, svc.APIToken{Token: s.cfg.AdminToken, Role: svc.RoleAdmin})
	}
	for _, p := range s.Partners.Partners() {
		if p.APITokenSHA256 != "" {
			toks = append(toks, svc.APIToken{SHA256: strings.ToLower(p.APITokenSHA256), Role: svc.RolePartner, Partner: p.ID})
		}
	}
	s.Auth.SetTokens(toks)
	if s.cfg.PartnerNATSUsers && s.deps.Bus != nil && s.deps.Bus.Embedded() != nil {
		if err := s.deps.Bus.SetPartners(s.Partners.NATSAccounts()); err != nil {
			s.log.Error("partner NATS accounts not applied", "err", err)
		}
	}
}

// Mount adds every service's routes under /api/v1 to mux.
func (s *Suite) Mount(mux *http.ServeMux) {
	s.Customers.Mount(mux, s.Auth)
	s.Profiles.Mount(mux, s.Auth)
	s.Scheduler.Mount(mux, s.Auth)
	s.Partners.Mount(mux, s.Auth)
	s.Offers.Mount(mux, s.Auth)
	s.Webhooks.Mount(mux, s.Auth)
	s.NATS.Mount(mux, s.Auth)
	if s.Dispatcher != nil {
		s.Dispatcher.Mount(mux, s.Auth)
	}
}

// Close stops every service and waits for them. Idempotent.
func (s *Suite) Close() {
	if s != nil && s.group != nil {
		s.group.Close()
	}
}

// tokenKey returns the configured key, or a generated one kept in
// TokenKeyFile (created 0600 on first use).
func tokenKey(cfg Config) ([]byte, error) {
	if cfg.TokenKey != "" {
		return []byte(cfg.TokenKey), nil
	}
	if cfg.TokenKeyFile == "" {
		return nil, fmt.Errorf("%w: no token key and no token key file", ErrConfig)
	}
	if b, err := os.ReadFile(cfg.TokenKeyFile); err == nil && len(b) >= 32 {
		return b, nil
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	key := []byte(hex.EncodeToString(raw))
	if err := os.MkdirAll(filepath.Dir(cfg.TokenKeyFile), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cfg.TokenKeyFile, key, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// demoClock advances daysPerTick days per interval of wall time from start.
func demoClock(start time.Time, interval time.Duration, daysPerTick int) svc.Clock {
	t0 := time.Now()
	return func() time.Time {
		ticks := time.Since(t0) / interval
		return start.AddDate(0, 0, int(ticks)*daysPerTick)
	}
}
