"""Every architecture fact in one table of keyword records, as the KUnit tool keeps its ``qemu_configs``.

A record names an architecture three ways: the harness's own word (what a qemu
target's ``arch:`` takes: x86_64, i386, arm64, riscv64), Debian's (amd64, i386,
arm64, riscv64: what qemu-user and docker targets take, and what mmdebstrap
and the image cache use) and the kernel's (``uname -m``). Then, per
architecture: the QEMU system emulator and how to boot it, the Debian kernel
package and where its image lies, the modules a 9p root needs, the qemu-user
emulator, the default Debian release for its kernels and roots, the host
architectures that run its binaries natively, Go's ``GOARCH``, and how to
build a minimal kernel for it from Debian's kernel source (:class:`SourceKernel`).

Adding an architecture is adding one record here (and, for a new QEMU machine,
testing that its kernel boots with the busybox initramfs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

NINEP_MODULES = ("9p", "9pnet_virtio", "virtio_pci")  # module_closure adds what they depend on

KERNEL_SOURCE = "linux-source-6.1"
"""The Debian package whose ``/usr/src/<it>.tar.xz`` source-built kernels come from (Debian 12's 6.1)."""

KERNEL_BASE: Tuple[str, ...] = (
    # On top of `make tinyconfig`: what a busybox initramfs needs to boot, mount the guest's root over
    # 9p on virtio and run python3 and static Go there (futexes, epoll, the *fd calls, SysV IPC, AF_UNIX).
    # 9P_FS needs INET (not only NET): olddefconfig drops it silently without.
    "PRINTK=y", "PRINTK_TIME=y", "TTY=y", "BINFMT_ELF=y", "BINFMT_SCRIPT=y", "BLK_DEV_INITRD=y", "RD_GZIP=y",
    "DEVTMPFS=y", "DEVTMPFS_MOUNT=y", "PROC_FS=y", "PROC_SYSCTL=y", "SYSFS=y", "TMPFS=y", "SHMEM=y", "PCI=y",
    "VIRTIO_MENU=y", "VIRTIO=y", "VIRTIO_PCI=y", "NET=y", "INET=y", "NETWORK_FILESYSTEMS=y", "NET_9P=y",
    "NET_9P_VIRTIO=y", "9P_FS=y", "FUTEX=y", "EPOLL=y", "SIGNALFD=y", "TIMERFD=y", "EVENTFD=y",
    "POSIX_TIMERS=y", "MULTIUSER=y", "FILE_LOCKING=y", "ADVISE_SYSCALLS=y", "MEMBARRIER=y", "AIO=y",
    "RSEQ=y", "SYSVIPC=y", "UNIX=y",
    # Everything is built in: the initramfs then carries no modules (and the build needs no kmod).
    "IPV6=n", "MODULES=n",
)
"""Every architecture's part of a source-built kernel's base config (tinyconfig + these + the arch's own)."""


@dataclass(frozen=True)
class SourceKernel:
    """How to build an architecture's kernel from :data:`KERNEL_SOURCE` with Debian's cross compiler."""

    make_arch: str  # make ARCH=...
    cross_compile: str  # make CROSS_COMPILE=... (the compiler is <this>gcc)
    compiler_package: str  # Debian's package of <cross_compile>gcc on a host of another architecture
    image: str  # the boot image under the build's output directory; make's target is its file name
    config: Tuple[str, ...]  # this architecture's options, after KERNEL_BASE's
    headers: Tuple[Tuple[str, str], ...] = ()  # (file, Debian package): host headers its build tools include

    @property
    def target(self) -> str:
        return self.image.rsplit("/", 1)[-1]


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
    source_kernel: Optional[SourceKernel] = None  # None: no source-built kernel for it (kernel: source)

    @property
    def kernel_config(self) -> Tuple[str, ...]:
        """The base config of its source-built kernel: :data:`KERNEL_BASE`, then its own options."""
        return KERNEL_BASE + self.source_kernel.config if self.source_kernel else ()


ARCHES: Tuple[Arch, ...] = (
    Arch(name="x86_64", debian="amd64", uname="x86_64", qemu_system="qemu-system-x86_64",
         qemu_package="qemu-system-x86", machine=(), cpu="max,-la57", console="ttyS0",
         kernel_package="linux-image-amd64", kernel_image="boot/vmlinuz-*", suite="bookworm",
         qemu_user="x86_64", goarch="amd64", native_on=("amd64",),
         # ACPI: without it `poweroff -f` halts the PC instead of ending QEMU. objtool needs libelf's headers.
         source_kernel=SourceKernel("x86_64", "x86_64-linux-gnu-", "gcc-x86-64-linux-gnu", "arch/x86/boot/bzImage",
                                    ("SERIAL_8250=y", "SERIAL_8250_CONSOLE=y", "ACPI=y"),
                                    headers=(("/usr/include/gelf.h", "libelf-dev"),))),
    Arch(name="i386", debian="i386", uname="i686", qemu_system="qemu-system-i386",
         qemu_package="qemu-system-x86", machine=(), cpu="max", console="ttyS0",
         kernel_package="linux-image-686", kernel_image="boot/vmlinuz-*", suite="bookworm",
         qemu_user="i386", goarch="386", native_on=("amd64", "i386")),
    Arch(name="arm64", debian="arm64", uname="aarch64", qemu_system="qemu-system-aarch64",
         qemu_package="qemu-system-arm", machine=("-M", "virt"), cpu="max,pauth-impdef=on", console="ttyAMA0",
         kernel_package="linux-image-arm64", kernel_image="boot/vmlinuz-*", suite="bookworm",
         qemu_user="aarch64", goarch="arm64", native_on=("arm64",),
         # VA_BITS_48 as Debian's kernel has it: tinyconfig's default with 4K pages is 39.
         source_kernel=SourceKernel("arm64", "aarch64-linux-gnu-", "gcc-aarch64-linux-gnu", "arch/arm64/boot/Image",
                                    ("SERIAL_AMBA_PL011=y", "SERIAL_AMBA_PL011_CONSOLE=y", "PCI_HOST_GENERIC=y",
                                     "VIRTIO_MMIO=y", "ARM64_VA_BITS_48=y"))),
    Arch(name="riscv64", debian="riscv64", uname="riscv64", qemu_system="qemu-system-riscv64",
         qemu_package="qemu-system-misc", machine=("-M", "virt"), cpu="rv64", console="ttyS0",
         kernel_package="linux-image-riscv64", kernel_image="boot/vmlinux-*", suite="trixie",
         qemu_user="riscv64", goarch="riscv64",
         firmware=("-bios", "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"),
         firmware_package="opensbi", native_on=("riscv64",),
         # FPU: tinyconfig turns it off, and Debian's riscv64 userland uses the F and D extensions.
         # SOC_VIRT: QEMU virt's interrupt controller and its power-off device.
         source_kernel=SourceKernel("riscv", "riscv64-linux-gnu-", "gcc-riscv64-linux-gnu", "arch/riscv/boot/Image",
                                    ("SERIAL_8250=y", "SERIAL_8250_CONSOLE=y", "SERIAL_OF_PLATFORM=y",
                                     "PCI_HOST_GENERIC=y", "VIRTIO_MMIO=y", "FPU=y", "SOC_VIRT=y"))),
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
