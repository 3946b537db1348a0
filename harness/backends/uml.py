"""User-Mode Linux: Debian's ``linux.uml`` booted with a read-only view of the host as its root.

UML's hostfs lets a guest (root inside) mount any host path the ``linux.uml``
process can reach, so that process runs jailed (:mod:`harness.backends.jail`): in a
private mount namespace whose root is a read-only view holding the host's
``/usr`` and ``/etc`` (or, with ``root:`` or ``suite:``, a root filesystem),
the boot's own init and allocator under ``/mnt/arena/boot`` (read-only), and
its own results directory ``/mnt/arena/out``, the one writable path. As root,
the harness also runs each UML as a uid of its own, which alone owns that
results directory (``0700``). The guest's init mounts proc, mounts the results
directory through hostfs, runs the allocator zipapp with the guest's
``python3``, prints the result framed on the console as well, and powers off.

With ``suite:`` (e.g. trixie) the view's root is that Debian release's root
filesystem (a cached image with python3 and user-mode-linux), and its own
``linux.uml`` runs there; the guest's root is then that release.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, List, Optional, Tuple

import images
from harness import proc
from harness.backends import jail
from harness.backends.base import Backend, RunContext, Tool
from harness.backends.console import BOOTED, DONE
from harness.errors import ToolMissing
from harness.model import DEBIAN, DIRECTORY, PROGRAM, Size, Target

MiB = 1 << 20

INIT = """#!/bin/sh
# arena-harness: init for UML target {target} (generated; runs as PID 1 in the guest)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONDONTWRITEBYTECODE=1 HOME=/ LC_ALL=C
mount -t proc proc /proc 2>/dev/null
echo "{booted} $(cut -d' ' -f1 /proc/uptime 2>/dev/null)"
OUT=""
# hostfs takes the host path as its option (6.1) or as hostfs=PATH (new mount API, 6.12).
if mount -t hostfs -o {share} none {mnt} 2>/dev/null || mount -t hostfs -o hostfs={share} none {mnt} 2>/dev/null
then OUT="--out {mnt}/result.json"; fi
{command} $OUT
echo "{done} rc=$?"
sync
# A minimal root may have no poweroff: then reboot(2) through python3 (LINUX_REBOOT_CMD_POWER_OFF).
poweroff -f 2>/dev/null || halt -f 2>/dev/null || \
    {python} -c 'import ctypes; ctypes.CDLL(None).reboot(0x4321FEDC)'
"""


GUEST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # what INIT exports
# What Debian's UML kernel spends most of its boot on, and no probe needs (measured with initcall_debug:
# 1.4 s from start to init, 0.35-0.45 s without them): the RAID6 and XOR speed tests (0.85 s; RAID and
# btrfs only, which no guest here uses) and 256 BSD-style legacy ptys (0.23 s; /dev/pts is untouched).
# A kernel that has none of these initcalls ignores the names.
FAST_BOOT = ("initcall_blacklist=raid6_select_algo,calibrate_xor_blocks", "pty.legacy_count=0")


def _in_root(root: str, program: str) -> bool:
    """Whether the guest, booted with ``root`` as its /, finds ``program`` (a path, or a name on GUEST_PATH)."""
    where = [program] if "/" in program else ["%s/%s" % (d, program) for d in GUEST_PATH.split(":")]
    return any(os.access(os.path.join(root, w.lstrip("/")), os.X_OK) for w in where)


@dataclass(frozen=True)
class UmlOptions:
    kernel: str = field(default="linux.uml", metadata={PROGRAM: "user-mode-linux"})
    memory: Size = Size(256 * MiB)
    kernel_args: Tuple[str, ...] = ("quiet",)
    python: str = "python3"
    root: str = field(default="/", metadata={DIRECTORY: "the host directory the guest boots as its root"})
    # run this Debian release's linux.uml inside its own root filesystem
    suite: Optional[str] = field(default=None, metadata={DEBIAN: "a Debian release"})

    def validate(self) -> Optional[Tuple[str, str]]:
        # python is the guest's, found on the guest's PATH inside root (not checkable before a suite's
        # root is built). Only a value other than the default can have been set on purpose.
        if self.python != "python3" and self.suite is None and not _in_root(self.root, self.python):
            return "python", "no such program in the guest's root %s: %s (on its PATH %s)" % (
                self.root, self.python, GUEST_PATH)
        if self.memory < 32 * MiB:
            return "memory", 'expected at least "32M" for a UML guest, got %d bytes' % self.memory
        if not self.root.startswith("/"):
            return "root", "expected an absolute host directory, got %r" % self.root
        if self.suite is not None and self.root != "/":
            return "suite", "a suite brings its own root filesystem; leave root: unset"
        for arg in self.kernel_args:
            if arg.split("=", 1)[0] in ("mem", "root", "init", "umid", "uml_dir", "con0", "rootflags"):
                return "kernel_args", "%r is set by the harness; use the target's own keys instead" % arg
        return None


class UmlBackend(Backend[UmlOptions]):
    name: ClassVar[str] = "uml"
    Options: ClassVar[type] = UmlOptions
    description: ClassVar[str] = "User-Mode Linux with a read-only view of the host as its root"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self._root: Optional[Path] = None

    def required_tools(self) -> Tuple[Tool, ...]:
        if self.options.suite:
            return () if images.Cache().ready(self.recipes()[0]) else (Tool("mmdebstrap", "mmdebstrap"),)
        return (Tool(self.options.kernel, "user-mode-linux"),)

    def recipes(self) -> List[images.Recipe]:
        if not self.options.suite:
            return []
        return [images.Rootfs("amd64", self.options.suite, ("python3", "user-mode-linux", "mount"))]

    def provision(self, cache: images.Cache, log: images.Log) -> None:
        if self.options.suite:
            self._root = cache.get(self.recipes()[0], log) / "root"
        elif self.options.root != "/":
            self._root = Path(self.options.root)

    def missing(self) -> Optional[ToolMissing]:
        problem = super().missing()
        if problem is None and not Path(self.options.root).is_dir():
            return ToolMissing(self.name, self.options.root, "the root directory for the guest does not exist")
        return problem

    def _paths(self, ctx: RunContext) -> Tuple[Path, Path]:
        """The boot's read-only files (init, zipapp) and its results directory."""
        return ctx.workdir / "boot", ctx.workdir / "out"

    def umid(self, ctx: RunContext) -> str:
        raw = "ah-%s-%s" % (ctx.run_id, self.target.name)
        return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)[:60]

    def prepare(self, ctx: RunContext) -> None:
        boot = self.boot_dir(ctx)
        (boot / "share").mkdir(mode=0o755)  # where the guest mounts its results directory
        self.results_dir(ctx)
        command = shlex.join([self.options.python] + self.agent_args(jail.guest_path("boot")) +
                           self.serve_args(ctx))
        init = boot / "init.sh"
        init.write_text(
            INIT.format(
                target=self.target.name,
                booted=BOOTED,
                done=DONE,
                share=shlex.quote(jail.guest_path("out")),
                mnt=shlex.quote(jail.guest_path("boot/share")),
                command=command,
                python=shlex.quote(self.options.python),
            )
        )
        for f in (init, boot / "allocator.pyz"):
            f.chmod(0o555)

    def view(self, ctx: RunContext) -> jail.View:
        boot, out = self._paths(ctx)
        ro = [(boot, jail.guest_path("boot"))]
        if self._own_kernel():
            ro.append((Path(self.options.kernel), jail.guest_path("linux.uml")))
        # UML keeps the guest's memory in a file under TMPDIR: the view's private /tmp holds it.
        return jail.View(root=self._root, ro=tuple(ro), rw=((out, jail.guest_path("out")),),
                         tmp_size=int(self.options.memory) + 64 * MiB)

    def _own_kernel(self) -> bool:
        """A kernel given by a host path outside the view's /usr is bound into the view."""
        k = self.options.kernel
        return "/" in k and self._root is None and not os.path.realpath(k).startswith("/usr/")

    def uml_argv(self, ctx: RunContext) -> List[str]:
        """The kernel's own command line, with paths as the jailed process sees them."""
        o = self.options
        return [
            jail.guest_path("linux.uml") if self._own_kernel() else o.kernel,
            "umid=%s" % self.umid(ctx),
            "uml_dir=/tmp/uml",
            "mem=%dM" % (o.memory // MiB),
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=/",
            "ro",
            "init=%s" % jail.guest_path("boot/init.sh"),
            "con=null",
            "con0=fd:0,fd:1",
            *FAST_BOOT,
            *o.kernel_args,
        ]

    def argv(self, ctx: RunContext) -> List[str]:
        return self.jailed(ctx, self.view(ctx), self.uml_argv(ctx))

    def execute(self, ctx: RunContext) -> proc.Completed:
        if self.options.suite and self._root is None:
            self.provision(images.Cache(), lambda msg: None)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp"}
        return self.spawn(ctx, self.argv(ctx), env=env, watch=self.watcher(ctx))

    def result_file(self, ctx: RunContext) -> Optional[Path]:
        return self._paths(ctx)[1] / "result.json"

