package e2e

import "syscall"

// sysProcAttr puts a child in its own process group and has the kernel
// kill it if the test process dies first (a timeout panic, a crash), so no
// server outlives the run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
