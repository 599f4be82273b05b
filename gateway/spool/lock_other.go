//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package spool

import "os"

// lockFile is a no-op where flock is not available: do not open one spool
// directory twice there.
func lockFile(*os.File) error { return nil }
