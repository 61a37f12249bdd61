//go:build !linux

package kube

import "syscall"

// childAttr: only Linux can tie a child's life to its parent's; elsewhere Cleanup kills it.
func childAttr() *syscall.SysProcAttr {
	return nil
}
