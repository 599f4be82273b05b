package benchcompare

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
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
// the process into the floor server (ServeFloor on the flag's address).
const FloorFlag = "serve-floor"

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
func startFloor(dir string) (*floorProc, error) {
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
	p, err := startProc("floor", self, []string{"-" + FloorFlag, addr}, nil, filepath.Join(dir, "floor.log"), 30*time.Second, tcpReady(addr))
	if err != nil {
		return nil, err
	}
	return &floorProc{proc: p, mqttAddr: addr}, nil
}

// ErrFloorBinary: the floor pipeline needs the cmd/bench-compare program
// (it re-executes itself); a test binary cannot serve it.
var ErrFloorBinary = errors.New("benchcompare: the floor pipeline runs from cmd/bench-compare only")

func runFloor(o Options, devs []device) Result {
	r := Result{Pipeline: "floor: Go goroutine per connection, PUBACK only"}
	if !o.FloorFromSelf {
		r.Err = ErrFloorBinary
		return r
	}
	fl, err := startFloor(filepath.Join(o.workDir, "floor"))
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
