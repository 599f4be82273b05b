package benchcompare

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Errors of the load client.
var (
	ErrConnRefused = errors.New("benchcompare: CONNECT refused")
	ErrProtocol    = errors.New("benchcompare: unexpected MQTT packet")
)

// client is a minimal MQTT 3.1.1 publisher: CONNECT (clean session, user
// and password), QoS 1 PUBLISH with at most `window` packets awaiting their
// PUBACK, DISCONNECT. Raw packets keep the load generator cheap and
// identical for both brokers. One goroutine publishes; one reads PUBACKs.
type client struct {
	conn   net.Conn
	w      *bufio.Writer // guarded by the publishing goroutine
	slots  chan struct{} // one token per packet in flight
	acked  atomic.Int64
	nextID uint16 // guarded by the publishing goroutine

	readErr  error // set before readDone is closed
	readDone chan struct{}
}

// dial connects and authenticates; the returned client's reader runs until
// the connection closes.
func dial(addr, clientID, user, pass string, window int) (*client, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c := &client{conn: conn, w: bufio.NewWriterSize(conn, 32<<10), slots: make(chan struct{}, window), readDone: make(chan struct{})}
	var vh []byte
	vh = appendStr(vh, "MQTT")
	vh = append(vh, 4, 0x80|0x40|0x02, 0, 60) // level 4; user, password, clean session; keepalive 60 s
	vh = appendStr(vh, clientID)
	vh = appendStr(vh, user)
	vh = appendStr(vh, pass)
	pkt := appendHeader(nil, 0x10, len(vh))
	if _, err := conn.Write(append(pkt, vh...)); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var ack [4]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		conn.Close()
		return nil, fmt.Errorf("benchcompare: read CONNACK: %w", err)
	}
	if ack[0] != 0x20 || ack[1] != 2 {
		conn.Close()
		return nil, fmt.Errorf("%w: % x instead of CONNACK", ErrProtocol, ack)
	}
	if ack[3] != 0 {
		conn.Close()
		return nil, fmt.Errorf("%w: return code %d for %s", ErrConnRefused, ack[3], clientID)
	}
	_ = conn.SetReadDeadline(time.Time{})
	go c.readLoop()
	return c, nil
}

// readLoop consumes PUBACKs (and ignores anything else a broker may send).
func (c *client) readLoop() {
	defer close(c.readDone)
	r := bufio.NewReaderSize(c.conn, 16<<10)
	for {
		h, err := r.ReadByte()
		if err != nil {
			c.readErr = err
			return
		}
		n, err := readVarint(r)
		if err != nil {
			c.readErr = err
			return
		}
		if _, err := r.Discard(n); err != nil {
			c.readErr = err
			return
		}
		if h>>4 == 4 { // PUBACK
			c.acked.Add(1)
			<-c.slots
		}
	}
}

// publish sends one QoS 1 PUBLISH, waiting for a free slot in the window.
// It flushes buffered packets before it blocks, so packets go out as soon
// as the window is full or the caller calls flush.
func (c *client) publish(topic string, payload []byte) error {
	select {
	case c.slots <- struct{}{}:
	default:
		if err := c.w.Flush(); err != nil {
			return err
		}
		select {
		case c.slots <- struct{}{}:
		case <-c.readDone:
			return fmt.Errorf("benchcompare: connection lost: %w", c.readErr)
		}
	}
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	var hdr [8]byte
	h := appendHeader(hdr[:0], 0x32, 2+len(topic)+2+len(payload))
	_, _ = c.w.Write(h)
	_, _ = c.w.Write([]byte{byte(len(topic) >> 8), byte(len(topic))})
	_, _ = c.w.WriteString(topic)
	_, _ = c.w.Write([]byte{byte(c.nextID >> 8), byte(c.nextID)})
	_, err := c.w.Write(payload)
	return err
}

// drain flushes and waits until every publish is acknowledged or the
// connection is lost.
func (c *client) drain(timeout time.Duration) error {
	if err := c.w.Flush(); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for len(c.slots) > 0 {
		select {
		case <-c.readDone:
			return fmt.Errorf("benchcompare: connection lost with %d unacknowledged: %w", len(c.slots), c.readErr)
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("benchcompare: %d publishes unacknowledged after %v", len(c.slots), timeout)
		}
	}
	return nil
}

// close sends DISCONNECT and closes the socket.
func (c *client) close() {
	_, _ = c.w.Write([]byte{0xE0, 0})
	_ = c.w.Flush()
	_ = c.conn.Close()
	<-c.readDone
}

func appendStr(b []byte, s string) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

func appendHeader(b []byte, first byte, remaining int) []byte {
	b = append(b, first)
	for {
		d := byte(remaining % 128)
		remaining /= 128
		if remaining > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if remaining == 0 {
			return b
		}
	}
}

func readVarint(r *bufio.Reader) (int, error) {
	n, mul := 0, 1
	for i := 0; i < 4; i++ {
		d, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		n += int(d&0x7f) * mul
		if d&0x80 == 0 {
			return n, nil
		}
		mul *= 128
	}
	return 0, fmt.Errorf("%w: remaining length over 4 bytes", ErrProtocol)
}

// loadResult is what a load run acknowledged.
type loadResult struct {
	Sent, Acked int64
	Err         error
}

// device is one publishing identity.
type device struct{ id, user, pass string }

// runLoad connects every device, then publishes frames frames per device
// (frame i stamped baseMs+i) on vehicles/<id>/telemetry, and waits for the
// acknowledgements. rate > 0 paces each device at rate frames per second
// (each frame flushed on its own, the devices' ticks spread evenly over one
// period, as a fleet of vehicles publishes); rate 0 publishes as fast as
// the window allows. started is called once every client is connected,
// just before the first publish.
func runLoad(addr string, devs []device, frames, window int, rate float64, json bool, baseMs int64, started func()) loadResult {
	clients := make([]*client, len(devs))
	for i, d := range devs {
		c, err := dial(addr, d.id, d.user, d.pass, window)
		if err != nil {
			for _, c := range clients[:i] {
				c.close()
			}
			return loadResult{Err: fmt.Errorf("connect %s: %w", d.id, err)}
		}
		clients[i] = c
	}
	started()
	var period time.Duration
	if rate > 0 {
		period = time.Duration(float64(time.Second) / rate)
	}
	t0 := time.Now()
	var sent atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(devs))
	for i, d := range devs {
		wg.Add(1)
		go func(i int, c *client, d device) {
			defer wg.Done()
			enc := newFrameEncoder(d.id, json)
			topic := "vehicles/" + d.id + "/telemetry"
			// Paced: frame seq is due at t0 + offset + (seq-1)·period, so
			// a late tick does not shift the ones after it.
			offset := period * time.Duration(i) / time.Duration(len(devs))
			for seq := 1; seq <= frames; seq++ {
				if period > 0 {
					time.Sleep(time.Until(t0.Add(offset + time.Duration(seq-1)*period)))
				}
				if err := c.publish(topic, enc.frame(uint64(seq), baseMs+int64(seq))); err != nil {
					errs <- fmt.Errorf("%s: %w", d.id, err)
					return
				}
				if period > 0 {
					if err := c.w.Flush(); err != nil {
						errs <- fmt.Errorf("%s: %w", d.id, err)
						return
					}
				}
				sent.Add(1)
			}
			if err := c.drain(5 * time.Minute); err != nil {
				errs <- fmt.Errorf("%s: %w", d.id, err)
			}
		}(i, clients[i], d)
	}
	wg.Wait()
	close(errs)
	res := loadResult{Sent: sent.Load()}
	for _, c := range clients {
		res.Acked += c.acked.Load()
		c.close()
	}
	res.Err = <-errs
	return res
}
