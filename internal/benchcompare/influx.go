package benchcompare

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/telegate/telegate/internal/probe"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/telegate/telegate/decoders/wire"
	"github.com/telegate/telegate/gateway/influx"
	"github.com/telegate/telegate/gateway/influx/localserver"
)

// ErrInflux: InfluxDB refused a request.
var ErrInflux = errors.New("benchcompare: influxdb")

// influxServer is the one influxd every pipeline writes to.
type influxServer struct {
	*proc
	url string
	hc  *http.Client // as the admin (basic auth)
	// writers holds each database's writer (ALL on that database only),
	// created by createDB; written before the pipelines start.
	writers map[string]influx.User
}

// basicAuth adds user's credentials to every request.
type basicAuth struct {
	user influx.User
	next http.RoundTripper
}

func (b basicAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.SetBasicAuth(b.user.Name, b.user.Password)
	return b.next.RoundTrip(r)
}

func randomPassword() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// startInflux runs bin in dir with the environment the project's test
// harness uses (localserver.Env: loopback, no reporting, quiet logs).
func startInflux(bin, dir string) (*influxServer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	httpAddr, err := probe.FreeAddr()
	if err != nil {
		return nil, err
	}
	rpcAddr, err := probe.FreeAddr()
	if err != nil {
		return nil, err
	}
	env := append(envWithout("INFLUXDB_"), localserver.Env(httpAddr, rpcAddr, dir)...)
	u := "http://" + httpAddr
	p, err := startProc("influxd", bin, []string{"run"}, env, filepath.Join(dir, "influxd.log"), 2*time.Minute,
		probe.HTTPReady(u+"/ping", http.StatusNoContent))
	if err != nil {
		return nil, err
	}
	// Authentication is on (localserver.Env): create the first admin,
	// which 1.x accepts without credentials, then query as that admin.
	s := &influxServer{proc: p, url: u, hc: &http.Client{Timeout: time.Minute}, writers: map[string]influx.User{}}
	admin := influx.User{Name: "bench_admin", Password: randomPassword()}
	if _, err := s.query("", fmt.Sprintf("CREATE USER %q WITH PASSWORD '%s' WITH ALL PRIVILEGES", admin.Name, admin.Password)); err != nil {
		p.stop()
		return nil, err
	}
	s.hc.Transport = basicAuth{user: admin, next: http.DefaultTransport}
	return s, nil
}

// query runs an InfluxQL statement (v1 /query) and returns the first
// series' rows.
func (s *influxServer) query(db, q string) ([][]any, error) {
	form := url.Values{"q": {q}}
	if db != "" {
		form.Set("db", db)
	}
	resp, err := s.hc.PostForm(s.url+"/query", form)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Results []struct {
			Error  string `json:"error"`
			Series []struct {
				Values [][]any `json:"values"`
			} `json:"series"`
		} `json:"results"`
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInflux, q, err)
	}
	if out.Error != "" {
		return nil, fmt.Errorf("%w: %s: %s", ErrInflux, q, out.Error)
	}
	if len(out.Results) == 0 {
		return nil, nil
	}
	if out.Results[0].Error != "" {
		return nil, fmt.Errorf("%w: %s: %s", ErrInflux, q, out.Results[0].Error)
	}
	if len(out.Results[0].Series) == 0 {
		return nil, nil
	}
	return out.Results[0].Series[0].Values, nil
}

// createDB creates database db.
// It also creates the database's writer, with ALL on db and nothing else.
func (s *influxServer) createDB(db string) error {
	w := influx.User{Name: db + "_writer", Password: randomPassword()}
	for _, q := range []string{
		fmt.Sprintf("CREATE DATABASE %q", db),
		fmt.Sprintf("CREATE USER %q WITH PASSWORD '%s'", w.Name, w.Password),
		fmt.Sprintf("GRANT ALL ON %q TO %q", db, w.Name),
	} {
		if _, err := s.query("", q); err != nil {
			return err
		}
	}
	s.writers[db] = w
	return nil
}

// count returns the number of telemetry points in db, except those of the
// warm-up probe device.
func (s *influxServer) count(db, probeVIN string) (int64, error) {
	rows, err := s.query(db, fmt.Sprintf(`SELECT count("seq") FROM "telemetry" WHERE "vin" != '%s'`, probeVIN))
	if err != nil || len(rows) == 0 || len(rows[0]) < 2 {
		return 0, err
	}
	n, ok := rows[0][1].(float64)
	if !ok {
		return 0, fmt.Errorf("%w: count is %T", ErrInflux, rows[0][1])
	}
	return int64(n), nil
}

// waitStored polls count until it reaches want, or it has not grown for
// stall, and returns the last count and when it was first reached.
func (s *influxServer) waitStored(db, probeVIN string, want int64, every, stall time.Duration) (int64, time.Time, error) {
	var last int64 = -1
	lastGrowth := time.Now()
	at := time.Now()
	for {
		n, err := s.count(db, probeVIN)
		if err != nil {
			return n, time.Now(), err
		}
		if n != last {
			last, lastGrowth, at = n, time.Now(), time.Now()
		}
		if n >= want || time.Since(lastGrowth) > stall {
			return n, at, nil
		}
		time.Sleep(every)
	}
}

// directWrite posts total telemetry points (the gateway's own lines for
// devs × frames frames) to db with writers concurrent writers, batch lines
// per request, through the v2 write API, and returns the points the server
// acknowledged.
func (s *influxServer) directWrite(ctx context.Context, db string, devs []string, frames, batch, writers int, baseMs int64) (int64, error) {
	writeURL := s.url + "/api/v2/write?" + url.Values{"bucket": {db + "/autogen"}, "precision": {"ns"}}.Encode()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = writers
	hc := &http.Client{Transport: basicAuth{user: s.writers[db], next: tr}, Timeout: 2 * time.Minute}
	defer tr.CloseIdleConnections()

	// One request carries frames [from, to) of every device: batch lines.
	per := max(batch/len(devs), 1)
	type job struct{ from, to int }
	jobs := make(chan job)
	go func() {
		defer close(jobs)
		for from := 1; from <= frames; from += per {
			select {
			case jobs <- job{from, min(from+per, frames+1)}:
			case <-ctx.Done():
				return
			}
		}
	}()
	var stored atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body []byte
			var sigs []wire.Signal
			for j := range jobs {
				body = body[:0]
				n := 0
				for seq := j.from; seq < j.to; seq++ {
					sigs = frameSignals(sigs, uint64(seq))
					for _, vin := range devs {
						body = appendLine(body, vin, uint64(seq), baseMs+int64(seq), sigs)
						n++
					}
				}
				resp, err := hc.Post(writeURL, "text/plain; charset=utf-8", bytes.NewReader(body))
				if err != nil {
					errc <- err
					return
				}
				msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					errc <- fmt.Errorf("%w: write status %d: %s", ErrInflux, resp.StatusCode, msg)
					return
				}
				stored.Add(int64(n))
			}
		}()
	}
	wg.Wait()
	close(errc)
	return stored.Load(), <-errc
}
