"""Confinement for guests that reach host files (UML's hostfs, QEMU's 9p): a view and a uid of their own.

A jailed guest process (``linux.uml``, ``qemu-system-*``) is started through
:mod:`harness.backends.nsexec`, which builds a read-only view of just what it needs in a
private mount namespace and chroots into it (see that module for the view's
layout). Whatever the guest mounts through hostfs or reads over 9p, it can only
reach that view: the host's ``/usr`` and ``/etc`` (or a cached root
filesystem), read-only; the boot's own payload, read-only; the boot's own
results directory, the one writable host path; and a private ``/tmp``.

When the harness runs as root, each concurrent guest also gets a uid of its
own (a *slot*, held with a file lock for the boot's life, so two guests, or two
users' runs, never share one), and its results directory is ``0700`` and owned
by that uid. An unprivileged harness builds the same view inside a user
namespace instead.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, List, Optional, Tuple

from harness.backends import nsexec
from harness.errors import HarnessError

# Slots are uids no account uses: far above the ranges Debian hands out (system
# accounts, users, subordinate ids at 100000+), and below (uid_t)-1.
UID_BASE = 0x7E000000
SLOTS = 4096
SLOT_DIR = Path("/run/arena-harness/uid-slots")
GUEST_DIR = "/mnt/arena"  # where the view puts the boot's own files


@dataclass(frozen=True)
class View:
    """What a jailed process sees: ``root`` (None: the host's /usr and /etc) plus the boot's own paths."""

    root: Optional[Path] = None
    ro: Tuple[Tuple[Path, str], ...] = ()  # host path, path in the view (under /mnt/arena)
    rw: Tuple[Tuple[Path, str], ...] = ()
    tmp_size: int = 64 << 20
    devices: Tuple[str, ...] = ("null", "zero", "urandom", "random")
    proc: bool = False  # a /proc of the guest's own PID namespace (processes that read /proc/self)
    host_net: bool = False  # the host's network (QEMU's user-mode forward to a loopback port); else none


@dataclass
class Slot:
    """A uid (and gid) held for one guest's life; ``release`` is safe to call twice."""

    uid: int
    lock: Optional[IO[str]] = field(default=None, repr=False)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()  # closing drops the flock
            self.lock = None


def jailed_uid_available() -> bool:
    return os.geteuid() == 0


def acquire_slot(slot_dir: Path = SLOT_DIR) -> Slot:
    """The first free uid slot (a non-blocking flock per slot: a dead harness's slots free themselves)."""
    slot_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    used = {p.pw_uid for p in pwd.getpwall()}
    start = os.getpid() % SLOTS  # spread concurrent runs so they rarely contend for the same lock
    for i in range(SLOTS):
        n = (start + i) % SLOTS
        uid = UID_BASE + n
        if uid in used:
            continue
        f = open(slot_dir / ("%d.lock" % n), "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        return Slot(uid, f)
    raise HarnessError("no free guest uid: %d guests already run on this host" % SLOTS)


def launcher(view: View, mountpoint: Path, slot: Optional[Slot]) -> List[str]:
    """The argv prefix that starts a command inside ``view`` (``--`` and the command follow)."""
    # By file, not by module name: the launcher is the one beside this module, whatever sys.path says.
    argv = [sys.executable, str(Path(nsexec.__file__)), "--view", str(mountpoint),
            "--tmp", "%dk" % (view.tmp_size >> 10)]
    if view.root is not None:
        argv += ["--root", str(view.root)]
    for src, dest in view.ro:
        argv += ["--ro", "%s:%s" % (src, dest)]
    for src, dest in view.rw:
        argv += ["--rw", "%s:%s" % (src, dest)]
    for name in view.devices:
        argv += ["--dev", name]
    if view.proc:
        argv += ["--proc"]
    if view.host_net:
        argv += ["--host-net"]
    if slot is not None:
        argv += ["--user", "%d:%d" % (slot.uid, slot.uid)]
    elif os.geteuid() != 0:
        argv += ["--userns"]
    return argv


def own(path: Path, slot: Optional[Slot]) -> None:
    """Make ``path`` the guest's alone: 0700, owned by its slot uid (or by us, unprivileged)."""
    if slot is not None:
        os.chown(path, slot.uid, slot.uid)
    path.chmod(0o700)


def guest_path(name: str) -> str:
    return "%s/%s" % (GUEST_DIR, name)
