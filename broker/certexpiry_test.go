package broker

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for the broker's credential checks.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// newCAValid is newCA with an explicit validity (dates independent of the
// wall clock).
func newCAValid(t testing.TB, name string, notBefore, notAfter time.Time) *testCA {
	t.Helper()
	key := newKey(t)
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issueValid signs a client certificate valid from notBefore to notAfter.
func (ca *testCA) issueValid(t testing.TB, cn string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key := newKey(t)
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// certClockBroker starts a broker whose TLS listener requires client
// certificates of a device CA valid through 2028, with its credential
// clock at clk. It returns the broker, the device CA and a pool trusting
// the broker's server certificate.
func certClockBroker(t *testing.T, clk *fakeClock) (*Broker, *testCA, *x509.CertPool) {
	t.Helper()
	clientCA := newCAValid(t, "telegate test device CA", time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC))
	dir := t.TempDir()
	srvCA := newCA(t, "telegate test server CA")
	certFile, keyFile := writePEM(t, dir, "server", srvCA.issue(t, "broker", true, time.Now().Add(24*time.Hour)))
	b := startBroker(t, nil, func(c *Config) {
		c.TLSAddr = "127.0.0.1:0"
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		c.ClientCAFile = filepath.Join(dir, "clients-ca.pem")
		if err := os.WriteFile(c.ClientCAFile, clientCA.pem, 0o600); err != nil {
			t.Fatal(err)
		}
		c.now = clk.Now
	})
	pool := x509.NewCertPool()
	pool.AddCert(srvCA.cert)
	return b, clientCA, pool
}

// TestCertificateExpiryEndsSession: a device authenticated by a client
// certificate keeps its session only while the certificate is valid, like
// a previous secret with previous_valid_until. The broker's clock is
// injected (leap day 2028, the certificate expiring at its last second);
// the handshake checks the certificate on that clock too. Before the fix a
// certificate session was never re-checked: a vehicle whose certificate
// expired stayed connected (and publishing) for as long as its TCP
// connection lived.
func TestCertificateExpiryEndsSession(t *testing.T) {
	clk := &fakeClock{now: time.Date(2028, 2, 29, 12, 0, 0, 0, time.UTC)}
	b, clientCA, pool := certClockBroker(t, clk)
	e := &tlsEnv{b: b, serverCA: pool}

	issued := time.Date(2028, 2, 1, 0, 0, 0, 0, time.UTC)
	leapEnd := time.Date(2028, 2, 29, 23, 59, 59, 0, time.UTC)
	short := clientCA.issueValid(t, vin1, issued, leapEnd)
	long := clientCA.issueValid(t, vin2, issued, time.Date(2028, 3, 31, 0, 0, 0, 0, time.UTC))
	dialCert := func(cert tls.Certificate, id string) *v5Client {
		t.Helper()
		conn, err := tls.Dial("tcp", b.Addr(ListenerTLS), &tls.Config{RootCAs: e.serverCA, Certificates: []tls.Certificate{cert}})
		if err != nil {
			t.Fatal(err)
		}
		c, _, err := v5Connect(t, "", id, v5Opts{keepalive: 30, conn: conn})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c1 := dialCert(short, vin1)
	c2 := dialCert(long, vin2)

	b.mu.Lock()
	armed := b.expiryAt
	b.mu.Unlock()
	if !armed.Equal(leapEnd) {
		t.Fatalf("expiry timer armed for %v, want the certificate's expiry %v", armed, leapEnd)
	}

	// One second before the expiry nothing ends.
	clk.Set(leapEnd.Add(-time.Second))
	b.expire()
	if pr, err := c1.publish(t, "vehicles/"+vin1+"/telemetry", 1, "x"); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("session ended before its certificate expired: %+v %v", pr, err)
	}

	// 1 March 2028 00:00: the certificate expired with 29 February.
	clk.Set(time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC))
	b.expire() // what the timer does when it fires
	c1.waitClosed(t)
	select {
	case d := <-c1.disconnect:
		if d.ReasonCode != 0x98 {
			t.Fatalf("DISCONNECT 0x%02x, want 0x98", d.ReasonCode)
		}
	case <-time.After(wait):
		t.Fatal("no DISCONNECT for the expired certificate's session")
	}
	if n := b.Stats().Revoked.Load(); n != 1 {
		t.Fatalf("sessions ended: %d, want 1", n)
	}
	if pr, err := c2.publish(t, "vehicles/"+vin2+"/telemetry", 1, "x"); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("session with a valid certificate ended: %+v %v", pr, err)
	}
	b.mu.Lock()
	armed = b.expiryAt
	b.mu.Unlock()
	if want := time.Date(2028, 3, 31, 0, 0, 0, 0, time.UTC); !armed.Equal(want) {
		t.Fatalf("next expiry %v, want %v", armed, want)
	}
	// The expired certificate no longer connects (the handshake uses the
	// same clock).
	if got := e.connect(t, &short, vin1, "", ""); got != -1 {
		t.Fatalf("expired certificate: result %d, want a failed handshake", got)
	}
}

// The expiry timer waits just past the next expiry, but runs at most once
// per expiryMinGap: each run scans every live session, and a fleet whose
// certificates expire one after another must not make it run once per
// certificate.
func TestExpiryWaitSpacesRuns(t *testing.T) {
	now := time.Date(2028, 2, 29, 23, 59, 59, 0, time.UTC)
	for _, c := range []struct {
		name       string
		next, last time.Time
		want       time.Duration
	}{
		{"first run", now.Add(time.Hour), time.Time{}, time.Hour + 10*time.Millisecond},
		{"next expiry far ahead", now.Add(time.Minute), now, time.Minute + 10*time.Millisecond},
		{"next expiry 5 ms after a run", now.Add(5 * time.Millisecond), now, expiryMinGap},
		{"last run long ago", now.Add(5 * time.Millisecond), now.Add(-time.Hour), 15 * time.Millisecond},
	} {
		if got := expiryWait(now, c.next, c.last); got != c.want {
			t.Errorf("%s: expiryWait = %v, want %v", c.name, got, c.want)
		}
	}
}
