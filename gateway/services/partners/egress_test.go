package partners_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/natsbus"
	"github.com/telegate/telegate/gateway/services/partners"
	"github.com/telegate/telegate/gateway/services/svc"
	"github.com/telegate/telegate/internal/logbuf"
	"github.com/telegate/telegate/internal/svctest"
)

// loopbackEgress trusts srv's httptest CA and allow-lists 127.0.0.1/32, as
// an operator would for a partner reached on this machine.
func loopbackEgress(srv *httptest.Server) partners.Egress {
	return partners.Egress{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, RootCAs: caPool(srv)}
}

func caPool(srv *httptest.Server) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return pool
}

// counter is an "internal" server (standing for the local InfluxDB or any
// service on the gateway's network) that counts the requests reaching it.
func counter(t *testing.T, tls bool) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusUnauthorized) // a distinctive internal answer
	})
	srv := httptest.NewUnstartedServer(h)
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv, &n
}

// deliverOnce registers partner "p1" with endpoint url, publishes one
// trigger, and returns the delivery record after its single attempt
// (MaxAttempts 1: the first failure dead-letters).
func deliverOnce(t *testing.T, url string, eg partners.Egress) partners.Delivery {
	t.Helper()
	return deliver(t, url, eg, 1, svctest.Logger())
}

// deliver is deliverOnce with maxAttempts attempts, logging to log.
func deliver(t *testing.T, url string, eg partners.Egress, maxAttempts int, log *slog.Logger) partners.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bus := svctest.Bus(t)
	roles := svctest.Roles(t, bus) // the services on their own users
	ops := svctest.Ops(t, bus)     // the test's own reads and writes
	js := ops.JetStream()
	reg, err := partners.Open(ctx, svctest.Role(t, roles, natsbus.RolePartners).JetStream(), 1, "", log)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Put(ctx, testPartner("p1", url)); err != nil {
		t.Fatal(err)
	}
	wh, err := partners.NewWebhooks(ctx, svctest.Role(t, roles, natsbus.RoleWebhooks).JetStream(), 1, reg, partners.WebhookConfig{MaxAttempts: maxAttempts, InitialBackoff: 20 * time.Millisecond,
		Egress: eg}, log)
	if err != nil {
		t.Fatal(err)
	}
	g := svc.NewGroup(log)
	defer g.Close()
	g.Go("webhooks", wh.Run)
	svctest.Eventually(t, "consumer ready", func() error {
		_, err := js.Consumer(ctx, "PARTNERS", "partner-webhooks")
		return err
	})
	pub := svc.Publisher{JS: js}
	if err := pub.PublishRaw(ctx, partners.Subject("p1"), "ofr-1", []byte(`{"v":1,"id":"ofr-1"}`)); err != nil {
		t.Fatal(err)
	}
	var d partners.Delivery
	svctest.Eventually(t, "delivery settled", func() error {
		ds, err := wh.Deliveries(ctx, "p1")
		if err != nil || len(ds) != 1 || (ds[0].Status != "delivered" && ds[0].Status != "dead_lettered") {
			return fmt.Errorf("%+v %w", ds, err)
		}
		d = ds[0]
		return nil
	})
	return d
}

// redirector is the partner's endpoint answering every POST with code and
// Location: target.
func redirector(t *testing.T, code int, target string) *httptest.Server {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Location", target)
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestWebhookRedirectNotFollowed: a partner endpoint that answers 307 (which
// Go's client would follow with the POST body) pointing at an internal
// server: the internal server sees zero requests, and the partner's
// delivery status says only "redirect_refused" (not the internal 401).
func TestWebhookRedirectNotFollowed(t *testing.T) {
	internal, hits := counter(t, true)
	partner := redirector(t, http.StatusTemporaryRedirect, internal.URL+"/query?q=DROP+DATABASE+telemetry")
	d := deliverOnce(t, partner.URL+"/hook", loopbackEgress(partner))
	if d.Status != "dead_lettered" || d.LastError != partners.OutcomeRedirectRefused {
		t.Fatalf("delivery = %+v, want dead_lettered with %q", d, partners.OutcomeRedirectRefused)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("internal server received %d requests through the redirect", n)
	}
}

// TestWebhookDowngradeRefused: a redirect from the https endpoint to
// plain http is not followed either.
func TestWebhookDowngradeRefused(t *testing.T) {
	internal, hits := counter(t, false)
	partner := redirector(t, http.StatusFound, internal.URL+"/")
	d := deliverOnce(t, partner.URL+"/hook", loopbackEgress(partner))
	if d.LastError != partners.OutcomeRedirectRefused || hits.Load() != 0 {
		t.Fatalf("delivery = %+v, internal hits %d; want redirect_refused and 0", d, hits.Load())
	}
	if !strings.HasPrefix(internal.URL, "http://") {
		t.Fatalf("internal server must be plain http: %s", internal.URL)
	}
}

// TestWebhookLoopbackRefused: without an operator allow-list, an endpoint
// on a loopback address is refused before any byte is sent.
func TestWebhookLoopbackRefused(t *testing.T) {
	internal, hits := counter(t, true)
	d := deliverOnce(t, internal.URL+"/hook", partners.Egress{RootCAs: caPool(internal)})
	if d.LastError != partners.OutcomeAddressRefused || hits.Load() != 0 {
		t.Fatalf("delivery = %+v, internal hits %d; want address_refused and 0", d, hits.Load())
	}
}

// TestWebhookRebindingCheckedAtConnect: the endpoint is a host name
// ("example.com", in the httptest certificate) whose resolution at
// connect time yields 127.0.0.1, as a DNS-rebinding attacker would
// arrange. The dialer's Control hook sees the address the socket is about
// to connect to and refuses it; with 127.0.0.1/32 allow-listed the same
// endpoint is delivered to (so the refusal was the address check).
func TestWebhookRebindingCheckedAtConnect(t *testing.T) {
	srv, hits := counter(t, true)
	port := srv.Listener.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
	url := fmt.Sprintf("https://example.com:%d/hook", port)
	var lookups atomic.Int32
	rebind := func(_ context.Context, host string) ([]netip.Addr, error) {
		lookups.Add(1)
		if host != "example.com" {
			return nil, fmt.Errorf("unexpected lookup %q", host)
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	d := deliverOnce(t, url, partners.Egress{RootCAs: caPool(srv), LookupIP: rebind})
	if d.LastError != partners.OutcomeAddressRefused || hits.Load() != 0 || lookups.Load() == 0 {
		t.Fatalf("delivery = %+v, hits %d, lookups %d; want address_refused, 0, >0", d, hits.Load(), lookups.Load())
	}
	eg := loopbackEgress(srv)
	eg.LookupIP = rebind
	d = deliverOnce(t, url, eg)
	// The counter answers 401: the partner sees the class of its own
	// endpoint's answer, nothing more.
	if d.LastError != partners.OutcomeHTTP4xx || hits.Load() != 1 {
		t.Fatalf("allow-listed: delivery = %+v, hits %d; want http_4xx and 1", d, hits.Load())
	}
}

// TestEgressRefused covers the address classes refused by default and the
// allow-list.
func TestEgressRefused(t *testing.T) {
	var e partners.Egress
	for _, a := range []string{
		"127.0.0.1", "127.1.2.3", "::1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254",
		"fd00::1", "fd00:ec2::254", "fe80::1", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255",
		"100.100.100.200", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1",
	} {
		if !e.Refused(netip.MustParseAddr(a)) {
			t.Errorf("%s allowed, want refused", a)
		}
	}
	for _, a := range []string{"8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"} {
		if e.Refused(netip.MustParseAddr(a)) {
			t.Errorf("%s refused, want allowed", a)
		}
	}
	e.Allow = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	if e.Refused(netip.MustParseAddr("10.1.2.3")) || !e.Refused(netip.MustParseAddr("10.2.0.1")) {
		t.Fatal("allow-list 10.1.0.0/16 not applied exactly")
	}
}

// TestWebhookUntrustedCertificate: an endpoint whose certificate does not
// verify gets nothing but the label tls_error.
func TestWebhookUntrustedCertificate(t *testing.T) {
	srv, hits := counter(t, true)
	eg := loopbackEgress(srv)
	eg.RootCAs = x509.NewCertPool() // trusts nothing
	d := deliverOnce(t, srv.URL+"/hook", eg)
	if d.LastError != partners.OutcomeTLSError || hits.Load() != 0 {
		t.Fatalf("delivery = %+v, hits %d; want tls_error and 0", d, hits.Load())
	}
}

// TestWebhookFailureLogRedactsURL: a token in the endpoint URL's query
// string (or user info) never reaches the log, although Go's client puts
// the whole URL in its error text; the log names the partner, the
// redacted URL and the outcome label.
func TestWebhookFailureLogRedactsURL(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	eg := loopbackEgress(srv)
	u := strings.Replace(srv.URL, "https://", "https://user:PASSWORD@", 1) + "/hook?token=SECRET"
	srv.Close() // connect error: the client's error text holds the URL
	var buf logbuf.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d := deliver(t, u, eg, 2, log)
	if d.Status != "dead_lettered" || d.LastError != partners.OutcomeConnectError {
		t.Fatalf("delivery = %+v, want dead_lettered with %q", d, partners.OutcomeConnectError)
	}
	out := buf.String()
	if !strings.Contains(out, "webhook attempt failed") || !strings.Contains(out, "webhook dead-lettered") {
		t.Fatalf("failure lines missing from the log:\n%s", out)
	}
	if strings.Contains(out, "SECRET") || strings.Contains(out, "PASSWORD") {
		t.Fatalf("the log holds the endpoint URL's token:\n%s", out)
	}
	if !strings.Contains(out, "partner=p1") || !strings.Contains(out, strings.TrimPrefix(srv.URL, "https://")+"/hook") {
		t.Fatalf("the log does not name the partner and redacted URL:\n%s", out)
	}
}

// TestValidateRedactsWebhookURL: a refused webhook URL is named in the
// validation error without its query string or user info.
func TestValidateRedactsWebhookURL(t *testing.T) {
	err := testPartner("p1", "http://user:PASSWORD@partner.example/hook?token=SECRET").Validate()
	if err == nil {
		t.Fatal("http webhook accepted")
	}
	if msg := err.Error(); strings.Contains(msg, "SECRET") || strings.Contains(msg, "PASSWORD") ||
		!strings.Contains(msg, "http://partner.example/hook") {
		t.Fatalf("validation error: %s", msg)
	}
}
