package ocpp_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	ocpp16 "github.com/lorenzodonini/ocpp-go/ocpp1.6"
	"github.com/lorenzodonini/ocpp-go/ws"

	"github.com/telegate/telegate/internal/ocpptest"
)

// testCA is a throwaway certificate authority (validity relative to the
// test's start, never to a date).
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial atomic.Int64

func newCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue signs a leaf; server leaves get 127.0.0.1 as SAN.
func (ca *testCA) issue(t testing.TB, cn string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// serverTLS is what the gateway builds for ocpp.security_profile 2/3
// (gateway/app/ext_ocpp.go).
func serverTLS(t *testing.T, srvCA, clientCA *testCA) *tls.Config {
	c := &tls.Config{Certificates: []tls.Certificate{srvCA.issue(t, "gateway", true)}, MinVersion: tls.VersionTLS12}
	if clientCA != nil {
		c.ClientCAs, c.ClientAuth = clientCA.pool(), tls.RequireAndVerifyClientCert
	}
	return c
}

// dial opens an OCPP 1.6 WebSocket and returns the HTTP status (101 on
// success) or 0 if TLS failed before any HTTP answer.
func dial(t *testing.T, url, id, user, pass string, tc *tls.Config) int {
	t.Helper()
	h := http.Header{}
	if user != "" {
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	}
	d := websocket.Dialer{Subprotocols: []string{"ocpp1.6"}, HandshakeTimeout: 10 * time.Second, TLSClientConfig: tc}
	conn, resp, err := d.Dial(url+"/"+id, h)
	if err == nil {
		conn.Close()
		return http.StatusSwitchingProtocols
	}
	if resp != nil {
		return resp.StatusCode
	}
	return 0
}

// TestSecurityProfile2: TLS with basic auth. The right secret over TLS is
// accepted and runs OCPP; a wrong secret or another station's secret is
// refused with 401; plain ws:// to the TLS port and a client that does not
// trust the gateway's CA never get an HTTP answer.
func TestSecurityProfile2(t *testing.T) {
	srvCA := newCA(t, "gateway server CA")
	st1, st2 := "OCPP-0001", "OCPP-0002"
	h := ocpptest.Start(t, ocpptest.Options{Stations: []string{st1, st2}, SecurityProfile: 2, TLS: serverTLS(t, srvCA, nil)})
	if !strings.HasPrefix(h.URL, "wss://") {
		t.Fatal(h.URL)
	}
	trust := &tls.Config{RootCAs: srvCA.pool(), MinVersion: tls.VersionTLS12}
	if got := dial(t, h.URL, st1, st1, ocpptest.Secret(st1), trust); got != http.StatusSwitchingProtocols {
		t.Fatalf("right secret over TLS: %d", got)
	}
	for _, c := range []struct{ name, user, pass string }{
		{"wrong secret", st1, "wrong"}, {"other station's secret", st1, ocpptest.Secret(st2)},
		{"other station's credentials", st2, ocpptest.Secret(st2)}, {"no credentials", "", ""},
	} {
		if got := dial(t, h.URL, st1, c.user, c.pass, trust); got != http.StatusUnauthorized {
			t.Fatalf("%s: %d, want 401", c.name, got)
		}
	}
	if got := dial(t, "ws://"+h.Addr+"/ocpp", st1, st1, ocpptest.Secret(st1), nil); got == http.StatusSwitchingProtocols {
		t.Fatal("plain ws accepted on the TLS listener")
	}
	otherCA := newCA(t, "someone else")
	if got := dial(t, h.URL, st1, st1, ocpptest.Secret(st1), &tls.Config{RootCAs: otherCA.pool()}); got != 0 {
		t.Fatalf("client not trusting the gateway got HTTP %d", got)
	}
	// A real ocpp-go charge point over TLS.
	c := ws.NewTLSClient(trust)
	c.SetBasicAuth(st1, ocpptest.Secret(st1))
	cp := ocpp16.NewChargePoint(st1, nil, c)
	if err := cp.Start(h.URL); err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	if r, err := cp.BootNotification("m", "v"); err != nil || r.Status != "Accepted" {
		t.Fatalf("boot over TLS: %v %v", r, err)
	}
}

// TestSecurityProfile3: mutual TLS, certificate CN = charge point id. The
// station's own certificate is accepted (even without basic auth) and runs
// OCPP; a certificate for another station id, one from another CA, none at
// all, and a valid certificate of a station not in the registry are refused.
func TestSecurityProfile3(t *testing.T) {
	srvCA, clientCA, rogueCA := newCA(t, "gateway server CA"), newCA(t, "charge point CA"), newCA(t, "rogue CA")
	st1, st2 := "OCPP-0001", "OCPP-0002"
	h := ocpptest.Start(t, ocpptest.Options{Stations: []string{st1, st2}, SecurityProfile: 3, TLS: serverTLS(t, srvCA, clientCA)})
	with := func(c *tls.Certificate) *tls.Config {
		tc := &tls.Config{RootCAs: srvCA.pool(), MinVersion: tls.VersionTLS12}
		if c != nil {
			tc.Certificates = []tls.Certificate{*c}
		}
		return tc
	}
	own, other := clientCA.issue(t, st1, false), clientCA.issue(t, st2, false)
	rogue, unknown := rogueCA.issue(t, st1, false), clientCA.issue(t, "OCPP-9999", false)
	if got := dial(t, h.URL, st1, "", "", with(&own)); got != http.StatusSwitchingProtocols {
		t.Fatalf("own certificate: %d", got)
	}
	if got := dial(t, h.URL, st1, "", "", with(&other)); got != http.StatusUnauthorized {
		t.Fatalf("certificate of another station: %d, want 401", got)
	}
	if got := dial(t, h.URL, st1, st2, ocpptest.Secret(st2), with(&other)); got != http.StatusUnauthorized {
		t.Fatalf("certificate + basic auth of another station: %d, want 401", got)
	}
	if got := dial(t, h.URL, "OCPP-9999", "", "", with(&unknown)); got != http.StatusUnauthorized {
		t.Fatalf("unregistered station with a valid certificate: %d, want 401", got)
	}
	if got := dial(t, h.URL, st1, "", "", with(&rogue)); got != 0 {
		t.Fatalf("certificate from another CA got HTTP %d", got)
	}
	if got := dial(t, h.URL, st1, st1, ocpptest.Secret(st1), with(nil)); got != 0 {
		t.Fatalf("no certificate (basic auth only) got HTTP %d", got)
	}
	// A real ocpp-go charge point with its certificate.
	cp := ocpp16.NewChargePoint(st1, nil, ws.NewTLSClient(with(&own)))
	if err := cp.Start(h.URL); err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	if r, err := cp.BootNotification("m", "v"); err != nil || r.Status != "Accepted" {
		t.Fatalf("boot over mTLS: %v %v", r, err)
	}
	// The refusals were counted.
	mfs, err := h.Reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "telegate_ocpp_connects_total" {
			for _, m := range mf.GetMetric() {
				counts[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	if counts["bad_cert"] != 2 || counts["unknown_station"] != 1 {
		t.Fatalf("connect counters %v", counts)
	}
}
