package listener

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// blobHeld is an AsyncHeld that releases blob once.
type blobHeld struct {
	mu   sync.Mutex
	blob []byte
}

func (h *blobHeld) Flush(dst []byte) ([]byte, error) { return h.Release(dst) }
func (h *blobHeld) Later() bool                      { return true }
func (h *blobHeld) Release(dst []byte) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	dst = append(dst, h.blob...)
	h.blob = nil
	return dst, nil
}

// TestReleaseHeldNeverBlocks: ReleaseHeld runs on the spool's notifier
// goroutine, shared by every connection, so a client that does not read
// must not stall it. What the socket does not take at once is written by
// another goroutine, ahead of any later write.
func TestReleaseHeldNeverBlocks(t *testing.T) {
	blob := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB: more than the socket buffers hold
	conns := make(chan *Conn, 1)
	l := startTCP(t, Options{}, func(_ string, c net.Conn) error {
		lc := c.(*Conn)
		lc.SetHeld(&blobHeld{blob: blob}) // by the reader, as the ingest hook does
		conns <- lc
		return readAll("", c)
	})
	client := dial(t, l.Address())
	lc := <-conns
	if lc.async == nil {
		t.Fatal("plain TCP connection without the non-blocking release")
	}
	done := make(chan struct{})
	go func() {
		lc.ReleaseHeld()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("ReleaseHeld blocked on a client that does not read")
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := lc.Write([]byte("tail"))
		wrote <- err
	}()
	got := make([]byte, len(blob)+4)
	client.SetReadDeadline(time.Now().Add(wait))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(blob)], blob) || string(got[len(blob):]) != "tail" {
		t.Fatal("released bytes out of order or corrupted")
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// TestReleaseHeldAfterCoalescedDeadline: mochi pushes the keepalive
// deadline later on every packet, and rawConn only records a later
// deadline until the armed one fires. The notifier's raw write must then
// re-arm and write, as rawConn.Write does: before, once the deadline armed
// at connect time had passed, every released PUBACK failed with a timeout
// and was dropped on a live connection, and the device waited for ever
// (the paced benchmark stalled after its first keepalive period).
func TestReleaseHeldAfterCoalescedDeadline(t *testing.T) {
	lc, client := acceptedConn(t, &blobHeld{blob: []byte("puback")})
	armed := time.Now().Add(50 * time.Millisecond)
	if err := lc.SetDeadline(armed); err != nil { // armed on the socket
		t.Fatal(err)
	}
	if err := lc.SetDeadline(time.Now().Add(time.Hour)); err != nil { // only recorded
		t.Fatal(err)
	}
	time.Sleep(time.Until(armed) + 20*time.Millisecond) // the armed deadline passes
	if lc.async == nil {
		t.Fatal("plain TCP connection without the non-blocking release")
	}
	lc.ReleaseHeld()
	got := make([]byte, 6)
	client.SetReadDeadline(time.Now().Add(wait))
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "puback" {
		t.Fatalf("released bytes: %q, %v", got, err)
	}
}

// TestReleaseHeldFailureClosesConnection: a release the socket refuses
// (here: a write deadline that has really passed) cannot be retried, so
// the connection is closed: the device reconnects and resends instead of
// waiting for ever for acknowledgements that were dropped.
func TestReleaseHeldFailureClosesConnection(t *testing.T) {
	lc, client := acceptedConn(t, &blobHeld{blob: []byte("puback")})
	if err := lc.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	lc.ReleaseHeld()
	client.SetReadDeadline(time.Now().Add(wait))
	if n, err := client.Read(make([]byte, 16)); err == nil {
		t.Fatalf("read %d bytes, want the connection closed", n)
	} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection left open after a failed release")
	}
}

// acceptedConn returns the listener's side of a plain TCP connection
// (holding h, read until it closes) and the client's.
func acceptedConn(t *testing.T, h Held) (*Conn, net.Conn) {
	t.Helper()
	conns := make(chan *Conn, 1)
	l := startTCP(t, Options{}, func(_ string, c net.Conn) error {
		c.(*Conn).SetHeld(h) // by the reader, as the ingest hook does
		conns <- c.(*Conn)
		return readAll("", c)
	})
	client := dial(t, l.Address())
	return <-conns, client
}
