"""User-Mode Linux: Debian's ``linux.uml`` booted with a host directory (``/``) as its read-only root.

The guest's init (written per boot) mounts proc, mounts a dedicated writable
results directory through hostfs, runs the allocator zipapp with the guest's
``python3``, prints the result framed on the console as well, and powers off.
Each boot has its own umid and ``uml_dir`` inside the boot's private directory.
When the harness runs as root, UML runs as ``nobody``: a guest is root inside
and could otherwise mount any host path writable through hostfs.

With ``suite:`` (e.g. trixie) the ``linux.uml`` of that Debian release runs
inside that release's root filesystem (a cached image with python3 and
user-mode-linux), through ``harness.nsexec``: a private mount namespace, a
chroot, the boot's directory bound at /mnt; the guest's root is that release.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, List, Optional, Tuple

from harness import images, proc
from harness.backends.base import Backend, RunContext, Tool
from harness.config import DIRECTORY, PROGRAM, Size, Target
from harness.console import BOOTED, DONE
from harness.errors import HarnessError, ToolMissing

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
    unprivileged: bool = True
    suite: Optional[str] = None  # run this Debian release's linux.uml inside its own root filesystem

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


class UmlBackend(Backend):
    name: ClassVar[str] = "uml"
    Options: ClassVar[type] = UmlOptions
    description: ClassVar[str] = "User-Mode Linux with the host root shared read-only"

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

    def guest_path(self, ctx: RunContext, host: Path) -> str:
        """Where the guest (and the chrooted linux.uml) sees a path of the boot's directory."""
        if not self.options.suite:
            return str(host)
        return "/mnt/" + str(host.relative_to(ctx.workdir)) if host != ctx.workdir else "/mnt"

    def missing(self) -> Optional[ToolMissing]:
        if self.options.suite and os.geteuid() != 0:
            return ToolMissing(self.name, "root", "running another release's UML needs a chroot: run as root")
        problem = super().missing()
        if problem is None and self._run_as() is None and os.geteuid() == 0 and self.options.unprivileged:
            return ToolMissing(self.name, "user nobody", "create it, or set unprivileged: false on the target")
        if problem is None and not Path(self.options.root).is_dir():
            return ToolMissing(self.name, self.options.root, "the root directory for the guest does not exist")
        return problem

    def _run_as(self) -> Optional[Tuple[int, int]]:
        if os.geteuid() != 0 or not self.options.unprivileged:
            return None
        try:
            pw = pwd.getpwnam("nobody")
        except KeyError:
            return None
        return pw.pw_uid, pw.pw_gid

    def _paths(self, ctx: RunContext) -> Tuple[Path, Path, Path, Path]:
        return ctx.workdir / "init.sh", ctx.workdir / "out", ctx.workdir / "mnt", ctx.workdir / "uml"

    def umid(self, ctx: RunContext) -> str:
        raw = "ah-%s-%s" % (ctx.run_id, self.target.name)
        return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)[:60]

    def _check_reachable(self, path: Path) -> None:
        """An unprivileged UML must be able to reach its own directory and the zipapp."""
        if path.is_file() and path.stat().st_mode & 0o004 == 0:
            raise HarnessError("UML runs as nobody and cannot read %s: make it world-readable" % path)
        for parent in [path, *path.parents] if path.is_dir() else list(path.parents):
            if parent.stat().st_mode & 0o001 == 0:
                raise HarnessError(
                    "UML runs as nobody and cannot enter %s (mode %o): use a temp directory others can enter "
                    "(TMPDIR=/tmp) or set unprivileged: false on target %s"
                    % (parent, parent.stat().st_mode & 0o777, self.target.name)
                )

    def prepare(self, ctx: RunContext) -> None:
        init, out, mnt, uml_dir = self._paths(ctx)
        pyz = ctx.payload
        if self.options.suite:
            # The chroot sees only the boot's directory (bound at /mnt): the zipapp goes there.
            pyz = ctx.workdir / "allocator.pyz"
            shutil.copyfile(ctx.payload, pyz)
            pyz.chmod(0o444)
            ctx.workdir.chmod(0o755)
        elif self._run_as() is not None:
            ctx.workdir.chmod(0o755)
            self._check_reachable(ctx.workdir)
            self._check_reachable(ctx.payload)
        for d in (out, mnt, uml_dir):
            d.mkdir(mode=0o755)
        command = shlex.join([self.options.python, self.guest_path(ctx, pyz)] + self.probe_args(ctx))
        init.write_text(
            INIT.format(
                target=self.target.name,
                booted=BOOTED,
                done=DONE,
                share=shlex.quote(self.guest_path(ctx, out)),
                mnt=shlex.quote(self.guest_path(ctx, mnt)),
                command=command,
                python=shlex.quote(self.options.python),
            )
        )
        init.chmod(0o755)
        owner = self._run_as()
        if owner is not None:
            # Only these two directories are the guest's to write; the rest of the host is read-only.
            for d in (out, uml_dir):
                os.chown(d, *owner)

    def argv(self, ctx: RunContext) -> List[str]:
        init, _, _, uml_dir = self._paths(ctx)
        o = self.options
        uml = [
            o.kernel,
            "umid=%s" % self.umid(ctx),
            "uml_dir=%s" % self.guest_path(ctx, uml_dir),
            "mem=%dM" % (o.memory // MiB),
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=%s" % o.root,
            "ro",
            "init=%s" % self.guest_path(ctx, init),
            "con=null",
            "con0=fd:0,fd:1",
            *o.kernel_args,
        ]
        if not o.suite:
            return uml
        assert self._root is not None, "provision() did not run"
        launcher = [sys.executable, "-m", "harness.nsexec", "--root", str(self._root),
                    "--bind", "%s:/mnt" % ctx.workdir]
        owner = self._run_as()
        if owner is not None:
            launcher += ["--user", "%d:%d" % owner]
        return launcher + ["--"] + uml

    def execute(self, ctx: RunContext) -> proc.Completed:
        if self.options.suite and self._root is None:
            self.provision(images.Cache(), lambda msg: None)
        owner = None if self.options.suite else self._run_as()
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(ctx.workdir)}
        return self.spawn(ctx, self.argv(ctx), env=env, watch=self.done_watcher,
                          user=owner[0] if owner else None, group=owner[1] if owner else None)

    def result_file(self, ctx: RunContext) -> Optional[Path]:
        return self._paths(ctx)[1] / "result.json"
