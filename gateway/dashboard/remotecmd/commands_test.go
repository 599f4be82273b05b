package remotecmd

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

// TestLogFollowsDispatcherResults: the services' requests show as pending,
// then with the final state the dispatcher announces (superseded and
// expired included); a late ack does not overwrite that state; a result
// for a command older than the history creates its record.
func TestLogFollowsDispatcherResults(t *testing.T) {
	const vin = "TGSVS000000000001"
	at := time.Date(2027, 3, 28, 0, 59, 0, 0, time.UTC)
	l := NewLog(10)
	for _, id := range []string{"feat-1-a", "feat-2-b", "offer-c"} {
		l.Add(Record{CmdID: id, VIN: vin, Name: "feature", Source: "features", Sent: at, Status: StatusPending})
	}
	l.Result(Record{CmdID: "feat-1-a", VIN: vin, Status: "superseded"}, at.Add(time.Minute))
	l.Result(Record{CmdID: "offer-c", VIN: vin, Status: "expired"}, at.Add(2*time.Minute))
	l.Ack(vin, "feat-1-a", "applied", "", at.Add(3*time.Minute)) // delivered before it was superseded
	l.Ack(vin, "feat-2-b", "applied", "", at.Add(3*time.Minute))
	l.Result(Record{CmdID: "feat-2-b", VIN: vin, Status: "applied"}, at.Add(3*time.Minute))
	l.Result(Record{CmdID: "feat-0-z", VIN: vin, Name: "feature", Source: "features", Status: "superseded"}, at.Add(4*time.Minute))
	got := map[string]Record{}
	for _, r := range l.List(vin, 10) {
		got[r.CmdID] = r
	}
	for id, want := range map[string]string{"feat-1-a": "superseded", "feat-2-b": "applied", "offer-c": "expired", "feat-0-z": "superseded"} {
		if r := got[id]; r.Status != want || r.Closed.IsZero() {
			t.Errorf("%s: %+v, want %s and a close time", id, r, want)
		}
	}
	if got["feat-1-a"].AckStatus != "applied" || got["feat-2-b"].AckStatus != "" {
		t.Errorf("ack statuses: %q %q", got["feat-1-a"].AckStatus, got["feat-2-b"].AckStatus)
	}
	// A record replayed after its result keeps the final state.
	l.Add(Record{CmdID: "offer-c", VIN: vin, Name: "offer", Source: "offers", Sent: at, Status: StatusPending})
	if r := l.List(vin, 10); len(r) != 4 {
		t.Fatalf("%d records", len(r))
	}
	for _, r := range l.List(vin, 10) {
		if r.Status == StatusPending || r.Status == StatusSent {
			t.Fatalf("open forever: %+v", r)
		}
	}
}
