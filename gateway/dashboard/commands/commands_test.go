package commands

import (
	"errors"
	"testing"
	"time"

	"github.com/telegate/telegate/decoders/wire"
)

type pub struct {
	topic   string
	payload []byte
	err     error
}

func (p *pub) Publish(topic string, payload []byte, _ byte) error {
	p.topic, p.payload = topic, payload
	return p.err
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		name   string
		params map[string]string
		want   error
	}{
		{"ping", nil, nil},
		{"clear_dtc_reminder", map[string]string{"code": "P0301"}, nil},
		{"clear_dtc_reminder", nil, ErrBadParam},
		{"clear_dtc_reminder", map[string]string{"code": "X0301"}, ErrBadParam},
		{"ping", map[string]string{"x": "1"}, ErrBadParam},
		{"unlock_doors", nil, ErrUnknownCommand},
	} {
		if err := Validate(c.name, c.params); !errors.Is(err, c.want) && !(err == nil && c.want == nil) {
			t.Errorf("%s %v: %v, want %v", c.name, c.params, err, c.want)
		}
	}
}

func TestSendRecordsAndAcks(t *testing.T) {
	p := &pub{}
	l := NewLog(2)
	s := NewSender(p, nil, l, nil)
	r, err := s.Send(t.Context(), "TGSVS000000000001", "clear_dtc_reminder", map[string]string{"code": "P0301"}, "op")
	if err != nil {
		t.Fatal(err)
	}
	if p.topic != "vehicles/TGSVS000000000001/cmd/clear_dtc_reminder" {
		t.Fatalf("topic %s", p.topic)
	}
	var c wire.Command
	if err := wire.DecodeCommand(p.payload, &c); err != nil || c.CmdID != r.CmdID || c.Params[0] != (wire.Param{Key: "code", Value: "P0301"}) {
		t.Fatalf("payload %+v %v", c, err)
	}
	l.Ack("TGSVS000000000001", r.CmdID, "applied", "", time.Now())
	l.Add(r) // replayed record keeps the ack
	if got := l.List("TGSVS000000000001", 10); len(got) != 1 || got[0].Status != "applied" || got[0].User != "op" {
		t.Fatalf("history %+v", got)
	}
	// Bounded per vehicle.
	for range 3 {
		s.Send(t.Context(), "TGSVS000000000001", "ping", nil, "op")
	}
	if got := l.List("TGSVS000000000001", 10); len(got) != 2 {
		t.Fatalf("bounded history: %d", len(got))
	}
	p.err = errors.New("broker closed")
	if _, err := s.Send(t.Context(), "TGSVS000000000002", "ping", nil, "op"); !errors.Is(err, ErrPublish) {
		t.Fatalf("publish failure: %v", err)
	}
	if got := l.List("TGSVS000000000002", 1); got[0].Status != "publish_failed" {
		t.Fatalf("failed record %+v", got)
	}
}

// TestAckFromOtherVehicleIgnored: acks are matched by (VIN, command id):
// vehicle B acking vehicle A's command id leaves A's record alone.
func TestAckFromOtherVehicleIgnored(t *testing.T) {
	const a, b = "TGSVS000000000001", "TGSVS000000000002"
	p := &pub{}
	l := NewLog(10)
	s := NewSender(p, nil, l, nil)
	r, err := s.Send(t.Context(), a, "ping", nil, "op")
	if err != nil {
		t.Fatal(err)
	}
	l.Ack(b, r.CmdID, "rejected", "forged", time.Now())
	if got := l.List(a, 10); len(got) != 1 || got[0].Status != "sent" || got[0].Reason != "" {
		t.Fatalf("A's command changed by B's ack: %+v", got)
	}
	if got := l.List(b, 10); len(got) != 1 || got[0].Source != "vehicle ack" {
		t.Fatalf("B's ack should only land in B's history: %+v", got)
	}
	l.Ack(a, r.CmdID, "applied", "", time.Now())
	if got := l.List(a, 10); got[0].Status != "applied" {
		t.Fatalf("A's own ack: %+v", got)
	}
}

func TestCmdIDsUnguessable(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := newCmdID()
		if len(id) != len("dash-")+32 || seen[id] {
			t.Fatalf("cmd id %q: want dash- + 128 random bits, unique", id)
		}
		seen[id] = true
	}
}
