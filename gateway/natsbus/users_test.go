package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func openTest(t *testing.T, addr, store string) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, Config{Settings: Settings{Embedded: EmbeddedSettings{Addr: addr, StoreDir: store}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// TestNoAnonymousAccess: the embedded server refuses clients without
// credentials, on loopback as on any other address, and wrong passwords.
func TestNoAnonymousAccess(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "0.0.0.0:0"} {
		b := openTest(t, addr, t.TempDir())
		if err := b.Ready(); err != nil {
			t.Fatalf("gateway connection: %v", err)
		}
		url := fmt.Sprintf("nats://127.0.0.1:%d", b.Embedded().Addr().(*net.TCPAddr).Port)
		if nc, err := nats.Connect(url, nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Fatalf("%s: anonymous client accepted", addr)
		} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Fatalf("%s: want an authorization error, got %v", addr, err)
		}
		for _, role := range internalRoles {
			if nc, err := nats.Connect(url, nats.UserInfo(role, "wrong"), nats.MaxReconnects(0)); err == nil {
				nc.Close()
				t.Fatalf("%s: wrong password for %s accepted", addr, role)
			}
		}
	}
}

// TestCredentialsFile: internal passwords are generated at first start,
// kept 0600 under the store dir, reused after a restart (a loosened mode
// is tightened), and each role can log in with its own.
func TestCredentialsFile(t *testing.T) {
	store := t.TempDir()
	b := openTest(t, "127.0.0.1:0", store)
	path := b.CredentialsFile()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	var c Credentials
	raw, _ := os.ReadFile(path)
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	if c.URL != b.URL() || len(c.Passwords) != len(internalRoles) {
		t.Fatalf("credentials %s %d roles", c.URL, len(c.Passwords))
	}
	seen := map[string]bool{}
	for _, r := range internalRoles {
		pw := c.Passwords[r]
		if len(pw) < 32 || seen[pw] {
			t.Fatalf("role %s: weak or shared password", r)
		}
		seen[pw] = true
		nc, err := nats.Connect(b.URL(), nats.UserInfo(r, pw))
		if err != nil {
			t.Fatalf("role %s: %v", r, err)
		}
		nc.Close()
	}
	for _, f := range []string{OpsEnvFile, OpsContextFile} {
		fi, err := os.Stat(filepath.Join(store, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, err, fi)
		}
	}
	if env, _ := os.ReadFile(filepath.Join(store, OpsEnvFile)); !strings.Contains(string(env), "NATS_USER=ops\nNATS_PASSWORD="+c.Passwords[RoleOps]+"\n") {
		t.Fatal("ops.env does not hold the operator's credentials")
	}
	if u, pw, ok := b.OpsCredentials(); !ok || u != RoleOps || pw != c.Passwords[RoleOps] {
		t.Fatal("ops credentials")
	}
	_ = b.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	b2 := openTest(t, "127.0.0.1:0", store)
	var c2 Credentials
	raw, _ = os.ReadFile(path)
	if err := json.Unmarshal(raw, &c2); err != nil {
		t.Fatal(err)
	}
	if c2.Passwords[RoleOps] != c.Passwords[RoleOps] {
		t.Fatal("passwords changed across a restart")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after restart %v", fi.Mode().Perm())
	}
	_ = b2
}

// hemiKey and hemiGet write and read a vehicle's hemisphere in the
// features service's feature_hemispheres bucket (location-derived, kept
// under the driver's location consent): no restricted role may.
const (
	hemiKey = "$KV.feature_hemispheres.h.VIN1"
	hemiGet = "$JS.API.DIRECT.GET.KV_feature_hemispheres.$KV.feature_hemispheres.h.VIN1"
)

// roleConn connects as role, collecting the server's permission errors.
type roleConn struct {
	*Client
	mu   sync.Mutex
	errs []string
}

func connectRole(t *testing.T, b *Bus, role string) *roleConn {
	t.Helper()
	r := &roleConn{}
	nc, err := b.connect(role)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		r.mu.Lock()
		r.errs = append(r.errs, err.Error())
		r.mu.Unlock()
	})
	js, _ := jetstream.New(nc)
	r.Client = &Client{nc: nc, js: js}
	t.Cleanup(r.Close)
	return r
}

// refused publishes (or subscribes) and waits for the server's permissions
// violation naming subject.
func (r *roleConn) refused(t *testing.T, op, subject string) {
	t.Helper()
	var err error
	if op == "publish" {
		err = r.nc.Publish(subject, []byte("x"))
	} else {
		_, err = r.nc.SubscribeSync(subject)
	}
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		_ = r.nc.Flush()
		r.mu.Lock()
		for _, e := range r.errs {
			if strings.Contains(strings.ToLower(e), "permissions violation for "+op) && strings.Contains(e, `"`+subject+`"`) {
				r.mu.Unlock()
				return
			}
		}
		r.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s %s was not refused", op, subject)
}

// TestRolePermissions: each internal credential can do its job and not
// more: the event sink publishes events and keeps dtc_state, the dashboard
// reads DTC/VEHICLE and records sent commands, neither can command a car,
// touch customer data, manage streams or read other roles' replies; the
// system user sees no gateway traffic.
func TestRolePermissions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := openTest(t, "127.0.0.1:0", t.TempDir())

	ev := connectRole(t, b, RoleEvents)
	for _, subj := range []string{"vehicle.connectivity.connected.VIN1", "vehicle.event.VIN1", "vehicle.cmdack.VIN1",
		"charging.session.started.ST1", "charging.status.ST1", "deadletter.telemetry.VIN1", "telemetry.dtc.raised.VIN1"} {
		if _, err := ev.js.Publish(ctx, subj, []byte("{}")); err != nil {
			t.Fatalf("events: publish %s: %v", subj, err)
		}
	}
	kv, err := ev.js.KeyValue(ctx, BucketDTCState)
	if err != nil {
		t.Fatalf("events: bucket: %v", err)
	}
	if _, err := kv.Put(ctx, "VIN1", []byte("[]")); err != nil {
		t.Fatalf("events: kv put: %v", err)
	}
	if _, err := kv.Get(ctx, "VIN1"); err != nil {
		t.Fatalf("events: kv get: %v", err)
	}
	for _, s := range []string{"vehicle.cmd.VIN1", "$KV.customers.x", "profile.events.x", "partners.p.triggers",
		"$JS.API.STREAM.DELETE.DTC", "$JS.API.STREAM.PURGE.DTC", "$JS.API.CONSUMER.CREATE.VEHICLE", SubjectLive + "VIN1",
		hemiKey, hemiGet} {
		ev.refused(t, "publish", s)
	}
	for _, s := range []string{">", "_INBOX.>", InboxPrefix(RoleDashboard) + ".>", "vehicle.>"} {
		ev.refused(t, "subscription", s)
	}

	dash := connectRole(t, b, RoleDashboard)
	// The login sessions: the dashboard's own user declares the bucket.
	skv0, err := dash.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: BucketDashboardSessions, History: 1, TTL: time.Hour})
	if err != nil {
		t.Fatalf("dashboard: declare the session bucket: %v", err)
	}
	if _, err := skv0.Put(ctx, "s.x", []byte("{}")); err != nil {
		t.Fatalf("dashboard: session put: %v", err)
	}
	oc, err := dash.js.OrderedConsumer(ctx, "DTC", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"telemetry.dtc.>"}})
	if err != nil {
		t.Fatalf("dashboard: ordered consumer: %v", err)
	}
	if m, err := oc.Next(jetstream.FetchMaxWait(10 * time.Second)); err != nil || m.Subject() != "telemetry.dtc.raised.VIN1" {
		t.Fatalf("dashboard: read DTC: %v", err)
	}
	if _, err := dash.js.Publish(ctx, "vehicle.cmdsent.VIN1", []byte("{}")); err != nil {
		t.Fatalf("dashboard: record sent command: %v", err)
	}
	// A command to a vehicle connected to another replica: handed to the
	// services' dispatcher (its request subject only).
	if _, err := dash.js.Publish(ctx, "vehicle.cmd.VIN1", []byte("{}")); err != nil {
		t.Fatalf("dashboard: hand a command to the dispatcher: %v", err)
	}
	// Live frames between the replicas' dashboards: live.{vin}, core NATS.
	lsub, err := dash.Conn().SubscribeSync(SubjectLive + "*")
	if err != nil {
		t.Fatalf("dashboard: live subscribe: %v", err)
	}
	if err := dash.Conn().Publish(SubjectLive+"VIN1", []byte("frame")); err != nil {
		t.Fatalf("dashboard: live publish: %v", err)
	}
	if m, err := lsub.NextMsg(10 * time.Second); err != nil || m.Subject != SubjectLive+"VIN1" {
		t.Fatalf("dashboard: live frame: %v", err)
	}
	_ = lsub.Unsubscribe()
	for _, s := range []string{"vehicle.cmdack.VIN1", "vehicle.cmdresult.VIN1", "$KV.commands.c.VIN1.x",
		"$JS.API.STREAM.DELETE.KV_dashboard_sessions", "$JS.API.STREAM.PURGE.KV_dashboard_sessions", "$JS.API.STREAM.CREATE.KV_customers", "$KV.dtc_state.VIN1", "$KV.customers.x", "telemetry.dtc.raised.VIN2",
		"$JS.API.STREAM.DELETE.VEHICLE", "$JS.API.CONSUMER.CREATE.PROFILE.x", "$JS.API.DIRECT.GET.KV_customers.$KV.customers.x",
		hemiKey, hemiGet} {
		dash.refused(t, "publish", s)
	}
	for _, s := range []string{">", "_INBOX.>", InboxPrefix(RoleEvents) + ".>", "$KV.>"} {
		dash.refused(t, "subscription", s)
	}

	// The broker's presence: the sessions bucket (put, watch; claims and
	// registry reload requests), nothing else.
	br := connectRole(t, b, RoleBroker)
	skv, err := br.js.KeyValue(ctx, BucketSessions)
	if err != nil {
		t.Fatalf("broker: bucket: %v", err)
	}
	w, err := skv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatalf("broker: watch: %v", err)
	}
	if _, err := skv.Put(ctx, "VIN1", []byte(`{"replica":"a"}`)); err != nil {
		t.Fatalf("broker: kv put: %v", err)
	}
	select {
	case e := <-w.Updates():
		if e == nil || e.Key() != "VIN1" {
			t.Fatalf("broker: watch got %v", e)
		}
	case <-ctx.Done():
		t.Fatal("broker: watch saw nothing")
	}
	_ = w.Stop()
	for _, s := range []string{"vehicle.cmd.VIN1", "$KV.dtc_state.VIN1", "$KV.customers.x", "telemetry.dtc.raised.VIN1",
		"$JS.API.STREAM.DELETE.KV_sessions", "$JS.API.STREAM.PURGE.KV_sessions", "$JS.API.CONSUMER.CREATE.DTC",
		"cluster.registry.reload", hemiKey, hemiGet} {
		br.refused(t, "publish", s)
	}
	for _, s := range []string{">", "_INBOX.>", "vehicle.>", "$KV.dtc_state.>"} {
		br.refused(t, "subscription", s)
	}

	// The system account's user sees nothing of the gateway account.
	sys, err := nats.Connect(b.URL(), nats.UserInfo(RoleSys, b.auth.creds.Passwords[RoleSys]))
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	spy, err := sys.SubscribeSync("vehicle.>")
	if err != nil {
		t.Fatal(err)
	}
	_ = sys.Flush()
	if _, err := connectRole(t, b, RoleOps).js.Publish(ctx, "vehicle.cmd.VIN1", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := sys.Request("$SYS.REQ.SERVER.PING.VARZ", nil, 10*time.Second); err != nil {
		t.Fatalf("sys: server ping: %v", err)
	}
	if m, err := spy.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("system user saw gateway traffic: %s", m.Subject)
	}

	// The operator manages the gateway account.
	_, pw, _ := b.OpsCredentials()
	ops, err := nats.Connect(b.URL(), nats.UserInfo(RoleOps, pw))
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	ojs, _ := jetstream.New(ops)
	n := 0
	for range ojs.StreamNames(ctx).Name() {
		n++
	}
	if n < len(Streams) {
		t.Fatalf("ops sees %d streams", n)
	}
}

// TestOCPPRolePermissions: the OCPP central system's user reads and
// revision-checks its ocpp_txn bucket, publishes and reads back charger
// command results, routes commands to another replica over
// cluster.ocpp.cmd.*, and can do nothing else.
func TestOCPPRolePermissions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := openTest(t, "127.0.0.1:0", t.TempDir())
	oc := connectRole(t, b, RoleOCPP)
	kv, err := oc.js.KeyValue(ctx, BucketOCPPTxn)
	if err != nil {
		t.Fatalf("ocpp: bucket: %v", err)
	}
	rev, err := kv.Create(ctx, "tx.CS1.42", []byte(`{"started":true}`))
	if err != nil {
		t.Fatalf("ocpp: kv create: %v", err)
	}
	if _, err := kv.Update(ctx, "tx.CS1.42", []byte(`{"stopped":true}`), rev); err != nil {
		t.Fatalf("ocpp: kv update at revision: %v", err)
	}
	if _, err := kv.Update(ctx, "tx.CS1.42", []byte(`{}`), rev); err == nil {
		t.Fatal("ocpp: update at a stale revision accepted")
	}
	if e, err := kv.Get(ctx, "tx.CS1.42"); err != nil || string(e.Value()) != `{"stopped":true}` {
		t.Fatalf("ocpp: kv get: %v", err)
	}
	if err := kv.Delete(ctx, "tx.CS1.42"); err != nil {
		t.Fatalf("ocpp: kv delete: %v", err)
	}
	if _, err := oc.js.Publish(ctx, SubjectChargerCommandResult("CS1"), []byte("{}")); err != nil {
		t.Fatalf("ocpp: publish command result: %v", err)
	}
	cons, err := oc.js.OrderedConsumer(ctx, StreamCharging, jetstream.OrderedConsumerConfig{FilterSubjects: []string{PrefixChargerCmdResult + ">"}})
	if err != nil {
		t.Fatalf("ocpp: results consumer: %v", err)
	}
	if m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second)); err != nil || m.Subject() != "charging.cmdresult.CS1" {
		t.Fatalf("ocpp: read command result: %v", err)
	}
	// Routing: one replica's request, another's answer (both role ocpp).
	holder := connectRole(t, b, RoleOCPP)
	if _, err := holder.nc.Subscribe(SubjectOCPPCommand("CS1"), func(m *nats.Msg) { _ = m.Respond([]byte("ok")) }); err != nil {
		t.Fatal(err)
	}
	_ = holder.nc.Flush()
	if m, err := oc.nc.Request(SubjectOCPPCommand("CS1"), []byte("{}"), 10*time.Second); err != nil || string(m.Data) != "ok" {
		t.Fatalf("ocpp: routed request: %v", err)
	}
	for _, s := range []string{"$KV.dtc_state.VIN1", "$KV.sessions.VIN1", "$KV.customers.x", "vehicle.cmd.VIN1",
		"charging.session.started.CS1", "telemetry.dtc.raised.VIN1", "cluster.registry.reload",
		"$JS.API.STREAM.DELETE.KV_ocpp_txn", "$JS.API.STREAM.PURGE.KV_ocpp_txn", "$JS.API.STREAM.PURGE.CHARGING",
		"$JS.API.CONSUMER.CREATE.CHARGING.x.charging.session.>", "$JS.API.CONSUMER.CREATE.DTC",
		"$JS.API.DIRECT.GET.KV_sessions.$KV.sessions.VIN1", hemiKey, hemiGet} {
		oc.refused(t, "publish", s)
	}
	for _, s := range []string{">", "_INBOX.>", InboxPrefix(RoleDashboard) + ".>", "charging.>", "$KV.>"} {
		oc.refused(t, "subscription", s)
	}
}

// canBucket: role declares bucket and uses it as the services do (create,
// update at a revision, get, watch, list keys, delete, purge a key).
func canBucket(t *testing.T, ctx context.Context, r *roleConn, role, bucket string) {
	t.Helper()
	kv, err := r.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("%s: declare bucket %s: %v", role, bucket, err)
	}
	rev, err := kv.Create(ctx, "k.1", []byte("a"))
	if err != nil {
		t.Fatalf("%s: %s create: %v", role, bucket, err)
	}
	if _, err := kv.Update(ctx, "k.1", []byte("b"), rev); err != nil {
		t.Fatalf("%s: %s update: %v", role, bucket, err)
	}
	if e, err := kv.Get(ctx, "k.1"); err != nil || string(e.Value()) != "b" {
		t.Fatalf("%s: %s get: %v", role, bucket, err)
	}
	w, err := kv.Watch(ctx, "k.>")
	if err != nil {
		t.Fatalf("%s: %s watch: %v", role, bucket, err)
	}
	select {
	case e := <-w.Updates():
		if e == nil || e.Key() != "k.1" {
			t.Fatalf("%s: %s watch got %v", role, bucket, e)
		}
	case <-ctx.Done():
		t.Fatalf("%s: %s watch saw nothing", role, bucket)
	}
	_ = w.Stop()
	if l, err := kv.ListKeysFiltered(ctx, "k.>"); err != nil {
		t.Fatalf("%s: %s list keys: %v", role, bucket, err)
	} else {
		n := 0
		for range l.Keys() {
			n++
		}
		if n != 1 {
			t.Fatalf("%s: %s lists %d keys", role, bucket, n)
		}
	}
	if err := kv.Delete(ctx, "k.1"); err != nil {
		t.Fatalf("%s: %s delete: %v", role, bucket, err)
	}
	if err := kv.Purge(ctx, "k.1"); err != nil {
		t.Fatalf("%s: %s purge key: %v", role, bucket, err)
	}
}

// canDurable: role creates its durable pull consumer on stream (as
// svc.Consume does), pulls the message ops published on subject, and acks it.
func canDurable(t *testing.T, ctx context.Context, r, ops *roleConn, role, stream, durable, subject string) {
	t.Helper()
	if _, err := ops.js.Publish(ctx, subject, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.js.Consumer(ctx, stream, durable); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("%s: consumer info %s/%s: %v", role, stream, durable, err)
	}
	c, err := r.js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: durable, FilterSubject: subject,
		AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("%s: consumer %s/%s: %v", role, stream, durable, err)
	}
	b, err := c.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatalf("%s: fetch %s/%s: %v", role, stream, durable, err)
	}
	n := 0
	for m := range b.Messages() {
		n++
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("%s: ack %s/%s: %v", role, stream, durable, err)
		}
	}
	if n != 1 {
		t.Fatalf("%s: %s/%s fetched %d messages (%v)", role, stream, durable, n, b.Error())
	}
}

// canPublish: role publishes to a stream subject (acknowledged by the
// stream, through its inbox).
func canPublish(t *testing.T, ctx context.Context, r *roleConn, role string, subjects ...string) {
	t.Helper()
	for _, s := range subjects {
		if _, err := r.js.Publish(ctx, s, []byte("{}")); err != nil {
			t.Fatalf("%s: publish %s: %v", role, s, err)
		}
	}
}

// canReceive: role's core subscription on filter gets what ops publishes
// on subject.
func canReceive(t *testing.T, r, ops *roleConn, role, filter, subject string) {
	t.Helper()
	sub, err := r.nc.SubscribeSync(filter)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := r.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := ops.nc.Publish(subject, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(10 * time.Second); err != nil || m.Subject != subject {
		t.Fatalf("%s: receive %s: %v", role, subject, err)
	}
}

// noErrors: the role's connection got no asynchronous error (a permission
// violation of anything it did above).
func (r *roleConn) noErrors(t *testing.T, role string) {
	t.Helper()
	_ = r.nc.Flush()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) > 0 {
		t.Fatalf("%s: %v", role, r.errs)
	}
}

// TestServiceRolePermissions: each post-purchase service's user can do its
// job (its buckets, its durables, the subjects it publishes and hears) and
// nothing else: no other service's bucket, no stream or bucket deletion,
// no purge (but the customers' erasure), no ">" and no other role's inbox.
// The gateway's own user only declares.
func TestServiceRolePermissions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	b := openTest(t, "127.0.0.1:0", t.TempDir())
	ops := connectRole(t, b, RoleOps)

	// Refused to every service role, whatever it is (own names are
	// excluded per role below).
	common := []string{
		"$KV.customers.x", "$JS.API.DIRECT.GET.KV_customers.$KV.customers.x", "$JS.API.STREAM.MSG.GET.KV_customers",
		"$KV.profiles.x", "$KV.commands.c.VIN1.x", "$KV.features.s.VIN1.f", hemiKey, hemiGet, "$KV.cluster_leases.lease.x",
		"$KV.partners.p.cafe", "$KV.webhook_deliveries.cafe.x", "$KV.offers.o.x", "$KV.offer_caps.x", "$KV.charging_attribution.x",
		"$KV.dtc_state.VIN1", "$KV.sessions.VIN1", "$KV.ocpp_txn.x", "$KV.dashboard_sessions.s.x",
		"$JS.API.STREAM.DELETE.DTC", "$JS.API.STREAM.DELETE.KV_customers", "$JS.API.STREAM.DELETE.KV_offers",
		"$JS.API.STREAM.DELETE.PARTNERS", "$JS.API.STREAM.PURGE.DTC", "$JS.API.STREAM.PURGE.PARTNERS",
		"$JS.API.STREAM.PURGE.KV_offers", "$JS.API.STREAM.PURGE.KV_features", "$JS.API.STREAM.CREATE.DTC",
		"$JS.API.STREAM.UPDATE.VEHICLE", "$JS.API.STREAM.UPDATE.KV_customers", "$JS.API.STREAM.CREATE.KV_x",
		"$JS.API.CONSUMER.DELETE.VEHICLE.cmd-dispatcher", "$JS.API.CONSUMER.CREATE.VEHICLE.x.vehicle.>",
		"$JS.API.CONSUMER.CREATE.CHARGING.y.charging.>", "$JS.API.CONSUMER.MSG.NEXT.PARTNERS.partner-cafe",
		"$JS.ACK.PARTNERS.partner-cafe.1.1.1.1.1", "$JS.API.STREAM.MSG.DELETE.VEHICLE",
		"telemetry.dtc.raised.VIN1", "vehicle.cmdack.VIN1", "vehicle.connectivity.connected.VIN1", "charging.session.started.CS1",
		"deadletter.telemetry.VIN1", "cluster.registry.reload", SubjectLive + "VIN1", PrefixIngest + "x",
		"$JS.API.ACCOUNT.PURGE.GATEWAY",
	}
	type roleCase struct {
		role string
		can  func(t *testing.T, r *roleConn)
		own  []string // of common: what this role may use
		also []string // refused publishes besides common
	}
	cases := []roleCase{
		{role: RoleCustomers, can: func(t *testing.T, r *roleConn) {
			canBucket(t, ctx, r, RoleCustomers, bucketCustomers)
			canPublish(t, ctx, r, RoleCustomers, "profile.events.ref1")
			// The erasure: list streams, purge a subject of any stream,
			// read a scrub stream through and delete a message.
			names := r.js.StreamNames(ctx)
			n := 0
			for range names.Name() {
				n++
			}
			if names.Err() != nil || n < len(Streams) {
				t.Fatalf("customers: stream names: %d %v", n, names.Err())
			}
			canPublish(t, ctx, ops, RoleOps, "telemetry.dtc.raised.ERASED1", "deadletter.nats.ERASED1")
			dtc, err := r.js.Stream(ctx, StreamDTC)
			if err != nil {
				t.Fatalf("customers: stream info: %v", err)
			}
			if err := dtc.Purge(ctx, jetstream.WithPurgeSubject("*.*.*.ERASED1")); err != nil {
				t.Fatalf("customers: purge: %v", err)
			}
			dl, err := r.js.Stream(ctx, StreamDeadLetter)
			if err != nil {
				t.Fatal(err)
			}
			oc, err := dl.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
			if err != nil {
				t.Fatalf("customers: read DEADLETTER: %v", err)
			}
			m, err := oc.Next(jetstream.FetchMaxWait(10 * time.Second))
			if err != nil {
				t.Fatalf("customers: read DEADLETTER: %v", err)
			}
			md, _ := m.Metadata()
			if err := dl.SecureDeleteMsg(ctx, md.Sequence.Stream); err != nil {
				t.Fatalf("customers: delete a message: %v", err)
			}
		}, own: []string{"$KV.customers.x", "$JS.API.DIRECT.GET.KV_customers.$KV.customers.x", "$JS.API.STREAM.MSG.GET.KV_customers",
			"$JS.API.STREAM.UPDATE.KV_customers", "$JS.API.STREAM.PURGE.DTC", "$JS.API.STREAM.PURGE.PARTNERS",
			"$JS.API.STREAM.PURGE.KV_offers", "$JS.API.STREAM.PURGE.KV_features", "$JS.API.CONSUMER.CREATE.CHARGING.y.charging.>",
			// Reading a scrub stream through: an ordered consumer's name is
			// random, so any consumer of it (docs/security.md).
			"$JS.API.CONSUMER.MSG.NEXT.PARTNERS.partner-cafe"},
			also: []string{"vehicle.cmd.VIN1", "partners.cafe.triggers", "$JS.API.STREAM.MSG.DELETE.DTC"}},
		{role: RoleProfile, can: func(t *testing.T, r *roleConn) {
			canBucket(t, ctx, r, RoleProfile, bucketProfiles)
			canDurable(t, ctx, r, ops, RoleProfile, StreamProfile, "profile-projector", "profile.events.ref1")
			canDurable(t, ctx, r, ops, RoleProfile, StreamCharging, "profile-feeder-charging", "charging.session.stopped.CS1")
			canDurable(t, ctx, r, ops, RoleProfile, StreamDTC, "profile-feeder-dtc", "telemetry.dtc.raised.VIN1")
			canPublish(t, ctx, r, RoleProfile, "profile.events.ref2")
			st, err := r.js.Stream(ctx, StreamProfile)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Purge(ctx, jetstream.WithPurgeSubject("profile.events.ref2")); err != nil {
				t.Fatalf("profile: purge a customer's events: %v", err)
			}
		}, own: []string{"$KV.profiles.x"},
			also: []string{"vehicle.cmd.VIN1", "$JS.API.STREAM.PURGE.CHARGING", "$JS.API.CONSUMER.CREATE.DTC.other.telemetry.>",
				"$JS.API.CONSUMER.MSG.NEXT.DTC.other"}},
		{role: RoleCommands, can: func(t *testing.T, r *roleConn) {
			canBucket(t, ctx, r, RoleCommands, bucketCommands)
			canDurable(t, ctx, r, ops, RoleCommands, StreamVehicle, "cmd-dispatcher", "vehicle.cmd.VIN1")
			canDurable(t, ctx, r, ops, RoleCommands, StreamVehicle, "cmd-acks", "vehicle.cmdack.VIN1")
			canPublish(t, ctx, r, RoleCommands, "vehicle.cmd.VIN2", "vehicle.cmdresult.VIN1")
			canReceive(t, r, ops, RoleCommands, "vehicle.connectivity.connected.*", "vehicle.connectivity.connected.VIN1")
			canReceive(t, r, ops, RoleCommands, "vehicle.event.*", "vehicle.event.VIN1")
		}, own: []string{"$KV.commands.c.VIN1.x", "$JS.API.CONSUMER.DELETE.VEHICLE.cmd-dispatcher"},
			also: []string{"profile.events.x", "partners.cafe.triggers"}},
		{role: RoleFeatures, can: func(t *testing.T, r *roleConn) {
			for _, bk := range []string{bucketFeatures, bucketHemispheres, bucketLeases} {
				canBucket(t, ctx, r, RoleFeatures, bk)
			}
			canDurable(t, ctx, r, ops, RoleFeatures, StreamVehicle, "features-results", "vehicle.cmdresult.VIN1")
			canPublish(t, ctx, r, RoleFeatures, "vehicle.cmd.VIN1", "profile.events.ref1")
			canReceive(t, r, ops, RoleFeatures, "vehicle.event.*", "vehicle.event.VIN1")
		}, own: []string{"$KV.features.s.VIN1.f", hemiKey, hemiGet, "$KV.cluster_leases.lease.x"},
			also: []string{"partners.cafe.triggers", "vehicle.cmdresult.VIN1"}},
		{role: RolePartners, can: func(t *testing.T, r *roleConn) {
			canBucket(t, ctx, r, RolePartners, bucketPartners)
		}, own: []string{"$KV.partners.p.cafe"},
			also: []string{"partners.cafe.triggers", "profile.events.x", "vehicle.cmd.VIN1"}},
		{role: RoleWebhooks, can: func(t *testing.T, r *roleConn) {
			canBucket(t, ctx, r, RoleWebhooks, bucketDeliveries)
			canDurable(t, ctx, r, ops, RoleWebhooks, StreamPartners, "partner-webhooks", "partners.cafe.triggers")
			canPublish(t, ctx, r, RoleWebhooks, "deadletter.webhook.cafe")
		}, own: []string{"$KV.webhook_deliveries.cafe.x"},
			also: []string{"partners.cafe.triggers", "deadletter.nats.cafe", "$JS.API.CONSUMER.CREATE.PARTNERS.partner-cafe.partners.cafe.>"}},
		{role: RolePartnerNATS, can: func(t *testing.T, r *roleConn) {
			c, err := r.js.CreateOrUpdateConsumer(ctx, StreamPartners, jetstream.ConsumerConfig{Durable: "partner-cafe",
				FilterSubject: "partners.cafe.>", AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 20})
			if err != nil {
				t.Fatalf("partnernats: partner consumer: %v", err)
			}
			if _, err := r.js.Consumer(ctx, StreamPartners, "partner-cafe"); err != nil {
				t.Fatalf("partnernats: consumer info: %v", err)
			}
			_ = c
			st, err := r.js.Stream(ctx, StreamPartners)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.GetMsg(ctx, 1); err != nil {
				t.Fatalf("partnernats: read a given-up trigger: %v", err)
			}
			if _, err := r.js.Stream(ctx, StreamDeadLetter); err != nil {
				t.Fatalf("partnernats: dead letters count: %v", err)
			}
			canPublish(t, ctx, r, RolePartnerNATS, "deadletter.nats.cafe")
			canReceive(t, r, ops, RolePartnerNATS, "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.PARTNERS.*",
				"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.PARTNERS.partner-cafe")
		}, own: []string{},
			also: []string{"partners.cafe.triggers", "deadletter.webhook.cafe", "$JS.API.CONSUMER.CREATE.VEHICLE.partner-x",
				"$JS.API.CONSUMER.DELETE.DTC.x", "$JS.API.CONSUMER.MSG.NEXT.PARTNERS.partner-webhooks"}},
		{role: RoleOffers, can: func(t *testing.T, r *roleConn) {
			for _, bk := range []string{bucketOffers, bucketOfferCaps, bucketAttribution} {
				canBucket(t, ctx, r, RoleOffers, bk)
			}
			canDurable(t, ctx, r, ops, RoleOffers, StreamCharging, "offers-sessions", "charging.session.started.CS1")
			canPublish(t, ctx, ops, RoleOps, "vehicle.event.VIN7")
			st, err := r.js.Stream(ctx, StreamVehicle)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.GetLastMsgForSubject(ctx, "vehicle.event.VIN7"); err != nil {
				t.Fatalf("offers: a vehicle's last event: %v", err)
			}
			canPublish(t, ctx, r, RoleOffers, "partners.cafe.triggers", "vehicle.cmd.VIN1", "profile.events.ref1")
		}, own: []string{"$KV.offers.o.x", "$KV.offer_caps.x", "$KV.charging_attribution.x"},
			also: []string{"vehicle.cmdresult.VIN1", "deadletter.webhook.cafe", "$JS.API.CONSUMER.CREATE.CHARGING.offers-x.charging.>"}},
	}
	for _, c := range cases {
		r := connectRole(t, b, c.role)
		c.can(t, r)
		r.noErrors(t, c.role)
		own := map[string]bool{}
		for _, s := range c.own {
			own[s] = true
		}
		for _, s := range append(c.also, common...) {
			if !own[s] {
				r.refused(t, "publish", s)
			}
		}
		subs := []string{">", "_INBOX.>", "$KV.>", "$JS.>", "vehicle.>", "partners.>"}
		for _, other := range append([]string{RoleGateway, RoleEvents, RoleDashboard, RoleOps}, ServiceRoles...) {
			if other != c.role {
				subs = append(subs, InboxPrefix(other)+".>")
			}
		}
		for _, s := range subs {
			r.refused(t, "subscription", s)
		}
	}

	// The bus's own user declared everything at Open; it reads and writes
	// no message and deletes nothing.
	gw := connectRole(t, b, RoleGateway)
	if _, err := gw.js.Stream(ctx, StreamDTC); err != nil {
		t.Fatalf("gateway: stream info: %v", err)
	}
	for _, s := range append([]string{"vehicle.cmd.VIN1", "$KV.dtc_state.VIN1", "$JS.API.CONSUMER.CREATE.VEHICLE",
		"$JS.API.STREAM.MSG.GET.DTC", "$JS.API.STREAM.CREATE.KV_customers"}, common...) {
		if s != "$JS.API.STREAM.CREATE.DTC" && s != "$JS.API.STREAM.UPDATE.VEHICLE" { // its own declarations
			gw.refused(t, "publish", s)
		}
	}
	for _, s := range []string{">", "vehicle.>", "$KV.>", InboxPrefix(RoleCustomers) + ".>"} {
		gw.refused(t, "subscription", s)
	}
}
