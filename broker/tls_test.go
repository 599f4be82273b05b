package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial int64

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCA(t testing.TB, name string) *testCA {
	t.Helper()
	key := newKey(t)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
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

// issue signs a leaf certificate. server leaves get 127.0.0.1 as SAN.
func (ca *testCA) issue(t testing.TB, cn string, server bool, notAfter time.Time) tls.Certificate {
	t.Helper()
	key := newKey(t)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-48 * time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
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

func writePEM(t testing.TB, dir, name string, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	certFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	kder, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

type tlsEnv struct {
	b        *Broker
	serverCA *x509.CertPool
}

func startTLSBroker(t *testing.T, clientCA *testCA, mutate ...func(*Config)) *tlsEnv {
	t.Helper()
	dir := t.TempDir()
	srvCA := newCA(t, "telegate test server CA")
	certFile, keyFile := writePEM(t, dir, "server", srvCA.issue(t, "broker", true, time.Now().Add(24*time.Hour)))
	b := startBroker(t, nil, func(c *Config) {
		c.TLSAddr = "127.0.0.1:0"
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		if clientCA != nil {
			c.ClientCAFile = filepath.Join(dir, "clients-ca.pem")
			if err := os.WriteFile(c.ClientCAFile, clientCA.pem, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		for _, m := range mutate {
			m(c)
		}
	})
	pool := x509.NewCertPool()
	pool.AddCert(srvCA.cert)
	return &tlsEnv{b: b, serverCA: pool}
}

// connect dials the TLS listener with an optional client certificate and
// returns the CONNACK reason, or -1 if the TLS handshake or the
// connection failed before any CONNACK.
func (e *tlsEnv) connect(t *testing.T, cert *tls.Certificate, id, user, pass string) int {
	t.Helper()
	cfg := &tls.Config{RootCAs: e.serverCA, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	d := &net.Dialer{Timeout: wait}
	conn, err := tls.DialWithDialer(d, "tcp", e.b.Addr(ListenerTLS), cfg)
	if err != nil {
		return -1
	}
	c, ca, err := v5Connect(t, "", id, v5Opts{user: user, pass: pass, keepalive: 30, conn: conn})
	if ca == nil {
		return -1
	}
	if err == nil {
		_ = c // closed by cleanup
	}
	return int(ca.ReasonCode)
}

func TestMutualTLS(t *testing.T) {
	clientCA := newCA(t, "telegate test device CA")
	otherCA := newCA(t, "someone else's CA")
	e := startTLSBroker(t, clientCA)
	valid := time.Now().Add(24 * time.Hour)
	certVin1 := clientCA.issue(t, vin1, false, valid)
	certVin2 := clientCA.issue(t, vin2, false, valid)
	certOff := clientCA.issue(t, vinOff, false, valid)
	certUnknown := clientCA.issue(t, "TGSVS000000000003", false, valid)
	certForeign := otherCA.issue(t, vin1, false, valid)
	certExpired := clientCA.issue(t, vin1, false, time.Now().Add(-time.Hour))

	tests := []struct {
		name           string
		cert           *tls.Certificate
		id, user, pass string
		want           int
	}{
		{"CN equals client id, no password", &certVin1, vin1, "", "", 0},
		{"CN equals client id, username too", &certVin1, vin1, vin1, "", 0},
		{"CN equals client id, right password", &certVin1, vin1, vin1, secrets[vin1], 0},
		{"CN equals client id, wrong password", &certVin1, vin1, vin1, "wrong", 0x86},
		{"CN differs from client id", &certVin2, vin1, vin1, secrets[vin1], 0x86},
		{"username differs from CN", &certVin1, vin1, vin2, "", 0x86},
		{"disabled device", &certOff, vinOff, "", "", 0x86},
		{"unregistered CN", &certUnknown, "TGSVS000000000003", "", "", 0x86},
		{"certificate from another CA", &certForeign, vin1, vin1, secrets[vin1], -1},
		{"expired certificate", &certExpired, vin1, vin1, secrets[vin1], -1},
		{"no certificate", nil, vin1, vin1, secrets[vin1], -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := e.connect(t, tt.cert, tt.id, tt.user, tt.pass); got != tt.want {
				t.Fatalf("result %d, want %d", got, tt.want)
			}
		})
	}
	// A certificate-authenticated device is still bound by the ACL.
	conn, err := tls.Dial("tcp", e.b.Addr(ListenerTLS), &tls.Config{RootCAs: e.serverCA, Certificates: []tls.Certificate{certVin1}})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := v5Connect(t, "", vin1, v5Opts{keepalive: 30, conn: conn})
	if err != nil {
		t.Fatal(err)
	}
	if pr, _ := c.publish(t, "vehicles/"+vin2+"/telemetry", 1, "x"); pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("publish to other VIN over mTLS: %+v", pr)
	}
	if pr, err := c.publish(t, "vehicles/"+vin1+"/telemetry", 1, "x"); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("own telemetry over mTLS: %+v %v", pr, err)
	}
	if n := e.b.Stats().RefusedIdentityMismatch.Load(); n != 2 {
		t.Fatalf("identity mismatches = %d", n)
	}
}

func TestTLSWithPassword(t *testing.T) {
	e := startTLSBroker(t, nil)
	if got := e.connect(t, nil, vin1, vin1, secrets[vin1]); got != 0 {
		t.Fatalf("password over TLS: %d", got)
	}
	if got := e.connect(t, nil, vin1, vin1, "wrong"); got != 0x86 {
		t.Fatalf("wrong password over TLS: %d", got)
	}
	// Without a client CA a certificate is not asked for and grants nothing.
	ca := newCA(t, "x")
	cert := ca.issue(t, vin1, false, time.Now().Add(time.Hour))
	if got := e.connect(t, &cert, vin1, "", ""); got != 0x86 {
		t.Fatalf("unrequested certificate accepted as identity: %d", got)
	}
	// Plain TCP to the TLS port fails the handshake and is closed.
	c := dial(t, e.b.Addr(ListenerTLS))
	c.Write(connectPacket(4, vin1, vin1, secrets[vin1], 30))
	waitEOF(t, c)
}
