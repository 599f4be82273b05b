package spool

import (
	"errors"
	"os"
	"syscall"
)

// fdatasync flushes the file's data and the metadata needed to read it back
// (its size), which is all the spool needs and cheaper than fsync.
func fdatasync(f *os.File) error {
	return onFD(f, "fdatasync", syscall.Fdatasync)
}

// reserve allocates the blocks of f's first n bytes (fallocate, mode 0:
// the length becomes n), so that a full disk is reported at once, before
// anything is written. A file system without fallocate is not an error:
// preallocate's zeros reserve the blocks there.
func reserve(f *os.File, n int64) error {
	err := onFD(f, "fallocate", func(fd int) error { return syscall.Fallocate(fd, 0, 0, n) })
	if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS) {
		return nil // no fallocate here (filesystem, seccomp, gVisor): the zeros written next reserve the blocks
	}
	return err
}

// onFD runs call on f's descriptor, again while it fails with EINTR; its
// error comes back as an *os.PathError naming op and the file.
func onFD(f *os.File, op string, call func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = call(int(fd)); !errors.Is(serr, syscall.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: op, Path: f.Name(), Err: serr}
	}
	return nil
}

// isNoSpace reports whether err says the disk (or the user's quota) is full.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
