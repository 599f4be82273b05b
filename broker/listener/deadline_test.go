package listener

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// tcpPair returns a connected server-side *rawConn (not tracked by a
// listener) and its client socket.
func tcpPair(t testing.TB) (*rawConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c, err := newCore(Options{ID: "pair"})
	if err != nil {
		t.Fatal(err)
	}
	r := &rawConn{Conn: sc, owner: c}
	t.Cleanup(func() { cl.Close(); sc.Close() })
	return r, cl
}

func (r *rawConn) rearmCount() int {
	r.dmu.Lock()
	defer r.dmu.Unlock()
	return r.rearms
}

// A deadline moved later is not armed at once: when the earlier one fires,
// the read re-arms and goes on (the re-arm path), and gets the byte sent
// after the first deadline passed.
func TestDeadlineRearmedWhenMovedLater(t *testing.T) {
	r, cl := tcpPair(t)
	_ = r.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_ = r.SetReadDeadline(time.Now().Add(time.Hour)) // coalesced
	done := make(chan error, 1)
	go func() {
		var b [1]byte
		_, err := r.Read(b[:])
		done <- err
	}()
	eventually(t, "first deadline fired and re-armed", func() bool { return r.rearmCount() > 0 })
	if _, err := cl.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read after re-arm: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("read never returned")
	}
}

// An earlier deadline, and one set after clearing, apply at once.
func TestDeadlineEarlierAppliesAtOnce(t *testing.T) {
	r, _ := tcpPair(t)
	_ = r.SetDeadline(time.Now().Add(time.Hour))
	_ = r.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	var b [1]byte
	if _, err := r.Read(b[:]); !isTimeout(err) {
		t.Fatalf("earlier deadline: got %v, want a timeout", err)
	}
	_ = r.SetDeadline(time.Now().Add(time.Hour))
	_ = r.SetDeadline(time.Time{})
	_ = r.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r.Read(b[:]); !isTimeout(err) {
		t.Fatalf("deadline after clear: got %v, want a timeout", err)
	}
}

// The write side coalesces too: a write blocked on a peer that does not
// read outlives the first (later moved) deadline and completes; with the
// deadline left alone it times out.
func TestWriteDeadlineRearmed(t *testing.T) {
	r, cl := tcpPair(t)
	big := make([]byte, 64<<20) // more than the socket buffers hold
	_ = r.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	_ = r.SetDeadline(time.Now().Add(time.Hour))
	type res struct {
		n   int
		err error
	}
	done := make(chan res, 1)
	go func() {
		n, err := r.Write(big)
		done <- res{n, err}
	}()
	eventually(t, "write deadline re-armed", func() bool { return r.rearmCount() > 0 })
	go func() { _, _ = io.CopyN(io.Discard, cl, int64(len(big))) }()
	select {
	case got := <-done:
		if got.err != nil || got.n != len(big) {
			t.Fatalf("write: %d of %d bytes, %v", got.n, len(big), got.err)
		}
	case <-time.After(wait):
		t.Fatal("write never returned")
	}

	r2, _ := tcpPair(t)
	_ = r2.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r2.Write(big); !isTimeout(err) {
		t.Fatalf("silent peer: got %v, want a timeout", err)
	}
}

// keepaliveEstablish mimics mochi's read loop: before every read it moves
// the deadline to now + ka (Client.refreshDeadline). It reports the error
// that ended the loop, how long after the last refresh it came and how
// many fired deadlines were re-armed.
func keepaliveEstablish(ka time.Duration, out chan<- [3]any) func(string, net.Conn) error {
	return func(_ string, c net.Conn) error {
		c.(*Conn).MarkEstablished()
		var b [1]byte
		var last time.Time
		for {
			last = time.Now()
			_ = c.SetDeadline(last.Add(ka))
			if _, err := c.Read(b[:]); err != nil {
				out <- [3]any{err, time.Since(last), c.(*Conn).raw.rearmCount()}
				return err
			}
			if _, err := c.Write(b[:]); err != nil { // echo: the refresh happened
				out <- [3]any{err, time.Since(last), c.(*Conn).raw.rearmCount()}
				return err
			}
		}
	}
}

// startKeepalive serves keepaliveEstablish over TCP or WebSocket and
// returns a function that dials a client.
func startKeepalive(t *testing.T, proto string, ka time.Duration, out chan<- [3]any) func() (send func() error, close func()) {
	t.Helper()
	est := keepaliveEstablish(ka, out)
	switch proto {
	case "tcp", "tls":
		var srvTLS, cliTLS *tls.Config
		if proto == "tls" {
			srvTLS, cliTLS = selfSigned(t)
		}
		l := startTCP(t, Options{TLSConfig: srvTLS}, est)
		return func() (func() error, func()) {
			c := dial(t, l.Address())
			if cliTLS != nil {
				tc := tls.Client(c, cliTLS)
				if err := tc.Handshake(); err != nil {
					t.Fatal(err)
				}
				c = tc
			}
			_ = c.SetDeadline(time.Time{})
			var b [1]byte
			return func() error {
				if _, err := c.Write([]byte{'x'}); err != nil {
					return err
				}
				_ = c.SetReadDeadline(time.Now().Add(wait))
				_, err := io.ReadFull(c, b[:])
				return err
			}, func() { c.Close() }
		}
	default:
		l, err := NewWebSocket(Options{ID: "ws", Address: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Init(quiet); err != nil {
			t.Fatal(err)
		}
		go l.Serve(est)
		t.Cleanup(func() { l.Close(func(string) {}) })
		return func() (func() error, func()) {
			d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: wait}
			ws, _, err := d.Dial("ws://"+l.Address()+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ws.Close() })
			return func() error {
				if err := ws.WriteMessage(websocket.BinaryMessage, []byte{'x'}); err != nil {
					return err
				}
				_ = ws.SetReadDeadline(time.Now().Add(wait))
				_, _, err := ws.ReadMessage()
				return err
			}, func() { ws.Close() }
		}
	}
}

// A client that keeps sending stays connected well past the first
// deadline armed on its socket (the later ones were only recorded), over
// TCP and WebSocket (whose reader cannot survive a timeout: the re-arm
// must happen below it).
func TestKeepaliveSendingClientStaysConnected(t *testing.T) {
	for _, proto := range []string{"tcp", "tls", "ws"} {
		t.Run(proto, func(t *testing.T) {
			const ka = time.Second
			out := make(chan [3]any, 1)
			send, closeFn := startKeepalive(t, proto, ka, out)()
			start := time.Now()
			for n := 0; time.Since(start) < 5*ka/2; n++ {
				if err := send(); err != nil {
					t.Fatalf("send %d after %v: %v", n, time.Since(start), err)
				}
				time.Sleep(ka / 20)
			}
			select {
			case got := <-out:
				t.Fatalf("server ended the connection: %v", got[0])
			default:
			}
			closeFn()
			select {
			case got := <-out:
				if got[2].(int) == 0 {
					t.Fatal("the first deadline armed never fired: nothing was coalesced")
				}
			case <-time.After(wait):
				t.Fatal("server never saw the close")
			}
		})
	}
}

// A client that goes silent after a few packets is still disconnected by
// the timeout, and not before the last deadline asked for.
func TestKeepaliveSilentClientDisconnected(t *testing.T) {
	for _, proto := range []string{"tcp", "tls", "ws"} {
		t.Run(proto, func(t *testing.T) {
			const ka = 150 * time.Millisecond
			out := make(chan [3]any, 1)
			send, _ := startKeepalive(t, proto, ka, out)()
			for n := range 5 {
				if err := send(); err != nil {
					t.Fatalf("send %d: %v", n, err)
				}
			}
			select {
			case got := <-out:
				err, after := got[0].(error), got[1].(time.Duration)
				if !isTimeout(err) {
					t.Fatalf("ended by %v, want a timeout", err)
				}
				if after < ka {
					t.Fatalf("timed out %v after the last refresh, before the deadline %v", after, ka)
				}
			case <-time.After(wait):
				t.Fatal("silent client never disconnected")
			}
		})
	}
}

// BenchmarkSetDeadline is the per-packet deadline refresh mochi makes
// (SetDeadline(now + 90 s)) on the socket itself (before) and through the
// coalescing rawConn (after), over 1 socket and round-robin over 256
// (the runtime's timer heap then holds 512 timers, as with many clients).
func BenchmarkSetDeadline(b *testing.B) {
	for _, n := range []int{1, 256} {
		raws := make([]*rawConn, n)
		for i := range raws {
			raws[i], _ = tcpPair(b)
		}
		for _, coalesced := range []bool{false, true} {
			conns := make([]net.Conn, n)
			name := "socket"
			for i, r := range raws {
				conns[i] = r.Conn
				if coalesced {
					conns[i] = r
					name = "coalesced"
				}
			}
			b.Run(fmt.Sprintf("%s/conns=%d", name, n), func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					_ = conns[i].SetDeadline(time.Now().Add(90 * time.Second))
					if i++; i == n {
						i = 0
					}
				}
			})
		}
	}
}

// selfSigned returns a server TLS config with a fresh self-signed
// certificate for 127.0.0.1 and a client config that trusts only it.
func selfSigned(t *testing.T) (srv, cli *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}
