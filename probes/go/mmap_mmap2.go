//go:build 386 || arm

package main

import "syscall"

// On 32-bit x86 and arm, SYS_MMAP is the old one-argument call (a pointer to a struct of six);
// mmap2 takes its six arguments in registers, as package syscall's own mmap does there.
const sysMmap = syscall.SYS_MMAP2
