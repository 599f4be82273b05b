package query

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	body := `{"results":[
	 {"statement_id":0,"series":[
	  {"name":"telemetry","tags":{"vin":"V1"},"columns":["time","Vehicle.Speed","Vehicle.IsMoving","seq","note"],
	   "values":[[1700000000000000000,80,true,1,"a"],[1700000005123456789,81.5,null,2,null]]}]},
	 {"statement_id":1,"error":"unsupported mean iterator type"},
	 {"statement_id":2}
	]}`
	res, err := Parse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || res[1].Err != "unsupported mean iterator type" || res[2].Series != nil || res[0].Err != "" {
		t.Fatalf("results %+v", res)
	}
	s := res[0].Series[0]
	if s.Name != "telemetry" || s.Tags["vin"] != "V1" || s.Col("seq") != 3 || s.Col("nope") != -1 {
		t.Fatalf("series %+v", s)
	}
	rows := s.Rows()
	if len(rows) != 2 {
		t.Fatalf("rows %v", rows)
	}
	if !rows[0]["time"].(time.Time).Equal(time.Unix(1700000000, 0)) || rows[0]["vin"] != "V1" || rows[0]["Vehicle.IsMoving"] != true || rows[0]["note"] != "a" {
		t.Fatalf("row 0 %v", rows[0])
	}
	if tm := rows[1]["time"].(time.Time); tm.UnixNano() != 1700000005123456789 || tm.Location() != time.UTC {
		t.Fatalf("nanosecond time %v", tm)
	}
	if _, ok := rows[1]["Vehicle.IsMoving"]; ok {
		t.Fatalf("null kept: %v", rows[1])
	}
	if f, ok := Float(rows[1]["Vehicle.Speed"]); !ok || f != 81.5 {
		t.Fatalf("Float = %v %v", f, ok)
	}
	if n, ok := Int(rows[1]["seq"]); !ok || n != 2 {
		t.Fatalf("Int = %v %v", n, ok)
	}
	if f, ok := Float(true); !ok || f != 1 {
		t.Fatal("Float(true) != 1")
	}
}

func TestParseErrors(t *testing.T) {
	for name, c := range map[string]struct {
		body string
		want error
	}{
		"top-level error": {`{"error":"error parsing query: found EOF"}`, ErrStatement},
		"not JSON":        {`<html>proxy error</html>`, ErrResponse},
		"truncated":       {`{"results":[{"statement_id":0,"series":[`, ErrResponse},
		"no results":      {`{}`, ErrResponse},
		"ragged row":      {`{"results":[{"series":[{"name":"m","columns":["time","v"],"values":[[1,2,3]]}]}]}`, ErrResponse},
		"time not ns":     {`{"results":[{"series":[{"name":"m","columns":["time","v"],"values":[[1.5,2]]}]}]}`, ErrResponse},
		"time bad type":   {`{"results":[{"series":[{"name":"m","columns":["time","v"],"values":[[true,2]]}]}]}`, ErrResponse},
	} {
		if _, err := Parse(strings.NewReader(c.body)); !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", name, err, c.want)
		}
	}
	// RFC 3339 times (epoch not honoured) are accepted.
	res, err := Parse(strings.NewReader(`{"results":[{"series":[{"name":"m","columns":["time","v"],"values":[["2023-11-14T22:13:20Z",2]]}]}]}`))
	if err != nil || !res[0].Series[0].Values[0][0].(time.Time).Equal(time.Unix(1700000000, 0)) {
		t.Fatalf("RFC 3339 time: %v %v", res, err)
	}
}

func TestTyped(t *testing.T) {
	for _, c := range []struct {
		in   any
		typ  string
		want any
	}{
		{json.Number("80"), "float", 80.0},
		{json.Number("80"), "integer", int64(80)},
		{json.Number("80"), "", int64(80)},
		{json.Number("80.5"), "", 80.5},
		{json.Number("18446744073709551615"), "unsigned", uint64(18446744073709551615)},
		{"x", "string", "x"},
		{true, "boolean", true},
		{nil, "float", nil},
	} {
		if got := Typed(c.in, c.typ); got != c.want {
			t.Errorf("Typed(%v, %q) = %#v, want %#v", c.in, c.typ, got, c.want)
		}
	}
}

// TestQuotingHostileInput: VINs and signal names come from HTTP requests;
// whatever they contain, they stay one literal or one identifier.
func TestQuotingHostileInput(t *testing.T) {
	hostile := []string{
		`V1' OR 1=1 --`,
		`V1'; DROP DATABASE "telemetry"; --`,
		`Vehicle.Speed") FROM "x"; DROP SERIES FROM /.*/; SELECT ("`,
		`back\slash\`,
		`\'`,
		`\"`,
		"new\nline; DROP DATABASE telemetry",
		"cr\rreturn",
		`/.*/`,
	}
	for _, h := range hostile {
		s := String(h)
		if !strings.HasPrefix(s, `'`) || !strings.HasSuffix(s, `'`) || unescapedQuotes(s[1:len(s)-1], '\'') || strings.ContainsAny(s, "\n\r") {
			t.Errorf("String(%q) = %s escapes its quotes", h, s)
		}
		if got := unquote(s[1 : len(s)-1]); got != h {
			t.Errorf("String(%q) does not round-trip: %q", h, got)
		}
		id := Ident(h)
		if !strings.HasPrefix(id, `"`) || !strings.HasSuffix(id, `"`) || unescapedQuotes(id[1:len(id)-1], '"') || strings.ContainsAny(id, "\n\r") {
			t.Errorf("Ident(%q) = %s escapes its quotes", h, id)
		}
		if got := unquote(id[1 : len(id)-1]); got != h {
			t.Errorf("Ident(%q) does not round-trip: %q", h, got)
		}
		re := Regex(h)
		if unescapedQuotes(re[1:len(re)-1], '/') {
			t.Errorf("Regex(%q) = %s ends early", h, re)
		}
	}
	if got := Ident("Vehicle.Speed"); got != `"Vehicle.Speed"` {
		t.Errorf("Ident = %s", got)
	}
	if got := Regex("a.b/c"); got != `/^a\.b\/c$/` {
		t.Errorf("Regex = %s", got)
	}
	if got := Prefix("TGS"); got != `/^TGS/` {
		t.Errorf("Prefix = %s", got)
	}
	if got := Time(time.Unix(1700000000, 5)); got != "1700000000000000005" {
		t.Errorf("Time = %s", got)
	}
	if Duration(300*time.Millisecond) != "1s" || Duration(90*time.Second) != "90s" {
		t.Error("Duration")
	}
	if Limit(0, 10) != 1 || Limit(50, 10) != 10 || Limit(-5, 10) != 1 || Limit(5, 10) != 5 {
		t.Error("Limit")
	}
}

// unescapedQuotes reports a quote character in s not preceded by an odd
// number of backslashes (InfluxQL's scanner would end the token there).
func unescapedQuotes(s string, q byte) bool {
	bs := 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\':
			bs++
			continue
		case s[i] == q && bs%2 == 0:
			return true
		}
		bs = 0
	}
	return false
}

// unquote undoes the escapes as InfluxQL's scanner does.
func unquote(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			default:
				b.WriteByte(s[i])
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func TestReaderRequest(t *testing.T) {
	r := New(Config{URL: "http://127.0.0.1:8086/", Database: "telemetry", RetentionPolicy: "autogen", Token: "telegate_reader:pw"})
	p := r.Params(`SELECT 1`)
	want := url.Values{"db": {"telemetry"}, "rp": {"autogen"}, "q": {"SELECT 1"}, "epoch": {"ns"}}
	if p.Encode() != want.Encode() {
		t.Errorf("params %v, want %v", p, want)
	}
	if a := r.Authorization(); a != "Token telegate_reader:pw" {
		t.Errorf("Authorization %q", a)
	}
	if a := AuthHeader(SchemeBearer, "apiv3_x"); a != "Bearer apiv3_x" {
		t.Errorf("Bearer: %q", a)
	}
	if a := AuthHeader(SchemeBasic, "u:p"); a != "Basic dTpw" {
		t.Errorf("Basic: %q", a)
	}
	if New(Config{URL: "http://x", Database: "d"}).Authorization() != "" {
		t.Error("no token: Authorization should be empty")
	}
}
