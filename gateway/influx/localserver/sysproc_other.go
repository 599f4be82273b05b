//go:build !linux

package localserver

import "syscall"

func sysProcAttr(syscall.Signal) *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
