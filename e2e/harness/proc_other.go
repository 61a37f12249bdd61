//go:build !linux

package harness

import "syscall"

func childAttr() *syscall.SysProcAttr { return nil }

// LeftoverChildren is only implemented on Linux; elsewhere it returns nil.
func LeftoverChildren() []string { return nil }

// LeftoverProcesses is only implemented on Linux; elsewhere it returns nil.
func LeftoverProcesses() []string { return nil }
