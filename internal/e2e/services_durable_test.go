package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telegate/telegate/firmware-sim/sim"
	"github.com/telegate/telegate/gateway/services/partners"
)

// durableClient is a partner's JetStream client as in partner-example:
// its credentials and its inbox prefix.
func (e *env) durableClient(id, user, pass string) (*nats.Conn, jetstream.Consumer) {
	e.t.Helper()
	nc, err := nats.Connect(e.gw.Bus().URL(), nats.UserInfo(user, pass), nats.CustomInboxPrefix(partners.InboxPrefix(id)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	js, err := jetstream.NewWithAPIPrefix(nc, partners.NATSAPIPrefix)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, partners.TriggerStream, partners.Durable(id))
	if err != nil {
		e.t.Fatalf("partner %s consumer: %v", id, err)
	}
	return nc, cons
}

// TestServicesPartnerOfflineDurable: triggers produced while the partner
// is not connected wait in its durable consumer; when it connects with its
// credentials it receives every missed trigger, processes each idempotency
// key once (a redelivery is recognised by the key) and acks them; a later
// reconnect gets nothing old. A partner registered through the API gets
// its consumer at once.
func TestServicesPartnerOfflineDurable(t *testing.T) {
	e := startEnv(t, 3, 1, withServices(t))
	s := e.gw.Services()
	vin1, vin2 := sim.VIN(sim.DefaultVINPrefix, 1), sim.VIN(sim.DefaultVINPrefix, 2)
	ch := &charger{c: e.mqtt311(sim.StationID(sim.DefaultStationPrefix, 1))}

	// The café is offline: three sessions with consent (one of them
	// reported twice: the same offer id, deduplicated), one without.
	ch.start(t, "d1", vin1)
	ch.start(t, "d2", vin1)
	ch.start(t, "d2", vin1)
	ch.start(t, "d3", vin1)
	ch.start(t, "d4", vin2) // no partner_offers consent
	eventually(t, "sessions evaluated", func() error {
		if n := s.Offers.Stats.Sessions.Load(); n < 5 {
			return fmt.Errorf("%d sessions", n)
		}
		return nil
	})
	var st partners.NATSStatus
	eventually(t, "triggers waiting for the cafe", func() error {
		if code := e.api("GET", "/api/v1/partners/cafe/nats", cafeAPIToken, nil, &st); code != http.StatusOK {
			return fmt.Errorf("status %d", code)
		}
		if st.Pending != 3 || st.AckPending != 0 {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	if st.Durable != "partner-cafe" || st.InboxPrefix != "_INBOX_cafe" || st.Filter != "partners.cafe.>" {
		t.Fatalf("status %+v", st)
	}
	if code := e.api("GET", "/api/v1/partners/cafe/nats", bakeAPIToken, nil, nil); code != http.StatusForbidden {
		t.Fatalf("bakery reading cafe's delivery status: %d", code)
	}

	// The café comes online and catches up.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, cons := e.durableClient("cafe", "cafe", "cafe-pass")
	processed := map[string]int{} // idempotency key → times processed
	deliveries, naked := 0, false
	for round := 0; len(processed) < 3; round++ {
		if round == 20 {
			t.Fatalf("after %d fetches: %v", round, processed)
		}
		batch, err := cons.Fetch(10, jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			deliveries++
			var tr partners.Trigger
			if err := json.Unmarshal(m.Data(), &tr); err != nil || tr.ID == "" || tr.Partner != "cafe" || tr.OfferCode != "CAFE1" {
				t.Fatalf("trigger %s: %v", m.Data(), err)
			}
			if !naked { // the first attempt fails: the trigger comes again
				naked = true
				if err := m.Nak(); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if processed[tr.ID] == 0 {
				processed[tr.ID]++ // process once per key
			}
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
	if len(processed) != 3 || deliveries < 4 {
		t.Fatalf("processed %v in %d deliveries", processed, deliveries)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 || info.NumAckPending != 0 {
		t.Fatalf("after acks: pending %d, ack pending %d", info.NumPending, info.NumAckPending)
	}
	nc.Close()

	// Reconnect: nothing old.
	_, cons = e.durableClient("cafe", "cafe", "cafe-pass")
	batch, err := cons.FetchNoWait(10)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		t.Fatalf("old trigger delivered again after ack: %s", m.Data())
	}
	// A new trigger is delivered to the reconnected partner.
	ch.start(t, "d5", vin1)
	batch, err = cons.Fetch(1, jetstream.FetchMaxWait(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		var tr partners.Trigger
		_ = json.Unmarshal(m.Data(), &tr)
		if processed[tr.ID] != 0 {
			t.Fatalf("old trigger %s again", tr.ID)
		}
		n++
		_ = m.DoubleAck(ctx)
	}
	if n != 1 {
		t.Fatalf("new trigger: %d messages", n)
	}
	// The bakery, still offline, has its own triggers waiting, untouched.
	bst, err := s.NATS.Status(ctx, "bakery")
	if err != nil || bst.Pending != 4 {
		t.Fatalf("bakery status %+v %v", bst, err)
	}

	// A partner registered through the API gets its durable immediately.
	deli := map[string]any{"id": "deli", "name": "Deli", "nats": map[string]string{"user": "deli", "password_bcrypt": cafeHash}}
	if code := e.api("POST", "/api/v1/partners", svcAdminToken, deli, nil); code != http.StatusCreated {
		t.Fatalf("register deli: %d", code)
	}
	e.durableClient("deli", "deli", "cafe-pass")
}
