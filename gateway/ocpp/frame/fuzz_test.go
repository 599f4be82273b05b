package frame_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/telegate/telegate/gateway/ocpp/frame"
)

func known(a string) bool { return a == "Heartbeat" || a == "BootNotification" }

func TestParse(t *testing.T) {
	cases := []struct {
		in   string
		err  error
		id   string
		code string // 1.6
	}{
		{`[2,"1","Heartbeat",{}]`, nil, "1", ""},
		{`[3,"1",{}]`, nil, "1", ""},
		{`[4,"1","GenericError","",{}]`, nil, "1", ""},
		{`{`, frame.ErrNotJSON, "", "ProtocolError"},
		{`{"a":1}`, frame.ErrNotArray, "", "ProtocolError"},
		{`[2,"1"]`, frame.ErrShape, "", "FormationViolation"},
		{`[2,1,"Heartbeat",{}]`, frame.ErrUniqueID, "", "ProtocolError"},
		{`[9,"7","Heartbeat",{}]`, frame.ErrMessageType, "7", "NotSupported"},
		{`[2,"7","Nope",{}]`, frame.ErrActionUnknown, "7", "NotImplemented"},
		{`[2,"7","Heartbeat",[]]`, frame.ErrShape, "7", "FormationViolation"},
	}
	for _, c := range cases {
		f, err := frame.Parse([]byte(c.in), known)
		if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("%s: err %v, want %v", c.in, err, c.err)
			continue
		}
		if f.UniqueID != c.id && c.err != nil {
			t.Errorf("%s: id %q, want %q", c.in, f.UniqueID, c.id)
		}
		if err != nil {
			if got := frame.ErrorCode(err, false); got != c.code {
				t.Errorf("%s: code %s, want %s", c.in, got, c.code)
			}
		}
	}
	var out []any
	if err := json.Unmarshal(frame.EncodeCallError("", "RpcFrameworkError", "x"), &out); err != nil || out[1] != "-1" {
		t.Fatalf("CallError: %v %v", out, err)
	}
}

// FuzzParse: no input panics, and an accepted frame has a message id.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`[2,"1","Heartbeat",{}]`, `[3,"1",{}]`, `[4,"1","X","",{}]`, `[2,"1e400","A",{}]`,
		`[1e400,"1","Heartbeat",{}]`, `[2.5,"1","Heartbeat",{}]`, `[]`, `"`, `[2,"\u0000","Heartbeat",{}]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := frame.Parse(b, known)
		if err == nil && fr.UniqueID == "" {
			t.Fatalf("accepted without id: %q", b)
		}
		_ = frame.ErrorCode(err, true)
		_ = frame.Reason(err)
	})
}
