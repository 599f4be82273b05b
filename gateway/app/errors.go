package app

import "errors"

var (
	errSpoolAlmostFull = errors.New("spool above 90% of max_bytes")
	errDraining        = errors.New("draining: this replica takes no new devices (SIGUSR1)")
)

// WaitReady blocks until Start has completed or ctx is done.
func (a *App) WaitReady(ctx interface{ Done() <-chan struct{} }) bool {
	select {
	case <-a.ready:
		return true
	case <-ctx.Done():
		return false
	}
}
