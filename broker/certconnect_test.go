package broker

import (
	"crypto/tls"
	"testing"
	"time"
)

// TestCertificateExpiredBeforeConnectRefused: a client certificate valid
// at the TLS handshake but expired when the CONNECT is read (the device
// completes the handshake, waits past the certificate's NotAfter, within
// the connect timeout, then sends CONNECT) is refused with CONNACK 0x86.
// Before the fix the session was accepted and never ended: the expiry
// timer only arms for expiries still ahead, so an already-expired
// certificate left a session that lived as long as its TCP connection.
func TestCertificateExpiredBeforeConnectRefused(t *testing.T) {
	clk := &fakeClock{now: time.Date(2028, 2, 29, 23, 59, 58, 0, time.UTC)}
	b, clientCA, pool := certClockBroker(t, clk)

	leapEnd := time.Date(2028, 2, 29, 23, 59, 59, 0, time.UTC)
	cert := clientCA.issueValid(t, vin1, time.Date(2028, 2, 1, 0, 0, 0, 0, time.UTC), leapEnd)
	// TLS 1.2: the client's Dial returns only after the server verified
	// the client certificate (on the injected clock, still valid).
	conn, err := tls.Dial("tcp", b.Addr(ListenerTLS), &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert},
		MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	clk.Set(time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC))
	c, ca, err := v5Connect(t, "", vin1, v5Opts{keepalive: 30, conn: conn})
	if err == nil {
		_ = c
		b.expire() // what the expiry timer would do: nothing is armed
		b.mu.Lock()
		armed := b.expiryAt
		b.mu.Unlock()
		t.Fatalf("certificate expired before CONNECT: CONNACK %+v accepted (sessions %d, timer at %v)",
			ca, b.Connected(), armed)
	}
	if ca == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("CONNACK %+v (%v), want 0x86", ca, err)
	}
	if n := b.Stats().RefusedBadSecret.Load(); n != 1 {
		t.Fatalf("refused (bad secret): %d, want 1", n)
	}
}
