package influx

import (
	"math"
	"strconv"
	"time"
)

// Time bounds accepted by InfluxDB (1.x and 2.x): math.MinInt64 and
// math.MinInt64+1 are reserved by the storage engine, and so is math.MaxInt64.
const (
	minNanoTime = int64(math.MinInt64) + 2
	maxNanoTime = int64(math.MaxInt64) - 1
)

var (
	minTime = time.Unix(0, minNanoTime)
	maxTime = time.Unix(0, maxNanoTime)
)

// lineState is where the Encoder is within the current line.
type lineState uint8

const (
	lineNone    lineState = iota // no line started
	lineTags                     // measurement written; tags or a first field may follow
	lineFields                   // at least one field written
	lineInvalid                  // the measurement was rejected; the line will be rolled back
)

// Encoder appends points to a buffer in InfluxDB line protocol, without
// allocating once its buffer has grown to the working size.
//
// A line is built by Measurement, then Tag/TagString calls, then Field*
// calls, then End. Every method that adds a token reports whether it was
// written: a token that line protocol cannot represent (see below) is
// skipped rather than corrupting the batch. End emits the line only if it has
// at least one field; otherwise the partial line is rolled back and the
// buffer is as it was before Measurement.
//
// Ownership: an Encoder is not safe for concurrent use. Bytes returns a
// read-only view of the internal buffer that stays valid, unchanged, until the
// next Reset; lines ended later are not part of it. Take Bytes after the last
// End of a batch, hand it to Writer.Write (which does not retain it), and
// Reset only after Write returned; copy it if it must outlive the Reset.
// Reset keeps the capacity, so an Encoder reused per batch stops allocating.
//
// Representable names: the measurement, tag keys, tag values and field keys
// must be non-empty and contain no ASCII control character; a backslash must
// be followed by a character other than a backslash, ',', '=', ' ' or '"',
// and must not end the name (InfluxDB's parser cannot round-trip those).
// The measurement must not start with '#' (a comment line). Tag and field
// keys must not be "time" (InfluxDB 1.x drops such points). String field
// values may contain anything, newlines included. Float fields must be
// finite: NaN and ±Inf are skipped.
//
// The zero value is ready to use and writes millisecond timestamps.
type Encoder struct {
	// Precision of the timestamps written by End: time.Nanosecond,
	// time.Microsecond, time.Millisecond or time.Second. Zero means
	// time.Millisecond, the default of Config.Precision. It must match the
	// precision the batch is written with.
	Precision time.Duration

	buf       []byte
	committed int // len(buf) at the end of the last complete line
	lines     int
	state     lineState
	lastTag   string
}

// Reset discards all lines and any line in progress, keeping the capacity.
func (e *Encoder) Reset() {
	e.buf = e.buf[:0]
	e.committed = 0
	e.lines = 0
	e.state = lineNone
	e.lastTag = ""
}

// Bytes returns the complete lines encoded since the last Reset, each ending
// in '\n'. A line in progress is not included. The slice aliases the
// Encoder's buffer: it is valid until the next Reset and must not be modified.
func (e *Encoder) Bytes() []byte { return e.buf[:e.committed:e.committed] }

// Len returns the length in bytes of the complete lines (len(Bytes())).
func (e *Encoder) Len() int { return e.committed }

// Lines returns the number of complete lines since the last Reset.
func (e *Encoder) Lines() int { return e.lines }

// Grow makes room for at least n more bytes without another allocation.
func (e *Encoder) Grow(n int) {
	if n > cap(e.buf)-len(e.buf) {
		nb := make([]byte, len(e.buf), 2*cap(e.buf)+n)
		copy(nb, e.buf)
		e.buf = nb
	}
}

// Measurement starts a new line. A line still in progress (no End yet) is
// discarded. It reports false, and the line is ignored up to its End, if name
// is not representable (see Encoder). Commas and spaces are escaped.
func (e *Encoder) Measurement(name string) bool {
	e.rollback()
	if len(name) == 0 || name[0] == '#' {
		e.state = lineInvalid
		return false
	}
	esc, ok := scanName(name, false)
	if !ok {
		e.state = lineInvalid
		return false
	}
	e.buf = appendName(e.buf, name, esc, false)
	e.state = lineTags
	return true
}

// Tag adds a tag to the line started by Measurement. It must be called
// before the first field. Callers must add tags sorted by key (byte order):
// InfluxDB sorts unsorted tags itself at a cost, and the Encoder detects a
// repeated key only when it immediately follows itself. Commas, '=' and
// spaces are escaped. An empty value is skipped (InfluxDB has no empty
// tags). It reports whether the tag was written; it is not written if the
// key or value is not representable, the key is "time", it repeats the
// previous key, or no line is open for tags.
func (e *Encoder) Tag(key string, value []byte) bool {
	return addTag(e, key, value)
}

// TagString is Tag with a string value.
func (e *Encoder) TagString(key, value string) bool {
	return addTag(e, key, value)
}

func addTag[T string | []byte](e *Encoder, key string, value T) bool {
	if e.state != lineTags || len(value) == 0 || !validKey(key) || key == e.lastTag {
		return false
	}
	kesc, ok := scanName(key, true)
	if !ok {
		return false
	}
	vesc, ok := scanName(value, true)
	if !ok {
		return false
	}
	e.buf = append(e.buf, ',')
	e.buf = appendName(e.buf, key, kesc, true)
	e.buf = append(e.buf, '=')
	e.buf = appendName(e.buf, value, vesc, true)
	e.lastTag = key
	return true
}

// fieldKey writes the separator and the escaped key followed by '='. It
// reports false, writing nothing, if no line is open or key is not
// representable.
func (e *Encoder) fieldKey(key string) bool {
	if (e.state != lineTags && e.state != lineFields) || !validKey(key) {
		return false
	}
	esc, ok := scanName(key, true)
	if !ok {
		return false
	}
	if e.state == lineTags {
		e.buf = append(e.buf, ' ')
	} else {
		e.buf = append(e.buf, ',')
	}
	e.buf = appendName(e.buf, key, esc, true)
	e.buf = append(e.buf, '=')
	e.state = lineFields
	return true
}

// FieldFloat adds a float field in the shortest representation that parses
// back to v. NaN and ±Inf are not representable in line protocol: they are
// skipped and FieldFloat reports false.
func (e *Encoder) FieldFloat(key string, v float64) bool {
	if math.IsNaN(v) || math.IsInf(v, 0) || !e.fieldKey(key) {
		return false
	}
	e.buf = appendFloat(e.buf, v)
	return true
}

// Key is a field key checked and escaped once by NewKey, for keys written
// many times (the FieldKey* methods skip the per-call scan). The zero Key
// is invalid: the methods skip it.
type Key struct {
	esc string // the escaped key followed by '='; "" for the zero Key
}

// NewKey checks key as a field key (see Encoder for the rules) and escapes
// it. It reports false if key is not representable.
func NewKey(key string) (Key, bool) {
	if !validKey(key) {
		return Key{}, false
	}
	esc, ok := scanName(key, true)
	if !ok {
		return Key{}, false
	}
	return Key{esc: string(append(appendName(nil, key, esc, true), '='))}, true
}

// preparedKey is fieldKey for a Key.
func (e *Encoder) preparedKey(k Key) bool {
	if (e.state != lineTags && e.state != lineFields) || k.esc == "" {
		return false
	}
	if e.state == lineTags {
		e.buf = append(e.buf, ' ')
	} else {
		e.buf = append(e.buf, ',')
	}
	e.buf = append(e.buf, k.esc...)
	e.state = lineFields
	return true
}

// FieldFloatKey is FieldFloat with a prepared key.
func (e *Encoder) FieldFloatKey(k Key, v float64) bool {
	if math.IsNaN(v) || math.IsInf(v, 0) || !e.preparedKey(k) {
		return false
	}
	e.buf = appendFloat(e.buf, v)
	return true
}

// FieldIntKey is FieldInt with a prepared key.
func (e *Encoder) FieldIntKey(k Key, v int64) bool {
	if !e.preparedKey(k) {
		return false
	}
	e.buf = strconv.AppendInt(e.buf, v, 10)
	e.buf = append(e.buf, 'i')
	return true
}

// FieldBoolKey is FieldBool with a prepared key.
func (e *Encoder) FieldBoolKey(k Key, v bool) bool {
	if !e.preparedKey(k) {
		return false
	}
	e.buf = strconv.AppendBool(e.buf, v)
	return true
}

// appendFloat appends exactly what strconv.AppendFloat(buf, v, 'g', -1, 64)
// does, faster for integral values of magnitude below 10^6 (many sensor
// readings): for those 'g' uses %f notation without a fraction, the same
// digits as AppendInt. Negative zero keeps its "-0".
func appendFloat(buf []byte, v float64) []byte {
	if v > -1e6 && v < 1e6 {
		if i := int64(v); float64(i) == v && (i != 0 || !math.Signbit(v)) {
			return strconv.AppendInt(buf, i, 10)
		}
	}
	return strconv.AppendFloat(buf, v, 'g', -1, 64)
}

// FieldInt adds a signed 64-bit integer field (written with the "i" suffix).
func (e *Encoder) FieldInt(key string, v int64) bool {
	if !e.fieldKey(key) {
		return false
	}
	e.buf = strconv.AppendInt(e.buf, v, 10)
	e.buf = append(e.buf, 'i')
	return true
}

// FieldBool adds a boolean field.
func (e *Encoder) FieldBool(key string, v bool) bool {
	if !e.fieldKey(key) {
		return false
	}
	e.buf = strconv.AppendBool(e.buf, v)
	return true
}

// FieldString adds a string field. The value is quoted; '"' and '\' are
// escaped. Any byte is allowed, newlines included. InfluxDB documents a
// 64 KB limit for string values.
func (e *Encoder) FieldString(key string, v []byte) bool {
	return addFieldString(e, key, v)
}

// FieldText is FieldString with a string value.
func (e *Encoder) FieldText(key, v string) bool {
	return addFieldString(e, key, v)
}

func addFieldString[T string | []byte](e *Encoder, key string, v T) bool {
	if !e.fieldKey(key) {
		return false
	}
	e.buf = append(e.buf, '"')
	start := 0
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '"' || c == '\\' {
			e.buf = append(e.buf, v[start:i]...)
			e.buf = append(e.buf, '\\', c)
			start = i + 1
		}
	}
	e.buf = append(e.buf, v[start:]...)
	e.buf = append(e.buf, '"')
	return true
}

// End finishes the line with timestamp ts, truncated to the Encoder's
// Precision, and a newline. It reports whether a line was emitted: a line
// without fields, with an invalid measurement, or with ts outside the range
// InfluxDB can store (including the zero time.Time) is rolled back.
func (e *Encoder) End(ts time.Time) bool {
	if ts.Before(minTime) || ts.After(maxTime) {
		e.rollback()
		return false
	}
	return e.EndUnixNano(ts.UnixNano())
}

// EndUnixNano is End with a timestamp in nanoseconds since the Unix epoch.
func (e *Encoder) EndUnixNano(ns int64) bool {
	if e.state != lineFields || ns < minNanoTime || ns > maxNanoTime {
		e.rollback()
		return false
	}
	p := int64(e.Precision)
	if p <= 0 {
		p = int64(time.Millisecond)
	}
	t := ns / p
	if ns%p < 0 { // floor, so that earlier instants never get later stamps
		t--
	}
	e.buf = append(e.buf, ' ')
	e.buf = strconv.AppendInt(e.buf, t, 10)
	e.buf = append(e.buf, '\n')
	e.committed = len(e.buf)
	e.lines++
	e.state = lineNone
	e.lastTag = ""
	return true
}

// rollback drops the line in progress, if any.
func (e *Encoder) rollback() {
	e.buf = e.buf[:e.committed]
	e.state = lineNone
	e.lastTag = ""
}

// validKey rejects keys InfluxDB refuses whatever their escaping.
func validKey(key string) bool { return len(key) > 0 && key != "time" }

// Byte flags for scanName.
const (
	flagEscape    = 1 << iota // ',' and ' ': escaped everywhere
	flagEquals                // '=': escaped in tags and field keys
	flagBackslash             // backslash: must be followed by an ordinary byte
	flagInvalid               // ASCII control characters
)

// nameFlags flags the bytes that need attention in names; 0 is an ordinary
// byte, copied as is.
var nameFlags = func() (t [256]uint8) {
	for c := range 0x20 {
		t[c] = flagInvalid
	}
	t[0x7f] = flagInvalid
	t[','], t[' '] = flagEscape, flagEscape
	t['='] = flagEquals
	t['\\'] = flagBackslash
	return t
}()

// scanName reports whether s is representable as a measurement (tag=false)
// or as a tag key, tag value or field key (tag=true), and whether it needs
// escaping. See the Encoder documentation for the rules: InfluxDB's parser
// skips the byte after any backslash but unescapes only `\,`, `\ `, `\=`
// (and `\"` in tags), so a literal backslash before one of those, before
// another backslash or at the end cannot be round-tripped.
func scanName[T string | []byte](s T, tag bool) (escape, ok bool) {
	if len(s) == 0 {
		return false, false
	}
	var seen uint8 // branch-free over the common, ordinary bytes
	for i := 0; i < len(s); i++ {
		seen |= nameFlags[s[i]]
	}
	if seen&flagInvalid != 0 {
		return false, false
	}
	if seen&flagBackslash != 0 {
		for i := 0; i < len(s); i++ {
			if s[i] != '\\' {
				continue
			}
			if i+1 == len(s) {
				return false, false
			}
			switch s[i+1] {
			case '\\', ',', '=', ' ', '"':
				return false, false
			}
		}
	}
	return seen&flagEscape != 0 || (tag && seen&flagEquals != 0), true
}

// appendName appends s, escaping ',' and ' ' and, for tag=true, '='.
func appendName[T string | []byte](buf []byte, s T, escape, tag bool) []byte {
	if !escape {
		return append(buf, s...)
	}
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ',' || c == ' ' || (tag && c == '=') {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', c)
			start = i + 1
		}
	}
	return append(buf, s[start:]...)
}
