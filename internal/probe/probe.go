// Package probe holds the small readiness helpers the tool harnesses
// (internal/soak, internal/benchcompare) use to start real servers on
// loopback: a free port, and a readiness probe on an HTTP status.
// internal/testenv has its own testing.TB flavoured FreeAddr for tests.
package probe

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// FreeAddr returns a loopback host:port that was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// HTTPReady returns a readiness probe that succeeds once url answers with
// status want (each call is one GET, no keep-alive, 2 s timeout).
func HTTPReady(url string, want int) func(context.Context) error {
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close() // status is all a probe reads
		if resp.StatusCode != want {
			return fmt.Errorf("%s: status %d", url, resp.StatusCode)
		}
		return nil
	}
}
