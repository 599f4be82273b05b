//go:build unix

package spool

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user + system) used by this process so
// far, the spool's goroutines and the kernel work of their syscalls
// (fdatasync) included.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
