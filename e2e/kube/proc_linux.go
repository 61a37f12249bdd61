package kube

import "syscall"

// childAttr makes the kernel kill a child when the test process dies.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
