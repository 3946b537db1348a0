//go:build !386 && !arm

package main

import "syscall"

// mmap with its six arguments in registers (amd64, arm64, riscv64, ...).
const sysMmap = syscall.SYS_MMAP
