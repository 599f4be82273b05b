package natsbus

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
)

// Errors of the embedded server's accounts and users.
var (
	// ErrNoEmbedded is returned by SetPartners and Client's role lookup
	// when the bus is connected to an external server (accounts and users
	// are then configured on that server).
	ErrNoEmbedded = errors.New("natsbus: no embedded server")
	// ErrBadAccount is returned for an invalid partner account.
	ErrBadAccount = errors.New("natsbus: invalid partner account")
	// ErrCredentials is returned when the internal credentials cannot be
	// read or written.
	ErrCredentials = errors.New("natsbus: internal credentials")
)

// Accounts of the embedded server. Every client authenticates (there is no
// anonymous user, loopback included) and lands in exactly one account:
//
//	SYS       the server's system account (user "sys": server monitoring)
//	GATEWAY   JetStream: every stream, bucket and consumer of the gateway;
//	          the gateway's own users (roles below) and the operator ("ops")
//	P_{id}    one per partner: no JetStream; it imports from GATEWAY only
//	          what the partner's feed needs (see PartnerAccount)
//
// Accounts are NATS's isolation boundary: a subject (a publish, a
// subscription, a reply subject, an inbox) in one account never reaches
// another unless the owner exported it to that account and the importer
// imported it. Answers of an imported service come back through the
// server's response mapping, into the importer's account only.
const (
	AccountSystem  = "SYS"
	AccountGateway = "GATEWAY"
	partnerAccount = "P_"
)

// Roles: the gateway's own users in the GATEWAY account (and "sys" in SYS).
// Their passwords are generated at first start (CredentialsFile). Every
// role but the operator's names exactly what it uses (rolePermissions): no
// connection of the running gateway has full rights.
const (
	// RoleGateway is the bus's own connection: it declares the bus's
	// streams (Streams, INGEST and its consumers) and buckets (dtc_state,
	// sessions, ocpp_txn) at start (create, update and info of those
	// names only) and reports readiness. It reads and writes no message.
	RoleGateway = "gateway"
	// RoleEvents is the event sink: it publishes device events and keeps
	// the dtc_state bucket.
	RoleEvents = "events"
	// RoleIngest is the ingest hook and the sinks' reader in the
	// "jetstream" durability mode: it appends to the INGEST stream and
	// pulls and acknowledges the sinks' consumers on it.
	RoleIngest = "ingest"
	// RoleDashboard reads the DTC and VEHICLE streams (ordered consumers),
	// records commands it sent on vehicle.cmdsent.*, hands the commands to
	// vehicles connected to another replica to the services' dispatcher
	// (vehicle.cmd.*, publish only), and publishes and
	// receives live frames on live.* (core NATS). It declares and uses
	// the dashboard_sessions bucket.
	RoleDashboard = "dashboard"
	// RoleBroker is the MQTT broker's cluster presence: it claims device
	// sessions in the sessions bucket, watches the claims of the other
	// replicas and the registry reload requests (a key of that bucket).
	RoleBroker = "broker"
	// RoleOCPP is the OCPP central system: its transaction table (the
	// ocpp_txn bucket), command results (charging.cmdresult.*, and reading
	// them back from CHARGING) and command routing between replicas
	// (cluster.ocpp.cmd.*).
	RoleOCPP = "ocpp"
	// RoleCustomers is the customer registry (gateway/services/customers):
	// its customers bucket, the profile events it emits, and the erasure
	// (GDPR), which purges an erased customer's subjects from every stream
	// and deletes the messages naming them in CHARGING, PARTNERS and
	// DEADLETTER.
	RoleCustomers = "customers"
	// RoleProfile is the profile projector and its feeder (one role: the
	// feeder writes the profile.events.* the projector reads, and both
	// exist only for the profiles): the profiles bucket, its durable on
	// PROFILE, the feeder's durables on CHARGING and DTC.
	RoleProfile = "profile"
	// RoleCommands is the command dispatcher: the commands bucket, its
	// durables on VEHICLE (requests, acks), results, and the
	// connectivity and vehicle events that trigger a resend (core NATS).
	RoleCommands = "commands"
	// RoleFeatures is the seasonal feature scheduler: the features,
	// feature_hemispheres and cluster_leases buckets (the lease runs only
	// its ticks), its results durable on VEHICLE, the vehicle events
	// carrying positions (core NATS), command requests and profile events.
	RoleFeatures = "features"
	// RolePartners is the partner registry: the partners bucket only.
	RolePartners = "partners"
	// RoleWebhooks is the webhook deliverer: its durable on PARTNERS, the
	// webhook_deliveries bucket and its dead letters.
	RoleWebhooks = "webhooks"
	// RolePartnerNATS is the partners' NATS delivery: it creates and
	// updates the partners' durables on PARTNERS, reads the max-deliveries
	// advisories and a given-up trigger, and dead-letters it. (Partner
	// accounts are applied by Bus.SetPartners, in process, not over NATS.)
	RolePartnerNATS = "partnernats"
	// RoleOffers is the offer engine: the offers, offer_caps and
	// charging_attribution buckets, its durable on CHARGING, a vehicle's
	// last event on VEHICLE (its position), partner triggers, offer
	// commands and profile events.
	RoleOffers = "offers"
	// RoleOps is the operator's user for the nats CLI: full rights in
	// GATEWAY (streams, consumers, KV, subjects).
	RoleOps = "ops"
	// RoleSys is the system account's user (server events, nats server ...).
	RoleSys = "sys"
)

// ServiceRoles are the post-purchase services' roles (gateway/services).
var ServiceRoles = []string{RoleCustomers, RoleProfile, RoleCommands, RoleFeatures, RolePartners, RoleWebhooks, RolePartnerNATS, RoleOffers}

// InboxPrefix is the reply-inbox prefix of role's connections: each role
// may subscribe to its own replies only.
func InboxPrefix(role string) string { return "_INBOX_" + role }

// The services' buckets and durables (their packages own the names; they
// are spelled here too because the allow lists name them, and a test of
// each service runs it on its role, so a rename there fails there).
const (
	bucketCustomers     = "customers"
	bucketProfiles      = "profiles"
	bucketCommands      = "commands"
	bucketFeatures      = "features"
	bucketHemispheres   = "feature_hemispheres"
	bucketLeases        = "cluster_leases"
	bucketPartners      = "partners"
	bucketDeliveries    = "webhook_deliveries"
	bucketOffers        = "offers"
	bucketOfferCaps     = "offer_caps"
	bucketAttribution   = "charging_attribution"
	subjectProfileEvent = PrefixProfile + "*"
)

// allow is an allow list under construction.
type allow struct{ pub, sub []string }

func (a *allow) publish(s ...string)   { a.pub = append(a.pub, s...) }
func (a *allow) subscribe(s ...string) { a.sub = append(a.sub, s...) }

// declare: create, update and read the configuration of these streams.
func (a *allow) declare(streams ...string) {
	for _, s := range streams {
		a.publish("$JS.API.STREAM.CREATE."+s, "$JS.API.STREAM.UPDATE."+s, "$JS.API.STREAM.INFO."+s)
	}
}

// bucket: declare bucket and use it (get, put, create, update, delete and
// purge a key; watch and list keys: ordered push consumers with flow
// control, delivered to the role's inbox).
func (a *allow) bucket(names ...string) {
	for _, b := range names {
		kv := "KV_" + b
		a.declare(kv)
		a.publish("$JS.API.DIRECT.GET."+kv+".>", "$JS.API.STREAM.MSG.GET."+kv, "$KV."+b+".>")
		a.ordered(kv)
		a.publish("$JS.FC." + kv + ".>")
	}
}

// ordered: ephemeral (ordered) consumers on stream: create, info, delete,
// pull.
func (a *allow) ordered(stream string) {
	a.publish("$JS.API.CONSUMER.CREATE."+stream, "$JS.API.CONSUMER.CREATE."+stream+".>",
		"$JS.API.CONSUMER.DELETE."+stream+".>", "$JS.API.CONSUMER.INFO."+stream+".>",
		"$JS.API.CONSUMER.MSG.NEXT."+stream+".>")
}

// durable: one named pull consumer on stream (svc.Consume): create or
// update it, read its info, pull and acknowledge.
func (a *allow) durable(stream, name string) {
	a.publish("$JS.API.STREAM.INFO."+stream,
		"$JS.API.CONSUMER.CREATE."+stream+"."+name, "$JS.API.CONSUMER.CREATE."+stream+"."+name+".>",
		"$JS.API.CONSUMER.DURABLE.CREATE."+stream+"."+name,
		"$JS.API.CONSUMER.INFO."+stream+"."+name,
		"$JS.API.CONSUMER.MSG.NEXT."+stream+"."+name,
		"$JS.ACK."+stream+"."+name+".>")
}

// servicePermissions are the allow lists of the services' roles; ok is
// false for any other role.
func servicePermissions(role string) (pub, sub []string, ok bool) {
	a := &allow{}
	a.publish("$JS.API.INFO")
	a.subscribe(InboxPrefix(role) + ".>")
	switch role {
	case RoleCustomers:
		a.bucket(bucketCustomers)
		a.publish(subjectProfileEvent)
		// The erasure (customers.Scrub): every stream's subjects that
		// carry an erased id are purged (a subject-filtered purge; the
		// server cannot restrict the filter, so this is purge of any
		// stream), and the scrub streams are read through and the matching
		// messages deleted. No stream or consumer deletion.
		a.publish("$JS.API.STREAM.NAMES", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.PURGE.*")
		for _, s := range []string{StreamCharging, StreamPartners, StreamDeadLetter} {
			a.ordered(s)
			a.publish("$JS.API.STREAM.MSG.DELETE." + s)
		}
	case RoleProfile:
		a.bucket(bucketProfiles)
		a.durable(StreamProfile, "profile-projector")
		a.durable(StreamCharging, "profile-feeder-charging")
		a.durable(StreamDTC, "profile-feeder-dtc")
		// Erase: a customer's profile events; rebuild: read them back.
		a.publish("$JS.API.STREAM.PURGE." + StreamProfile)
		a.ordered(StreamProfile)
		a.publish(subjectProfileEvent)
	case RoleCommands:
		a.bucket(bucketCommands)
		a.durable(StreamVehicle, "cmd-dispatcher")
		a.durable(StreamVehicle, "cmd-acks")
		a.publish(PrefixCommand+"*", PrefixCommandResult+"*")
		a.subscribe(PrefixVehicleConnected+"connected.*", PrefixVehicleEvent+"*")
	case RoleFeatures:
		a.bucket(bucketFeatures, bucketHemispheres, bucketLeases)
		a.durable(StreamVehicle, "features-results")
		a.publish(PrefixCommand+"*", subjectProfileEvent)
		a.subscribe(PrefixVehicleEvent + "*")
	case RolePartners:
		a.bucket(bucketPartners)
	case RoleWebhooks:
		a.bucket(bucketDeliveries)
		a.durable(StreamPartners, "partner-webhooks")
		a.publish(PrefixDeadLetter + "webhook.*")
	case RolePartnerNATS:
		// Consumer management on PARTNERS: the partners' durables
		// (partner-{id}; a subject cannot match a name prefix, so any
		// consumer of that stream), the message an advisory names.
		a.publish("$JS.API.STREAM.INFO."+StreamPartners,
			"$JS.API.CONSUMER.CREATE."+StreamPartners+".>", "$JS.API.CONSUMER.DURABLE.CREATE."+StreamPartners+".*",
			"$JS.API.CONSUMER.INFO."+StreamPartners+".*", "$JS.API.CONSUMER.DELETE."+StreamPartners+".*",
			"$JS.API.STREAM.MSG.GET."+StreamPartners, "$JS.API.DIRECT.GET."+StreamPartners,
			"$JS.API.STREAM.INFO."+StreamDeadLetter,
			PrefixDeadLetter+"nats.*")
		a.subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + StreamPartners + ".*")
	case RoleOffers:
		a.bucket(bucketOffers, bucketOfferCaps, bucketAttribution)
		a.durable(StreamCharging, "offers-sessions")
		// A vehicle's last event (its position) when a session starts.
		a.publish("$JS.API.STREAM.INFO."+StreamVehicle, "$JS.API.STREAM.MSG.GET."+StreamVehicle)
		a.publish(PrefixPartners+"*.triggers", PrefixCommand+"*", subjectProfileEvent)
	default:
		return nil, nil, false
	}
	return a.pub, a.sub, true
}

// rolePermissions are the allow lists of each role. nil: full rights in
// the GATEWAY account, for RoleOps (the operator's CLI user) only. It
// reaches neither SYS nor a partner account. The other roles name exactly
// what they use.
func rolePermissions(role string) (pub, sub []string) {
	if pub, sub, ok := servicePermissions(role); ok {
		return pub, sub
	}
	switch role {
	case RoleGateway:
		a := &allow{}
		a.publish("$JS.API.INFO")
		a.subscribe(InboxPrefix(RoleGateway) + ".>")
		for _, s := range Streams {
			a.declare(s.Name)
		}
		a.declare("KV_"+BucketDTCState, "KV_"+BucketSessions, "KV_"+BucketOCPPTxn, StreamIngest)
		for _, c := range []string{ConsumerIngestInflux, ConsumerIngestEvents} {
			a.publish("$JS.API.CONSUMER.CREATE."+StreamIngest+"."+c, "$JS.API.CONSUMER.CREATE."+StreamIngest+"."+c+".>",
				"$JS.API.CONSUMER.INFO."+StreamIngest+"."+c)
		}
		return a.pub, a.sub
	case RoleEvents:
		return []string{
				"$JS.API.INFO",
				"$JS.API.STREAM.INFO.KV_" + BucketDTCState,
				"$JS.API.DIRECT.GET.KV_" + BucketDTCState + ".>",
				"$JS.API.STREAM.MSG.GET.KV_" + BucketDTCState,
				"$KV." + BucketDTCState + ".>",
				// The subjects eventsink emits (docs/data-model.md); a new
				// event subject must be added here.
				"telemetry.dtc.>", "vehicle.connectivity.>", "vehicle.event.>", "vehicle.cmdack.>", "charging.>", "deadletter.>",
			},
			[]string{InboxPrefix(RoleEvents) + ".>"}
	case RoleBroker:
		kv := "KV_" + BucketSessions
		return []string{
				"$JS.API.INFO",
				"$JS.API.STREAM.INFO." + kv,
				"$KV." + BucketSessions + ".>",
				// The watch: an ordered push consumer with flow control.
				"$JS.API.CONSUMER.CREATE." + kv, "$JS.API.CONSUMER.CREATE." + kv + ".>",
				"$JS.API.CONSUMER.DELETE." + kv + ".>",
				"$JS.API.CONSUMER.INFO." + kv + ".>",
				"$JS.FC." + kv + ".>",
			},
			[]string{InboxPrefix(RoleBroker) + ".>"}
	case RoleOCPP:
		kv := "KV_" + BucketOCPPTxn
		return []string{
				"$JS.API.INFO",
				"$JS.API.STREAM.INFO." + kv,
				"$JS.API.DIRECT.GET." + kv + ".>",
				"$JS.API.STREAM.MSG.GET." + kv,
				"$KV." + BucketOCPPTxn + ".>",
				PrefixChargerCmdResult + "*",
				// Reading the command results back: an ordered consumer
				// filtered on charging.cmdresult.> (the filter is checked
				// by the server against the create subject).
				"$JS.API.STREAM.INFO." + StreamCharging,
				"$JS.API.CONSUMER.CREATE." + StreamCharging + ".*." + PrefixChargerCmdResult + ">",
				"$JS.API.CONSUMER.DELETE." + StreamCharging + ".>",
				"$JS.API.CONSUMER.INFO." + StreamCharging + ".>",
				"$JS.API.CONSUMER.MSG.NEXT." + StreamCharging + ".>",
				PrefixOCPPCommand + "*",
				// Answers to another replica's routed command.
				InboxPrefix(RoleOCPP) + ".>",
			},
			[]string{InboxPrefix(RoleOCPP) + ".>", PrefixOCPPCommand + "*"}
	case RoleIngest:
		return []string{
				"$JS.API.INFO",
				"$JS.API.STREAM.INFO." + StreamIngest,
				"$JS.API.CONSUMER.INFO." + StreamIngest + ".*",
				"$JS.API.CONSUMER.MSG.NEXT." + StreamIngest + ".*",
				"$JS.ACK." + StreamIngest + ".>",
				PrefixIngest + "*",
			},
			[]string{InboxPrefix(RoleIngest) + ".>"}
	case RoleDashboard:
		var p []string
		for _, s := range []string{StreamDTC, StreamVehicle} {
			p = append(p,
				"$JS.API.STREAM.INFO."+s,
				"$JS.API.CONSUMER.CREATE."+s+".>",
				"$JS.API.CONSUMER.DELETE."+s+".>",
				"$JS.API.CONSUMER.INFO."+s+".>",
				"$JS.API.CONSUMER.MSG.NEXT."+s+".>")
		}
		// The login sessions shared by the replicas: declare the bucket,
		// read and write its keys, nothing else.
		p = append(p,
			"$JS.API.STREAM.CREATE.KV_"+BucketDashboardSessions, "$JS.API.STREAM.UPDATE.KV_"+BucketDashboardSessions,
			"$JS.API.STREAM.INFO.KV_"+BucketDashboardSessions,
			"$JS.API.DIRECT.GET.KV_"+BucketDashboardSessions+".>",
			"$JS.API.STREAM.MSG.GET.KV_"+BucketDashboardSessions,
			"$KV."+BucketDashboardSessions+".>")
		// live.{vin}: live frames shared between the replicas' dashboards
		// (core NATS, gateway/dashboard/livebus).
		// vehicle.cmd.{vin}: commands to a vehicle whose session is on
		// another replica, handed to the services' dispatcher.
		return append(p, "$JS.API.INFO", "vehicle.cmdsent.*", PrefixCommand+"*", SubjectLive+"*"),
			[]string{InboxPrefix(RoleDashboard) + ".>", SubjectLive + "*"}
	}
	return nil, nil
}

// internalRoles are the roles with generated passwords, in the order they
// are written to the credentials file.
var internalRoles = append(append([]string{RoleGateway, RoleEvents, RoleIngest, RoleDashboard, RoleBroker, RoleOCPP},
	ServiceRoles...), RoleOps, RoleSys)

// InternalUser reports whether name is one of the embedded server's own
// users (a partner's NATS user cannot be named so: SetPartners refuses it).
func InternalUser(name string) bool { return slices.Contains(internalRoles, name) }

// Credentials are the generated passwords of the internal roles, kept in
// CredentialsFile (0600) so that they survive restarts (operators' CLI
// contexts stay valid).
type Credentials struct {
	URL       string            `json:"url"`
	Passwords map[string]string `json:"passwords"` // role -> password
}

// loadOrCreateCredentials reads path, adding a random password for every
// role that has none, and (re)writes it with mode 0600.
func loadOrCreateCredentials(path string) (Credentials, error) {
	c := Credentials{Passwords: map[string]string{}}
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &c); err != nil {
			return c, fmt.Errorf("%w: %s: %w", ErrCredentials, path, err)
		}
		if c.Passwords == nil {
			c.Passwords = map[string]string{}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return c, fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	changed := false
	for _, r := range internalRoles {
		if len(c.Passwords[r]) >= 32 {
			continue
		}
		raw := make([]byte, 24)
		if _, err := rand.Read(raw); err != nil {
			return c, fmt.Errorf("%w: %w", ErrCredentials, err)
		}
		c.Passwords[r] = hex.EncodeToString(raw)
		changed = true
	}
	if changed {
		if err := writeFile0600(path, c); err != nil {
			return c, err
		}
	}
	// Tighten a file someone loosened.
	if err := os.Chmod(path, 0o600); err != nil {
		return c, fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	return c, nil
}

func writeFile0600(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	return nil
}

// PartnerLimits bound what one partner account may cost the server.
// nats-server enforces them per account (connections, subscriptions,
// payload of what its clients publish); the partner account has no
// JetStream, so it cannot store anything. Zero fields take the defaults.
type PartnerLimits struct {
	MaxConnections   int // default: DefaultPartnerLimits
	MaxSubscriptions int
	MaxPayload       int // bytes a partner client may publish in one message
}

// DefaultPartnerLimits are the limits of a partner account whose settings
// are zero (nats.embedded.partner_max_*: 0).
var DefaultPartnerLimits = PartnerLimits{MaxConnections: 4, MaxSubscriptions: 64, MaxPayload: 16 << 10}

// WithDefaults fills zero fields with DefaultPartnerLimits.
func (l PartnerLimits) WithDefaults() PartnerLimits {
	d := DefaultPartnerLimits
	if l.MaxConnections <= 0 {
		l.MaxConnections = d.MaxConnections
	}
	if l.MaxSubscriptions <= 0 {
		l.MaxSubscriptions = d.MaxSubscriptions
	}
	if l.MaxPayload <= 0 {
		l.MaxPayload = d.MaxPayload
	}
	return l
}

// Import is one subject GATEWAY exports to a single partner account
// (private export) and that account imports under the same name.
type Import struct {
	Subject string
	// To is the subject in the partner's account ("": Subject).
	To string
	// Stream: a stream export (messages published in GATEWAY on Subject
	// flow to the partner). Otherwise a service export: the partner's
	// requests on Subject are answered in GATEWAY and the answers mapped
	// back to the partner's own reply subject.
	Stream bool
	// StreamResponse: a service answered by many messages (a JetStream
	// pull request).
	StreamResponse bool
}

// PartnerAccount is one partner's account: its user (bcrypt password),
// the allow lists inside its own account (defence in depth: the account
// boundary is the isolation), and its imports from GATEWAY.
type PartnerAccount struct {
	ID                   string // partner id: the account is "P_"+ID
	User, PasswordBcrypt string
	Publish, Subscribe   []string
	Imports              []Import
}

// AccountName is the NATS account of partner id.
func AccountName(id string) string { return partnerAccount + id }

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// authState remembers what the embedded server was configured with, so that
// partners can be replaced at run time (guarded by mu).
type authState struct {
	mu       sync.Mutex
	base     *server.Options // server options without auth
	creds    Credentials
	partners []PartnerAccount
	// partnersSet: SetPartners has applied partners once (until then the
	// server runs with none and the first call always reloads).
	partnersSet bool
	limits      PartnerLimits
}

// SetPartners replaces the partner accounts of the embedded server at run
// time (config reload: a removed partner's connections are closed).
// Against an external server it returns ErrNoEmbedded: configure accounts
// there (docs/operations.md).
func (b *Bus) SetPartners(parts []PartnerAccount) error {
	if b.srv == nil {
		return ErrNoEmbedded
	}
	b.auth.mu.Lock()
	defer b.auth.mu.Unlock()
	prev := b.auth.partners
	if b.auth.partnersSet && reflect.DeepEqual(prev, parts) {
		// Nothing changed: a reload would still re-register every
		// account and could drop a partner connecting right now (several
		// replicas' hooks, or a registry write and its watch, both ask).
		return nil
	}
	b.auth.partners = parts
	o, err := b.auth.options()
	if err != nil {
		b.auth.partners = prev
		return err
	}
	// The running server resolved a random port; reload must not change it.
	if _, p, err := net.SplitHostPort(b.srv.Addr().String()); err == nil {
		if n, err := strconv.Atoi(p); err == nil {
			o.Port = n
		}
	}
	fresh := false
	for _, p := range parts {
		if _, err := b.srv.LookupAccount(AccountName(p.ID)); err != nil {
			fresh = true
		}
	}
	if err := b.srv.ReloadOptions(o); err != nil {
		b.auth.partners = prev
		return fmt.Errorf("natsbus: reload accounts: %w", err)
	}
	b.auth.partnersSet = true
	if fresh {
		// nats-server (v2.15) creates an account that first appears in a
		// reload without subscribing its service imports; a second reload
		// of the same configuration updates it in place, which does.
		o2, err := b.auth.options()
		if err != nil {
			return err
		}
		o2.Port = o.Port
		if err := b.srv.ReloadOptions(o2); err != nil {
			return fmt.Errorf("natsbus: reload accounts: %w", err)
		}
	}
	return nil
}

// options builds the full server options: base plus accounts and users.
// nats-server sets account limits only from its configuration language, so
// the accounts are rendered as a (JSON) configuration and parsed by the
// server's own parser.
func (a *authState) options() (*server.Options, error) {
	lim := a.limits.WithDefaults()
	type perms struct {
		Publish   map[string][]string `json:"publish"`
		Subscribe map[string][]string `json:"subscribe"`
	}
	type user struct {
		User        string `json:"user"`
		Password    string `json:"password"`
		Permissions *perms `json:"permissions,omitempty"`
	}
	mkPerms := func(pub, sub []string) *perms {
		if pub == nil && sub == nil {
			return nil
		}
		return &perms{Publish: map[string][]string{"allow": allowList(pub)}, Subscribe: map[string][]string{"allow": allowList(sub)}}
	}
	gwUsers := []user{}
	for _, r := range internalRoles {
		if r == RoleSys {
			continue
		}
		pub, sub := rolePermissions(r)
		gwUsers = append(gwUsers, user{User: r, Password: a.creds.Passwords[r], Permissions: mkPerms(pub, sub)})
	}
	exports := []map[string]any{}
	accounts := map[string]any{
		AccountSystem: map[string]any{"users": []user{{User: RoleSys, Password: a.creds.Passwords[RoleSys]}}},
	}
	seenUser := map[string]bool{}
	for _, r := range internalRoles {
		seenUser[r] = true
	}
	parts := append([]PartnerAccount(nil), a.partners...)
	sort.Slice(parts, func(i, j int) bool { return parts[i].ID < parts[j].ID })
	for _, p := range parts {
		if !safeName.MatchString(p.ID) || p.User == "" || p.PasswordBcrypt == "" || seenUser[p.User] {
			return nil, fmt.Errorf("%w: partner %q user %q", ErrBadAccount, p.ID, p.User)
		}
		seenUser[p.User] = true
		acc := AccountName(p.ID)
		imports := []map[string]any{}
		for _, im := range p.Imports {
			if im.Stream {
				exports = append(exports, map[string]any{"stream": im.Subject, "accounts": []string{acc}})
				imports = append(imports, map[string]any{"stream": map[string]string{"account": AccountGateway, "subject": im.Subject}})
				continue
			}
			ex := map[string]any{"service": im.Subject, "accounts": []string{acc}}
			if im.StreamResponse {
				ex["response_type"] = "stream"
			}
			exports = append(exports, ex)
			imp := map[string]any{"service": map[string]string{"account": AccountGateway, "subject": im.Subject}}
			if im.To != "" {
				imp["to"] = im.To
			}
			imports = append(imports, imp)
		}
		accounts[acc] = map[string]any{
			"users":   []user{{User: p.User, Password: p.PasswordBcrypt, Permissions: mkPerms(p.Publish, p.Subscribe)}},
			"imports": imports,
			"limits": map[string]int{"max_connections": lim.MaxConnections, "max_subscriptions": lim.MaxSubscriptions,
				"max_payload": lim.MaxPayload},
		}
	}
	accounts[AccountGateway] = map[string]any{"jetstream": "enabled", "users": gwUsers, "exports": exports}
	var conf bytes.Buffer
	enc := json.NewEncoder(&conf)
	enc.SetEscapeHTML(false) // subjects hold '>'; the config parser knows no \u escapes
	if err := enc.Encode(map[string]any{"system_account": AccountSystem, "accounts": accounts}); err != nil {
		return nil, fmt.Errorf("natsbus: accounts: %w", err)
	}
	o := &server.Options{}
	if err := o.ProcessConfigString(conf.String()); err != nil {
		return nil, fmt.Errorf("natsbus: accounts: %w", err)
	}
	b := a.base
	o.ServerName, o.Host, o.Port = b.ServerName, b.Host, b.Port
	o.JetStream, o.StoreDir, o.JetStreamMaxStore = b.JetStream, b.StoreDir, b.JetStreamMaxStore
	o.NoSigs, o.NoLog, o.MaxPayload, o.MaxPending = b.NoSigs, b.NoLog, b.MaxPayload, b.MaxPending
	o.NoSystemAccount = false
	return o, nil
}

// allowList maps an empty list to a subject nobody can use (an empty Allow
// list would mean "everything" to nats-server).
func allowList(s []string) []string {
	if len(s) == 0 {
		return []string{"_telegate.none"}
	}
	return append([]string(nil), s...)
}
