package testenv

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestInfluxdPathFromEnv(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-influxd")
	t.Setenv("INFLUXD", missing)
	if _, err := InfluxdPath(); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("InfluxdPath() error = %v, want one naming %s", err, missing)
	}
	notExec := filepath.Join(t.TempDir(), "influxd")
	if err := os.WriteFile(notExec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("INFLUXD", notExec)
	if _, err := InfluxdPath(); err == nil {
		t.Fatalf("InfluxdPath() accepted a non-executable file")
	}
}

// TestInfluxdPathModuleRoot needs bin/influxd to exist (`make influxd`).
func TestInfluxdPathModuleRoot(t *testing.T) {
	SkipIfShort(t, "bin/influxd (`make influxd`)")
	t.Setenv("INFLUXD", "")
	p, err := InfluxdPath()
	if err != nil {
		t.Fatalf("%s: %v", NotFoundMessage, err)
	}
	root := filepath.Dir(filepath.Dir(p))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil || filepath.Base(p) != "influxd" {
		t.Fatalf("InfluxdPath() = %s, want <module root>/bin/influxd", p)
	}
}

// TestShortSkipsInflux: in -short mode StartInflux and RequireInfluxd skip
// the test before looking for a binary, even when $INFLUXD names a missing
// file (they would fail it otherwise).
func TestShortSkipsInflux(t *testing.T) {
	if !testing.Short() {
		t.Skip("checks -short behaviour: run with go test -short")
	}
	t.Setenv("INFLUXD", filepath.Join(t.TempDir(), "no-influxd"))
	for name, f := range map[string]func(testing.TB){
		"StartInflux":    func(tb testing.TB) { StartInflux(tb) },
		"RequireInfluxd": func(tb testing.TB) { RequireInfluxd(tb) },
	} {
		t.Run(name, func(t *testing.T) {
			var skipped bool
			t.Run("inner", func(t *testing.T) {
				defer func() { skipped = t.Skipped() }()
				f(t)
			})
			if !skipped {
				t.Fatalf("%s did not skip in -short mode", name)
			}
		})
	}
}

func TestTyped(t *testing.T) {
	types := map[string]string{"v": "float", "n": "integer", "seq": "integer"}
	for _, c := range []struct {
		col  string
		in   any
		want any
	}{
		{"v", json.Number("80"), 80.0},
		{"last_v", json.Number("80"), 80.0},
		{"n", json.Number("3"), int64(3)},
		{"sum", json.Number("12"), int64(12)},
		{"mean", json.Number("1.5"), 1.5},
		{"b", true, true},
		{"s", "x", "x"},
	} {
		if got := typed(types, c.col, c.in); got != c.want {
			t.Errorf("typed(%s, %v) = %#v, want %#v", c.col, c.in, got, c.want)
		}
	}
}

// TestInfluxLifecycle covers start, write, query, count, stop, restart and
// crash recovery against the real server.
func TestInfluxLifecycle(t *testing.T) {
	db := StartInflux(t)
	if !strings.HasPrefix(db.URL, "http://127.0.0.1:") || db.Database != "telemetry" || db.Bucket != "telemetry/autogen" {
		t.Fatalf("unexpected server identity: %+v", db)
	}
	start := time.Unix(1_700_000_000, 0)
	write := func(line string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, db.URL+"/api/v2/write?bucket=telemetry/autogen&precision=s",
			strings.NewReader(line))
		req.Header.Set("Authorization", "Token "+db.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("write: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("write: HTTP %d", resp.StatusCode)
		}
	}
	write("speed,vin=VIN1 v=42.5 1700000000\n")

	rows := db.Query(t, `SELECT * FROM "speed" WHERE time >= '2023-11-01T00:00:00Z' GROUP BY *`)
	if len(rows) != 1 {
		t.Fatalf("query returned %d rows, want 1: %v", len(rows), rows)
	}
	r := rows[0]
	if r["_value"] != 42.5 || r["_field"] != "v" || r["vin"] != "VIN1" || !r["_time"].(time.Time).Equal(start) {
		t.Fatalf("row = %v", r)
	}
	if n := db.Count(t, "speed", "v", start); n != 1 {
		t.Fatalf("Count = %d, want 1", n)
	}
	if n := db.Count(t, "speed", "nope", start); n != 0 {
		t.Fatalf("Count(missing field) = %d, want 0", n)
	}

	db.Stop()
	db.Stop() // idempotent
	if resp, err := http.Get(db.URL + "/ping"); err == nil {
		resp.Body.Close()
		t.Fatalf("server still answers after Stop")
	}
	db.Start(t)
	if n := db.Count(t, "speed", "v", start); n != 1 {
		t.Fatalf("after restart Count = %d, want 1", n)
	}

	write("speed,vin=VIN1 v=43 1700000001\n")
	db.Kill() // the point is only in the WAL
	db.Kill()
	db.Start(t)
	if n := db.Count(t, "speed", "v", start); n != 2 {
		t.Fatalf("after kill and restart Count = %d, want 2", n)
	}
	http.DefaultClient.CloseIdleConnections()
}
