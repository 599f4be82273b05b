package localserver

import "syscall"

// sysProcAttr puts influxd in its own process group and has the kernel send
// it sig if its parent dies, so no server outlives the gateway or a test.
func sysProcAttr(sig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: sig}
}
