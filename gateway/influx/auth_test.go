package influx_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/internal/testenv"
)

// call sends one request to db with token ("" = anonymous) and returns the
// status and body.
func call(t *testing.T, method, u, token, ctype, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Token "+token)
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func influxQL(t *testing.T, db *testenv.Influx, token, stmt string) (int, string) {
	t.Helper()
	return call(t, http.MethodPost, db.URL+"/query?db=telemetry", token, "application/x-www-form-urlencoded",
		url.Values{"q": {stmt}}.Encode())
}

func write(t *testing.T, db *testenv.Influx, token, database, line string) int {
	t.Helper()
	code, _ := call(t, http.MethodPost, db.URL+"/api/v2/write?precision=s&bucket="+url.QueryEscape(database+"/autogen"), token, "text/plain", line)
	return code
}

// read queries like the product's read seam (gateway/influx/query): GET
// /query with "Authorization: Token user:password".
func read(t *testing.T, db *testenv.Influx, token string) (int, string) {
	t.Helper()
	return call(t, http.MethodGet, db.URL+"/query?epoch=ns&db=telemetry&q="+url.QueryEscape(`SELECT "v" FROM "auth" WHERE time >= '2023-11-01T00:00:00Z'`),
		token, "", "")
}

// TestServerAuth: the InfluxDB the project runs (localserver.Env +
// SetupAuth) refuses anonymous queries, writes and DROP DATABASE with 401;
// the gateway user writes and reads its database but cannot drop it,
// create users or touch another database; the read-only user cannot write.
func TestServerAuth(t *testing.T) {
	t.Parallel()
	db := testenv.StartInflux(t)

	// Anonymous: everything but /ping is refused.
	for _, stmt := range []string{"SHOW DATABASES", "SELECT * FROM telemetry", "DROP DATABASE telemetry",
		"CREATE USER eve WITH PASSWORD 'x' WITH ALL PRIVILEGES"} {
		if code, body := influxQL(t, db, "", stmt); code != http.StatusUnauthorized {
			t.Errorf("anonymous %q: HTTP %d %s, want 401", stmt, code, body)
		}
	}
	if code := write(t, db, "", "telemetry", "auth v=1 1700000000\n"); code != http.StatusUnauthorized {
		t.Errorf("anonymous v2 write: HTTP %d, want 401", code)
	}
	if code, _ := call(t, http.MethodPost, db.URL+"/write?db=telemetry", "", "text/plain", "auth v=1 1700000000\n"); code != http.StatusUnauthorized {
		t.Errorf("anonymous v1 write: HTTP %d, want 401", code)
	}
	if code, body := read(t, db, ""); code != http.StatusUnauthorized {
		t.Errorf("anonymous read query: HTTP %d %s, want 401", code, body)
	}
	if code, _ := influxQL(t, db, "telegate:wrong-password", "SHOW DATABASES"); code != http.StatusUnauthorized {
		t.Errorf("wrong password: HTTP %d, want 401", code)
	}

	// The gateway user: write and read its database.
	if code := write(t, db, db.Token, "telemetry", "auth v=1 1700000000\n"); code != http.StatusNoContent {
		t.Fatalf("gateway user write: HTTP %d, want 204", code)
	}
	if code, body := read(t, db, db.Token); code != http.StatusOK || !strings.Contains(body, "auth") {
		t.Fatalf("gateway user read query: HTTP %d %s", code, body)
	}
	if code, body := influxQL(t, db, db.Token, "SELECT v FROM auth"); code != http.StatusOK || !strings.Contains(body, `"auth"`) {
		t.Fatalf("gateway user InfluxQL query: HTTP %d %s", code, body)
	}
	// ... but not administer the server or other databases.
	if code, body := influxQL(t, db, db.AdminToken, "CREATE DATABASE other"); code != http.StatusOK {
		t.Fatalf("admin CREATE DATABASE: HTTP %d %s", code, body)
	}
	for _, stmt := range []string{"DROP DATABASE telemetry", "CREATE USER eve WITH PASSWORD 'x' WITH ALL PRIVILEGES",
		"CREATE USER eve WITH PASSWORD 'x'", "GRANT ALL ON other TO telegate", "SHOW USERS", "CREATE DATABASE more",
		"DROP USER telegate_reader"} {
		code, body := influxQL(t, db, db.Token, stmt)
		if code != http.StatusForbidden {
			t.Errorf("gateway user %q: HTTP %d %s, want 403", stmt, code, body)
		}
	}
	if code := write(t, db, db.Token, "other", "auth v=1 1700000000\n"); code != http.StatusForbidden {
		t.Errorf("gateway user write to another database: HTTP %d, want 403", code)
	}
	// The read-only user reads but cannot write.
	if code, body := read(t, db, db.ReadToken); code != http.StatusOK || !strings.Contains(body, "auth") {
		t.Fatalf("reader read query: HTTP %d %s", code, body)
	}
	if code := write(t, db, db.ReadToken, "telemetry", "auth v=2 1700000001\n"); code != http.StatusForbidden {
		t.Errorf("reader write: HTTP %d, want 403", code)
	}
	if code, body := influxQL(t, db, db.ReadToken, "DROP DATABASE telemetry"); code != http.StatusForbidden {
		t.Errorf("reader DROP DATABASE: HTTP %d %s, want 403", code, body)
	}
	// The database survived every attempt.
	if code, body := influxQL(t, db, db.AdminToken, "SHOW DATABASES"); code != http.StatusOK || !strings.Contains(body, `["telemetry"]`) {
		t.Fatalf("SHOW DATABASES as admin: HTTP %d %s", code, body)
	}

	// SetupAuth is idempotent (it runs at every start), and refuses an
	// admin that does not match the server's.
	ctx := context.Background()
	if err := influx.SetupAuth(ctx, db.URL, db.Creds); err != nil {
		t.Fatalf("SetupAuth again: %v", err)
	}
	other := influx.NewCredentials("telemetry")
	if err := influx.SetupAuth(ctx, db.URL, other); !errors.Is(err, influx.ErrAuthSetup) {
		t.Fatalf("SetupAuth with another admin = %v, want ErrAuthSetup", err)
	}
	if code := write(t, db, db.Token, "telemetry", "auth v=3 1700000002\n"); code != http.StatusNoContent {
		t.Fatalf("gateway user write after the refused set-up: HTTP %d", code)
	}
}

// TestCredentialsFile: generated once with mode 0600, reused on later
// starts, refused when group or others can read it.
func TestCredentialsFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "credentials.json")
	c1, err := influx.LoadOrCreateCredentials(p, "telemetry")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v, want 0600", fi.Mode().Perm(), err)
	}
	if len(c1.Admin.Password) < 40 || c1.Admin.Password == c1.Writer.Password || c1.Writer.Name != influx.WriterUser ||
		c1.Reader.Name != influx.ReaderUser || c1.Database != "telemetry" {
		t.Fatalf("credentials = %+v", c1)
	}
	c2, err := influx.LoadOrCreateCredentials(p, "telemetry")
	if err != nil || c2 != c1 {
		t.Fatalf("second load = %+v %v, want the same credentials", c2, err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := influx.LoadOrCreateCredentials(p, "telemetry"); !errors.Is(err, influx.ErrCredentials) {
		t.Fatalf("world-readable file: err = %v, want ErrCredentials", err)
	}
}
