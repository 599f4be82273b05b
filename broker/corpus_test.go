package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telegate/telegate/broker/registry"
)

// The hostile input corpus: hand-built MQTT packets that break the protocol
// in one specific way each, for every packet type. Every entry is sent
//
//   - as the first packet on a fresh TCP connection (before authentication),
//   - after a successful MQTT 3.1.1 CONNECT, and
//   - after a successful MQTT 5 CONNECT,
//
// unless its phases say otherwise. In every phase the broker must close the
// connection (possibly after a CONNACK refusal or a v5 DISCONNECT), never
// acknowledge the hostile packet, never panic, and keep serving other
// clients. To add a case, append to hostileCorpus; the two fuzz targets use
// the corpus as their seeds.

// phase is where in a connection's life a corpus entry is sent.
type phase uint8

const (
	prePhase phase = 1 << iota // first bytes after TCP connect
	v3Phase                    // after an accepted MQTT 3.1.1 CONNECT
	v5Phase                    // after an accepted MQTT 5 CONNECT

	allPhases  = prePhase | v3Phase | v5Phase
	authPhases = v3Phase | v5Phase
)

func (p phase) String() string {
	switch p {
	case prePhase:
		return "pre-auth"
	case v3Phase:
		return "v3.1.1"
	case v5Phase:
		return "v5"
	}
	return fmt.Sprintf("phase(%d)", uint8(p))
}

// hostileCase is one corpus entry.
type hostileCase struct {
	name   string
	phases phase // 0 means allPhases
	// in builds the bytes for a phase (the protocol level matters for v5
	// properties). Built lazily so the table stays declarative.
	in func(p phase) []byte
	// incomplete marks input that ends in the middle of a packet: the
	// broker cannot know it is hostile until the client gives up, so the
	// client half-closes its side after sending (a real attacker would
	// stall until the connect timeout or keepalive deadline closes it,
	// which TestConnectTimeout and TestIdleClientWithoutKeepaliveIsDropped
	// cover).
	incomplete bool
}

func (c hostileCase) runs(p phase) bool {
	return c.phases == 0 || c.phases&p != 0
}

// Constant bytes, so the corpus needs no test state.
const (
	cVIN  = vin1
	cTele = "vehicles/" + vin1 + "/telemetry"
	cCmd  = "vehicles/" + vin1 + "/cmd/#"
)

// v5 property identifiers used by the corpus.
const (
	propPayloadFormat  = 0x01
	propMessageExpiry  = 0x02
	propContentType    = 0x03
	propSubID          = 0x0B
	propSessionExpiry  = 0x11
	propAuthMethod     = 0x15
	propRequestProblem = 0x17
	propReceiveMaximum = 0x21
	propTopicAlias     = 0x23
	propMaxPacketSize  = 0x27
)

// props encodes a v5 property block (length prefix included).
func props(b ...byte) []byte { return append(encLen(len(b)), b...) }

// levelOf returns the protocol level the bytes must be encoded for.
func levelOf(p phase) byte {
	if p == v5Phase {
		return 5
	}
	return 4
}

// pub builds a PUBLISH with raw flags; for v5 an empty property block (or
// pr) is inserted after the packet id.
func pub(p phase, flags byte, topic []byte, id []byte, pr []byte, payload string) []byte {
	body := append([]byte{byte(len(topic) >> 8), byte(len(topic))}, topic...)
	body = append(body, id...)
	if levelOf(p) == 5 {
		if pr == nil {
			pr = props()
		}
		body = append(body, pr...)
	}
	return packet(0x30|flags, append(body, payload...))
}

// sub builds a SUBSCRIBE (flags 0x2) with one raw filter and options byte.
func sub(p phase, fh byte, id uint16, pr []byte, filter []byte, opts byte) []byte {
	body := []byte{byte(id >> 8), byte(id)}
	if levelOf(p) == 5 {
		if pr == nil {
			pr = props()
		}
		body = append(body, pr...)
	}
	if filter != nil {
		body = append(body, byte(len(filter)>>8), byte(len(filter)))
		body = append(append(body, filter...), opts)
	}
	return packet(fh, body)
}

// unsub builds an UNSUBSCRIBE with one raw filter (or none).
func unsub(p phase, fh byte, id uint16, filter []byte) []byte {
	body := []byte{byte(id >> 8), byte(id)}
	if levelOf(p) == 5 {
		body = append(body, props()...)
	}
	if filter != nil {
		body = append(body, byte(len(filter)>>8), byte(len(filter)))
		body = append(body, filter...)
	}
	return packet(fh, body)
}

// conn5 builds a v5 CONNECT for vin1 with a raw property block.
func conn5(pr []byte) []byte {
	body := append(encStr("MQTT"), 5, 0xC2, 0, 30)
	body = append(body, pr...)
	body = append(body, encStr(cVIN)...)
	body = append(body, encStr(cVIN)...)
	body = append(body, encStr(secrets[cVIN])...)
	return packet(0x10, body)
}

// connWithID builds a CONNECT (level 4 or 5) with a raw client id and
// username.
func connWithID(level byte, id, user []byte, willTopic []byte) []byte {
	flags := byte(0xC2)
	if willTopic != nil {
		flags |= 0x04 | 0x08 // will, will QoS 1
	}
	body := append(encStr("MQTT"), level, flags, 0, 30)
	if level == 5 {
		body = append(body, 0)
	}
	body = append(body, byte(len(id)>>8), byte(len(id)))
	body = append(body, id...)
	if willTopic != nil {
		if level == 5 {
			body = append(body, 0) // will properties
		}
		body = append(body, byte(len(willTopic)>>8), byte(len(willTopic)))
		body = append(body, willTopic...)
		body = append(body, encStr("bye")...)
	}
	body = append(body, byte(len(user)>>8), byte(len(user)))
	body = append(body, user...)
	body = append(body, encStr(secrets[cVIN])...)
	return packet(0x10, body)
}

// fifth returns a fixed header for type/flags with a five-byte remaining
// length (the varint may have at most four).
func fifth(typeFlags byte) []byte { return []byte{typeFlags, 0x80, 0x80, 0x80, 0x80, 0x01} }

// truncate keeps the fixed header and half the body of pkt.
func truncate(pkt []byte) []byte {
	hdr := 2
	for i := 1; i < len(pkt) && pkt[i]&0x80 != 0; i++ {
		hdr++
	}
	body := len(pkt) - hdr
	return pkt[:hdr+body/2]
}

// declared returns a packet whose remaining length claims n bytes but
// carries body (for impossible lengths: shorter than the mandatory fields).
func declared(typeFlags byte, n int, body ...byte) []byte {
	return append(append([]byte{typeFlags}, encLen(n)...), body...)
}

func fixed(b ...byte) func(phase) []byte { return func(phase) []byte { return b } }

// id0 is packet identifier zero.
var id0 = []byte{0, 0}

// hostileCorpus is the table of hostile inputs.
var hostileCorpus = []hostileCase{
	// --- fixed header: types, flags, remaining length, for every type ---
	{name: "reserved type 0", in: fixed(0x00, 0x00)},
	{name: "reserved type 15 in v3.1.1 (AUTH)", phases: prePhase | v3Phase, in: fixed(0xF0, 0x00)},
	{name: "AUTH after v5 connect (no enhanced auth)", phases: v5Phase, in: fixed(0xF0, 0x02, 0x18, 0x00)},
	{name: "CONNACK from client", in: fixed(0x20, 0x02, 0x00, 0x00)},
	{name: "SUBACK from client", in: fixed(0x90, 0x03, 0x00, 0x01, 0x00)},
	{name: "UNSUBACK from client", in: fixed(0xB0, 0x02, 0x00, 0x01)},
	{name: "PINGRESP from client", in: fixed(0xD0, 0x00)},
	{name: "PUBREL with flags 0", in: fixed(0x60, 0x02, 0x00, 0x01)},
	{name: "SUBSCRIBE with flags 0", in: func(p phase) []byte { return sub(p, 0x80, 1, nil, []byte(cCmd), 1) }},
	{name: "UNSUBSCRIBE with flags 0", in: func(p phase) []byte { return unsub(p, 0xA0, 1, []byte(cCmd)) }},
	{name: "PINGREQ with flags", in: fixed(0xC1, 0x00)},
	{name: "DISCONNECT with flags", in: fixed(0xE3, 0x00)},
	{name: "CONNECT with flags", phases: prePhase, in: func(phase) []byte {
		c := connectPacket(4, cVIN, cVIN, secrets[cVIN], 30)
		c[0] = 0x1F
		return c
	}},
	{name: "fifth length byte CONNECT", in: fixed(fifth(0x10)...)},
	{name: "fifth length byte PUBLISH", in: fixed(fifth(0x32)...)},
	{name: "fifth length byte PUBACK", in: fixed(fifth(0x40)...)},
	{name: "fifth length byte PUBREC", in: fixed(fifth(0x50)...)},
	{name: "fifth length byte PUBREL", in: fixed(fifth(0x62)...)},
	{name: "fifth length byte PUBCOMP", in: fixed(fifth(0x70)...)},
	{name: "fifth length byte SUBSCRIBE", in: fixed(fifth(0x82)...)},
	{name: "fifth length byte UNSUBSCRIBE", in: fixed(fifth(0xA2)...)},
	{name: "fifth length byte PINGREQ", in: fixed(fifth(0xC0)...)},
	{name: "fifth length byte DISCONNECT", in: fixed(fifth(0xE0)...)},
	{name: "fifth length byte AUTH", in: fixed(fifth(0xF0)...)},
	{name: "max remaining length PUBLISH", in: fixed(0x30, 0xFF, 0xFF, 0xFF, 0x7F)},
	{name: "max remaining length SUBSCRIBE", in: fixed(0x82, 0xFF, 0xFF, 0xFF, 0x7F)},
	{name: "just over max packet size PUBACK", in: fixed(append([]byte{0x40}, encLen(64<<10)...)...)},
	{name: "non-minimal length encoding then junk", in: fixed(0xC0, 0x80, 0x80, 0x80, 0x00, 0xFF)},
	{name: "oversized SUBSCRIBE", phases: authPhases, in: func(p phase) []byte {
		return sub(p, 0x82, 1, nil, []byte("vehicles/"+cVIN+"/cmd/"+strings.Repeat("x", 64<<10)), 1)
	}},

	// --- impossible remaining lengths: too short for the mandatory fields ---
	{name: "PINGREQ with a body", in: fixed(0xC0, 0x01, 0x00)},
	{name: "PUBACK length 1", in: fixed(declared(0x40, 1, 0x00)...)},
	{name: "PUBREC length 1", in: fixed(declared(0x50, 1, 0x00)...)},
	{name: "PUBREL length 1", in: fixed(declared(0x62, 1, 0x00)...)},
	{name: "PUBCOMP length 1", in: fixed(declared(0x70, 1, 0x00)...)},
	{name: "PUBACK length 0", in: fixed(0x40, 0x00)},
	{name: "PUBLISH length 0", in: fixed(0x30, 0x00)},
	{name: "PUBLISH length 1", in: fixed(0x30, 0x01, 0x00)},
	{name: "PUBLISH topic longer than packet", in: fixed(0x30, 0x04, 0x00, 0x40, 'v', 'e')},
	{name: "PUBLISH QoS 1 without packet id", in: func(p phase) []byte {
		return packet(0x32, encStr(cTele))
	}},
	{name: "PUBLISH v5 property length past end", phases: v5Phase, in: func(p phase) []byte {
		return pub(p, 0x02, []byte(cTele), []byte{0, 1}, []byte{0x7F}, "")
	}},
	{name: "SUBSCRIBE length 0", in: fixed(0x82, 0x00)},
	{name: "SUBSCRIBE id only", in: fixed(0x82, 0x02, 0x00, 0x01)},
	{name: "SUBSCRIBE filter longer than packet", in: func(p phase) []byte {
		body := []byte{0, 1}
		if levelOf(p) == 5 {
			body = append(body, 0)
		}
		return packet(0x82, append(body, 0x10, 0x00, 'a'))
	}},
	{name: "SUBSCRIBE without options byte", in: func(p phase) []byte {
		body := []byte{0, 1}
		if levelOf(p) == 5 {
			body = append(body, 0)
		}
		return packet(0x82, append(body, encStr(cCmd)...))
	}},
	{name: "UNSUBSCRIBE length 0", in: fixed(0xA2, 0x00)},
	{name: "UNSUBSCRIBE id only", in: fixed(0xA2, 0x02, 0x00, 0x01)},
	{name: "DISCONNECT v5 property length past end", phases: v5Phase, in: fixed(0xE0, 0x02, 0x00, 0x7F)},
	{name: "CONNECT length 1", phases: prePhase, in: fixed(0x10, 0x01, 0x00)},
	{name: "CONNECT protocol name longer than packet", phases: prePhase, in: fixed(0x10, 0x06, 0x00, 0x40, 'M', 'Q', 'T', 'T')},
	{name: "CONNECT without client id", phases: prePhase, in: func(phase) []byte {
		return packet(0x10, append(encStr("MQTT"), 4, 0x02, 0, 30))
	}},
	{name: "CONNECT username flag without username", phases: prePhase, in: func(phase) []byte {
		return packet(0x10, append(append(encStr("MQTT"), 4, 0xC2, 0, 30), encStr(cVIN)...))
	}},
	{name: "CONNECT v5 properties past end", phases: prePhase, in: fixed(conn5([]byte{0x7F})[:20]...)},

	// --- truncated bodies (declared length not delivered) ---
	{name: "truncated CONNECT v3.1.1", phases: prePhase, incomplete: true, in: func(phase) []byte {
		return truncate(connectPacket(4, cVIN, cVIN, secrets[cVIN], 30))
	}},
	{name: "truncated CONNECT v5", phases: prePhase, incomplete: true, in: func(phase) []byte {
		return truncate(connectPacket(5, cVIN, cVIN, secrets[cVIN], 30))
	}},
	{name: "truncated PUBLISH", incomplete: true, in: func(p phase) []byte {
		return truncate(pub(p, 0x02, []byte(cTele), []byte{0, 1}, nil, "frame-frame-frame"))
	}},
	{name: "truncated SUBSCRIBE", incomplete: true, in: func(p phase) []byte {
		return truncate(sub(p, 0x82, 1, nil, []byte(cCmd), 1))
	}},
	{name: "truncated UNSUBSCRIBE", incomplete: true, in: func(p phase) []byte {
		return truncate(unsub(p, 0xA2, 1, []byte(cCmd)))
	}},
	{name: "truncated PUBACK", incomplete: true, in: fixed(0x40, 0x02, 0x00)},
	{name: "truncated PUBREL", incomplete: true, in: fixed(0x62, 0x02, 0x00)},
	{name: "truncated DISCONNECT v5", phases: v5Phase, incomplete: true, in: fixed(0xE0, 0x05, 0x00, 0x03)},
	{name: "truncated AUTH", phases: v5Phase, incomplete: true, in: fixed(0xF0, 0x05, 0x18)},
	{name: "header only", incomplete: true, in: fixed(0x32)},
	{name: "header and one length byte", incomplete: true, in: fixed(0x32, 0x80)},

	// --- strings: bad UTF-8, NUL, wildcards ---
	{name: "CONNECT client id bad UTF-8", phases: prePhase, in: func(phase) []byte {
		return connWithID(4, []byte("TGSVS\xff\xfe0000000001"), []byte("TGSVS\xff\xfe0000000001"), nil)
	}},
	{name: "CONNECT client id NUL", phases: prePhase, in: func(phase) []byte {
		return connWithID(4, []byte(cVIN+"\x00"), []byte(cVIN+"\x00"), nil)
	}},
	{name: "CONNECT v5 client id surrogate", phases: prePhase, in: func(phase) []byte {
		return connWithID(5, []byte(cVIN+"\xed\xa0\x80"), []byte(cVIN), nil)
	}},
	{name: "CONNECT username bad UTF-8", phases: prePhase, in: func(phase) []byte {
		return connWithID(4, []byte(cVIN), []byte(cVIN+"\xc3\x28"), nil)
	}},
	{name: "CONNECT username NUL (valid id)", phases: prePhase, in: func(phase) []byte {
		return connWithID(5, []byte(cVIN), []byte(cVIN[:5]+"\x00"+cVIN[6:]), nil)
	}},
	{name: "CONNECT will topic wildcard", phases: prePhase, in: func(phase) []byte {
		return connWithID(4, []byte(cVIN), []byte(cVIN), []byte("vehicles/+/telemetry"))
	}},
	{name: "CONNECT will topic NUL", phases: prePhase, in: func(phase) []byte {
		return connWithID(5, []byte(cVIN), []byte(cVIN), []byte(cTele+"\x00"))
	}},
	{name: "CONNECT will topic bad UTF-8", phases: prePhase, in: func(phase) []byte {
		return connWithID(4, []byte(cVIN), []byte(cVIN), []byte(cTele+"\xff"))
	}},
	{name: "PUBLISH topic bad UTF-8", in: func(p phase) []byte {
		return pub(p, 0x02, []byte("vehicles/"+cVIN+"/tele\xffmetry"), []byte{0, 1}, nil, "x")
	}},
	{name: "PUBLISH topic NUL", in: func(p phase) []byte {
		return pub(p, 0x02, []byte(cTele+"\x00"), []byte{0, 1}, nil, "x")
	}},
	{name: "PUBLISH topic overlong UTF-8", in: func(p phase) []byte {
		return pub(p, 0x02, []byte("vehicles/"+cVIN+"/\xc0\xaftelemetry"), []byte{0, 1}, nil, "x")
	}},
	{name: "PUBLISH topic +", in: func(p phase) []byte {
		return pub(p, 0x02, []byte("vehicles/+/telemetry"), []byte{0, 1}, nil, "x")
	}},
	{name: "PUBLISH topic #", in: func(p phase) []byte {
		return pub(p, 0x02, []byte("vehicles/"+cVIN+"/#"), []byte{0, 1}, nil, "x")
	}},
	{name: "PUBLISH QoS 0 topic #", in: func(p phase) []byte {
		return pub(p, 0x00, []byte("#"), nil, nil, "x")
	}},
	{name: "PUBLISH empty topic no alias", in: func(p phase) []byte {
		return pub(p, 0x02, nil, []byte{0, 1}, nil, "x")
	}},
	{name: "SUBSCRIBE filter bad UTF-8", in: func(p phase) []byte {
		return sub(p, 0x82, 1, nil, []byte("vehicles/"+cVIN+"/cmd/\xff"), 1)
	}},
	{name: "SUBSCRIBE filter NUL", in: func(p phase) []byte {
		return sub(p, 0x82, 1, nil, []byte("vehicles/"+cVIN+"/cmd/\x00"), 1)
	}},
	{name: "SUBSCRIBE empty filter", in: func(p phase) []byte {
		return sub(p, 0x82, 1, nil, []byte{}, 1)
	}},
	{name: "UNSUBSCRIBE filter bad UTF-8", in: func(p phase) []byte {
		return unsub(p, 0xA2, 1, []byte("vehicles/"+cVIN+"/cmd/\xff"))
	}},
	{name: "UNSUBSCRIBE filter NUL", in: func(p phase) []byte {
		return unsub(p, 0xA2, 1, []byte("vehicles/"+cVIN+"/cmd/\x00"))
	}},

	// --- QoS and packet identifiers ---
	{name: "PUBLISH QoS 3", in: func(p phase) []byte {
		return pub(p, 0x06, []byte(cTele), []byte{0, 1}, nil, "x")
	}},
	{name: "PUBLISH QoS 3 with DUP", in: func(p phase) []byte {
		return pub(p, 0x0E, []byte(cTele), []byte{0, 1}, nil, "x")
	}},
	{name: "PUBLISH QoS 0 with DUP", in: func(p phase) []byte {
		return pub(p, 0x08, []byte(cTele), nil, nil, "x")
	}},
	{name: "PUBLISH QoS 1 packet id 0", in: func(p phase) []byte {
		return pub(p, 0x02, []byte(cTele), id0, nil, "x")
	}},
	{name: "PUBLISH QoS 2 packet id 0", in: func(p phase) []byte {
		return pub(p, 0x04, []byte(cTele), id0, nil, "x")
	}},
	{name: "SUBSCRIBE packet id 0", in: func(p phase) []byte {
		return sub(p, 0x82, 0, nil, []byte(cCmd), 1)
	}},
	{name: "SUBSCRIBE requested QoS 3", in: func(p phase) []byte {
		return sub(p, 0x82, 1, nil, []byte(cCmd), 3)
	}},
	{name: "SUBSCRIBE reserved option bits", in: func(p phase) []byte {
		return sub(p, 0x82, 1, nil, []byte(cCmd), 0xC1)
	}},
	{name: "UNSUBSCRIBE packet id 0", in: func(p phase) []byte {
		return unsub(p, 0xA2, 0, []byte(cCmd))
	}},
	{name: "PUBREL packet id 0", in: fixed(0x62, 0x02, 0x00, 0x00)},

	// --- MQTT 5 properties ---
	{name: "CONNECT duplicate session expiry", phases: prePhase, in: func(phase) []byte {
		return conn5(props(propSessionExpiry, 0, 0, 0, 10, propSessionExpiry, 0, 0, 0, 20))
	}},
	{name: "CONNECT duplicate receive maximum", phases: prePhase, in: func(phase) []byte {
		return conn5(props(propReceiveMaximum, 0, 10, propReceiveMaximum, 0, 20))
	}},
	{name: "CONNECT receive maximum 0", phases: prePhase, in: func(phase) []byte {
		return conn5(props(propReceiveMaximum, 0, 0))
	}},
	{name: "CONNECT maximum packet size 0", phases: prePhase, in: func(phase) []byte {
		return conn5(props(propMaxPacketSize, 0, 0, 0, 0))
	}},
	{name: "CONNECT request problem info 2", phases: prePhase, in: func(phase) []byte {
		return conn5(props(propRequestProblem, 2))
	}},
	{name: "CONNECT auth method (unsupported)", phases: prePhase, in: func(phase) []byte {
		return conn5(props(append([]byte{propAuthMethod}, encStr("SCRAM-SHA-1")...)...))
	}},
	{name: "CONNECT property not allowed in CONNECT", phases: prePhase, in: func(phase) []byte {
		return conn5(props(propTopicAlias, 0, 1))
	}},
	{name: "CONNECT property varint overflow", phases: prePhase, in: func(phase) []byte {
		return conn5([]byte{0xFF, 0xFF, 0xFF, 0xFF, 0x01})
	}},
	{name: "PUBLISH duplicate message expiry", phases: v5Phase, in: func(p phase) []byte {
		return pub(p, 0x02, []byte(cTele), []byte{0, 1}, props(propMessageExpiry, 0, 0, 0, 1, propMessageExpiry, 0, 0, 0, 2), "x")
	}},
	{name: "PUBLISH duplicate topic alias", phases: v5Phase, in: func(p phase) []byte {
		return pub(p, 0x02, []byte(cTele), []byte{0, 1}, props(propTopicAlias, 0, 1, propTopicAlias, 0, 2), "x")
	}},
	{name: "PUBLISH duplicate payload format", phases: v5Phase, in: func(p phase) []byte {
		return pub(p, 0x02, []byte(cTele), []byte{0, 1}, props(propPayloadFormat, 0, propPayloadFormat, 1), "x")
	}},
	{name: "PUBLISH duplicate content type", phases: v5Phase, in: func(p phase) []byte {
		ct := append([]byte{propContentType}, encStr("a")...)
		return pub(p, 0x02, []byte(cTele), []byte{0, 1}, props(append(ct, ct...)...), "x")
	}},
	{name: "PUBLISH topic alias 0", phases: v5Phase, in: func(p phase) []byte {
		return pub(p, 0x02, []byte(cTele), []byte{0, 1}, props(propTopicAlias, 0, 0), "x")
	}},
	{name: "PUBLISH topic alias above maximum", phases: v5Phase, in: func(p phase) []byte {
		return pub(p, 0x02, []byte(cTele), []byte{0, 1}, props(propTopicAlias, 0xFF, 0xFF), "x")
	}},
	{name: "PUBLISH unknown alias, empty topic", phases: v5Phase, in: func(p phase) []byte {
		return pub(p, 0x02, nil, []byte{0, 1}, props(propTopicAlias, 0, 9), "x")
	}},
	{name: "PUBLISH subscription identifier from client", phases: v5Phase, in: func(p phase) []byte {
		return pub(p, 0x02, []byte(cTele), []byte{0, 1}, props(propSubID, 1), "x")
	}},
	{name: "PUBLISH payload format 1 with bad UTF-8", phases: v5Phase, in: func(p phase) []byte {
		return pub(p, 0x02, []byte(cTele), []byte{0, 1}, props(propPayloadFormat, 1), "\xff\xfe")
	}},
	{name: "PUBLISH property unknown id", phases: v5Phase, in: func(p phase) []byte {
		return pub(p, 0x02, []byte(cTele), []byte{0, 1}, props(0x7E, 0), "x")
	}},
	{name: "SUBSCRIBE duplicate subscription identifier", phases: v5Phase, in: func(p phase) []byte {
		return sub(p, 0x82, 1, props(propSubID, 1, propSubID, 2), []byte(cCmd), 1)
	}},
	{name: "SUBSCRIBE subscription identifier 0", phases: v5Phase, in: func(p phase) []byte {
		return sub(p, 0x82, 1, props(propSubID, 0), []byte(cCmd), 1)
	}},
	{name: "SUBSCRIBE subscription identifier 5-byte varint", phases: v5Phase, in: func(p phase) []byte {
		return sub(p, 0x82, 1, props(propSubID, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F), []byte(cCmd), 1)
	}},
	{name: "DISCONNECT duplicate session expiry", phases: v5Phase, in: fixed(0xE0, 0x0C, 0x00, 0x0A,
		propSessionExpiry, 0, 0, 0, 1, propSessionExpiry, 0, 0, 0, 2)},
	{name: "DISCONNECT session expiry after 0 at connect", phases: v5Phase, in: fixed(0xE0, 0x07, 0x00, 0x05,
		propSessionExpiry, 0, 0, 0, 9)},

	// --- sequencing ---
	{name: "second CONNECT", phases: authPhases, in: func(p phase) []byte {
		return connectPacket(levelOf(p), cVIN, cVIN, secrets[cVIN], 30)
	}},
	{name: "PUBLISH before CONNECT", phases: prePhase, in: func(phase) []byte {
		return publishPacket(cTele, 1, 1, "x")
	}},
	{name: "SUBSCRIBE before CONNECT", phases: prePhase, in: func(phase) []byte {
		return subscribePacket(1, cCmd)
	}},
	{name: "PINGREQ before CONNECT", phases: prePhase, in: fixed(0xC0, 0x00)},
	{name: "DISCONNECT before CONNECT", phases: prePhase, in: fixed(0xE0, 0x00)},
	{name: "PUBACK before CONNECT", phases: prePhase, in: fixed(0x40, 0x02, 0x00, 0x01)},
	{name: "AUTH before CONNECT", phases: prePhase, in: fixed(0xF0, 0x00)},
	{name: "HTTP request", in: fixed([]byte("GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")...)},
	{name: "TLS ClientHello on plain port", in: fixed(0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00)},
}

// ackTypes are the first bytes of packets that would mean the broker
// accepted the hostile packet.
var ackTypes = map[byte]string{0x40: "PUBACK", 0x50: "PUBREC", 0x70: "PUBCOMP", 0x90: "SUBACK", 0xB0: "UNSUBACK", 0xD0: "PINGRESP"}

// rawConnectV5 performs a v5 CONNECT on a raw socket and checks the CONNACK
// (whose properties vary) is a success.
func rawConnectV5(t testing.TB, addr, id string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := dial(t, addr)
	if _, err := c.Write(connectPacket(5, id, id, secretOf(id), 30)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	readPacketRaw(t, r, 0x20, 0)
	return c, r
}

// readPacketRaw reads one packet, checks its first byte and, for a CONNACK,
// its reason code, and returns its body.
func readPacketRaw(t testing.TB, r *bufio.Reader, first, reason byte) []byte {
	t.Helper()
	h := readN(t, r, 1)
	n, mul := 0, 1
	for i := 0; i < 4; i++ {
		b := readN(t, r, 1)[0]
		n += int(b&0x7F) * mul
		mul *= 128
		if b&0x80 == 0 {
			break
		}
	}
	body := readN(t, r, n)
	if h[0] != first || (first == 0x20 && (len(body) < 2 || body[1] != reason)) {
		t.Fatalf("got packet %x %x, want type %x reason %x", h, body, first, reason)
	}
	return body
}

// sendHostile runs one corpus entry in one phase on a fresh connection and
// returns what the broker sent after the (successful) CONNACK.
func sendHostile(t testing.TB, addr string, c hostileCase, p phase) []byte {
	return sendHostileAs(t, addr, vin1, c, p)
}

// sendHostileAs is sendHostile with the session of device id (whose
// secret is in secrets).
func sendHostileAs(t testing.TB, addr, id string, c hostileCase, p phase) []byte {
	t.Helper()
	var conn net.Conn
	var r *bufio.Reader
	switch p {
	case prePhase:
		conn = dial(t, addr)
		r = bufio.NewReader(conn)
	case v3Phase:
		conn, r = rawConnect(t, addr, id)
	case v5Phase:
		conn, r = rawConnectV5(t, addr, id)
	}
	in := c.in(p)
	// Writes may fail once the broker closes; what matters is the close.
	go func() {
		_, _ = conn.Write(in)
		if c.incomplete {
			_ = conn.(*net.TCPConn).CloseWrite()
		}
	}()
	return waitEOF(t, r2c{r, conn})
}

// checkResponse fails if the broker acknowledged the hostile packet.
func checkResponse(t testing.TB, c hostileCase, p phase, got []byte) {
	t.Helper()
	if len(got) == 0 {
		return
	}
	if name, ok := ackTypes[got[0]]; ok {
		t.Fatalf("%s: broker answered %s (%x): hostile packet accepted", p, name, got)
	}
	if p == prePhase && got[0] == 0x20 && len(got) >= 4 {
		// A CONNACK before authentication must be a refusal.
		rc := got[3]
		if len(got) >= 4 && got[1] >= 2 && rc == 0 {
			t.Fatalf("pre-auth: CONNACK success (%x) for hostile CONNECT", got)
		}
	}
}

// TestHostileCorpus sends every corpus entry in every phase it applies to.
// Each must end its connection without being acknowledged; afterwards no
// panic was recovered and MQTT 3.1.1 and 5 clients still work.
func TestHostileCorpus(t *testing.T) {
	b := startBroker(t, nil, func(c *Config) { c.ConnectTimeout = 2 * time.Second })
	addr := b.Addr(ListenerTCP)
	runs := 0
	for _, c := range hostileCorpus {
		for _, p := range []phase{prePhase, v3Phase, v5Phase} {
			if !c.runs(p) {
				continue
			}
			runs++
			t.Run(c.name+"/"+p.String(), func(t *testing.T) {
				got := sendHostile(t, addr, c, p)
				checkResponse(t, c, p, got)
			})
		}
	}
	t.Logf("%d corpus entries, %d runs", len(hostileCorpus), runs)
	if n := b.Stats().Listener.Panics.Load(); n != 0 {
		t.Fatalf("%d panics recovered", n)
	}
	eventually(t, "all hostile sockets closed", func() bool { return b.Stats().Listener.Open.Load() == 0 })
	mustV5(t, addr, vin1)
	mustV3(t, tcpURL(b), vin2)
}

// hostileConns is the number of hostile connections of TestHostileMemoryBounded
// (TELEGATE_LONG=1: ten times more).
func hostileConns() int {
	if os.Getenv("TELEGATE_LONG") != "" {
		return 20000
	}
	return 2000
}

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestHostileMemoryBounded replays the corpus over a few thousand
// connections, 16 at a time, and checks that the broker's live heap does
// not grow with the number of hostile connections, that no goroutine is
// left behind and that every socket was closed. Only memory is asserted,
// never time.
func TestHostileMemoryBounded(t *testing.T) {
	// One device per worker, so that sessions never take each other over.
	const workers = 16
	devs := testDevices(t)
	hash := devs[0].SecretHash // vin1's: any id verifies with its secret
	var ids []string
	for i := range workers {
		id := fmt.Sprintf("TGSVS0000000010%02d", i)
		ids = append(ids, id)
		devs = append(devs, registry.Device{ID: id, Kind: registry.KindVehicle, SecretHash: hash})
	}
	reg, err := registry.New(devs)
	if err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, reg, func(c *Config) { c.ConnectTimeout = 2 * time.Second })
	addr := b.Addr(ListenerTCP)
	type job struct {
		c hostileCase
		p phase
	}
	var jobs []job
	for _, c := range hostileCorpus {
		for _, p := range []phase{prePhase, v3Phase, v5Phase} {
			if c.runs(p) {
				jobs = append(jobs, job{c, p})
			}
		}
	}
	// Warm up once so lazily allocated state (pools, bcrypt cache) is in
	// the baseline.
	for _, j := range jobs[:20] {
		sendHostile(t, addr, j.c, j.p)
	}
	eventually(t, "warm-up sockets closed", func() bool { return b.Stats().Listener.Open.Load() == 0 })
	goroutines := runtime.NumGoroutine()
	before := heapInUse()

	n := hostileConns()
	work := make(chan job)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for j := range work {
				got := sendHostileAs(t, addr, ids[w], j.c, j.p)
				checkResponse(t, j.c, j.p, got)
			}
		})
	}
	for i := range n {
		work <- jobs[i%len(jobs)]
	}
	close(work)
	wg.Wait()
	eventually(t, "hostile sockets closed", func() bool { return b.Stats().Listener.Open.Load() == 0 })
	eventually(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= goroutines+2 })
	after := heapInUse()

	grew := int64(after) - int64(before)
	t.Logf("%d hostile connections: heap in use %.1f MiB before, %.1f MiB after (%+.1f MiB); %d sockets accepted, 0 open, %d panics",
		n, float64(before)/(1<<20), float64(after)/(1<<20), float64(grew)/(1<<20),
		b.Stats().Listener.Accepted.Load(), b.Stats().Listener.Panics.Load())
	// Generous: a leak of even 8 KiB per connection would exceed this.
	if grew > 16<<20 {
		t.Fatalf("heap grew by %d MiB over %d hostile connections", grew>>20, n)
	}
	if n := b.Stats().Listener.Panics.Load(); n != 0 {
		t.Fatalf("%d panics recovered", n)
	}
	if c := b.Connected(); c != 0 {
		t.Fatalf("%d clients still connected", c)
	}
	mustV5(t, addr, vin1)
}

// FuzzBeforeConnect feeds arbitrary bytes to a fresh TCP connection, before
// any authentication, then half-closes. The broker must close the
// connection and never panic. Seeds: the pre-auth corpus entries.
func FuzzBeforeConnect(f *testing.F) {
	for _, c := range hostileCorpus {
		if c.runs(prePhase) {
			f.Add(c.in(prePhase))
		}
	}
	f.Add(connectPacket(4, vin1, vin1, secrets[vin1], 30))
	f.Add(connectPacket(5, vin1, vin1, secrets[vin1], 30))
	b := startBroker(f, nil, func(c *Config) { c.ConnectTimeout = 2 * time.Second })
	addr := b.Addr(ListenerTCP)
	f.Fuzz(func(t *testing.T, in []byte) {
		c := dial(t, addr)
		go func() {
			_, _ = c.Write(in)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		waitEOF(t, c)
		if n := b.Stats().Listener.Panics.Load(); n != 0 {
			t.Fatalf("%d panics", n)
		}
	})
}

// corpusSeedsAfterConnect returns the v3.1.1 post-auth corpus, the seeds
// added to FuzzAfterConnect.
func corpusSeedsAfterConnect() [][]byte {
	var out [][]byte
	for _, c := range hostileCorpus {
		if c.runs(v3Phase) {
			out = append(out, bytes.Clone(c.in(v3Phase)))
		}
	}
	return out
}

// secretOf returns the secret of a test device; devices added by a test
// with vin1's hash (TestHostileMemoryBounded) share vin1's secret.
func secretOf(id string) string {
	if s, ok := secrets[id]; ok {
		return s
	}
	return secrets[vin1]
}
