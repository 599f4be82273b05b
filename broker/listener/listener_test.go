package listener

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 10 * time.Second

var quiet = slog.New(slog.DiscardHandler)

func startTCP(t *testing.T, opts Options, establish func(string, net.Conn) error) *TCP {
	t.Helper()
	if opts.ID == "" {
		opts.ID = "tcp"
	}
	opts.Address = "127.0.0.1:0"
	l, err := NewTCP(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Init(quiet); err != nil {
		t.Fatal(err)
	}
	go l.Serve(establish)
	t.Cleanup(func() { l.Close(func(string) {}) })
	return l
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(wait))
	return c
}

func waitClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection not closed")
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readAll mimics mochi reading CONNECT: it blocks on the socket.
func readAll(_ string, c net.Conn) error {
	_, err := io.Copy(io.Discard, c)
	if err == nil {
		return io.EOF
	}
	return err
}

func TestConnectDeadline(t *testing.T) {
	st := new(Stats)
	l := startTCP(t, Options{ConnectTimeout: 100 * time.Millisecond, Stats: st}, readAll)
	if l.Protocol() != "tcp" || l.ID() != "tcp" {
		t.Fatal(l.Protocol(), l.ID())
	}
	c := dial(t, l.Address())
	waitClosed(t, c)
	eventually(t, "timeout counted", func() bool { return st.ConnectTimeouts.Load() == 1 })
	if st.Accepted.Load() != 1 {
		t.Fatal(st.Accepted.Load())
	}
	eventually(t, "socket released", func() bool { return st.Open.Load() == 0 })
}

func TestEstablishedTimeoutIsNotAConnectTimeout(t *testing.T) {
	st := new(Stats)
	l := startTCP(t, Options{ConnectTimeout: 100 * time.Millisecond, Stats: st}, func(id string, c net.Conn) error {
		c.(*Conn).MarkEstablished()
		return readAll(id, c)
	})
	waitClosed(t, dial(t, l.Address()))
	eventually(t, "socket released", func() bool { return st.Open.Load() == 0 })
	if st.ConnectTimeouts.Load() != 0 {
		t.Fatal("counted as connect timeout")
	}
}

func TestPanicRecovered(t *testing.T) {
	st := new(Stats)
	var mu sync.Mutex
	var panicked []any
	l := startTCP(t, Options{Stats: st, OnPanic: func(c net.Conn, v any) {
		mu.Lock()
		panicked = append(panicked, v)
		mu.Unlock()
	}}, func(id string, c net.Conn) error {
		buf := make([]byte, 1)
		if _, err := c.Read(buf); err != nil {
			return err
		}
		if buf[0] == 'P' {
			panic("boom")
		}
		c.Write([]byte("ok"))
		return nil
	})
	c := dial(t, l.Address())
	c.Write([]byte("P"))
	waitClosed(t, c)
	eventually(t, "panic counted", func() bool { return st.Panics.Load() == 1 })
	var got []any
	eventually(t, "OnPanic called", func() bool {
		mu.Lock()
		defer mu.Unlock()
		got = append([]any(nil), panicked...)
		return len(got) > 0
	})
	if len(got) != 1 || got[0] != "boom" {
		t.Fatalf("OnPanic got %v", got)
	}
	// Still serving.
	c2 := dial(t, l.Address())
	c2.Write([]byte("x"))
	b := make([]byte, 2)
	if _, err := io.ReadFull(c2, b); err != nil || string(b) != "ok" {
		t.Fatalf("after panic: %q %v", b, err)
	}
}

func TestLimitSharedAcrossListeners(t *testing.T) {
	st := new(Stats)
	lim := NewLimit(2)
	l1 := startTCP(t, Options{ID: "a", Limit: lim, Stats: st}, readAll)
	l2 := startTCP(t, Options{ID: "b", Limit: lim, Stats: st}, readAll)
	c1 := dial(t, l1.Address())
	c2 := dial(t, l2.Address())
	eventually(t, "two open", func() bool { return lim.Open() == 2 })
	waitClosed(t, dial(t, l1.Address()))
	if st.Refused.Load() != 1 {
		t.Fatal(st.Refused.Load())
	}
	c1.Close()
	c2.Close()
	eventually(t, "released", func() bool { return lim.Open() == 0 && st.Open.Load() == 0 })
	dial(t, l2.Address()).Write([]byte("x"))
	eventually(t, "admitted again", func() bool { return st.Accepted.Load() == 3 })
}

func TestCloseClosesPendingConnectionsAndWaits(t *testing.T) {
	st := new(Stats)
	l, err := NewTCP(Options{ID: "tcp", Address: "127.0.0.1:0", ConnectTimeout: time.Hour, Stats: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Init(quiet); err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go l.Serve(func(id string, c net.Conn) error {
		close(served)
		return readAll(id, c)
	})
	c := dial(t, l.Address())
	<-served
	closedClients := 0
	l.Close(func(id string) { closedClients++ })
	l.Close(func(id string) { closedClients++ }) // idempotent
	if closedClients != 1 {
		t.Fatalf("closeClients called %d times", closedClients)
	}
	if st.Open.Load() != 0 {
		t.Fatal("socket still open after Close")
	}
	waitClosed(t, c)
	if err := l.Init(quiet); !errors.Is(err, ErrClosed) {
		t.Fatalf("Init after Close: %v", err)
	}
}

// TestCloseUsesCloseClients: with Options.CloseClients set, Close calls it
// once and never mochi's CloseFn (Server.closeListenerClients, whose nested
// RLock deadlocks against a concurrent Clients.Delete in mochi v2.7.9).
func TestCloseUsesCloseClients(t *testing.T) {
	var got []string
	l, err := NewTCP(Options{ID: "tcp", Address: "127.0.0.1:0", CloseClients: func(id string) { got = append(got, id) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Init(quiet); err != nil {
		t.Fatal(err)
	}
	mochiCloser := func(string) { t.Error("mochi's CloseFn called although CloseClients is set") }
	l.Close(mochiCloser)
	l.Close(mochiCloser)
	if len(got) != 1 || got[0] != "tcp" {
		t.Fatalf("CloseClients calls: %q, want [tcp]", got)
	}
}

func TestCloseBeforeServe(t *testing.T) {
	l, err := NewTCP(Options{ID: "tcp", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Init(quiet); err != nil {
		t.Fatal(err)
	}
	l.Close(nil)
	l.Serve(readAll) // returns at once
	w, err := NewWebSocket(Options{ID: "ws", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	w.Close(nil)
	if _, err := NewTCP(Options{}); !errors.Is(err, ErrConfig) {
		t.Fatal(err)
	}
}

// TestWebSocketListener: the connect deadlines are seconds, not a few
// hundred ms: each upgrade below is legitimate and must complete within it
// on a loaded CI box under -race.
func TestWebSocketListener(t *testing.T) {
	st := new(Stats)
	const connectTimeout = 3 * time.Second
	w, err := NewWebSocket(Options{ID: "ws", Address: "127.0.0.1:0", ConnectTimeout: connectTimeout, Stats: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Init(quiet); err != nil {
		t.Fatal(err)
	}
	// Echo MQTT bytes back, as one write per read.
	go w.Serve(func(id string, c net.Conn) error {
		c.(*Conn).MarkEstablished()
		c.SetDeadline(time.Now().Add(wait))
		buf := make([]byte, 3)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return err
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return err
			}
		}
	})
	t.Cleanup(func() { w.Close(nil) })

	d := websocket.Dialer{Subprotocols: []string{"mqtt"}}
	ws, resp, err := d.Dial("ws://"+w.Address()+"/mqtt", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer ws.Close()
	if ws.Subprotocol() != "mqtt" {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}
	ws.WriteMessage(websocket.BinaryMessage, []byte("hello"))
	ws.WriteMessage(websocket.BinaryMessage, []byte{})
	ws.WriteMessage(websocket.BinaryMessage, []byte("!"))
	var got []byte
	ws.SetReadDeadline(time.Now().Add(wait))
	for len(got) < 6 {
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m...)
	}
	if string(got) != "hello!" {
		t.Fatalf("echo %q", got)
	}
	ws.WriteMessage(websocket.TextMessage, []byte("text"))
	if _, _, err := ws.ReadMessage(); err == nil {
		t.Fatal("text message not refused")
	}
	eventually(t, "released", func() bool { return st.Open.Load() == 0 })

	// A socket that never upgrades is closed by the connect deadline.
	c := dial(t, w.Address())
	waitClosed(t, c)

	// A plain HTTP request (not an upgrade) gets its answer and the socket
	// is closed: it must not idle in keep-alive holding a connection slot.
	h := dial(t, w.Address())
	if _, err := h.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, h)
	eventually(t, "plain HTTP socket released", func() bool { return st.Open.Load() == 0 })

	// Upgraded but silent: the deadline is re-armed after the upgrade.
	w2, err := NewWebSocket(Options{ID: "ws2", Address: "127.0.0.1:0", ConnectTimeout: connectTimeout, Stats: st})
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.Init(quiet); err != nil {
		t.Fatal(err)
	}
	go w2.Serve(readAll)
	defer w2.Close(nil)
	ws2, resp2, err := d.Dial("ws://"+w2.Address()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	defer ws2.Close()
	ws2.SetReadDeadline(time.Now().Add(wait))
	if _, _, err := ws2.ReadMessage(); err == nil {
		t.Fatal("message from silent connection")
	} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("upgraded connection not closed")
	}
	eventually(t, "timeout counted", func() bool { return st.ConnectTimeouts.Load() >= 1 })
}
