package partners_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/partners"
)

// observer records what arrives on gateway-account subjects a partner must
// never reach (subscribed with the gateway's own full-rights user).
type observer struct {
	mu   sync.Mutex
	got  []string
	subs []*nats.Subscription
}

func observe(t *testing.T, nc *nats.Conn, subjects ...string) *observer {
	t.Helper()
	o := &observer{}
	for _, s := range subjects {
		sub, err := nc.Subscribe(s, func(m *nats.Msg) {
			o.mu.Lock()
			o.got = append(o.got, m.Subject+": "+string(m.Data))
			o.mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		o.subs = append(o.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return o
}

func (o *observer) none(t *testing.T) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.got) > 0 {
		first := o.got[0]
		if len(first) > 200 {
			first = first[:200]
		}
		t.Fatalf("a partner caused %d message(s) in the gateway account, first: %q", len(o.got), first)
	}
}

// gatewayState is what the attack could change: KV values and stream sizes.
type gatewayState struct {
	profileRev, customerRev uint64
	profileMsgs, bakeryMsgs uint64
}

func readState(t *testing.T, ctx context.Context, js jetstream.JetStream) gatewayState {
	t.Helper()
	var st gatewayState
	for _, b := range []struct {
		bucket string
		rev    *uint64
	}{{"profiles", &st.profileRev}, {"customers", &st.customerRev}} {
		kv, err := js.KeyValue(ctx, b.bucket)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, "x")
		if err != nil {
			t.Fatalf("%s.x: %v", b.bucket, err)
		}
		if string(e.Value()) != "precious" {
			t.Fatalf("%s.x overwritten: %q", b.bucket, e.Value())
		}
		*b.rev = e.Revision()
	}
	prof, err := js.Stream(ctx, "PROFILE")
	if err != nil {
		t.Fatal(err)
	}
	pi, err := prof.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.profileMsgs = pi.State.Msgs
	part, err := js.Stream(ctx, partners.TriggerStream)
	if err != nil {
		t.Fatal(err)
	}
	bi, err := part.Info(ctx, jetstream.WithSubjectFilter(partners.Subject("bakery")))
	if err != nil {
		t.Fatal(err)
	}
	st.bakeryMsgs = bi.State.Subjects[partners.Subject("bakery")]
	return st
}

// TestPartnerAccountIsolation: a partner's credentials cannot cause a single
// message in the gateway's account, whatever reply subject or inbox prefix
// it uses on the requests the server answers for it (consumer info, fetch,
// ack), and whatever it subscribes to. It runs twice: with the partner's
// real allow lists, and with the allow lists opened to everything (">"), so
// that the account boundary alone is what is proven.
func TestPartnerAccountIsolation(t *testing.T) {
	for _, open := range []bool{false, true} {
		t.Run(fmt.Sprintf("open_permissions=%v", open), func(t *testing.T) { testPartnerAccountIsolation(t, open) })
	}
}

func testPartnerAccountIsolation(t *testing.T, openPerms bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := newNATSFixture(t, ctx, partners.NATSDeliveryConfig{})
	if openPerms {
		accs := f.reg.NATSAccounts()
		for i := range accs {
			accs[i].Publish, accs[i].Subscribe = []string{">"}, []string{">"}
		}
		if err := f.bus.SetPartners(accs); err != nil {
			t.Fatal(err)
		}
	}
	gw := f.ops.JetStream()
	for _, b := range []string{"profiles", "customers"} {
		kv, err := gw.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, "x", []byte("precious")); err != nil {
			t.Fatal(err)
		}
	}
	f.trigger(t, ctx, "cafe", "ofr-c1")
	f.trigger(t, ctx, "bakery", "ofr-b1")
	before := readState(t, ctx, gw)
	targets := []string{"$KV.profiles.x", "$KV.customers.x", partners.Subject("bakery"), "profile.events.x"}
	obs := observe(t, f.ops.Conn(), append(targets, "$KV.>", "profile.>", "partners.bakery.>", "customers.>")...)

	a := connectPartner(t, f.bus.URL(), "cafe", "cafe", "cafe-pass")
	d := partners.Durable("cafe")
	api := partners.NATSAPIPrefix
	for _, reply := range targets {
		for _, req := range []struct{ subj, body string }{
			{api + ".CONSUMER.INFO.PARTNERS." + d, ""},
			{api + ".CONSUMER.MSG.NEXT.PARTNERS." + d, `{"batch":5,"no_wait":true}`},
			{api + ".CONSUMER.MSG.NEXT.PARTNERS." + d, `{"batch":5,"expires":100000000,"idle_heartbeat":50000000}`},
			{"$JS.ACK.PARTNERS." + d + ".1.1.1.1.0", "+ACK"},
			{"$JS.ACK.PARTNERS." + d + ".1.1.1.1.0", "+NXT"},
			{"$JS.API.INFO", ""},
			{"$JS.API.STREAM.INFO.PARTNERS", ""},
			{"$JS.API.CONSUMER.INFO.PARTNERS." + d, ""},
			{"$JS.API.CONSUMER.MSG.NEXT.PARTNERS." + d, `{"batch":5,"no_wait":true}`},
			{"$JS.API.CONSUMER.CREATE.PARTNERS", `{"stream_name":"PARTNERS","config":{"deliver_subject":"` + reply + `"}}`},
			{"$JS.API.STREAM.CREATE.EVIL", `{"name":"EVIL","subjects":["evil.>"]}`},
			{"$KV.profiles.x", "wiped"},
			{"profile.events.x", "planted"},
			{partners.Subject("bakery"), "planted"},
		} {
			if err := a.nc.PublishMsg(&nats.Msg{Subject: req.subj, Reply: reply, Data: []byte(req.body)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The same through a real client whose inbox prefix is a gateway
	// subject: every answer (and fetched trigger) lands in cafe's account.
	for _, prefix := range []string{"$KV.customers", "profile.events", "partners.bakery"} {
		nc, err := nats.Connect(f.bus.URL(), nats.UserInfo("cafe", "cafe-pass"), nats.CustomInboxPrefix(prefix),
			nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // refusals expected with the allow lists
		if err != nil {
			t.Fatal(err)
		}
		js, _ := jetstream.NewWithAPIPrefix(nc, api)
		short, stop := context.WithTimeout(ctx, 2*time.Second)
		if c, err := js.Consumer(short, partners.TriggerStream, d); err == nil {
			if b, err := c.Fetch(1, jetstream.FetchMaxWait(200*time.Millisecond)); err == nil {
				for m := range b.Messages() {
					_ = m.Nak()
				}
			}
		} else if !openPerms {
			t.Logf("inbox %s: %v", prefix, err) // refused by the allow list: fine
		}
		stop()
		nc.Close()
	}
	// Subscriptions see the partner's own account only.
	spy := observe(t, a.nc, ">", "$JS.API.>", "_INBOX.>", "$KV.>", "partners.bakery.>", "$JS.ACK.>")
	// Barrier: a legitimate request through the same imports, after
	// every attack (the server processes one connection's messages in
	// order), then the gateway's own round trip.
	cons, err := a.js.Consumer(ctx, partners.TriggerStream, d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cons.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.ops.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.AccountInfo(ctx); err != nil {
		t.Fatal(err)
	}
	obs.none(t)
	after := readState(t, ctx, gw)
	if after != before {
		t.Fatalf("gateway state changed: before %+v after %+v", before, after)
	}
	if _, err := gw.Stream(ctx, "EVIL"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("partner created a stream: %v", err)
	}
	// A gateway publish on bakery's subject never reaches cafe's spy.
	f.trigger(t, ctx, "bakery", "ofr-b2")
	if _, err := cons.Info(ctx); err != nil {
		t.Fatal(err)
	}
	spy.mu.Lock()
	for _, m := range spy.got {
		if strings.Contains(m, "bakery") || strings.Contains(m, "ofr-b") {
			t.Fatalf("cafe saw another partner's message: %s", m)
		}
	}
	spy.mu.Unlock()
	// Bakery's triggers are untouched (not fetched, not acked by cafe).
	st, err := f.del.Status(ctx, "bakery")
	if err != nil || st.Pending != 2 || st.AckPending != 0 {
		t.Fatalf("bakery status %+v %v", st, err)
	}
}

// TestPartnerAtLeastOnce: through its account's imports a partner gets its
// own triggers, a trigger it does not acknowledge is redelivered after
// AckWait (also across a reconnect), and an acked one is not.
func TestPartnerAtLeastOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := newNATSFixture(t, ctx, partners.NATSDeliveryConfig{AckWait: 300 * time.Millisecond})
	f.trigger(t, ctx, "cafe", "ofr-1")
	f.trigger(t, ctx, "cafe", "ofr-2")
	fetch := func(p *partnerConn, n int) (ids []string, msgs []jetstream.Msg) {
		t.Helper()
		cons, err := p.js.Consumer(ctx, partners.TriggerStream, partners.Durable("cafe"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := cons.Fetch(n, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			var tr partners.Trigger
			if err := json.Unmarshal(m.Data(), &tr); err != nil {
				t.Fatal(err)
			}
			ids, msgs = append(ids, tr.ID), append(msgs, m)
		}
		return ids, msgs
	}
	a := connectPartner(t, f.bus.URL(), "cafe", "cafe", "cafe-pass")
	ids, msgs := fetch(a, 2)
	if len(ids) != 2 {
		t.Fatalf("first fetch %v", ids)
	}
	if err := msgs[0].DoubleAck(ctx); err != nil { // ofr-1 processed
		t.Fatal(err)
	}
	a.nc.Close() // ofr-2 never acknowledged: the partner crashed
	b := connectPartner(t, f.bus.URL(), "cafe", "cafe", "cafe-pass")
	ids, msgs = fetch(b, 1)
	if len(ids) != 1 || ids[0] != "ofr-2" {
		t.Fatalf("redelivery %v", ids)
	}
	md, err := msgs[0].Metadata()
	if err != nil || md.NumDelivered < 2 {
		t.Fatalf("metadata %+v %v", md, err)
	}
	if err := msgs[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := f.del.Status(ctx, "cafe")
	if err != nil || st.Pending != 0 || st.AckPending != 0 {
		t.Fatalf("status %+v %v", st, err)
	}
	b.noErrors(t)
}

// TestPartnerAccountLimits: a partner account is bounded by the server:
// connections, subscriptions, the payload it may publish, and the size of
// one pull request on its durable.
func TestPartnerAccountLimits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := newNATSFixture(t, ctx, partners.NATSDeliveryConfig{})
	lim := natsbus.PartnerLimits{}.WithDefaults()
	var conns []*nats.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < lim.MaxConnections; i++ {
		nc, err := nats.Connect(f.bus.URL(), nats.UserInfo("cafe", "cafe-pass"))
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		conns = append(conns, nc)
	}
	if nc, err := nats.Connect(f.bus.URL(), nats.UserInfo("cafe", "cafe-pass"), nats.MaxReconnects(0)); err == nil {
		// The server may accept the TCP connection and close it at once.
		if err := nc.Flush(); err == nil && nc.IsConnected() {
			t.Fatal("connection beyond max_connections accepted")
		}
		nc.Close()
	}
	// Another partner is not affected by cafe's connections.
	other, err := nats.Connect(f.bus.URL(), nats.UserInfo("bakery", "bake-pass"))
	if err != nil {
		t.Fatalf("bakery: %v", err)
	}
	other.Close()

	errs := make(chan error, 4)
	conns[0].SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	})
	for i := 0; i <= lim.MaxSubscriptions; i++ {
		if _, err := conns[0].SubscribeSync(fmt.Sprintf("_INBOX.s%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	_ = conns[0].Flush()
	select {
	case err := <-errs:
		if !strings.Contains(strings.ToLower(err.Error()), "maximum subscriptions") {
			t.Fatalf("want maximum subscriptions exceeded, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("subscription beyond max_subscriptions accepted")
	}
	// One pull request cannot hold more than the consumer allows.
	m, err := conns[2].Request(partners.NATSAPIPrefix+".CONSUMER.MSG.NEXT.PARTNERS."+partners.Durable("cafe"),
		[]byte(`{"batch":100000,"expires":1000000000}`), 10*time.Second)
	if err != nil || m.Header.Get("Status") != "409" || !strings.Contains(m.Header.Get("Description"), "MaxRequestBatch") {
		t.Fatalf("oversized pull request: %v %v", err, m)
	}
	// The server announces the account's max payload; larger publishes fail.
	if mp := conns[1].MaxPayload(); mp != int64(lim.MaxPayload) {
		t.Fatalf("max payload %d, want %d", mp, lim.MaxPayload)
	}
	if err := conns[1].Publish("$JS.ACK.PARTNERS.partner-cafe.1.1.1.1.0", make([]byte, lim.MaxPayload+1)); !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("oversized publish: %v", err)
	}
}
