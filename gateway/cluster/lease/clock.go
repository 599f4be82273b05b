package lease

import "time"

// Clock is the time source of a Lease and a Ticker: Now for lease validity
// and tick due times, After for every wait. Tests inject a manual clock;
// production uses SystemClock.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the process clock. Its Now carries Go's monotonic
// reading, so lease intervals measured with it ignore wall-clock steps.
type SystemClock struct{}

// Now is time.Now.
func (SystemClock) Now() time.Time { return time.Now() }

// After is time.After.
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
