package natsbus

import (
	"context"
	"encoding/json"
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
	for _, s := range []string{"vehicle.cmdack.VIN1", "vehicle.cmdresult.VIN1", "$KV.commands.c.VIN1.x", "$KV.dtc_state.VIN1", "$KV.customers.x", "telemetry.dtc.raised.VIN2",
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
