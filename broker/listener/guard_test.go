package listener

import (
	"errors"
	"testing"
)

func pkt(typeFlags byte, body ...byte) []byte {
	n := len(body)
	var l []byte
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		l = append(l, b)
		if n == 0 {
			break
		}
	}
	return append(append([]byte{typeFlags}, l...), body...)
}

// A valid MQTT 5 session: CONNECT with properties and a will, PUBLISH with
// properties (two user properties), SUBSCRIBE with a subscription id,
// UNSUBSCRIBE, PUBACK, PINGREQ, DISCONNECT with a reason and properties.
func validV5Stream() []byte {
	var s []byte
	s = append(s, pkt(0x10,
		0, 4, 'M', 'Q', 'T', 'T', 5, 0xC6, 0, 30, // flags: user, pass, will, clean
		5, 0x11, 0, 0, 0, 60, // session expiry
		0, 1, 'c', // client id
		2, 0x01, 1, // will properties: payload format 1
		0, 1, 't', 0, 1, 'p', // will topic, payload
		0, 1, 'u', 0, 1, 'p')...)
	s = append(s, pkt(0x32, 0, 1, 't', 0, 7,
		10, 0x26, 0, 1, 'k', 0, 1, 'v', 0x23, 0, 1, // user property, topic alias 1
		'x')...)
	s = append(s, pkt(0x82, 0, 8, 2, 0x0B, 5, 0, 3, 'a', '/', '#', 0x01)...)
	s = append(s, pkt(0xA2, 0, 9, 0, 0, 3, 'a', '/', '#')...)
	s = append(s, pkt(0x40, 0, 3)...)
	s = append(s, pkt(0xC0)...)
	s = append(s, pkt(0xE0, 0x00, 5, 0x11, 0, 0, 0, 0)...)
	return s
}

// TestGuardChunking feeds a valid stream in every chunk size: never an
// error, every byte delivered.
func TestGuardChunking(t *testing.T) {
	stream := validV5Stream()
	for size := 1; size <= len(stream); size++ {
		g := &guard{maxPacket: 1024}
		for i := 0; i < len(stream); i += size {
			chunk := stream[i:min(i+size, len(stream))]
			n, err := g.feed(chunk)
			if err != nil || n != len(chunk) {
				t.Fatalf("chunk size %d at %d: %d/%d delivered: %v", size, i, n, len(chunk), err)
			}
		}
		if g.packets != 7 {
			t.Fatalf("chunk size %d: %d packets", size, g.packets)
		}
	}
}

// TestGuardWithholdsBadPacket: a violation is reported and the offending
// packet is never delivered whole, whatever the chunking.
func TestGuardWithholdsBadPacket(t *testing.T) {
	good := pkt(0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 30, 0, 1, 'c')
	bad := map[string][]byte{
		"pingreq with body":        pkt(0xC0, 0),
		"puback id 0":              pkt(0x40, 0, 0),
		"subscribe flags 0":        pkt(0x80, 0, 1, 0, 1, 'a', 1),
		"subscribe empty filter":   pkt(0x82, 0, 1, 0, 0, 1),
		"publish qos 3":            pkt(0x36, 0, 1, 't', 0, 1),
		"non-minimal length":       {0xC0, 0x80, 0x00},
		"second connect":           good,
		"suback from client":       pkt(0x90, 0, 1, 0),
		"five length bytes":        {0x30, 0x80, 0x80, 0x80, 0x80, 0x01},
		"over max size":            pkt(0x30, make([]byte, 2000)...),
		"v3 disconnect with body":  pkt(0xE0, 0),
		"subscribe reserved bits":  pkt(0x82, 0, 1, 0, 1, 'a', 0x05),
		"unsubscribe no filter":    pkt(0xA2, 0, 1),
		"publish topic past end":   pkt(0x30, 0, 9, 't'),
		"acknowledgement too long": pkt(0x40, 0, 1, 0),
	}
	for name, b := range bad {
		for _, size := range []int{1, 3, len(b)} {
			g := &guard{maxPacket: 1024}
			if n, err := g.feed(good); err != nil || n != len(good) {
				t.Fatalf("connect: %v", err)
			}
			delivered := 0
			var err error
			for i := 0; i < len(b) && err == nil; i += size {
				var n int
				n, err = g.feed(b[i:min(i+size, len(b))])
				delivered += n
			}
			if !errors.Is(err, ErrProtocolViolation) {
				t.Fatalf("%s (chunk %d): err = %v", name, size, err)
			}
			if delivered >= len(b) {
				t.Fatalf("%s (chunk %d): bad packet delivered whole", name, size)
			}
			if _, err := g.feed([]byte{0xC0, 0x00}); !errors.Is(err, ErrProtocolViolation) {
				t.Fatalf("%s: guard not sticky", name)
			}
		}
	}
}

func TestGuardFirstPacketMustBeConnect(t *testing.T) {
	g := &guard{}
	if n, err := g.feed([]byte{0xC0, 0x00}); n != 0 || !errors.Is(err, ErrProtocolViolation) {
		t.Fatalf("%d %v", n, err)
	}
}

// TestGuardUserPropertyPair: a user property (0x26) is a UTF-8 string pair,
// name then value; the guard reads both and refuses a pair whose name or
// value is missing or runs past the property block.
func TestGuardUserPropertyPair(t *testing.T) {
	cases := []struct {
		name  string
		block []byte // property block with its length prefix
		ok    bool
	}{
		{"name and value", []byte{7, 0x26, 0, 1, 'k', 0, 1, 'v'}, true},
		{"empty name and value", []byte{5, 0x26, 0, 0, 0, 0}, true},
		{"two pairs", []byte{14, 0x26, 0, 1, 'k', 0, 1, 'v', 0x26, 0, 1, 'k', 0, 1, 'w'}, true},
		{"pair then byte property", []byte{9, 0x26, 0, 1, 'k', 0, 1, 'v', 0x01, 1}, true},
		{"value missing", []byte{4, 0x26, 0, 1, 'k'}, false},
		{"value length cut", []byte{5, 0x26, 0, 1, 'k', 0}, false},
		{"value past block", []byte{7, 0x26, 0, 1, 'k', 0, 5, 'v'}, false},
		{"name past block", []byte{4, 0x26, 0, 9, 'k'}, false},
	}
	for _, c := range cases {
		r := reader{b: c.block}
		err := r.properties(ptPublish)
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
		}
		if err == nil && r.left() != 0 {
			t.Errorf("%s: %d bytes left after the block", c.name, r.left())
		}
	}
}

// TestGuardConnectReservedFlag: a CONNECT (3.1.1 or 5) whose reserved flag
// bit 0 is set is withheld ([MQTT-3.1.2-3]); the same CONNECT without it
// passes.
func TestGuardConnectReservedFlag(t *testing.T) {
	for _, level := range []byte{4, 5} {
		for _, flags := range []byte{0x02, 0x03} {
			body := []byte{0, 4, 'M', 'Q', 'T', 'T', level, flags, 0, 30}
			if level == 5 {
				body = append(body, 0)
			}
			b := pkt(0x10, append(body, 0, 1, 'c')...)
			g := &guard{}
			n, err := g.feed(b)
			if bad := flags&0x01 != 0; bad != errors.Is(err, ErrProtocolViolation) || bad == (n == len(b)) {
				t.Fatalf("level %d flags %02x: delivered %d of %d, err %v", level, flags, n, len(b), err)
			}
		}
	}
}
