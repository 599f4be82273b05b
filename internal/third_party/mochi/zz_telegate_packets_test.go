package mqtt

import (
	"bytes"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Patched by telegate (see README.md in this directory): a zero-length
// Will Message is valid, and Request Problem Information 0 keeps a
// PUBLISH's User Properties.

func TestTelegateEmptyWillPayloadValid(t *testing.T) {
	for _, level := range []byte{4, 5} {
		body := []byte{0, 4, 'M', 'Q', 'T', 'T', level, 0x06, 0, 30}
		if level == 5 {
			body = append(body, 0)
		}
		body = append(body, 0, 1, 'c')
		if level == 5 {
			body = append(body, 0) // will properties
		}
		body = append(body, 0, 1, 'w', 0, 0) // Will Topic "w", empty Will Message
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: level}
		if err := pk.ConnectDecode(body); err != nil {
			t.Fatal(err)
		}
		if code := pk.ConnectValidate(); code != packets.CodeSuccess {
			t.Fatalf("level %d: empty Will Message refused: %v", level, code)
		}
		pk.Connect.WillTopic = ""
		if code := pk.ConnectValidate(); code == packets.CodeSuccess {
			t.Fatalf("level %d: empty Will Topic accepted", level)
		}
	}
}

func TestTelegateUserPropertiesOnPublishWithoutProblemInfo(t *testing.T) {
	user := []byte{0x26, 0, 1, 'k', 0, 1, 'v'}
	mods := packets.Mods{DisallowProblemInfo: true}
	props := packets.Properties{User: []packets.UserProperty{{Key: "k", Val: "v"}}, ReasonString: "r"}

	pub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "t",
		PacketID: 1, ProtocolVersion: 5, Properties: props, Mods: mods}
	var buf bytes.Buffer
	if err := pub.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(buf.Bytes(), user) {
		t.Fatalf("PUBLISH % x lacks its User Property", buf.Bytes())
	}

	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 1, ReasonCode: 0x10,
		ProtocolVersion: 5, Properties: props, Mods: mods}
	buf.Reset()
	if err := ack.PubackEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(buf.Bytes(), user) || bytes.Contains(buf.Bytes(), []byte{0x1F}) {
		t.Fatalf("PUBACK % x carries problem information", buf.Bytes())
	}
}
