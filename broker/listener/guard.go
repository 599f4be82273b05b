package listener

import (
	"errors"
	"fmt"
)

// ErrProtocolViolation is returned by Conn.Read when the client sent a
// packet that breaks the MQTT 3.1.1 / 5 wire rules the guard checks. The
// offending packet is never delivered whole, so mochi cannot act on it; it
// sees a read error and ends the connection.
var ErrProtocolViolation = errors.New("listener: MQTT protocol violation")

// guardKeepBuffer is the largest body buffer a guard keeps between packets;
// a larger one (after a big packet) is released so idle connections stay
// small.
const guardKeepBuffer = 4 << 10

// MQTT control packet types.
const (
	ptConnect     = 1
	ptConnack     = 2
	ptPublish     = 3
	ptPuback      = 4
	ptPubrec      = 5
	ptPubrel      = 6
	ptPubcomp     = 7
	ptSubscribe   = 8
	ptSuback      = 9
	ptUnsubscribe = 10
	ptUnsuback    = 11
	ptPingreq     = 12
	ptPingresp    = 13
	ptDisconnect  = 14
	ptAuth        = 15
)

// guard checks the byte stream a client sends, packet by packet, before
// mochi decodes it. It covers what mochi v2.7.9 tolerates (see
// docs/broker.md): reserved and server-only packet types, wrong fixed
// header flags, non-minimal remaining lengths, packets on the wrong side of
// CONNECT, packet identifier 0 on acknowledgements and subscriptions,
// empty topic filters, reserved subscription option bits, and MQTT 5
// property blocks with unknown, misplaced, duplicated or out-of-range
// properties. Strings (UTF-8, NUL) and the remaining rules are left to
// mochi, which checks them.
//
// A guard is used by one reader at a time (mochi's read loop).
type guard struct {
	maxPacket uint32 // 0: no limit

	level     byte // protocol level from CONNECT; 0 before
	packets   int  // complete packets seen
	publishes int  // complete PUBLISH packets seen (read batching counts them)
	pubacks   int  // complete PUBACK packets seen (read batching: a command was acknowledged)

	// Current packet.
	state     int // 0 header, 1 length, 2 body
	typ, fl   byte
	remaining int
	lenBytes  int
	mul       int
	body      []byte
	err       error
	// tooLarge is set when the violation is a packet over maxPacket: the
	// one violation an MQTT 5 client is told about (DISCONNECT 0x95).
	tooLarge bool
	told     bool // the client was sent its DISCONNECT 0x95
}

// feed inspects b, the next bytes from the client. It returns how many
// leading bytes may be delivered to mochi and, after a violation, the
// error: the bytes from the violation on are withheld.
func (g *guard) feed(b []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	for i := 0; i < len(b); {
		c := b[i]
		switch g.state {
		case 0:
			g.typ, g.fl = c>>4, c&0x0F
			g.remaining, g.lenBytes, g.mul = 0, 0, 1
			g.body = g.body[:0]
			if err := g.checkHeader(); err != nil {
				return g.fail(i, err)
			}
			g.state = 1
			i++
		case 1:
			g.lenBytes++
			g.remaining += int(c&0x7F) * g.mul
			g.mul *= 128
			switch {
			case c&0x80 != 0 && g.lenBytes == 4:
				return g.fail(i, errors.New("remaining length longer than 4 bytes"))
			case c&0x80 != 0:
				i++
				continue
			case c == 0 && g.lenBytes > 1:
				return g.fail(i, errors.New("remaining length not minimally encoded"))
			case g.maxPacket > 0 && uint64(1+g.lenBytes+g.remaining) > uint64(g.maxPacket):
				// The whole packet counts: fixed header byte, length
				// bytes and body (MQTT 5 section 3.1.2.11.4).
				g.tooLarge = true
				return g.fail(i, fmt.Errorf("packet of %d bytes exceeds the maximum %d", 1+g.lenBytes+g.remaining, g.maxPacket))
			}
			if g.remaining == 0 {
				if err := g.complete(); err != nil {
					return g.fail(i, err)
				}
				g.state = 0
			} else {
				g.state = 2
			}
			i++
		case 2:
			n := min(len(b)-i, g.remaining-len(g.body))
			g.body = append(g.body, b[i:i+n]...)
			i += n
			if len(g.body) < g.remaining {
				continue
			}
			if err := g.complete(); err != nil {
				return g.fail(i-1, err)
			}
			if cap(g.body) > guardKeepBuffer {
				g.body = nil
			}
			g.state = 0
		}
	}
	return len(b), nil
}

func (g *guard) fail(at int, err error) (int, error) {
	g.err = fmt.Errorf("%w: %w", ErrProtocolViolation, err)
	return at, g.err
}

// checkHeader validates the first byte of a packet.
func (g *guard) checkHeader() error {
	switch g.typ {
	case 0:
		return errors.New("reserved packet type 0")
	case ptConnack, ptSuback, ptUnsuback, ptPingresp:
		return fmt.Errorf("packet type %d is sent by servers only", g.typ)
	case ptAuth:
		return errors.New("AUTH: enhanced authentication is not supported")
	}
	if g.packets == 0 && g.typ != ptConnect {
		return fmt.Errorf("first packet is type %d, not CONNECT", g.typ)
	}
	if g.packets > 0 && g.typ == ptConnect {
		return errors.New("second CONNECT")
	}
	switch g.typ {
	case ptPublish:
		qos := g.fl >> 1 & 3
		if qos == 3 {
			return errors.New("PUBLISH with QoS 3")
		}
		if qos == 0 && g.fl&0x08 != 0 {
			return errors.New("PUBLISH QoS 0 with DUP set")
		}
	case ptPubrel, ptSubscribe, ptUnsubscribe:
		if g.fl != 0x02 {
			return fmt.Errorf("packet type %d with flags %#x, want 0x2", g.typ, g.fl)
		}
	default:
		if g.fl != 0 {
			return fmt.Errorf("packet type %d with reserved flags %#x", g.typ, g.fl)
		}
	}
	return nil
}

// complete validates a whole packet (g.body holds its body).
func (g *guard) complete() error {
	g.packets++
	switch g.typ {
	case ptPublish:
		g.publishes++
	case ptPuback:
		g.pubacks++
	}
	r := reader{b: g.body}
	v5 := g.level == 5
	switch g.typ {
	case ptConnect:
		return g.checkConnect(&r)
	case ptPingreq:
		if len(g.body) != 0 {
			return errors.New("PINGREQ with a body")
		}
	case ptDisconnect:
		if !v5 && len(g.body) != 0 {
			return errors.New("DISCONNECT with a body")
		}
		if v5 && len(g.body) > 1 {
			r.skip(1)
			return r.properties(ptDisconnect)
		}
	case ptPuback, ptPubrec, ptPubrel, ptPubcomp:
		id, ok := r.u16()
		if !ok || id == 0 {
			return fmt.Errorf("acknowledgement type %d without a packet identifier", g.typ)
		}
		switch {
		case !v5 && r.left() != 0:
			return fmt.Errorf("acknowledgement type %d longer than 2 bytes", g.typ)
		case v5 && r.left() > 1:
			r.skip(1)
			return r.properties(ptPuback)
		}
	case ptPublish:
		if !r.str() {
			return errors.New("PUBLISH topic runs past the packet")
		}
		if g.fl>>1&3 > 0 {
			if id, ok := r.u16(); !ok || id == 0 {
				return errors.New("PUBLISH QoS > 0 with packet identifier 0")
			}
		}
		if v5 {
			return r.properties(ptPublish)
		}
	case ptSubscribe, ptUnsubscribe:
		if id, ok := r.u16(); !ok || id == 0 {
			return errors.New("subscription packet identifier 0")
		}
		if v5 {
			if err := r.properties(g.typ); err != nil {
				return err
			}
		}
		if r.left() == 0 {
			return errors.New("no topic filter")
		}
		for r.left() > 0 {
			n, ok := r.u16()
			if !ok || n == 0 || !r.skip(int(n)) {
				return errors.New("empty or truncated topic filter")
			}
			if g.typ == ptUnsubscribe {
				continue
			}
			opts, ok := r.byte()
			switch {
			case !ok:
				return errors.New("topic filter without options")
			case opts&3 == 3:
				return errors.New("subscription QoS 3")
			case !v5 && opts&^3 != 0:
				return errors.New("reserved subscription option bits set")
			case v5 && (opts&0xC0 != 0 || opts>>4&3 == 3):
				return errors.New("reserved subscription option bits set")
			}
		}
	}
	return nil
}

// checkConnect validates a CONNECT's variable header and, for MQTT 5, its
// property blocks. Other protocol names and levels are left to mochi,
// which refuses them with a CONNACK.
func (g *guard) checkConnect(r *reader) error {
	name, ok := r.bytes()
	if !ok {
		return errors.New("CONNECT protocol name runs past the packet")
	}
	level, ok := r.byte()
	if !ok {
		return errors.New("CONNECT without protocol level")
	}
	g.level = level
	if string(name) != "MQTT" || (level != 4 && level != 5) {
		return nil
	}
	flags, ok := r.byte()
	if !ok || !r.skip(2) {
		return errors.New("CONNECT header truncated")
	}
	// The reserved flag must be 0: MQTT 3.1.1 [MQTT-3.1.2-3] (disconnect,
	// no CONNACK), MQTT 5 [MQTT-3.1.2-3] (Malformed Packet: closed). mochi
	// answered CONNACK 0x82 (0x05 for 3.1.1).
	if flags&0x01 != 0 {
		return errors.New("CONNECT reserved flag set")
	}
	if level != 5 {
		return nil
	}
	if err := r.properties(ptConnect); err != nil {
		return err
	}
	if flags&0x04 == 0 {
		return nil
	}
	if !r.str() { // client id
		return errors.New("CONNECT client id runs past the packet")
	}
	return r.properties(propWill)
}

// propWill marks the will property block of a CONNECT in property checks.
const propWill = 0xFF

// Property value encodings.
const (
	pvByte = iota + 1
	pvU16
	pvU32
	pvVarint
	pvString
	pvBinary
	pvPair
)

// propSpec describes an MQTT 5 property a client may send.
type propSpec struct {
	kind    int
	allowed []byte // packet types (propWill for will properties)
	multi   bool   // may appear more than once
	nonZero bool
	bool01  bool // byte that must be 0 or 1
}

var clientProps = map[byte]propSpec{
	0x01: {kind: pvByte, allowed: []byte{ptPublish, propWill}, bool01: true}, // payload format indicator
	0x02: {kind: pvU32, allowed: []byte{ptPublish, propWill}},                // message expiry interval
	0x03: {kind: pvString, allowed: []byte{ptPublish, propWill}},             // content type
	0x08: {kind: pvString, allowed: []byte{ptPublish, propWill}},             // response topic
	0x09: {kind: pvBinary, allowed: []byte{ptPublish, propWill}},             // correlation data
	0x0B: {kind: pvVarint, allowed: []byte{ptSubscribe}, nonZero: true},      // subscription identifier
	0x11: {kind: pvU32, allowed: []byte{ptConnect, ptDisconnect}},            // session expiry interval
	0x15: {kind: pvString, allowed: []byte{}},                                // authentication method: unsupported
	0x16: {kind: pvBinary, allowed: []byte{}},                                // authentication data: unsupported
	0x17: {kind: pvByte, allowed: []byte{ptConnect}, bool01: true},           // request problem information
	0x18: {kind: pvU32, allowed: []byte{propWill}},                           // will delay interval
	0x19: {kind: pvByte, allowed: []byte{ptConnect}, bool01: true},           // request response information
	0x1F: {kind: pvString, allowed: []byte{ptPuback, ptDisconnect}},          // reason string
	0x21: {kind: pvU16, allowed: []byte{ptConnect}, nonZero: true},           // receive maximum
	0x22: {kind: pvU16, allowed: []byte{ptConnect}},                          // topic alias maximum
	0x23: {kind: pvU16, allowed: []byte{ptPublish}, nonZero: true},           // topic alias
	0x26: {kind: pvPair, allowed: []byte{ptConnect, ptPublish, ptPuback, ptSubscribe, // user property
		ptUnsubscribe, ptDisconnect, propWill}, multi: true},
	0x27: {kind: pvU32, allowed: []byte{ptConnect}, nonZero: true}, // maximum packet size
}

// reader walks a packet body.
type reader struct {
	b []byte
	i int
}

func (r *reader) left() int { return len(r.b) - r.i }

func (r *reader) skip(n int) bool {
	if n < 0 || r.left() < n {
		r.i = len(r.b)
		return false
	}
	r.i += n
	return true
}

func (r *reader) byte() (byte, bool) {
	if r.left() < 1 {
		return 0, false
	}
	r.i++
	return r.b[r.i-1], true
}

func (r *reader) u16() (uint16, bool) {
	if r.left() < 2 {
		r.i = len(r.b)
		return 0, false
	}
	r.i += 2
	return uint16(r.b[r.i-2])<<8 | uint16(r.b[r.i-1]), true
}

func (r *reader) bytes() ([]byte, bool) {
	n, ok := r.u16()
	if !ok || r.left() < int(n) {
		return nil, false
	}
	r.i += int(n)
	return r.b[r.i-int(n) : r.i], true
}

func (r *reader) str() bool { _, ok := r.bytes(); return ok }

func (r *reader) varint() (int, bool) {
	v, mul := 0, 1
	for n := 0; n < 4; n++ {
		c, ok := r.byte()
		if !ok {
			return 0, false
		}
		v += int(c&0x7F) * mul
		mul *= 128
		if c&0x80 == 0 {
			return v, true
		}
	}
	return 0, false
}

// properties validates the MQTT 5 property block at the reader's position
// for packet type typ (propWill for will properties) and moves past it.
func (r *reader) properties(typ byte) error {
	n, ok := r.varint()
	if !ok || r.left() < n {
		return errors.New("property length runs past the packet")
	}
	p := reader{b: r.b[r.i : r.i+n]}
	r.i += n
	var seen [128]bool
	for p.left() > 0 {
		id, _ := p.byte()
		spec, known := clientProps[id]
		if !known || id >= 128 {
			return fmt.Errorf("unknown property %#x", id)
		}
		allowed := false
		for _, t := range spec.allowed {
			allowed = allowed || t == typ
		}
		if !allowed {
			return fmt.Errorf("property %#x not allowed here", id)
		}
		if seen[id] && !spec.multi {
			return fmt.Errorf("property %#x given twice", id)
		}
		seen[id] = true
		var v int
		switch spec.kind {
		case pvByte:
			b, ok1 := p.byte()
			v, ok = int(b), ok1
		case pvU16:
			u, ok1 := p.u16()
			v, ok = int(u), ok1
		case pvU32:
			hi, ok1 := p.u16()
			lo, ok2 := p.u16()
			v, ok = int(hi)<<16|int(lo), ok1 && ok2
		case pvVarint:
			v, ok = p.varint()
		case pvString, pvBinary:
			v, ok = 1, p.str()
		case pvPair: // name, then value: two reads, each moving p on
			name := p.str()
			v, ok = 1, name && p.str()
		}
		switch {
		case !ok:
			return fmt.Errorf("property %#x runs past its block", id)
		case spec.nonZero && v == 0:
			return fmt.Errorf("property %#x is zero", id)
		case spec.bool01 && v > 1:
			return fmt.Errorf("property %#x is %d, want 0 or 1", id, v)
		}
	}
	return nil
}
