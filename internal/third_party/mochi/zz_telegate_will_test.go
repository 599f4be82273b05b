package mqtt

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Patched by telegate (see README.md in this directory): a delayed will is
// cancelled under the client id's lock when a new connection takes the id,
// and fired for the client it belongs to; it waits for its Will Delay
// Interval or the end of its session, whichever is first ([MQTT-3.1.3-9]).

// willConnect5 is an MQTT 5 CONNECT of client id "c5" with flags (will
// flag and clean start as given by the caller), the CONNECT properties
// props, the will properties willProps and a will on topic with payload.
func willConnect5(flags byte, props, willProps []byte, topic, payload string) []byte {
	b := []byte{0, 4, 'M', 'Q', 'T', 'T', 5, flags | 0x04, 0, 60, byte(len(props))}
	b = append(append(b, props...), 0, 2, 'c', '5', byte(len(willProps)))
	b = append(append(b, willProps...), 0, byte(len(topic)))
	b = append(append(b, topic...), 0, byte(len(payload)))
	return append(b, payload...)
}

// willWatcher connects MQTT 3.1.1 client id, subscribed to will/# at QoS 0.
func willWatcher(t *testing.T, addr, id string) *rawClient {
	t.Helper()
	c := dialRaw(t, addr)
	c.send(0x10, append([]byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, byte(len(id))}, id...)...)
	c.expect(0x20, 0, 0)
	c.send(0x82, 0, 1, 0, 6, 'w', 'i', 'l', 'l', '/', '#', 0)
	c.expect(0x90, 0, 1, 0)
	return c
}

// will reads a QoS 0 PUBLISH and returns its first byte, topic and payload.
func (rc *rawClient) will() (byte, string, string) {
	rc.t.Helper()
	f, b := rc.read()
	if f&0xf6 != 0x30 || len(b) < 2 || len(b) < 2+int(b[1]) {
		rc.t.Fatalf("want a QoS 0 publish, got %02x % x", f, b)
	}
	return f, string(b[2 : 2+int(b[1])]), string(b[2+int(b[1]):])
}

// willSentHook records the clients OnWillSent ran for.
type willSentHook struct {
	HookBase
	mu   sync.Mutex
	sent []string // client id: will payload
}

func (h *willSentHook) ID() string           { return "will-sent" }
func (h *willSentHook) Provides(b byte) bool { return b == OnWillSent }
func (h *willSentHook) OnWillSent(cl *Client, pk packets.Packet) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sent = append(h.sent, cl.ID+": "+string(pk.Payload))
}

func (h *willSentHook) get() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.sent...)
}

// sessionEnded returns a channel that gets each client whose detachClient
// has finished.
func sessionEnded(t *testing.T) chan *Client {
	ch := make(chan *Client, 8)
	setSeam(t, &seamSessionEnded, func(cl *Client) { ch <- cl })
	return ch
}

// waitEndedOf waits for the clean-up of rc's connection. The seam is
// global: a connection of a test run before, closed in its clean-up, may
// end meanwhile and is skipped (a wait for any clean-up took it for this
// test's, and the test went on before the will was handled).
func waitEndedOf(t *testing.T, ch chan *Client, rc *rawClient) {
	t.Helper()
	want := rc.c.LocalAddr().String()
	for {
		select {
		case cl := <-ch:
			if cl.Net.Remote == want {
				return
			}
			t.Logf("skipped the clean-up of %s (%s)", cl.ID, cl.Net.Remote)
		case <-time.After(10 * time.Second):
			t.Fatal("the connection's clean-up did not run")
		}
	}
}

const sessionExpiry60 = "\x11\x00\x00\x00\x3c"

// TestTelegateDelayedWillNotFiredOnReconnect: the device's will, delayed,
// is due when the device reconnects; the delayed-will sweep runs right
// after the new connection took the client id, before CONNACK. The old
// will is not published (the new connection cancelled it, [MQTT-3.1.3-9])
// and the new connection's own will is intact: published when it drops.
// Before, the sweep published the old will and cleared the new
// connection's will (Clients.Get found the new client), so nothing was
// published when it dropped.
func TestTelegateDelayedWillNotFiredOnReconnect(t *testing.T) {
	s, addr := pidServer(t)
	w := willWatcher(t, addr, "w")
	ended := sessionEnded(t)

	d := dialRaw(t, addr)
	d.send(0x10, willConnect5(0x02, []byte(sessionExpiry60), []byte{0x18, 0, 0, 0, 30}, "will/c5", "old")...) // Will Delay 30 s
	if f, _ := d.read(); f != 0x20 {
		t.Fatalf("CONNACK %02x", f)
	}
	d.c.Close()
	waitEndedOf(t, ended, d)
	if n := s.loop.willDelayed.Len(); n != 1 {
		t.Fatalf("%d delayed wills, want 1", n)
	}

	var once sync.Once
	setSeam(t, &seamClientIDTaken, func(*Client) {
		once.Do(func() { s.sendDelayedLWT(time.Now().Unix() + 3600) }) // every delayed will is due
	})
	d = dialRaw(t, addr)
	d.send(0x10, willConnect5(0x00, []byte(sessionExpiry60), nil, "will/c5", "new")...)
	if f, b := d.read(); f != 0x20 || b[0] != 1 {
		t.Fatalf("CONNACK %02x % x, want session present", f, b)
	}
	d.sync()
	d.c.Close() // no DISCONNECT: its will (no delay) goes now
	if _, topic, p := w.will(); topic != "will/c5" || p != "new" {
		t.Fatalf("watcher got %q on %q, want the new connection's will", p, topic)
	}
}

// TestTelegateWillWithoutSessionExpirySentAtOnce: an MQTT 5 device with a
// Will Delay of an hour and no Session Expiry Interval (0: the session
// ends with the connection) drops: its will is published at once,
// retained as asked, with the OnWillSent hooks. Before, it waited out the
// delay; by then the session's Clients entry was gone: no hook, not
// retained.
func TestTelegateWillWithoutSessionExpirySentAtOnce(t *testing.T) {
	s, addr := pidServer(t)
	h := new(willSentHook)
	_ = s.AddHook(h, nil)
	w := willWatcher(t, addr, "w")
	ended := sessionEnded(t)

	d := dialRaw(t, addr)
	d.send(0x10, willConnect5(0x02|0x20, nil, []byte{0x18, 0, 0, 0x0e, 0x10}, "will/c5", "gone")...) // retained, Will Delay 3600 s
	if f, _ := d.read(); f != 0x20 {
		t.Fatalf("CONNACK %02x", f)
	}
	d.c.Close()
	if _, topic, p := w.will(); topic != "will/c5" || p != "gone" {
		t.Fatalf("watcher got %q on %q", p, topic)
	}
	waitEndedOf(t, ended, d)
	if got := h.get(); len(got) != 1 || got[0] != "c5: gone" {
		t.Fatalf("OnWillSent for %q, want c5 once", got)
	}
	w2 := willWatcher(t, addr, "w2")
	if f, _, p := w2.will(); f != 0x31 || p != "gone" {
		t.Fatalf("new subscriber got %02x %q, want the retained will", f, p)
	}
}

// TestTelegateWillSentWhenDisconnectEndsSession: the device's DISCONNECT
// 0x04 (with will) sets its Session Expiry Interval to 0: the session ends
// now, so its will (delay an hour, capped at CONNECT to the session's 60 s)
// is published at once. Before, it waited the 60 s.
func TestTelegateWillSentWhenDisconnectEndsSession(t *testing.T) {
	s, addr := pidServer(t)
	h := new(willSentHook)
	_ = s.AddHook(h, nil)
	w := willWatcher(t, addr, "w")
	ended := sessionEnded(t)

	d := dialRaw(t, addr)
	d.send(0x10, willConnect5(0x02, []byte(sessionExpiry60), []byte{0x18, 0, 0, 0x0e, 0x10}, "will/c5", "bye")...)
	if f, _ := d.read(); f != 0x20 {
		t.Fatalf("CONNACK %02x", f)
	}
	d.send(0xe0, 0x04, 5, 0x11, 0, 0, 0, 0) // Disconnect with Will Message, Session Expiry 0
	if _, _, p := w.will(); p != "bye" {
		t.Fatalf("watcher got %q", p)
	}
	waitEndedOf(t, ended, d)
	if got := h.get(); len(got) != 1 || got[0] != "c5: bye" {
		t.Fatalf("OnWillSent for %q, want c5 once", got)
	}
	if n := s.loop.willDelayed.Len(); n != 0 {
		t.Fatalf("%d delayed wills, want 0", n)
	}
}

// TestTelegateWillSentWhenSessionExpires: the session expires (the expiry
// sweep runs) while the device's will is still delayed: the will is
// published then, retained, with the OnWillSent hooks. Before, the sweep
// removed the session and the will went later, for no client: no hook,
// not retained.
func TestTelegateWillSentWhenSessionExpires(t *testing.T) {
	s, addr := pidServer(t)
	h := new(willSentHook)
	_ = s.AddHook(h, nil)
	w := willWatcher(t, addr, "w")
	ended := sessionEnded(t)

	d := dialRaw(t, addr)
	d.send(0x10, willConnect5(0x02|0x20, []byte(sessionExpiry60), []byte{0x18, 0, 0, 0, 60}, "will/c5", "late")...) // Will Delay 60 s = session
	if f, _ := d.read(); f != 0x20 {
		t.Fatalf("CONNACK %02x", f)
	}
	d.c.Close()
	waitEndedOf(t, ended, d)
	if n := s.loop.willDelayed.Len(); n != 1 {
		t.Fatalf("%d delayed wills, want 1", n)
	}
	s.clearExpiredClients(time.Now().Unix() + 3600) // the sweep finds the session expired
	if _, ok := s.Clients.Get("c5"); ok {
		t.Fatal("session not expired")
	}
	if got := h.get(); len(got) != 1 || got[0] != "c5: late" {
		t.Fatalf("OnWillSent for %q, want c5 once", got)
	}
	if _, _, p := w.will(); p != "late" {
		t.Fatalf("watcher got %q", p)
	}
	w2 := willWatcher(t, addr, "w2")
	if f, _, p := w2.will(); f != 0x31 || p != "late" {
		t.Fatalf("new subscriber got %02x %q, want the retained will", f, p)
	}
}

// disconnectGate holds the first DISCONNECT read (OnPacketRead, before
// mochi handles it) until release is closed.
type disconnectGate struct {
	HookBase
	once    sync.Once
	held    chan struct{}
	release chan struct{}
}

func (h *disconnectGate) ID() string           { return "disconnect-gate" }
func (h *disconnectGate) Provides(b byte) bool { return b == OnPacketRead }
func (h *disconnectGate) OnPacketRead(cl *Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Disconnect {
		h.once.Do(func() {
			close(h.held)
			<-h.release
		})
	}
	return pk, nil
}

// TestTelegateStaleDisconnectKeepsNewerWill: the device's DISCONNECT 0x00
// on its old connection is handled only after a newer connection took the
// session over and dropped, its will delayed. That newer connection's will
// stays delayed and is published when due: the DISCONNECT deletes the will
// of its own connection only ([MQTT-3.1.2-8], [MQTT-3.14.4-3]). Before,
// processDisconnect deleted the id's delayed will, whoever's it was,
// without the id's lock: the newer connection's will was lost.
func TestTelegateStaleDisconnectKeepsNewerWill(t *testing.T) {
	s, addr := pidServer(t)
	gate := &disconnectGate{held: make(chan struct{}), release: make(chan struct{})}
	_ = s.AddHook(gate, nil)
	w := willWatcher(t, addr, "w")
	ended := sessionEnded(t)

	old := dialRaw(t, addr)
	old.send(0x10, willConnect5(0x02, []byte(sessionExpiry60), nil, "will/c5", "old")...)
	if f, _ := old.read(); f != 0x20 {
		t.Fatalf("CONNACK %02x", f)
	}
	old.send(0xe0, 0) // DISCONNECT 0x00, held before mochi handles it
	<-gate.held

	d := dialRaw(t, addr)
	d.send(0x10, willConnect5(0x00, []byte(sessionExpiry60), []byte{0x18, 0, 0, 0, 30}, "will/c5", "new")...) // Will Delay 30 s
	if f, b := d.read(); f != 0x20 || b[0] != 1 {
		t.Fatalf("CONNACK %02x % x, want session present", f, b)
	}
	d.c.Close() // abnormal: its will waits out its delay
	waitEndedOf(t, ended, d)
	if n := s.loop.willDelayed.Len(); n != 1 {
		t.Fatalf("%d delayed wills, want 1", n)
	}

	close(gate.release) // the old connection's DISCONNECT is handled now
	waitEndedOf(t, ended, old)
	if n := s.loop.willDelayed.Len(); n != 1 {
		t.Fatalf("%d delayed wills after the old connection's DISCONNECT, want the newer connection's", n)
	}
	s.sendDelayedLWT(time.Now().Unix() + 3600) // the will is due
	if _, topic, p := w.will(); topic != "will/c5" || p != "new" {
		t.Fatalf("watcher got %q on %q, want the newer connection's will", p, topic)
	}
}

// markWill publishes "mark" at QoS 0 on will/mark from rc (protocol
// level v): the watcher gets it after any will published before.
func (rc *rawClient) markWill(v byte) {
	rc.t.Helper()
	b := []byte{0, 9, 'w', 'i', 'l', 'l', '/', 'm', 'a', 'r', 'k'}
	if v == 5 {
		b = append(b, 0) // no properties
	}
	rc.send(0x30, append(b, 'm', 'a', 'r', 'k')...)
}

// expectWills reads QoS 0 publishes from the watcher until will/mark and
// fails unless the payloads before it are want.
func (rc *rawClient) expectWills(want ...string) {
	rc.t.Helper()
	var got []string
	for {
		_, topic, p := rc.will()
		if topic == "will/mark" {
			break
		}
		got = append(got, topic+": "+p)
	}
	if len(got) != len(want) {
		rc.t.Fatalf("wills %q, want %q", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			rc.t.Fatalf("wills %q, want %q", got, want)
		}
	}
}

// TestTelegateCleanStartPublishesPendingWill: the device's connection
// dropped with a Will Delay of 30 s and a Session Expiry of 60 s; before
// the delay passes it connects again with Clean Start 1, which ends the
// old session: its will is published at once, with OnWillSent for the old
// client (MQTT 5 3.1.3.2.2: until the delay has passed "or the Session
// ends, whichever happens first"; [MQTT-3.1.2-8]). With Clean Start 0 the
// new connection continues the session and the will is not published
// ([MQTT-3.1.3-9]). Before, Clean Start 1 dropped the will too.
func TestTelegateCleanStartPublishesPendingWill(t *testing.T) {
	for _, clean := range []bool{true, false} {
		name := map[bool]string{true: "clean start 1", false: "clean start 0"}[clean]
		t.Run(name, func(t *testing.T) {
			s, addr := pidServer(t)
			h := new(willSentHook)
			_ = s.AddHook(h, nil)
			w := willWatcher(t, addr, "w")
			ended := sessionEnded(t)

			d := dialRaw(t, addr)
			d.send(0x10, willConnect5(0x02, []byte(sessionExpiry60), []byte{0x18, 0, 0, 0, 30}, "will/c5", "old")...)
			if f, _ := d.read(); f != 0x20 {
				t.Fatalf("CONNACK %02x", f)
			}
			d.c.Close()
			waitEndedOf(t, ended, d)
			if n := s.loop.willDelayed.Len(); n != 1 {
				t.Fatalf("%d delayed wills, want 1", n)
			}

			c, present := connectAs(t, addr, connect5(clean, []byte(sessionExpiry60)...))
			if present == 1 == clean {
				t.Fatalf("session present %d with clean start %v", present, clean)
			}
			c.markWill(5)
			if clean {
				w.expectWills("will/c5: old")
				if got := h.get(); len(got) != 1 || got[0] != "c5: old" {
					t.Fatalf("OnWillSent %q", got)
				}
			} else {
				w.expectWills()
				if got := h.get(); len(got) != 0 {
					t.Fatalf("OnWillSent %q", got)
				}
			}
			if n := s.loop.willDelayed.Len(); n != 0 {
				t.Fatalf("%d delayed wills left", n)
			}
		})
	}
}

// TestTelegateTakeoverOfLiveConnectionWill: a new connection takes the
// client id over while the old one (Will Delay 30 s, Session Expiry 60 s)
// is connected; the server closes the old one with DISCONNECT 0x8E (3.1.4:
// its will "is published as described in section 3.1.2.5"). MQTT 5
// 3.1.3.2.2: "the Will Message for the existing connection is sent unless
// the new connection specifies Clean Start of 0 and the Will Delay is
// greater than zero": Clean Start 1 publishes it at once (the session
// ends), Clean Start 0 does not ([MQTT-3.1.3-9]). Before, Clean Start 1
// dropped it too.
func TestTelegateTakeoverOfLiveConnectionWill(t *testing.T) {
	for _, clean := range []bool{true, false} {
		name := map[bool]string{true: "clean start 1", false: "clean start 0"}[clean]
		t.Run(name, func(t *testing.T) {
			s, addr := pidServer(t)
			w := willWatcher(t, addr, "w")
			ended := sessionEnded(t)

			old := dialRaw(t, addr)
			old.send(0x10, willConnect5(0x02, []byte(sessionExpiry60), []byte{0x18, 0, 0, 0, 30}, "will/c5", "old")...)
			if f, _ := old.read(); f != 0x20 {
				t.Fatalf("CONNACK %02x", f)
			}
			old.sync()

			c, _ := connectAs(t, addr, connect5(clean, []byte(sessionExpiry60)...))
			if f, b := old.read(); f != 0xe0 || len(b) == 0 || b[0] != 0x8e {
				t.Fatalf("old connection got %02x % x, want DISCONNECT 0x8E", f, b)
			}
			waitEndedOf(t, ended, old) // the old connection's will is handled
			c.markWill(5)
			if clean {
				w.expectWills("will/c5: old")
			} else {
				w.expectWills()
			}
			if n := s.loop.willDelayed.Len(); n != 0 {
				t.Fatalf("%d delayed wills left", n)
			}
		})
	}
}

// TestTelegateTakeoverWill311: MQTT 3.1.1 has no Will Delay; a connection
// taken over is closed by the server ([MQTT-3.1.4-2]) without a DISCONNECT
// from the client, so its will is published ([MQTT-3.1.2-8]: "published
// when the Network Connection is subsequently closed unless the Will
// Message has been deleted by the Server on receipt of a DISCONNECT
// Packet"), whatever the new connection's Clean Session flag.
func TestTelegateTakeoverWill311(t *testing.T) {
	for _, clean := range []byte{0x02, 0} {
		t.Run(fmt.Sprintf("clean session %d", clean>>1), func(t *testing.T) {
			_, addr := pidServer(t)
			w := willWatcher(t, addr, "w")
			ended := sessionEnded(t)

			old := dialRaw(t, addr)
			old.send(0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, clean|0x04, 0, 60, 0, 2, 'c', '3',
				0, 7, 'w', 'i', 'l', 'l', '/', 'c', '3', 0, 3, 'o', 'l', 'd')
			old.expect(0x20, 0, 0)
			old.sync()

			c := dialRaw(t, addr)
			c.send(0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, clean, 0, 60, 0, 2, 'c', '3')
			if f, b := c.read(); f != 0x20 || len(b) != 2 || b[1] != 0 {
				t.Fatalf("CONNACK %02x % x", f, b)
			}
			waitEndedOf(t, ended, old)
			c.markWill(4)
			w.expectWills("will/c3: old")
		})
	}
}
