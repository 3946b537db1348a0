"""qemu-user: the guest architecture's python3 under user-mode emulation, a cheap small address space.

``qemu-<arch>-static -L ROOT [-R SIZE] ROOT/usr/bin/python3 allocator.pyz probe ...``
with ROOT a cached Debian root filesystem of that architecture. Without ``-R``
the guest shares the host's 47-bit space; ``reserved_va`` (``-R``) limits it,
like a small-VA kernel would (4 GiB, or 256 GiB as under Sv39).

The emulator runs jailed (:mod:`harness.backends.jail`): the view's root is ROOT itself,
read-only, with the (static) emulator and the zipapp bound under
``/mnt/arena``, a proc of its own PID namespace and, as root, a guest uid of
its own. So the command is really ``/mnt/arena/qemu -L / ... /usr/bin/python3``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, List, Optional, Tuple

import images
from harness import arches, proc
from harness.backends import jail
from harness.backends.base import Backend, Need, RunContext, Tool
from harness.errors import HarnessError
from harness.model import DEBIAN, Size, Target


@dataclass(frozen=True)
class QemuUserOptions:
    arch: str = "arm64"
    suite: Optional[str] = field(default=None, metadata={DEBIAN: "a Debian release"})
    reserved_va: Optional[Size] = None
    # more Debian packages in its root filesystem (openjdk-17-jre-headless for the jvm probe)
    packages: Tuple[str, ...] = field(default=(), metadata={DEBIAN: "a Debian package name"})

    def validate(self) -> Optional[Tuple[str, str]]:
        if self.arch not in arches.BY_DEBIAN:
            return "arch", "%r is not a known arch, options are %s" % (self.arch, ", ".join(arches.BY_DEBIAN))
        if self.reserved_va is not None and self.reserved_va < (256 << 20):
            return "reserved_va", 'expected at least "256M", got %d bytes' % self.reserved_va
        return None


class QemuUserBackend(Backend[QemuUserOptions]):
    name: ClassVar[str] = "qemu-user"
    Options: ClassVar[type] = QemuUserOptions
    description: ClassVar[str] = "user-mode emulation with a reserved address space (-R)"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self._root: Optional[Path] = None

    def guest_arch(self) -> str:
        return self.options.arch

    def accelerator(self) -> Optional[str]:
        return "tcg"  # qemu-user translates every instruction

    @property
    def emulator(self) -> str:
        return "qemu-%s-static" % arches.BY_DEBIAN[self.options.arch].qemu_user

    def required_tools(self) -> Tuple[Tool, ...]:
        return (Tool(self.emulator, "qemu-user-static"),)

    def needs(self, cache: images.Cache) -> List[Need]:
        """The emulator; to build the root filesystem: its tools, and root (binfmt_misc, chroot)."""
        out = super().needs(cache)
        if not cache.ready(self.recipes()[0]):
            out.append(Need("root", os.geteuid() == 0, "building a foreign root filesystem needs root "
                            "(binfmt, chroot): run as root", images=True))
        return out

    def recipes(self) -> List[images.Recipe]:
        o = self.options
        return [images.Rootfs(o.arch, o.suite or arches.BY_DEBIAN[o.arch].suite, ("python3",) + o.packages)]

    def provision(self, cache: images.Cache, log: images.Log) -> None:
        self._root = cache.get(self.recipes()[0], log) / "root"

    def execute(self, ctx: RunContext) -> proc.Completed:
        if self._root is None:
            self.provision(images.Cache(), lambda msg: None)
        assert self._root is not None
        emulator = proc.which(self.emulator)
        if emulator is None:
            raise HarnessError("%s is not installed (sudo apt-get install -y qemu-user-static)" % self.emulator)
        view = jail.View(root=self._root, ro=((Path(emulator), jail.guest_path("qemu")),
                                             (self.boot_dir(ctx), jail.guest_path("boot"))), proc=True)
        emulate = [jail.guest_path("qemu"), "-L", "/"]
        if self.options.reserved_va is not None:
            emulate += ["-R", str(int(self.options.reserved_va))]
        argv = emulate + ["/usr/bin/python3"] + self.agent_args(jail.guest_path("boot"), via=emulate) + \
            self.serve_args(ctx)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "LC_ALL": "C",
               "HOME": "/tmp"}
        return self.spawn(ctx, self.jailed(ctx, view, argv), env=env, watch=self.watcher(ctx))
