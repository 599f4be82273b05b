package mqtt

import (
	"bytes"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Patched by telegate (see README.md in this directory): when a connection
// whose session ends at disconnect (MQTT 5 Session Expiry 0, MQTT 3.1.1
// clean session) closed, its clean-up (detachClient) checked IsTakenOver,
// then unsubscribed by client id and deleted the id from Clients. A device
// reconnecting at once with the same id could be added and subscribed in
// between: it got its SUBACK, but its Clients entry (and possibly its new
// subscriptions) were gone, and no command reached it until it reconnected
// again. A disconnected session's expiry (clearExpiredClients) likewise
// deleted a connection that had just resumed it, and a delayed will was
// stored after the new connection had cancelled it. The seams
// (telegate_seams.go) and a blocking hook force each interleaving.

// reconnectCase is one protocol variant: the first connection's session
// ends at disconnect; the second connects with clean start as given.
type reconnectCase struct {
	name       string
	v          byte
	first      []byte // CONNECT body of the first connection
	second     []byte // CONNECT body of the reconnection
	sessionNow byte   // Session Present the reconnection gets when it takes the first over
}

func reconnectCases() []reconnectCase {
	v4 := func(clean bool) []byte {
		flags := byte(0)
		if clean {
			flags = 0x02
		}
		return []byte{0, 4, 'M', 'Q', 'T', 'T', 4, flags, 0, 60, 0, 2, 'c', '5'}
	}
	return []reconnectCase{
		{"mqtt5-clean-start", 5, connect5(true), connect5(true), 0},
		// Clean start 0 while the first connection is still known:
		// upstream resumes its session (subscriptions copied).
		{"mqtt5-resume", 5, connect5(true), connect5(false), 1},
		{"mqtt311-clean-session", 4, v4(true), v4(true), 0},
	}
}

// connectAs connects with CONNECT body b and returns the client and its
// CONNACK's Session Present flag.
func connectAs(t *testing.T, addr string, b []byte) (*rawClient, byte) {
	t.Helper()
	c := dialRaw(t, addr)
	c.send(0x10, b...)
	f, body := c.read()
	if f != 0x20 || len(body) < 2 || body[1] != 0 {
		t.Fatalf("CONNACK %02x % x", f, body)
	}
	return c, body[0] & 1
}

// subscribe subscribes c (protocol level v) to filter at QoS 1.
func (rc *rawClient) subscribe(v byte, filter string) {
	rc.t.Helper()
	b := []byte{0, 1}
	if v == 5 {
		b = append(b, 0) // no properties
	}
	b = append(b, 0, byte(len(filter)))
	b = append(append(b, filter...), 1)
	rc.send(0x82, b...)
	if v == 5 {
		rc.expect(0x90, 0, 1, 0, 1)
	} else {
		rc.expect(0x90, 0, 1, 1)
	}
}

// expectCommand reads the server's QoS 1 publish on cmd/x.
func (rc *rawClient) expectCommand(v byte, payload string) {
	rc.t.Helper()
	if v == 5 {
		if _, p := rc.command5(); p != payload {
			rc.t.Fatalf("command %q, want %q", p, payload)
		}
		return
	}
	f, b := rc.read()
	if f&0xf6 != 0x32 || len(b) < 9 || string(b[2:7]) != "cmd/x" || string(b[9:]) != payload {
		rc.t.Fatalf("want the QoS 1 publish %q on cmd/x, got %02x % x", payload, f, b)
	}
}

// detachPause holds the first detachClient of client id "c5" in
// seamSessionEnding until release is sent to or closed (the test closes
// it before returning); ended receives every client whose detachClient
// has returned.
type detachPause struct {
	ending  chan *Client
	release chan struct{}
	ended   chan *Client
}

func pauseFirstDetach(t *testing.T) *detachPause {
	p := &detachPause{ending: make(chan *Client, 1), release: make(chan struct{}), ended: make(chan *Client, 16)}
	var first atomic.Bool
	setSeam(t, &seamSessionEnding, func(cl *Client) {
		if cl.ID == "c5" && first.CompareAndSwap(false, true) {
			p.ending <- cl
			<-p.release
		}
	})
	setSeam(t, &seamSessionEnded, func(cl *Client) {
		select {
		case p.ended <- cl:
		default:
		}
	})
	return p
}

// waitEnded waits until cl's detachClient has returned.
func (p *detachPause) waitEnded(cl *Client) {
	for got := range p.ended {
		if got == cl {
			return
		}
	}
}

// TestTelegateReconnectDuringCleanupKeepsSubscription: the device's new
// connection takes the client id over and subscribes while the old one's
// clean-up has not run yet; the clean-up then leaves the new connection's
// Clients entry and subscription alone, and a command reaches it. On the
// code before the fix (seam placed after its IsTakenOver check) the
// command never arrived.
func TestTelegateReconnectDuringCleanupKeepsSubscription(t *testing.T) {
	for _, tc := range reconnectCases() {
		t.Run(tc.name, func(t *testing.T) {
			s, addr := pidServer(t)
			p := pauseFirstDetach(t)
			defer close(p.release)

			c1, _ := connectAs(t, addr, tc.first)
			c1.subscribe(tc.v, "cmd/#")
			c1.c.Close()
			old := <-p.ending // the old connection's clean-up waits

			c2, present := connectAs(t, addr, tc.second)
			if present != tc.sessionNow {
				t.Fatalf("Session Present %d, want %d", present, tc.sessionNow)
			}
			c2.subscribe(tc.v, "cmd/#")

			p.release <- struct{}{} // unblocks the paused clean-up
			p.waitEnded(old)
			if cur, ok := s.Clients.Get("c5"); !ok || cur == old {
				t.Fatalf("Clients entry %v %v: not the new connection", cur, ok)
			}
			publishCmd(t, s, "x")
			c2.expectCommand(tc.v, "x")
		})
	}
}

// blockUnsubscribed blocks the first OnUnsubscribed (the old connection's
// clean-up, under the client id's lock) until proceed is closed.
type blockUnsubscribed struct {
	HookBase
	first   atomic.Bool
	entered chan struct{}
	proceed chan struct{}
}

func (h *blockUnsubscribed) ID() string           { return "block-unsubscribed" }
func (h *blockUnsubscribed) Provides(b byte) bool { return b == OnUnsubscribed }
func (h *blockUnsubscribed) OnUnsubscribed(cl *Client, _ packets.Packet) {
	if cl.ID == "c5" && h.first.CompareAndSwap(false, true) {
		close(h.entered)
		<-h.proceed
	}
}

// TestTelegateReconnectWaitsForCleanup: the device reconnects while the
// old connection's clean-up is under way (held in its OnUnsubscribed
// hook); the new connection waits for it and starts a fresh session, whose
// subscription the clean-up does not touch. On the code before the fix the
// new connection took the old one over at once and the clean-up then
// deleted it from Clients: the command never arrived.
func TestTelegateReconnectWaitsForCleanup(t *testing.T) {
	for _, tc := range reconnectCases() {
		t.Run(tc.name, func(t *testing.T) {
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

			c1, _ := connectAs(t, addr, tc.first)
			c1.subscribe(tc.v, "cmd/#")
			c1.c.Close()
			<-h.entered // the clean-up holds the client id

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
			case <-waiting: // the new connection waits for the clean-up
				proceed()
				b = <-connack
			case b = <-connack: // the code before the fix: no waiting
				proceed()
			}
			if len(b) < 2 || b[1] != 0 {
				t.Fatalf("CONNACK % x", b)
			}
			if b[0]&1 != 0 {
				t.Fatal("Session Present 1: the ended session was resumed")
			}
			c2.subscribe(tc.v, "cmd/#")
			publishCmd(t, s, "x")
			c2.expectCommand(tc.v, "x")
		})
	}
}

// TestTelegateQuickReconnectsKeepSubscription is the reviewer's
// reproducer: a device whose session ends at disconnect reconnects at once
// with the same client id, 200 times; each new connection's subscription
// gets the command. It failed within 200 rounds before the fix; the two
// tests above force its interleavings.
func TestTelegateQuickReconnectsKeepSubscription(t *testing.T) {
	for _, tc := range reconnectCases() {
		if tc.sessionNow != 0 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			s, addr := pidServer(t)
			for i := 0; i < 200; i++ {
				c, _ := connectAs(t, addr, tc.first)
				c.subscribe(tc.v, "cmd/#")
				publishCmd(t, s, "x")
				c.expectCommand(tc.v, "x")
				c.c.Close()
			}
		})
	}
}

// TestTelegateExpiryDuringResumeKeepsConnection: a disconnected session
// (Session Expiry 60 s) is found expired while the device resumes it; the
// expiry leaves the resumed connection alone and the command reaches it.
// On the code before the fix the expiry deleted the new connection from
// Clients. The expiry runs at the session's disconnect second + 61, not
// at the wall clock's.
func TestTelegateExpiryDuringResumeKeepsConnection(t *testing.T) {
	s, addr := pidServer(t)
	p := pauseFirstDetach(t)
	close(p.release) // no pause: only the end of the clean-up is awaited
	sei := []byte{0x11, 0, 0, 0, 60}

	c1, _ := connectAs(t, addr, connect5(true, sei...))
	c1.subscribe(5, "cmd/#")
	c1.c.Close()
	old := <-p.ending
	p.waitEnded(old)

	var c2 *rawClient
	setSeam(t, &seamClientExpiring, func(cl *Client) {
		if cl != old || c2 != nil {
			return
		}
		var present byte
		c2, present = connectAs(t, addr, connect5(false, sei...))
		if present != 1 {
			t.Errorf("Session Present %d, want 1", present)
		}
	})
	s.clearExpiredClients(old.StopTime() + 61)
	if c2 == nil {
		t.Fatal("the session did not expire")
	}
	publishCmd(t, s, "x")
	c2.expectCommand(5, "x")
}

// TestTelegateExpiredSessionSubscriptionsGone: once a disconnected session
// has expired, a new connection with its client id (no session: Session
// Present 0) gets no publish for the expired session's subscriptions.
// Upstream left them in the topics index.
func TestTelegateExpiredSessionSubscriptionsGone(t *testing.T) {
	s, addr := pidServer(t)
	p := pauseFirstDetach(t)
	close(p.release)
	sei := []byte{0x11, 0, 0, 0, 60}

	c1, _ := connectAs(t, addr, connect5(true, sei...))
	c1.subscribe(5, "cmd/#")
	c1.c.Close()
	old := <-p.ending
	p.waitEnded(old)
	s.clearExpiredClients(old.StopTime() + 61)
	if _, ok := s.Clients.Get("c5"); ok {
		t.Fatal("the session did not expire")
	}

	c2, present := connectAs(t, addr, connect5(false, sei...))
	if present != 0 {
		t.Fatal("Session Present 1 after expiry")
	}
	c2.subscribe(5, "ok/#")
	publishCmd(t, s, "stale")
	if err := s.Publish("ok/x", []byte("fresh"), false, 1); err != nil {
		t.Fatal(err)
	}
	// Both go out in order on the one connection: the first must be ok/x.
	f, b := c2.read()
	if f&0xf0 != 0x30 || len(b) < 6 || !bytes.Equal(b[:6], []byte{0, 4, 'o', 'k', '/', 'x'}) {
		t.Fatalf("first publish %02x % x, want the one on ok/x", f, b)
	}
}

// connectWill5 is an MQTT 5 CONNECT of client id "c5", clean start, with
// a will on w/c5 delayed 30 s.
func connectWill5() []byte {
	return []byte{0, 4, 'M', 'Q', 'T', 'T', 5, 0x02 | 0x04, 0, 60, 0,
		0, 2, 'c', '5',
		5, 0x18, 0, 0, 0, 30, // Will Delay Interval 30 s
		0, 4, 'w', '/', 'c', '5',
		0, 1, 'x'}
}

// TestTelegateDelayedWillDroppedAfterReconnect: the device reconnects
// before its old connection's clean-up has stored the delayed will; the
// will is not stored (the new connection, established, cancels the id's
// delayed will [MQTT-3.1.3-9]). On the code before the fix it was stored
// after the new connection's cancel and sent 30 s later while the device
// was connected.
func TestTelegateDelayedWillDroppedAfterReconnect(t *testing.T) {
	s, addr := pidServer(t)
	p := pauseFirstDetach(t)
	defer close(p.release)

	c1, _ := connectAs(t, addr, connectWill5())
	c1.c.Close() // no DISCONNECT: the will is due
	old := <-p.ending

	// Clean Start 0: continues the session (Clean Start 1 would end it,
	// publishing the will at once).
	c2, _ := connectAs(t, addr, connect5(false))
	c2.sync() // its session is established: the delayed will cancelled

	p.release <- struct{}{}
	p.waitEnded(old)
	if n := len(s.loop.willDelayed.GetAll()); n != 0 {
		t.Fatalf("%d delayed wills stored after the device reconnected", n)
	}
}
