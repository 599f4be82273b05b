package testenv

import (
	"os"
	"sync"
	"testing"
	"time"
)

// EnvTestDate names the environment variable that pins the clocks tests
// inject into the services (never the system clock): a date (YYYY-MM-DD,
// the clock starts at 00:00 UTC that day) or an instant (RFC 3339, e.g.
// 2027-03-28T00:59:30Z to cross Europe's DST switch during the run).
// `make test-dates` runs the services and e2e suites over several.
const EnvTestDate = "TELEGATE_TEST_DATE"

var (
	startOnce sync.Once
	startAt   time.Time
	startErr  error
)

// TestStart is the instant the tests' injected clocks start at:
// TELEGATE_TEST_DATE when set, else def (each test's own fixed date). A
// malformed value fails the test rather than silently using def.
func TestStart(t testing.TB, def time.Time) time.Time {
	t.Helper()
	startOnce.Do(func() {
		v := os.Getenv(EnvTestDate)
		if v == "" {
			return
		}
		if d, err := time.Parse(time.DateOnly, v); err == nil {
			startAt = d
			return
		}
		startAt, startErr = time.Parse(time.RFC3339, v)
	})
	if startErr != nil {
		t.Fatalf("%s: want YYYY-MM-DD or RFC 3339: %v", EnvTestDate, startErr)
	}
	if startAt.IsZero() {
		return def
	}
	t.Logf("%s: injected clock starts at %s", EnvTestDate, startAt.UTC().Format(time.RFC3339))
	return startAt
}

// Clock returns a clock that reads TestStart(t, def) when it is created and
// then advances with the real elapsed time (monotonic), so timers, retries
// and back-offs behave normally while the date is pinned.
func Clock(t testing.TB, def time.Time) func() time.Time {
	t.Helper()
	start, t0 := TestStart(t, def), time.Now()
	return func() time.Time { return start.Add(time.Since(t0)) }
}
