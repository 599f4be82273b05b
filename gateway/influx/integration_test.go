package influx_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/influx/query"
	"github.com/telegate/telegate/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newWriter returns a Writer on db's bucket, closed at the end of the test.
func newWriter(t *testing.T, db *testenv.Influx, edit func(*influx.Config)) *influx.Writer {
	t.Helper()
	cfg := influx.Config{URL: db.URL, Bucket: db.Bucket, Token: db.Token}
	if edit != nil {
		edit(&cfg)
	}
	w, err := influx.NewWriter(cfg, nil)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	t.Cleanup(w.Close)
	return w
}

// rangeQuery selects every point of db's database in [start, stop), with
// extra conditions ANDed.
func rangeQuery(start, stop time.Time, and ...string) string {
	where := "time >= " + query.Time(start) + " AND time < " + query.Time(stop)
	for _, c := range and {
		where += " AND " + c
	}
	return `SELECT * FROM /.*/ WHERE ` + where + ` GROUP BY *`
}

// epoch returns a distinct time window per subtest so they cannot see each
// other's points.
func epoch(n int) time.Time { return time.Unix(1_700_000_000+int64(n)*100_000, 0).UTC() }

// TestIntegration runs the Encoder and Writer against one real InfluxDB 1.8.
func TestIntegration(t *testing.T) {
	t.Parallel()
	db := testenv.StartInflux(t)
	ctx := context.Background()

	t.Run("WriteAndReadBack", func(t *testing.T) {
		w := newWriter(t, db, nil)
		base := epoch(1)
		e := w.NewEncoder()
		type key struct {
			vin   string
			at    int64 // UnixNano
			field string
		}
		want := map[key]any{}
		vins := []string{"WVWZZZ1JZXW000001", "WVWZZZ1JZXW000002", "5YJ3E1EA7JF000003"}
		for i := range 10 {
			at := base.Add(time.Duration(i) * 100 * time.Millisecond)
			for j, vin := range vins {
				speed := float64(i*10+j) + 0.25
				e.Measurement("readback")
				e.TagString("fleet", "eu")
				e.TagString("vin", vin)
				e.FieldFloat("speed", speed)
				e.FieldInt("odometer", int64(100_000+i))
				e.FieldBool("mil", i%2 == 0)
				e.FieldText("dtc", "P030"+strconv.Itoa(j))
				if !e.End(at) {
					t.Fatal("line rejected")
				}
				ns := at.UnixNano()
				want[key{vin, ns, "speed"}] = speed
				want[key{vin, ns, "odometer"}] = int64(100_000 + i)
				want[key{vin, ns, "mil"}] = i%2 == 0
				want[key{vin, ns, "dtc"}] = "P030" + strconv.Itoa(j)
			}
		}
		if e.Lines() != 30 {
			t.Fatalf("Lines = %d", e.Lines())
		}
		if err := w.Write(ctx, e.Bytes()); err != nil {
			t.Fatalf("Write: %v", err)
		}
		rows := db.Query(t, rangeQuery(base, base.Add(time.Hour)))
		if len(rows) != len(want) {
			t.Fatalf("read %d values, wrote %d", len(rows), len(want))
		}
		for _, r := range rows {
			k := key{r["vin"].(string), r["_time"].(time.Time).UnixNano(), r["_field"].(string)}
			if v, ok := want[k]; !ok || v != r["_value"] || r["_measurement"] != "readback" || r["fleet"] != "eu" {
				t.Errorf("unexpected row %v (want value %#v)", r, v)
			}
		}
	})

	t.Run("SamePointsTwiceAreIdempotent", func(t *testing.T) {
		w := newWriter(t, db, nil)
		base := epoch(2)
		e := w.NewEncoder()
		for i := range 50 {
			e.Measurement("replay")
			e.TagString("vin", "V1")
			e.FieldFloat("soc", float64(i))
			e.End(base.Add(time.Duration(i) * time.Millisecond))
		}
		for range 2 {
			if err := w.Write(ctx, e.Bytes()); err != nil {
				t.Fatalf("Write: %v", err)
			}
		}
		if n := db.Count(t, "replay", "soc", base); n != 50 {
			t.Fatalf("Count after writing 50 points twice = %d, want 50", n)
		}
	})

	t.Run("MalformedLineIsPermanent", func(t *testing.T) {
		w := newWriter(t, db, nil)
		err := w.Write(ctx, []byte("malformed,vin=V1 speed= 1700000000000\n"))
		var we *influx.WriteError
		if !errors.Is(err, influx.ErrPermanent) || errors.Is(err, influx.ErrRetryable) || !errors.As(err, &we) {
			t.Fatalf("Write(malformed) = %v, want ErrPermanent", err)
		}
		if we.StatusCode != 400 || !strings.Contains(we.Message, "unable to parse") || !strings.Contains(we.Message, "speed=") {
			t.Fatalf("WriteError %+v lacks the server's message", we)
		}
	})

	t.Run("PartialWriteKeepsGoodLines", func(t *testing.T) {
		w := newWriter(t, db, nil)
		base := epoch(3)
		ms := base.UnixMilli()
		batch := fmt.Sprintf("partial v=1 %d\npartial v= %d\npartial v=3 %d\n", ms, ms+1, ms+2)
		if err := w.Write(ctx, []byte(batch)); !errors.Is(err, influx.ErrPermanent) {
			t.Fatalf("Write = %v, want ErrPermanent", err)
		}
		if n := db.Count(t, "partial", "v", base); n != 2 {
			t.Fatalf("Count = %d: InfluxDB 1.8 stores the valid lines of a rejected batch", n)
		}
	})

	t.Run("FieldTypeConflictIsPermanent", func(t *testing.T) {
		w := newWriter(t, db, nil)
		ms := epoch(4).UnixMilli()
		if err := w.Write(ctx, fmt.Appendf(nil, "conflict v=1 %d\n", ms)); err != nil {
			t.Fatal(err)
		}
		err := w.Write(ctx, fmt.Appendf(nil, "conflict v=\"text\" %d\n", ms+1))
		t.Logf("server said: %v", err)
		if !errors.Is(err, influx.ErrPermanent) || !strings.Contains(err.Error(), "field type conflict") {
			t.Fatalf("Write = %v, want a permanent field type conflict", err)
		}
	})

	t.Run("MissingDatabaseIsRetryable", func(t *testing.T) {
		w := newWriter(t, db, func(c *influx.Config) { c.Bucket = "nosuchdb/autogen" })
		err := w.Write(ctx, []byte("m v=1 1700000000000\n"))
		var we *influx.WriteError
		if !errors.Is(err, influx.ErrRetryable) || !errors.As(err, &we) || we.StatusCode != 404 ||
			!strings.Contains(we.Message, "database not found") {
			t.Fatalf("Write = %v, want retryable 404 database not found", err)
		}
	})

	t.Run("EnsureDatabase", func(t *testing.T) {
		for range 2 {
			for _, name := range []string{db.Database, `other "db"`} {
				if err := influx.EnsureDatabase(ctx, db.URL, db.AdminToken, name); err != nil {
					t.Fatalf("EnsureDatabase(%q): %v", name, err)
				}
			}
		}
		if err := influx.EnsureDatabase(ctx, db.URL, db.Token, "third"); !errors.Is(err, influx.ErrRetryable) {
			t.Fatalf("EnsureDatabase as the gateway user = %v, want a refusal (403, retryable)", err)
		}
		w := newWriter(t, db, func(c *influx.Config) { c.Bucket = `other "db"/autogen`; c.Token = db.AdminToken })
		if err := w.Write(ctx, []byte("m v=1 1700000000000\n")); err != nil {
			t.Fatalf("Write to the new database: %v", err)
		}
	})

	t.Run("PingGzipAndPrecisions", func(t *testing.T) {
		base := epoch(5).Add(123456789 * time.Nanosecond)
		for i, p := range []time.Duration{time.Nanosecond, time.Microsecond, time.Millisecond, time.Second} {
			w := newWriter(t, db, func(c *influx.Config) { c.Precision = p; c.Gzip = i%2 == 0 })
			if err := w.Ping(ctx); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			e := w.NewEncoder()
			e.Measurement("precision")
			e.TagString("p", p.String())
			e.FieldInt("v", int64(i))
			e.End(base)
			if err := w.Write(ctx, e.Bytes()); err != nil {
				t.Fatalf("precision %v: %v", p, err)
			}
			rows := db.Query(t, rangeQuery(epoch(5), epoch(6), `"p" = `+query.String(p.String())))
			if len(rows) != 1 || !rows[0]["_time"].(time.Time).Equal(base.Truncate(p)) {
				t.Fatalf("precision %v: rows %v, want one at %v", p, rows, base.Truncate(p))
			}
		}
	})

	t.Run("SpecialCharactersRoundTrip", func(t *testing.T) {
		names := []string{
			"plain", "with space", "comma,comma", "equals=equals", `"quoted"`, `back\slash`,
			" leading space", "trailing space ", "a, b=c d", "température", "🚗 car", "#hash", "single'quote",
			"Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", "slash/and:colon",
		}
		w := newWriter(t, db, nil)
		base := epoch(7)
		e := w.NewEncoder()
		type point struct{ measurement, tagKey, tagValue, fieldKey, text string }
		var want []point
		for i, s := range names {
			p := point{"m " + s, "k" + s, s, "f" + s, s + "\n\"\\ end"}
			if !e.Measurement(p.measurement) || !e.TagString(p.tagKey, p.tagValue) || !e.FieldText(p.fieldKey, p.text) ||
				!e.End(base.Add(time.Duration(i)*time.Millisecond)) {
				t.Fatalf("encoder rejected %q", s)
			}
			want = append(want, p)
		}
		if err := w.Write(ctx, e.Bytes()); err != nil {
			t.Fatalf("Write: %v\n%s", err, e.Bytes())
		}
		rows := db.Query(t, rangeQuery(base, base.Add(time.Hour)))
		if len(rows) != len(want) {
			t.Fatalf("read %d points, want %d", len(rows), len(want))
		}
		for _, r := range rows {
			i := int(r["_time"].(time.Time).Sub(base) / time.Millisecond)
			p := want[i]
			if r["_measurement"] != p.measurement || r[p.tagKey] != p.tagValue || r["_field"] != p.fieldKey || r["_value"] != p.text {
				t.Errorf("point %d: wrote %+v, read %v", i, p, r)
			}
		}
	})

	t.Run("RandomNamesRoundTrip", func(t *testing.T) {
		seed := uint64(time.Now().UnixNano())
		if s := os.Getenv("TELEGATE_PROPERTY_SEED"); s != "" {
			seed, _ = strconv.ParseUint(s, 10, 64)
		}
		cases := 60
		if s := os.Getenv("TELEGATE_PROPERTY_CASES"); s != "" {
			cases, _ = strconv.Atoi(s)
		}
		t.Logf("seed %d, %d cases (set TELEGATE_PROPERTY_SEED, TELEGATE_PROPERTY_CASES to replay or extend)", seed, cases)
		randomRoundTrip(t, db, newWriter(t, db, nil), rand.New(rand.NewPCG(seed, 0x7e1e9a7e)), epoch(8), cases)
	})
}

// alphabet mixes ordinary bytes, every character line protocol treats
// specially, and multi-byte UTF-8.
var alphabet = []string{
	"a", "Z", "0", "_", "-", ".", "/", ",", "=", " ", `"`, `\`, "'", "#", "é", "🚗", "\t", "\n",
}

func randomString(rng *rand.Rand, maxLen int) string {
	var b strings.Builder
	for range 1 + rng.IntN(maxLen) {
		b.WriteString(alphabet[rng.IntN(len(alphabet))])
	}
	return b.String()
}

// randomRoundTrip writes lines with random names and values and checks that
// everything the Encoder accepted reads back unchanged: the Encoder never
// produces a line the server misreads or rejects.
func randomRoundTrip(t *testing.T, db *testenv.Influx, w *influx.Writer, rng *rand.Rand, base time.Time, cases int) {
	t.Helper()
	type point struct {
		measurement string
		tags        map[string]string
		fields      map[string]any
	}
	want := map[int64]point{} // by UnixNano
	values := 0
	e := w.NewEncoder()
	for i := range cases {
		at := base.Add(time.Duration(i) * time.Millisecond)
		p := point{measurement: randomString(rng, 8), tags: map[string]string{}, fields: map[string]any{}}
		if !e.Measurement(p.measurement) {
			continue
		}
		// Keys start with distinct letters: sorted, and never Flux's columns.
		for _, prefix := range []string{"a", "b"} {
			k, v := prefix+randomString(rng, 6), randomString(rng, 8)
			if e.TagString(k, v) {
				p.tags[k] = v
			}
		}
		if k, v := "s"+randomString(rng, 6), strings.ReplaceAll(randomString(rng, 12), "\r", ""); e.FieldText(k, v) {
			p.fields[k] = v
		}
		// One key prefix per type: a field's type is fixed per measurement.
		if rng.IntN(2) == 0 {
			k, v := "x"+randomString(rng, 6), rng.NormFloat64()*math.Pow(10, float64(rng.IntN(40)-20))
			if e.FieldFloat(k, v) {
				p.fields[k] = v
			}
		} else {
			k, v := "y"+randomString(rng, 6), rng.Int64()-math.MaxInt64/2
			if e.FieldInt(k, v) {
				p.fields[k] = v
			}
		}
		if e.End(at) {
			want[at.UnixNano()] = p
			values += len(p.fields)
		}
	}
	if len(want) < cases/4 {
		t.Fatalf("only %d of %d random lines were representable", len(want), cases)
	}
	if err := w.Write(context.Background(), e.Bytes()); err != nil {
		t.Fatalf("the server rejected encoder output: %v\n%q", err, e.Bytes())
	}
	rows := db.Query(t, rangeQuery(base, base.Add(time.Hour)))
	if len(rows) != values {
		t.Errorf("read %d values, wrote %d", len(rows), values)
	}
	for _, r := range rows {
		p, ok := want[r["_time"].(time.Time).UnixNano()]
		field, _ := r["_field"].(string)
		if !ok || r["_measurement"] != p.measurement || p.fields[field] != r["_value"] {
			t.Errorf("read %v, wrote %+v", r, p)
			continue
		}
		for k, v := range p.tags {
			if r[k] != v {
				t.Errorf("tag %q: read %q, wrote %q", k, r[k], v)
			}
		}
	}
	t.Logf("%d lines, %d values round-tripped", len(want), values)
}

// TestOutage stops and kills the server under a Writer: writes fail as
// retryable while it is down and succeed once it is back, and nothing
// acknowledged before is lost.
func TestOutage(t *testing.T) {
	t.Parallel()
	db := testenv.StartInflux(t)
	ctx := context.Background()
	w := newWriter(t, db, nil)
	base := epoch(1)
	batch := func(n int) []byte {
		e := w.NewEncoder()
		for i := range 10 {
			e.Measurement("outage")
			e.TagString("vin", "V1")
			e.FieldInt("seq", int64(n*10+i))
			e.End(base.Add(time.Duration(n*10+i) * time.Millisecond))
		}
		return e.Bytes()
	}

	if err := w.Write(ctx, batch(0)); err != nil {
		t.Fatalf("Write before the outage: %v", err)
	}

	db.Stop()
	if err := w.Write(ctx, batch(1)); !errors.Is(err, influx.ErrRetryable) {
		t.Fatalf("Write with the server stopped = %v, want ErrRetryable", err)
	}
	if err := w.Ping(ctx); !errors.Is(err, influx.ErrRetryable) {
		t.Fatalf("Ping with the server stopped = %v, want ErrRetryable", err)
	}
	db.Start(t)
	if err := w.Write(ctx, batch(1)); err != nil {
		t.Fatalf("Write after restart: %v", err)
	}

	db.Kill()
	if err := w.Write(ctx, batch(2)); !errors.Is(err, influx.ErrRetryable) {
		t.Fatalf("Write with the server killed = %v, want ErrRetryable", err)
	}
	db.Start(t)
	if err := w.Write(ctx, batch(2)); err != nil {
		t.Fatalf("Write after crash recovery: %v", err)
	}
	if n := db.Count(t, "outage", "seq", base); n != 30 {
		t.Fatalf("Count = %d, want 30: acknowledged points were lost", n)
	}
}
