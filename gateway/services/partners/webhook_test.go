package partners_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/partners"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/internal/svctest"
)

func testPartner(id, url string) partners.Partner {
	return partners.Partner{ID: id, Name: id, Webhook: &partners.Webhook{URL: url, Secret: "secret-" + id + "-0123456789"},
		Venues: []partners.Venue{{ID: id + "-v", Lat: 1, Lon: 1, RadiusM: 100, TimeZone: "UTC", DailyCap: 1, Available: true,
			Hours: []partners.Hours{{Days: []string{"mon"}, Open: "08:00", Close: "09:00"}}, Offer: partners.Offer{Code: "X"}}}}
}

// TestWebhooks delivers triggers to loopback TLS endpoints: signed,
// retried with backoff after failures, idempotency key stable across
// retries, dead-lettered after MaxAttempts, status visible.
func TestWebhooks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var okCalls atomic.Int32
	var mu sync.Mutex
	keys := map[string]int{}
	var verifyErr error
	good := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		err := partners.VerifySignature([]byte("secret-good-0123456789"), r.Header.Get(partners.HeaderTimestamp),
			r.Header.Get(partners.HeaderSignature), body, time.Now(), 5*time.Minute)
		mu.Lock()
		if err != nil {
			verifyErr = err
		}
		keys[r.Header.Get(partners.HeaderIdempotency)]++
		mu.Unlock()
		if okCalls.Add(1) <= 2 { // fail twice, then accept
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer good.Close()
	var badCalls atomic.Int32
	bad := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		badCalls.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer bad.Close()

	bus := svctest.Bus(t)
	roles := svctest.Roles(t, bus) // the services on their own users
	ops := svctest.Ops(t, bus)     // the test's own reads and writes
	js := ops.JetStream()
	log := svctest.Logger()
	reg, err := partners.Open(ctx, svctest.Role(t, roles, natsbus.RolePartners).JetStream(), 1, "", log)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []partners.Partner{testPartner("good", good.URL), testPartner("bad", bad.URL)} {
		if err := reg.Put(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	// Both test servers share the httptest CA; they listen on loopback,
	// which the operator must allow-list (TestWebhookLoopbackRefused).
	wh, err := partners.NewWebhooks(ctx, svctest.Role(t, roles, natsbus.RoleWebhooks).JetStream(), 1, reg, partners.WebhookConfig{MaxAttempts: 3, InitialBackoff: 20 * time.Millisecond,
		Egress: loopbackEgress(good)}, log)
	if err != nil {
		t.Fatal(err)
	}
	g := svc.NewGroup(log)
	defer g.Close()
	g.Go("webhooks", wh.Run)
	dl, err := ops.Conn().SubscribeSync("deadletter.webhook.>")
	if err != nil {
		t.Fatal(err)
	}
	pub := svc.Publisher{JS: js}
	svctest.Eventually(t, "consumer ready", func() error {
		_, err := js.Consumer(ctx, "PARTNERS", "partner-webhooks")
		return err
	})
	for _, p := range []string{"good", "bad"} {
		if err := pub.PublishRaw(ctx, partners.Subject(p), "ofr-"+p, []byte(`{"v":1,"id":"ofr-`+p+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	svctest.Eventually(t, "good delivered", func() error {
		ds, err := wh.Deliveries(ctx, "good")
		if err != nil || len(ds) != 1 || ds[0].Status != "delivered" || ds[0].Attempts != 3 {
			return fmt.Errorf("%+v %w", ds, err)
		}
		return nil
	})
	svctest.Eventually(t, "bad dead-lettered", func() error {
		ds, err := wh.Deliveries(ctx, "bad")
		if err != nil || len(ds) != 1 || ds[0].Status != "dead_lettered" || ds[0].Attempts != 3 || ds[0].LastError != "http_5xx" {
			return fmt.Errorf("%+v %w", ds, err)
		}
		return nil
	})
	m, err := dl.NextMsg(10 * time.Second)
	if err != nil || m.Subject != "deadletter.webhook.bad" {
		t.Fatalf("dead letter: %v %v", m, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if verifyErr != nil {
		t.Fatal(verifyErr)
	}
	if keys["ofr-good"] != 3 || len(keys) != 1 {
		t.Fatalf("idempotency keys %v", keys)
	}
	if badCalls.Load() != 3 {
		t.Fatalf("bad endpoint called %d times, want 3", badCalls.Load())
	}
	if err := partners.VerifySignature([]byte("k"), "1", "v1=00", []byte("x"), time.Unix(1, 0), time.Minute); err == nil {
		t.Fatal("forged signature accepted")
	}
}

func TestVenueValidationAndHours(t *testing.T) {
	p := testPartner("x", "http://insecure")
	if p.Validate() == nil {
		t.Fatal("http webhook accepted")
	}
	v := partners.Venue{ID: "v", Lat: 0, Lon: 0, RadiusM: 100, TimeZone: "Europe/Berlin", DailyCap: 1, Offer: partners.Offer{Code: "C"},
		Hours: []partners.Hours{{Days: []string{"fri"}, Open: "22:00", Close: "02:00"}}}
	if err := v.Validate(); err != nil {
		t.Fatal(err)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	for _, c := range []struct {
		t    time.Time
		open bool
	}{
		{time.Date(2026, 6, 5, 23, 0, 0, 0, berlin), true},   // Friday 23:00
		{time.Date(2026, 6, 6, 1, 30, 0, 0, berlin), true},   // Saturday 01:30
		{time.Date(2026, 6, 6, 2, 0, 0, 0, berlin), false},   // Saturday 02:00
		{time.Date(2026, 6, 5, 21, 59, 0, 0, berlin), false}, // Friday 21:59
	} {
		if v.OpenAt(c.t) != c.open {
			t.Errorf("%v: open %v", c.t, !c.open)
		}
	}
	bad := v
	bad.TimeZone, bad.RadiusM, bad.Hours = "Mars/Olympus", -1, []partners.Hours{{Days: []string{"xyz"}, Open: "25:00", Close: "1"}}
	if bad.Validate() == nil {
		t.Fatal("invalid venue accepted")
	}
}
