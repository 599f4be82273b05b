package testenv

import "syscall"

// sysProcAttr makes the kernel kill influxd if the test binary dies without
// cleaning up (e.g. a test timeout), so no server outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
