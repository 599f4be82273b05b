package wire

import (
	"errors"
	"reflect"
	"strconv"
	"strings"

	"github.com/tinylib/msgp/msgp"
)

// decodeError is what the Decode functions return: one sentinel (Err*) that
// classifies the rejection, a detail in protocol terms (element numbers and
// names from docs/protocol.md, never payload bytes), and the msgp error that
// caused it, if any. errors.Is matches both the sentinel and the cause.
type decodeError struct {
	detail string
	chain  []error // kind, then cause when there is one; built once so Unwrap does not allocate
}

func (e *decodeError) Error() string { return e.chain[0].Error() + ": " + e.detail }

func (e *decodeError) Unwrap() []error { return e.chain }

func fail(kind error, detail string, cause error) error {
	chain := []error{kind}
	if cause != nil {
		chain = append(chain, cause)
	}
	return &decodeError{detail: detail, chain: chain}
}

// docNames maps the Go field names of the payload structs to the element
// names used in docs/protocol.md (TestDocNames checks them against the doc).
var docNames = map[string]string{
	"Version": "version", "VIN": "vin", "Seq": "seq", "TimeMs": "ts_ms", "Signals": "signals",
	"ID": "id", "Value": "value", "MIL": "mil", "OdometerKm": "odometer_km", "DTCs": "dtcs",
	"Freeze": "freeze", "Code": "code", "Status": "status", "Kind": "kind", "HasPosition": "has_position",
	"Lat": "lat", "Lon": "lon", "Station": "station", "SessionID": "session_id", "Connector": "connector",
	"IDTag": "id_tag", "EnergyWh": "energy_wh", "PowerW": "power_w", "SoCPct": "soc_pct",
	"TargetSoCPct": "target_soc_pct", "CmdID": "cmd_id", "Name": "name", "Params": "params",
	"Key": "key", "Reason": "reason",
}

// DocName returns the docs/protocol.md name of a payload struct's Go field
// ("TimeMs" → "ts_ms"), or "" for an unknown field.
func DocName(goField string) string { return docNames[goField] }

// element describes the element reached by following path (Go field names and
// slice indexes, as in msgp's error context "Signals/3/Value") from the
// payload type root, e.g. "element 4 (signals), entry 3, element 1 (value)".
// Error path only: it uses reflection and allocates.
func element(root any, path ...string) string {
	t := reflect.TypeOf(root)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var sb strings.Builder
	for _, tok := range path {
		if tok == "" {
			continue
		}
		if sb.Len() > 0 {
			sb.WriteString(", ")
		}
		if n, err := strconv.Atoi(tok); err == nil {
			sb.WriteString("entry ")
			sb.WriteString(strconv.Itoa(n))
			if t != nil && t.Kind() == reflect.Slice {
				t = t.Elem()
			}
			continue
		}
		var f reflect.StructField
		ok := false
		if t != nil && t.Kind() == reflect.Struct {
			f, ok = t.FieldByName(tok)
		}
		if !ok {
			sb.WriteString(tok)
			t = nil
			continue
		}
		name := docNames[tok]
		if name == "" {
			name = tok
		}
		sb.WriteString("element ")
		sb.WriteString(strconv.Itoa(f.Index[0]))
		sb.WriteString(" (")
		sb.WriteString(name)
		sb.WriteByte(')')
		t = f.Type
	}
	return sb.String()
}

// msgpContext returns the "Signals/3/Value" context msgp appends to its
// error texts (" at Signals/3/Value"), split at the slashes.
func msgpContext(err error) []string {
	s := err.Error()
	i := strings.LastIndex(s, " at ")
	if i < 0 {
		return nil
	}
	return strings.Split(s[i+len(" at "):], "/")
}

// typeNames are the protocol's names for msgp's types (section 2).
func typeName(t msgp.Type) string {
	switch t {
	case msgp.Float64Type, msgp.Float32Type:
		return "float"
	case msgp.IntType:
		return "integer"
	case msgp.UintType:
		return "unsigned integer"
	case msgp.StrType:
		return "str"
	case msgp.BinType:
		return "bin"
	case msgp.ArrayType:
		return "array"
	case msgp.MapType:
		return "map"
	case msgp.BoolType:
		return "bool"
	case msgp.NilType:
		return "nil"
	}
	return t.String()
}

// classify turns an error from a generated or hand-written UnmarshalMsg of
// root into a decodeError.
func classify(root any, b []byte, err error) error {
	if errors.Is(err, msgp.ErrShortBytes) {
		if _, path, _ := findIntForFloat(reflect.TypeOf(root), b, nil); path != nil {
			return fail(ErrIntForFloat, element(root, path...)+": f64 expected, got a MessagePack integer; encode it as float64", err)
		}
	}
	at := element(root, msgpContext(err)...)
	where := func(what string) string {
		if at == "" {
			return what
		}
		return at + ": " + what
	}
	var (
		te msgp.TypeError
		ae msgp.ArrayError
		io msgp.IntOverflow
		uo msgp.UintOverflow
		bz msgp.UintBelowZero
	)
	switch {
	case errors.Is(err, ErrIdentTooLong):
		return fail(ErrIdentTooLong, where("longer than "+strconv.Itoa(MaxIdentLen)+" bytes"), err)
	case errors.Is(err, ErrNonFinite):
		return fail(ErrNonFinite, where("NaN or ±Infinity; leave the signal out instead"), err)
	case errors.Is(err, msgp.ErrLimitExceeded):
		return fail(ErrTooLarge, where("an array declares more than "+strconv.Itoa(MaxArrayLen)+" elements"), err)
	case errors.As(err, &te) && te.Method == msgp.Float64Type && (te.Encoded == msgp.IntType || te.Encoded == msgp.UintType):
		return fail(ErrIntForFloat, where("f64 expected, got a MessagePack integer; encode it as float64"), err)
	case errors.As(err, &te):
		return fail(ErrMalformed, where(typeName(te.Method)+" expected, got a MessagePack "+typeName(te.Encoded)), err)
	case errors.As(err, &ae):
		return fail(ErrMalformed, where("tuple of "+strconv.FormatUint(uint64(ae.Wanted), 10)+" elements expected, got "+
			strconv.FormatUint(uint64(ae.Got), 10)), err)
	case errors.As(err, &io):
		return fail(ErrMalformed, where("integer out of range ("+strconv.Itoa(io.FailedBitsize)+" bits)"), err)
	case errors.As(err, &uo):
		return fail(ErrMalformed, where("integer out of range ("+strconv.Itoa(uo.FailedBitsize)+" bits)"), err)
	case errors.As(err, &bz):
		return fail(ErrMalformed, where("negative value for an unsigned element"), err)
	case errors.Is(err, msgp.ErrShortBytes):
		return fail(ErrMalformed, where("payload truncated"), err)
	default:
		return fail(ErrMalformed, where(strings.TrimPrefix(msgp.Cause(err).Error(), "msgp: ")), err)
	}
}

var errStop = errors.New("stop")

// findIntForFloat walks b as the tuple type t describes and returns the path
// (as in element) of the first f64 element encoded as a MessagePack integer.
// msgp's ReadFloat64Bytes reports such an element as ErrShortBytes when it
// is in the last 8 bytes of the payload, so decode asks this walk before
// calling a payload truncated. Error path only.
func findIntForFloat(t reflect.Type, b []byte, path []string) ([]byte, []string, error) {
	switch {
	case t.Kind() == reflect.Pointer:
		return findIntForFloat(t.Elem(), b, path)
	case t.Kind() == reflect.Float64:
		if nt := msgp.NextType(b); nt == msgp.IntType || nt == msgp.UintType {
			return nil, path, nil
		}
	case t.Kind() == reflect.Struct:
		n, o, err := msgp.ReadArrayHeaderBytes(b)
		if err != nil || int(n) != t.NumField() {
			return nil, nil, errStop
		}
		for i := range t.NumField() {
			f := t.Field(i)
			var found []string
			if o, found, err = findIntForFloat(f.Type, o, append(path, f.Name)); err != nil || found != nil {
				return nil, found, err
			}
		}
		return o, nil, nil
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		n, o, err := msgp.ReadArrayHeaderBytes(b)
		if err != nil || n > MaxArrayLen {
			return nil, nil, errStop
		}
		for i := range int(n) {
			var found []string
			if o, found, err = findIntForFloat(t.Elem(), o, append(path, strconv.Itoa(i))); err != nil || found != nil {
				return nil, found, err
			}
		}
		return o, nil, nil
	}
	o, err := msgp.Skip(b)
	if err != nil {
		return nil, nil, errStop
	}
	return o, nil, nil
}
