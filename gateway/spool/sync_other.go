//go:build !linux

package spool

import (
	"errors"
	"os"
	"syscall"
)

// fdatasync falls back to a full fsync where fdatasync is not available.
func fdatasync(f *os.File) error { return f.Sync() }

// reserve does nothing here: preallocate's zeros reserve the blocks (and a
// full disk is reported by their write).
func reserve(*os.File, int64) error { return nil }

// isNoSpace reports whether err says the disk is full.
func isNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }
