package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/partners"
	"github.com/telegate/telegate/internal/logbuf"
	"github.com/telegate/telegate/internal/svctest"
)

// TestExampleCatchesUp: triggers published before the example starts are
// printed (with their id) and acknowledged, with the partner's restricted
// credentials and the Messages iterator.
func TestExampleCatchesUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bus := svctest.Bus(t)
	roles := svctest.Roles(t, bus) // each service on its own user, as in the gateway
	reg, err := partners.Open(ctx, svctest.Role(t, roles, natsbus.RolePartners).JetStream(), 1, "", svctest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	// bcrypt of "cafe-pass" (cost 4, test only).
	hash := "$2a$04$CAlpUiZVVNkbLQ3Q02aim.nQKtHBYe5Akc0/O9uapPXTUMU9a89Rq"
	if err := reg.Put(ctx, partners.Partner{ID: "cafe", NATS: &partners.NATS{User: "cafe", PasswordBcrypt: hash}}); err != nil {
		t.Fatal(err)
	}
	pn := svctest.Role(t, roles, natsbus.RolePartnerNATS)
	del := partners.NewNATSDelivery(pn.Conn(), pn.JetStream(), reg, partners.NATSDeliveryConfig{}, svctest.Logger())
	if err := del.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bus.SetPartners(reg.NATSAccounts()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"ofr-1", "ofr-2"} {
		b, _ := json.Marshal(partners.Trigger{V: 1, ID: id, Type: partners.TriggerType, Partner: "cafe", OfferCode: "C"})
		if _, err := svctest.Role(t, roles, natsbus.RoleOffers).JetStream().PublishMsg(ctx, &nats.Msg{Subject: partners.Subject("cafe"), Data: b}, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	var out logbuf.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, log, bus.URL(), "cafe", "cafe", "cafe-pass", "", "") }()
	svctest.Eventually(t, "triggers acknowledged", func() error {
		st, err := del.Status(ctx, "cafe")
		if err != nil {
			return err
		}
		if st.Pending != 0 || st.AckPending != 0 {
			return fmt.Errorf("%+v", st)
		}
		// The consumer's counters may lag the stream right after the
		// publishes: also wait for the example to have printed both.
		if s := out.String(); !strings.Contains(s, "id=ofr-1") || !strings.Contains(s, "id=ofr-2") {
			return fmt.Errorf("not printed yet: %+v", st)
		}
		return nil
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if !strings.Contains(s, "id=ofr-1") || !strings.Contains(s, "id=ofr-2") || strings.Contains(strings.ToLower(s), "permission") {
		t.Fatalf("output:\n%s", s)
	}
}
