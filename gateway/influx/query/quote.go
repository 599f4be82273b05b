package query

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Ident quotes an InfluxQL identifier (measurement, field, tag, database):
// "Vehicle.Speed". Backslashes and double quotes are escaped, and line
// breaks too, so an identifier can never end the quotes or the statement.
func Ident(s string) string { return `"` + identEscaper.Replace(s) + `"` }

var identEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`)

// String quotes an InfluxQL string literal: 'VIN1'.
func String(s string) string { return `'` + stringEscaper.Replace(s) + `'` }

var stringEscaper = strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`, "\r", `\r`)

// Regex returns an InfluxQL regular expression literal matching exactly s
// (its metacharacters and slashes escaped): /^VIN1$/.
func Regex(s string) string {
	return `/^` + strings.ReplaceAll(regexp.QuoteMeta(s), `/`, `\/`) + `$/`
}

// Time returns t as an InfluxQL time literal: integer nanoseconds since
// the epoch (exact, no time-zone or format ambiguity).
func Time(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }

// Duration returns d as an InfluxQL duration literal in whole seconds, at
// least 1s.
func Duration(d time.Duration) string { return fmt.Sprintf("%ds", max(int64(d/time.Second), 1)) }

// Limit bounds n to [1, max].
func Limit(n, maxN int) int { return min(max(n, 1), maxN) }

// Prefix returns an InfluxQL regular expression literal matching strings
// that start with s: /^TGS/.
func Prefix(s string) string {
	return `/^` + strings.ReplaceAll(regexp.QuoteMeta(s), `/`, `\/`) + `/`
}
