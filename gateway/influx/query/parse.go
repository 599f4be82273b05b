package query

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Result is one statement's answer.
type Result struct {
	StatementID int
	Series      []Series
	// Err is the statement's error message ("" when it succeeded).
	Err string
}

// Series is one series of a result: measurement Name, the GROUP BY Tags,
// and rows of Values under Columns. With epoch=ns the "time" column holds
// time.Time (UTC); numbers are json.Number (use Float, Int); strings,
// booleans and nulls (nil) as decoded.
type Series struct {
	Name    string
	Tags    map[string]string
	Columns []string
	Values  [][]any
}

// Col returns the index of column name, -1 when absent.
func (s Series) Col(name string) int {
	for i, c := range s.Columns {
		if c == name {
			return i
		}
	}
	return -1
}

// Rows returns each row as column → value, with the series' tags added
// (a column wins over a tag of the same name). Nulls are omitted.
func (s Series) Rows() []map[string]any {
	out := make([]map[string]any, 0, len(s.Values))
	for _, v := range s.Values {
		m := make(map[string]any, len(s.Columns)+len(s.Tags))
		for k, t := range s.Tags {
			m[k] = t
		}
		for i, c := range s.Columns {
			if i < len(v) && v[i] != nil {
				m[c] = v[i]
			}
		}
		out = append(out, m)
	}
	return out
}

type wireSeries struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

type wire struct {
	Results []struct {
		StatementID int          `json:"statement_id"`
		Series      []wireSeries `json:"series"`
		Error       string       `json:"error"`
	} `json:"results"`
	Error string `json:"error"`
}

// Parse decodes a v1 /query JSON response (requested with epoch=ns). A
// response-level error ({"error": ...}) is returned as ErrStatement; a
// statement's error is kept in its Result. Pure: no I/O beyond r.
func Parse(r io.Reader) ([]Result, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	var w wire
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrResponse, err)
	}
	if w.Error != "" {
		return nil, fmt.Errorf("%w: %s", ErrStatement, w.Error)
	}
	if w.Results == nil {
		return nil, fmt.Errorf("%w: no results", ErrResponse)
	}
	out := make([]Result, len(w.Results))
	for i, x := range w.Results {
		out[i] = Result{StatementID: x.StatementID, Err: x.Error}
		for _, s := range x.Series {
			ti := -1
			for j, c := range s.Columns {
				if c == "time" {
					ti = j
				}
			}
			for _, row := range s.Values {
				if len(row) != len(s.Columns) {
					return nil, fmt.Errorf("%w: series %q: row of %d values for %d columns", ErrResponse, s.Name, len(row), len(s.Columns))
				}
				if ti >= 0 && row[ti] != nil {
					t, err := epochNS(row[ti])
					if err != nil {
						return nil, fmt.Errorf("%w: series %q: %w", ErrResponse, s.Name, err)
					}
					row[ti] = t
				}
			}
			out[i].Series = append(out[i].Series, Series(s))
		}
	}
	return out, nil
}

func epochNS(v any) (time.Time, error) {
	switch x := v.(type) {
	case json.Number:
		n, err := strconv.ParseInt(x.String(), 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("time %q is not integer nanoseconds (epoch=ns)", x)
		}
		return time.Unix(0, n).UTC(), nil
	case string: // RFC 3339, when epoch was not honoured
		t, err := time.Parse(time.RFC3339Nano, x)
		if err != nil {
			return time.Time{}, fmt.Errorf("time %q: %w", x, err)
		}
		return t.UTC(), nil
	}
	return time.Time{}, fmt.Errorf("time of type %T", v)
}

func topError(b []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(b, &e)
	return e.Error
}

// Float returns v as a float64: numbers, and booleans as 0 or 1.
func Float(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case float64:
		return x, true
	case int64:
		return float64(x), true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// Int returns v as an int64 when it is an integral number.
func Int(v any) (int64, bool) {
	switch x := v.(type) {
	case json.Number:
		n, err := strconv.ParseInt(x.String(), 10, 64)
		return n, err == nil
	case int64:
		return x, true
	}
	return 0, false
}

// Typed converts a value of a field of InfluxDB type typ ("float",
// "integer", "unsigned", "string", "boolean", from SHOW FIELD KEYS) to
// float64, int64, uint64, string or bool. JSON drops the distinction
// between a float 80.0 and an integer 80; this restores it. An unknown
// type leaves integral numbers as int64 and others as float64.
func Typed(v any, typ string) any {
	n, ok := v.(json.Number)
	if !ok {
		return v
	}
	switch typ {
	case "float":
		f, _ := n.Float64()
		return f
	case "unsigned":
		if u, err := strconv.ParseUint(n.String(), 10, 64); err == nil {
			return u
		}
	}
	if !strings.ContainsAny(n.String(), ".eE") {
		if i, err := strconv.ParseInt(n.String(), 10, 64); err == nil {
			return i
		}
	}
	f, _ := n.Float64()
	return f
}
