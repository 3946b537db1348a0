"""Every architecture fact in one table of keyword records, as the KUnit tool keeps its ``qemu_configs``.

A record names an architecture three ways: the harness's own word (what a qemu
target's ``arch:`` takes: x86_64, i386, arm64, riscv64), Debian's (amd64, i386,
arm64, riscv64: what qemu-user and docker targets take, and what mmdebstrap
and the image cache use) and the kernel's (``uname -m``). Then, per
architecture: the QEMU system emulator and how to boot it, the Debian kernel
package and where its image lies, the modules a 9p root needs, the qemu-user
emulator, the default Debian release for its kernels and roots, the host
architectures that run its binaries natively, and Go's ``GOARCH``.

Adding an architecture is adding one record here (and, for a new QEMU machine,
testing that its kernel boots with the busybox initramfs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

NINEP_MODULES = ("9p", "9pnet_virtio", "virtio_pci")  # module_closure adds what they depend on


@dataclass(frozen=True)
class Arch:
    name: str  # the harness's word (a qemu target's arch:)
    debian: str  # Debian's (qemu-user and docker targets, mmdebstrap --arch, the cache)
    uname: str  # the kernel's (uname -m): how a host or guest names itself
    qemu_system: str
    qemu_package: str
    machine: Tuple[str, ...]  # -M ... (nothing: the emulator's default machine)
    cpu: str
    console: str
    kernel_package: str
    kernel_image: str  # glob under the kernel package's root
    suite: str  # default Debian release of its kernel and root filesystem
    qemu_user: str  # qemu-<this>-static
    goarch: Optional[str]  # GOARCH of Go's port to it (the go probe's build); None where Go has none
    modules: Tuple[str, ...] = NINEP_MODULES
    firmware: Tuple[str, ...] = ()  # extra QEMU arguments (-bios ...); the last one is a file that must exist
    firmware_package: Optional[str] = None
    native_on: Tuple[str, ...] = ()  # Debian arches of hosts that run its binaries without emulation


ARCHES: Tuple[Arch, ...] = (
    Arch(name="x86_64", debian="amd64", uname="x86_64", qemu_system="qemu-system-x86_64",
         qemu_package="qemu-system-x86", machine=(), cpu="max,-la57", console="ttyS0",
         kernel_package="linux-image-amd64", kernel_image="boot/vmlinuz-*", suite="bookworm",
         qemu_user="x86_64", goarch="amd64", native_on=("amd64",)),
    Arch(name="i386", debian="i386", uname="i686", qemu_system="qemu-system-i386",
         qemu_package="qemu-system-x86", machine=(), cpu="max", console="ttyS0",
         kernel_package="linux-image-686", kernel_image="boot/vmlinuz-*", suite="bookworm",
         qemu_user="i386", goarch="386", native_on=("amd64", "i386")),
    Arch(name="arm64", debian="arm64", uname="aarch64", qemu_system="qemu-system-aarch64",
         qemu_package="qemu-system-arm", machine=("-M", "virt"), cpu="max,pauth-impdef=on", console="ttyAMA0",
         kernel_package="linux-image-arm64", kernel_image="boot/vmlinuz-*", suite="bookworm",
         qemu_user="aarch64", goarch="arm64", native_on=("arm64",)),
    Arch(name="riscv64", debian="riscv64", uname="riscv64", qemu_system="qemu-system-riscv64",
         qemu_package="qemu-system-misc", machine=("-M", "virt"), cpu="rv64", console="ttyS0",
         kernel_package="linux-image-riscv64", kernel_image="boot/vmlinux-*", suite="trixie",
         qemu_user="riscv64", goarch="riscv64",
         firmware=("-bios", "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"),
         firmware_package="opensbi", native_on=("riscv64",)),
)

BY_NAME: Dict[str, Arch] = {a.name: a for a in ARCHES}
BY_DEBIAN: Dict[str, Arch] = {a.debian: a for a in ARCHES}
BY_UNAME: Dict[str, Arch] = {a.uname: a for a in ARCHES}


def host() -> Arch:
    """This machine's record (x86_64 on the machines we test on)."""
    machine = os.uname().machine
    if machine not in BY_UNAME:
        raise LookupError("this host's architecture %r is not in harness/arches.py" % machine)
    return BY_UNAME[machine]


def host_debian() -> str:
    """This machine's Debian architecture name, also for one the table does not know."""
    machine = os.uname().machine
    return BY_UNAME[machine].debian if machine in BY_UNAME else machine


def runs_natively(debian: str, on: Optional[str] = None) -> bool:
    """Whether binaries of ``debian`` run without emulation on a host of Debian arch ``on`` (this one)."""
    on = on or host_debian()
    return debian == on or (debian in BY_DEBIAN and on in BY_DEBIAN[debian].native_on)


def qemu_user_name(debian: str) -> str:
    """The qemu-user emulator's suffix for a Debian arch (qemu-<this>-static)."""
    return BY_DEBIAN[debian].qemu_user if debian in BY_DEBIAN else debian
