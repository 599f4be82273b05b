package mqtt

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Patched by telegate (see README.md in this directory), review of the
// per-client-id lock (clientIDLocks): a panic under the lock left it held,
// and a session discarded by the embedding broker (registry reload, a
// takeover by another replica, a recovered panic) was removed without it.

// recoveringServer is pidServer whose connections are served as the
// broker's listener serves them (broker/listener core.serve): a panic is
// recovered, the connection closed, and the panic value sent on panics.
func recoveringServer(t *testing.T) (*Server, string, chan any) {
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
	panics := make(chan any, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() {
					v := recover()
					_ = c.Close()
					if v != nil {
						panics <- v
					}
				}()
				_ = s.EstablishConnection("t", c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		if !t.Failed() { // else a connection may be stuck for good: Close would wait for it
			s.Close()
		}
	})
	return s, ln.Addr().String(), panics
}

// panicUnsubscribed panics in the first OnUnsubscribed of client "c5":
// the old connection's clean-up, under the client id's lock.
type panicUnsubscribed struct {
	HookBase
	first atomic.Bool
}

func (h *panicUnsubscribed) ID() string           { return "panic-unsubscribed" }
func (h *panicUnsubscribed) Provides(b byte) bool { return b == OnUnsubscribed }
func (h *panicUnsubscribed) OnUnsubscribed(cl *Client, _ packets.Packet) {
	if cl.ID == "c5" && h.first.CompareAndSwap(false, true) {
		panic("hook fault")
	}
}

// TestTelegatePanicUnderClientIDLockReleasesIt: a hook panics in the old
// connection's clean-up (under the client id's lock); the panic is
// recovered as the broker's listener does. The device's next connection
// with the same id then gets its CONNACK at once and its commands. Before
// the fix the lock stayed held: the new connection waited for it forever
// (and so would the session-expiry sweep, and with it the server's event
// loop, once it reached the id).
func TestTelegatePanicUnderClientIDLockReleasesIt(t *testing.T) {
	for _, tc := range reconnectCases() {
		t.Run(tc.name, func(t *testing.T) {
			s, addr, panics := recoveringServer(t)
			if err := s.AddHook(new(panicUnsubscribed), nil); err != nil {
				t.Fatal(err)
			}
			waiting := make(chan struct{})
			var waitOnce sync.Once
			setSeam(t, &seamClientIDLockWait, func(id string) {
				if id == "c5" {
					waitOnce.Do(func() { close(waiting) })
				}
			})

			c1, _ := connectAs(t, addr, tc.first)
			c1.subscribe(tc.v, "cmd/#")
			c1.c.Close()
			if v := <-panics; v != "hook fault" {
				t.Fatalf("panic %v", v)
			}
			// The panicking goroutine has unwound: nothing holds the id.

			c2 := dialRaw(t, addr)
			c2.send(0x10, tc.second...)
			connack := make(chan []byte, 1)
			go func() {
				f, b, err := readRawPacket(c2.r)
				if err != nil || f != 0x20 {
					b = nil
				}
				connack <- b
			}()
			var b []byte
			select {
			case <-waiting:
				t.Fatal("the new connection waits for the client id's lock the recovered panic left held")
			case b = <-connack:
			}
			if len(b) < 2 || b[1] != 0 {
				t.Fatalf("CONNACK % x", b)
			}
			c2.subscribe(tc.v, "cmd/#")
			publishCmd(t, s, "x")
			c2.expectCommand(tc.v, "x")
		})
	}
}

// TestTelegateDiscardSessionThenResume: the broker discards a device's
// stored session (Server.DiscardSession: registry reload, a takeover by
// another replica) while the device resumes it (clean start 0). The
// discard holds the client id (in its OnUnsubscribed hook); the resuming
// connection waits for it and gets Session Present 0, so the device
// subscribes again and gets its commands. Before the fix (the broker's
// discardSession: UnsubscribeClient, then compare and delete, without the
// id's lock) the connection resumed the half-discarded session at once:
// Session Present 1 with no subscription left, and no command reached the
// device, which had no reason to subscribe again.
func TestTelegateDiscardSessionThenResume(t *testing.T) {
	s, addr := pidServer(t)
	h := &blockUnsubscribed{entered: make(chan struct{}), proceed: make(chan struct{})}
	if err := s.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	var proceedOnce sync.Once
	proceed := func() { proceedOnce.Do(func() { close(h.proceed) }) }
	t.Cleanup(proceed)
	waiting := make(chan struct{})
	var waitOnce sync.Once
	setSeam(t, &seamClientIDLockWait, func(id string) {
		if id == "c5" {
			waitOnce.Do(func() { close(waiting) })
		}
	})

	sei := []byte{0x11, 0, 0, 0, 60} // Session Expiry 60 s: the session outlives the connection
	c1, _ := connectAs(t, addr, connect5(true, sei...))
	c1.subscribe(5, "cmd/#")
	old, ok := s.Clients.Get("c5")
	if !ok {
		t.Fatal("no Clients entry")
	}
	c1.c.Close()
	discarded := make(chan bool, 1)
	go func() { discarded <- s.DiscardSession(old) }()
	<-h.entered // the discard is under way

	c2 := dialRaw(t, addr)
	c2.send(0x10, connect5(false, sei...)...)
	connack := make(chan []byte, 1)
	go func() {
		f, b, err := readRawPacket(c2.r)
		if err != nil || f != 0x20 {
			b = nil
		}
		connack <- b
	}()
	var b []byte
	select {
	case <-waiting: // the resuming connection waits for the discard
		proceed()
		b = <-connack
	case b = <-connack: // the code before the fix: no waiting
		proceed()
	}
	if len(b) < 2 || b[1] != 0 {
		t.Fatalf("CONNACK % x", b)
	}
	if b[0]&1 != 0 {
		t.Fatal("Session Present 1: the connection resumed a session being discarded (its subscriptions gone)")
	}
	if !<-discarded {
		t.Fatal("DiscardSession reports nothing discarded")
	}
	c2.subscribe(5, "cmd/#")
	publishCmd(t, s, "x")
	c2.expectCommand(5, "x")
}

// TestTelegateDiscardSessionAfterTakeoverKeepsNewConnection: a discard of
// the old *Client that comes after a newer connection took the id over
// removes nothing of the new connection's.
func TestTelegateDiscardSessionAfterTakeoverKeepsNewConnection(t *testing.T) {
	s, addr := pidServer(t)
	sei := []byte{0x11, 0, 0, 0, 60}
	c1, _ := connectAs(t, addr, connect5(true, sei...))
	c1.subscribe(5, "cmd/#")
	old, _ := s.Clients.Get("c5")
	c2, present := connectAs(t, addr, connect5(false, sei...))
	if present != 1 {
		t.Fatal("Session Present 0, want the session resumed")
	}
	if s.DiscardSession(old) {
		t.Fatal("DiscardSession discarded a session taken over")
	}
	if cur, ok := s.Clients.Get("c5"); !ok || cur == old {
		t.Fatalf("Clients entry %v %v: not the new connection", cur, ok)
	}
	publishCmd(t, s, "x")
	c2.expectCommand(5, "x")
}
