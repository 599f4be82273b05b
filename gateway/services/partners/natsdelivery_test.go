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
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/internal/svctest"
)

// bcrypt of "cafe-pass" and "bake-pass" (cost 4, test only).
const (
	cafeHash = "$2a$04$CAlpUiZVVNkbLQ3Q02aim.nQKtHBYe5Akc0/O9uapPXTUMU9a89Rq"
	bakeHash = "$2a$04$fNZJPIwofxppN2XnlLeGCuZYnqJtezoh2fDwaG4rD7QVNeas59u/S"
)

type natsFixture struct {
	bus *natsbus.Bus
	ops *natsbus.Client // the test's own reads and writes (full rights)
	reg *partners.Registry
	del *partners.NATSDelivery
}

func newNATSFixture(t *testing.T, ctx context.Context, cfg partners.NATSDeliveryConfig) *natsFixture {
	t.Helper()
	bus := svctest.Bus(t)
	roles := svctest.Roles(t, bus) // the services on their own users
	reg, err := partners.Open(ctx, svctest.Role(t, roles, natsbus.RolePartners).JetStream(), 1, "", svctest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []partners.Partner{
		{ID: "cafe", Name: "Cafe", NATS: &partners.NATS{User: "cafe", PasswordBcrypt: cafeHash}},
		{ID: "bakery", Name: "Bakery", NATS: &partners.NATS{User: "bakery", PasswordBcrypt: bakeHash}},
		{ID: "hooks-only", Name: "No NATS"},
	} {
		if err := reg.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	pn := svctest.Role(t, roles, natsbus.RolePartnerNATS)
	del := partners.NewNATSDelivery(pn.Conn(), pn.JetStream(), reg, cfg, svctest.Logger())
	for range 2 { // idempotent
		if err := del.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := bus.SetPartners(reg.NATSAccounts()); err != nil {
		t.Fatal(err)
	}
	return &natsFixture{bus: bus, ops: svctest.Ops(t, bus), reg: reg, del: del}
}

func (f *natsFixture) trigger(t *testing.T, ctx context.Context, partner, id string) {
	t.Helper()
	b, _ := json.Marshal(partners.Trigger{V: 1, ID: id, Type: partners.TriggerType, Partner: partner, Time: time.Now()})
	if _, err := f.ops.JetStream().PublishMsg(ctx, &nats.Msg{Subject: partners.Subject(partner), Data: b},
		jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

// partnerConn is a partner's client with its credentials and inbox prefix;
// permission violations arrive on errs.
type partnerConn struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

func connectPartner(t *testing.T, url, id, user, pass string) *partnerConn {
	t.Helper()
	p := &partnerConn{errs: make(chan error, 64)}
	nc, err := nats.Connect(url, nats.UserInfo(user, pass), nats.CustomInboxPrefix(partners.InboxPrefix(id)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case p.errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p.nc = nc
	if p.js, err = jetstream.NewWithAPIPrefix(nc, partners.NATSAPIPrefix); err != nil {
		t.Fatal(err)
	}
	return p
}

// denied waits (bounded) for the server's permissions violation naming
// subject; op is "publish" or "subscription".
func (p *partnerConn) denied(t *testing.T, op, subject string) {
	t.Helper()
	_ = p.nc.Flush()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-p.errs:
			s := strings.ToLower(err.Error())
			if strings.Contains(s, "permissions violation") && strings.Contains(s, op) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return
			}
			t.Logf("other error: %v", err)
		case <-timeout:
			t.Fatalf("%s %s was not refused", op, subject)
		}
	}
}

func (p *partnerConn) noErrors(t *testing.T) {
	t.Helper()
	_ = p.nc.Flush()
	select {
	case err := <-p.errs:
		t.Fatalf("unexpected error: %v", err)
	default:
	}
}

// TestPartnerDurablePermissions: against the real embedded server, a
// partner (in its own NATS account) fetches and acks its own triggers from
// its durable and can do nothing else: no consumer creation, no other
// partner's durable, inbox or subjects, no stream API, no publishing
// triggers. The allow lists are defence in depth; the account boundary is
// tested without them in TestPartnerAccountIsolation.
func TestPartnerDurablePermissions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := newNATSFixture(t, ctx, partners.NATSDeliveryConfig{})
	js := f.ops.JetStream()
	if _, err := js.Consumer(ctx, partners.TriggerStream, partners.Durable("hooks-only")); err == nil {
		t.Fatal("consumer created for a partner without NATS credentials")
	}
	info, err := js.Consumer(ctx, partners.TriggerStream, partners.Durable("cafe"))
	if err != nil {
		t.Fatal(err)
	}
	if c := info.CachedInfo().Config; c.FilterSubject != "partners.cafe.>" || c.AckPolicy != jetstream.AckExplicitPolicy ||
		c.MaxDeliver != 20 || c.AckWait != 30*time.Second || c.DeliverPolicy != jetstream.DeliverAllPolicy ||
		c.MaxRequestBatch != 500 || c.MaxRequestExpires != 2*time.Minute {
		t.Fatalf("consumer config %+v", c)
	}
	f.trigger(t, ctx, "cafe", "ofr-c1")
	f.trigger(t, ctx, "cafe", "ofr-c2")
	f.trigger(t, ctx, "bakery", "ofr-b1")

	url := f.bus.URL()
	a := connectPartner(t, url, "cafe", "cafe", "cafe-pass")
	cons, err := a.js.Consumer(ctx, partners.TriggerStream, partners.Durable("cafe")) // CONSUMER.INFO
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < 2 {
		batch, err := cons.Fetch(10, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var tr partners.Trigger
			if err := json.Unmarshal(m.Data(), &tr); err != nil || tr.Partner != "cafe" {
				t.Fatalf("trigger %s: %v", m.Data(), err)
			}
			got[tr.ID] = true
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("ack: %v", err)
			}
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("fetch returned nothing; have %v", got)
		}
	}
	if !got["ofr-c1"] || !got["ofr-c2"] || len(got) != 2 {
		t.Fatalf("cafe got %v", got)
	}
	live, err := a.nc.SubscribeSync("partners.cafe.>")
	if err != nil {
		t.Fatal(err)
	}
	a.noErrors(t)

	// Everything else is refused by the server.
	for _, subj := range []string{
		"$JS.API.CONSUMER.CREATE.PARTNERS",
		"$JS.API.CONSUMER.CREATE.PARTNERS.mine",
		"$JS.API.CONSUMER.CREATE.PARTNERS.mine.partners.bakery.>",
		"$JS.API.CONSUMER.DURABLE.CREATE.PARTNERS.partner-cafe",
		"$JS.API.CONSUMER.DELETE.PARTNERS.partner-cafe",
		"$JS.API.CONSUMER.MSG.NEXT.PARTNERS.partner-bakery",
		"$JS.API.CONSUMER.INFO.PARTNERS.partner-bakery",
		"$JS.API.CONSUMER.LIST.PARTNERS",
		"$JS.API.STREAM.INFO.PARTNERS",
		"$JS.API.STREAM.MSG.GET.PARTNERS",
		"$JS.API.STREAM.DELETE.PARTNERS",
		"$JS.API.STREAM.CREATE.MINE",
		"$JS.API.INFO",
		"$JS.ACK.PARTNERS.partner-bakery.1.3.1.1.0",
		"partners.cafe.triggers",
		"partners.bakery.triggers",
	} {
		if err := a.nc.Publish(subj, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		a.denied(t, "publish", subj)
	}
	for _, subj := range []string{"partners.bakery.>", "_INBOX_bakery.>", ">", "$JS.ACK.>", "partners.>", "$JS.API.>", "$KV.>"} {
		if _, err := a.nc.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		a.denied(t, "subscription", subj)
	}
	// The client API agrees: creating a consumer or reading bakery's fails.
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	if _, err := a.js.CreateConsumer(short, partners.TriggerStream, jetstream.ConsumerConfig{FilterSubject: "partners.bakery.>"}); err == nil {
		t.Fatal("partner created a consumer")
	}
	cancelShort()
	short, cancelShort = context.WithTimeout(ctx, 500*time.Millisecond)
	if _, err := a.js.Consumer(short, partners.TriggerStream, partners.Durable("bakery")); err == nil {
		t.Fatal("partner read another partner's consumer")
	}
	cancelShort()
	stream, err := js.Stream(ctx, partners.TriggerStream)
	if err != nil {
		t.Fatal(err)
	}
	names := 0
	lister := stream.ConsumerNames(ctx)
	for range lister.Name() {
		names++
	}
	if names != 2 { // partner-cafe, partner-bakery
		t.Fatalf("%d consumers on PARTNERS", names)
	}
	// Bakery's trigger is untouched; cafe's are acknowledged.
	st, err := f.del.Status(ctx, "bakery")
	if err != nil || st.Pending != 1 || st.AckPending != 0 {
		t.Fatalf("bakery status %+v %v", st, err)
	}
	st, err = f.del.Status(ctx, "cafe")
	if err != nil || st.Pending != 0 || st.AckPending != 0 || st.Durable != "partner-cafe" || st.InboxPrefix != "_INBOX_cafe" {
		t.Fatalf("cafe status %+v %v", st, err)
	}
	// The live subscription still works (gateway publishes on it).
	f.trigger(t, ctx, "cafe", "ofr-c3")
	if _, err := live.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("live trigger: %v", err)
	}

	// Bakery reads its own durable with its own credentials.
	b := connectPartner(t, url, "bakery", "bakery", "bake-pass")
	bc, err := b.js.Consumer(ctx, partners.TriggerStream, partners.Durable("bakery"))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := bc.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if !strings.Contains(string(m.Data()), "ofr-b1") {
			t.Fatalf("bakery got %s", m.Data())
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	b.noErrors(t)
}

// TestPartnerUndeliverableCounted: a trigger the partner never acks is
// given up after MaxDeliver deliveries, dead-lettered and counted.
func TestPartnerUndeliverableCounted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	f := newNATSFixture(t, ctx, partners.NATSDeliveryConfig{MaxDeliver: 3})
	runCtx, stopRun := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = f.del.Run(runCtx) }()
	defer func() { stopRun(); wg.Wait() }()
	select { // the advisory subscription is in place before any delivery
	case <-f.del.Listening():
	case <-ctx.Done():
		t.Fatal("advisory subscription not ready")
	}

	f.trigger(t, ctx, "cafe", "ofr-poison")
	a := connectPartner(t, f.bus.URL(), "cafe", "cafe", "cafe-pass")
	cons, err := a.js.Consumer(ctx, partners.TriggerStream, partners.Durable("cafe"))
	if err != nil {
		t.Fatal(err)
	}
	deliveries := 0
	for deliveries < 3 {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			deliveries++
			if err := m.Nak(); err != nil { // processing failed: redeliver now
				t.Fatal(err)
			}
		}
	}
	// The next pull finds the limit reached: not delivered a fourth time,
	// and the server raises the max-deliveries advisory. Nak is
	// asynchronous, so a pull may reach the server before the last Nak
	// did: keep pulling (nothing may be delivered) until it is counted.
	svctest.Eventually(t, "undeliverable counted", func() error {
		batch, err := cons.FetchNoWait(1)
		if err != nil {
			return err
		}
		for m := range batch.Messages() {
			t.Fatalf("delivered after max_deliver: %s", m.Data())
		}
		st, err := f.del.Status(ctx, "cafe")
		if err != nil {
			return err
		}
		if st.Undeliverable != 1 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	dl, err := f.ops.JetStream().Stream(ctx, "DEADLETTER")
	if err != nil {
		t.Fatal(err)
	}
	m, err := dl.GetLastMsgForSubject(ctx, "deadletter.nats.cafe")
	if err != nil || !strings.Contains(string(m.Data), "ofr-poison") || !strings.Contains(string(m.Data), "dl-nats-ofr-poison") {
		t.Fatalf("dead letter %s: %v", m.Data, err)
	}
}

// TestPartnerNATSUserNotInternal: a partner's NATS user named like one of
// the gateway's own users (a service's, the operator's) is refused with a
// clear answer; the embedded server would refuse every partner account.
func TestPartnerNATSUserNotInternal(t *testing.T) {
	for _, u := range append([]string{natsbus.RoleGateway, natsbus.RoleOps, natsbus.RoleSys}, natsbus.ServiceRoles...) {
		p := partners.Partner{ID: "cafe", Name: "Cafe", NATS: &partners.NATS{User: u, PasswordBcrypt: cafeHash}}
		if err := p.Validate(); !errors.Is(err, svc.ErrInvalid) || !strings.Contains(err.Error(), "gateway's own users") {
			t.Fatalf("nats user %q: %v", u, err)
		}
	}
	p := partners.Partner{ID: "cafe", Name: "Cafe", NATS: &partners.NATS{User: "cafe", PasswordBcrypt: cafeHash}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
}
