package benchcompare

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/telegate/telegate/internal/probe"
)

// The floor pipeline is a reference point, not a product: the least a Go
// MQTT server with one goroutine per connection (the model of the gateway's
// broker, mochi-mqtt) does for a QoS 1 frame. It reads the PUBLISH and
// writes its PUBACK at once; it stores nothing, checks no password and
// decodes no payload. Its CPU per frame on the same machine, under the
// same load, is the part of the gateway's that comes from the connection
// model and the operating system (reads, writes, wake-ups) rather than
// from the gateway's own work. Run in its own process (ServeFloor) so that
// its CPU is measured apart from the load generator's.

// FloorFlag is the hidden command-line flag of cmd/bench-compare that turns
// the process into the floor server: ServeFloor on the flag's address, or
// ServeFloorEpoll when the address starts with FloorEpollPrefix.
const (
	FloorFlag        = "serve-floor"
	FloorEpollPrefix = "epoll/"
)

// ServeFloorFlag serves the floor named by the flag's value (FloorFlag).
func ServeFloorFlag(v string) error {
	addr, epoll := strings.CutPrefix(v, FloorEpollPrefix)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if epoll {
		return ServeFloorEpoll(l.(*net.TCPListener))
	}
	return ServeFloor(l)
}

// ServeFloor accepts MQTT 3.1.1 connections on l until it fails: CONNECT is
// answered with CONNACK 0, each QoS 1 PUBLISH with its PUBACK (one write
// each, as the gateway writes them), PINGREQ with PINGRESP; DISCONNECT or
// any error closes the connection.
func ServeFloor(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go floorConn(c)
	}
}

func floorConn(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 4<<10)
	var body []byte
	for {
		h, err := r.ReadByte()
		if err != nil {
			return
		}
		n, err := readVarint(r)
		if err != nil || n > 1<<20 {
			return
		}
		if cap(body) < n {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		var out []byte
		switch h >> 4 {
		case 1: // CONNECT
			out = []byte{0x20, 2, 0, 0}
		case 3: // PUBLISH
			if (h>>1)&3 == 0 || len(body) < 2 {
				continue
			}
			tl := int(body[0])<<8 | int(body[1])
			if len(body) < 2+tl+2 {
				return
			}
			id := body[2+tl : 2+tl+2]
			out = []byte{0x40, 2, id[0], id[1]}
		case 12: // PINGREQ
			out = []byte{0xD0, 0}
		case 14: // DISCONNECT
			return
		default:
			continue
		}
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// floorProc is the floor server's process.
type floorProc struct {
	proc     *proc
	mqttAddr string
}

// startFloor re-executes this program (cmd/bench-compare) as the floor
// server on a free loopback port.
func startFloor(dir string, epoll bool) (*floorProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	addr, err := probe.FreeAddr()
	if err != nil {
		return nil, err
	}
	v := addr
	if epoll {
		v = FloorEpollPrefix + addr
	}
	p, err := startProc("floor", self, []string{"-" + FloorFlag, v}, nil, filepath.Join(dir, "floor.log"), 30*time.Second, tcpReady(addr))
	if err != nil {
		return nil, err
	}
	return &floorProc{proc: p, mqttAddr: addr}, nil
}

// ErrFloorBinary: the floor pipeline needs the cmd/bench-compare program
// (it re-executes itself); a test binary cannot serve it.
var ErrFloorBinary = errors.New("benchcompare: the floor pipeline runs from cmd/bench-compare only")

func runFloor(o Options, devs []device, epoll bool) Result {
	r := Result{Pipeline: "floor: Go goroutine per connection, PUBACK only"}
	if epoll {
		r.Pipeline = "floor: one epoll loop, PUBACK only"
	}
	if !o.FloorFromSelf {
		r.Err = ErrFloorBinary
		return r
	}
	fl, err := startFloor(filepath.Join(o.workDir, "floor"), epoll)
	if err != nil {
		r.Err = err
		return r
	}
	defer fl.proc.stop()
	var m *meter
	base := time.Now().UnixMilli() - int64(o.Frames) - 60_000
	load := runLoad(fl.mqttAddr, devs[:len(devs)-1], o.Frames, o.Inflight, o.Rate, false, base, func() { m = startMeter(0, fl.proc.pid()) })
	r.Sent, r.Acked, r.Err = load.Sent, load.Acked, load.Err
	if m == nil {
		return r
	}
	// Nothing is stored: the floor's "stored" is what it acknowledged.
	r.Stored = r.Acked
	m.stop(&r, time.Now())
	if r.Acked != r.Sent {
		r.Err = errors.Join(r.Err, fmt.Errorf("benchcompare: floor acknowledged %d of %d", r.Acked, r.Sent))
	}
	return r
}

// ServeFloorEpoll is the floor of the other connection model: one
// goroutine (locked to its thread) waits on one level-triggered epoll
// instance for every connection, reads what is ready with read(2) and
// answers each complete packet as ServeFloor does, one write(2) per
// PUBACK. No goroutine is woken per frame; the operating system's work per
// frame (the read, the write, the wake-up of the loop when it was idle)
// stays. Linux only.
func ServeFloorEpoll(l *net.TCPListener) error {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("benchcompare: epoll: %w", err)
	}
	type econn struct {
		c   *net.TCPConn // keeps the descriptor open
		buf []byte       // unparsed bytes
	}
	var mu sync.Mutex // guards conns between the accept goroutine and the loop
	conns := map[int]*econn{}
	acceptErr := make(chan error, 1)
	go func() {
		for {
			c, err := l.AcceptTCP()
			if err != nil {
				acceptErr <- err // the loop sees it at its next wake-up
				return
			}
			rc, err := c.SyscallConn()
			if err != nil {
				c.Close()
				continue
			}
			var fd int
			_ = rc.Control(func(f uintptr) { fd = int(f) })
			mu.Lock()
			conns[fd] = &econn{c: c, buf: make([]byte, 0, 4<<10)}
			mu.Unlock()
			if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}); err != nil {
				c.Close()
			}
		}
	}()
	runtime.LockOSThread()
	events := make([]syscall.EpollEvent, 256)
	var rd [64 << 10]byte
	defer func() {
		syscall.Close(ep)
		mu.Lock()
		for _, ec := range conns {
			ec.c.Close()
		}
		mu.Unlock()
	}()
	for {
		// Closing an epoll descriptor does not wake a thread waiting on
		// it: the wait is bounded, and the listener's end is checked after.
		n, err := syscall.EpollWait(ep, events, 200)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("benchcompare: epoll wait: %w", err)
		}
		select {
		case err := <-acceptErr:
			return err
		default:
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			mu.Lock()
			ec := conns[fd]
			mu.Unlock()
			if ec == nil {
				continue
			}
			m, err := syscall.Read(fd, rd[:])
			if err == syscall.EAGAIN {
				continue
			}
			if err != nil || m == 0 || !floorAnswer(fd, &ec.buf, rd[:m]) {
				_ = syscall.EpollCtl(ep, syscall.EPOLL_CTL_DEL, fd, nil)
				mu.Lock()
				delete(conns, fd)
				mu.Unlock()
				ec.c.Close()
			}
		}
	}
}

// floorAnswer appends in to *pending, answers every complete packet there
// on fd and keeps the incomplete rest. false: close the connection.
func floorAnswer(fd int, pending *[]byte, in []byte) bool {
	b := append(*pending, in...)
	for len(b) >= 2 {
		n, k, ok := varintAt(b[1:])
		if !ok {
			break
		}
		if n > 1<<20 {
			return false
		}
		end := 1 + k + n
		if len(b) < end {
			break
		}
		h, body := b[0], b[1+k:end]
		var out []byte
		switch h >> 4 {
		case 1:
			out = []byte{0x20, 2, 0, 0}
		case 3:
			if (h>>1)&3 != 0 && len(body) >= 2 {
				tl := int(body[0])<<8 | int(body[1])
				if len(body) < 2+tl+2 {
					return false
				}
				out = []byte{0x40, 2, body[2+tl], body[2+tl+1]}
			}
		case 12:
			out = []byte{0xD0, 0}
		case 14:
			return false
		}
		if out != nil {
			if _, err := syscall.Write(fd, out); err != nil {
				return false
			}
		}
		b = b[end:]
	}
	*pending = append((*pending)[:0], b...)
	return true
}

// varintAt decodes an MQTT remaining length at the start of b: the value,
// its length in bytes, and whether it is complete.
func varintAt(b []byte) (n, k int, ok bool) {
	mul := 1
	for k = 0; k < 4 && k < len(b); k++ {
		n += int(b[k]&0x7f) * mul
		if b[k]&0x80 == 0 {
			return n, k + 1, true
		}
		mul *= 128
	}
	return 0, 0, false
}
