package mqtt

import (
	"bytes"
	"net"
	"testing"
)

// Patched by telegate (see README.md in this directory): a publish to a
// client waited on that client's socket write when the client had stopped
// reading and its socket was full: on the client's lock (NextPacketID),
// which WritePacket holds while it writes, and on its send lock, which
// the session resume held while it wrote CONNACK and resent the stored
// publishes. The publisher (the gateway's commands dispatcher publishes
// to every vehicle from one goroutine) was stuck until the write deadline
// (1.5 times the client's keepalive), and with it every publish to other
// clients queued behind.

// stuckServer is pidServer with a small kernel send buffer on every
// accepted connection, so that a client that stops reading blocks the
// server's writes after a few KiB.
func stuckServer(t *testing.T) (*Server, string) {
	t.Helper()
	s := New(&Options{Logger: logger, InlineClient: true})
	_ = s.AddHook(new(AllowHook), nil)
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*net.TCPConn).SetWriteBuffer(4 << 10)
			go func() { _ = s.EstablishConnection("t", c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.Close()
	})
	return s, ln.Addr().String()
}

// connectID is an MQTT 5 CONNECT of client id, clean start as given, with
// the property bytes props.
func connectID(id string, cleanStart bool, props ...byte) []byte {
	b := connect5(cleanStart, props...)
	return append(b[:len(b)-4], append([]byte{0, byte(len(id))}, id...)...)
}

// bigPayload is larger than the kernel buffers of a stuck connection.
var bigPayload = bytes.Repeat([]byte{'x'}, 64<<10)

// TestTelegateStuckClientDoesNotBlockPublishers: a client ("stuck",
// subscribed to big/#) that stops reading, while the server writes to it
// from its write loop (connected) or resends its stored publishes
// (resuming), delays neither a publish to it nor, behind that one in the
// same goroutine, a command to another client ("c5"). The publish to the
// stuck client is stored (it goes out when the client reads again, or on
// its next connection).
func TestTelegateStuckClientDoesNotBlockPublishers(t *testing.T) {
	for _, resuming := range []bool{false, true} {
		name := "connected"
		if resuming {
			name = "resuming"
		}
		t.Run(name, func(t *testing.T) {
			s, addr := stuckServer(t)
			props := []byte{0x11, 0, 0, 0, 60} // Session Expiry 60 s
			other := dialRaw(t, addr)
			other.send(0x10, connect5(true, props...)...)
			if f, _ := other.read(); f != 0x20 {
				t.Fatalf("CONNACK %02x", f)
			}
			other.send(0x82, append([]byte{0, 1, 0}, subscribeCmd...)...)
			other.expect(0x90, 0, 1, 0, 1)

			stuck := dialRaw(t, addr)
			_ = stuck.c.(*net.TCPConn).SetReadBuffer(4 << 10)
			stuck.send(0x10, connectID("stuck", true, props...)...)
			if f, _ := stuck.read(); f != 0x20 {
				t.Fatalf("CONNACK %02x", f)
			}
			stuck.send(0x82, 0, 1, 0, 0, 5, 'b', 'i', 'g', '/', '#', 1)
			stuck.expect(0x90, 0, 1, 0, 1)
			const n = 16 // 1 MiB: far more than the socket's buffers hold
			if resuming {
				stuck.c.Close()
				cl, _ := s.Clients.Get("stuck")
				<-cl.State.open.Done()
				for i := 0; i < n; i++ { // stored for the offline session
					if err := s.Publish("big/x", bigPayload, false, 1); err != nil {
						t.Fatal(err)
					}
				}
				stuck = dialRaw(t, addr)
				_ = stuck.c.(*net.TCPConn).SetReadBuffer(4 << 10)
				stuck.send(0x10, connectID("stuck", false, props...)...)
				if f, b := stuck.read(); f != 0x20 || b[0] != 1 {
					t.Fatalf("CONNACK %02x % x, want session present", f, b)
				}
				// The server is resending the n stored publishes: the
				// device reads no more.
			}

			done := make(chan error, 1)
			go func() {
				for i := 0; i < n+1; i++ { // the last one at least waits in the server
					if err := s.Publish("big/x", bigPayload, false, 1); err != nil {
						done <- err
						return
					}
				}
				done <- s.Publish("cmd/x", []byte("O"), false, 1)
			}()
			if _, p := other.command5(); p != "O" {
				t.Fatalf("command %q, want O", p)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			cl, _ := s.Clients.Get("stuck")
			if cl.Closed() {
				t.Fatal("the stuck client was closed: the publishes waited for its write deadline")
			}
		})
	}
}
