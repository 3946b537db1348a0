"""Exec a command chrooted into a root filesystem, inside a private mount namespace.

    python3 -m harness.nsexec --root ROOT [--bind SRC:DEST ...] [--user UID:GID] -- CMD ARGS...

Mounts proc on ROOT/proc, a tmpfs on ROOT/dev/shm and the binds, all in a new
mount namespace: they vanish with the process, whatever ends it, so nothing is
left mounted. Then chroot, drop to UID:GID, and exec (no new process: the
harness's process module started this one). Needs root. Used by the uml
backend to run the linux.uml of another Debian release in that release's root.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import sys
from typing import List, Optional

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def mount(source: str, target: str, fstype: Optional[str], flags: int, data: Optional[str] = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), "mount %s on %s" % (source, target))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m harness.nsexec")
    ap.add_argument("--root", required=True)
    ap.add_argument("--bind", action="append", default=[], metavar="SRC:DEST")
    ap.add_argument("--user", metavar="UID:GID")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("a command is required after --")
    root = os.path.abspath(args.root)
    try:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing propagates back to the host
        mount("proc", os.path.join(root, "proc"), "proc", MS_NOSUID | MS_NODEV)
        os.makedirs(os.path.join(root, "dev/shm"), exist_ok=True)
        mount("tmpfs", os.path.join(root, "dev/shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
        for spec in args.bind:
            src, _, dest = spec.partition(":")
            mount(src, os.path.join(root, dest.lstrip("/")), None, MS_BIND)
        os.chroot(root)
        os.chdir("/")
        if args.user:
            uid, _, gid = args.user.partition(":")
            os.setgroups([])
            os.setgid(int(gid or uid))
            os.setuid(int(uid))
        os.execvp(cmd[0], cmd)
    except OSError as e:
        print("nsexec: %s" % (e.strerror or e), file=sys.stderr)
        return 126
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
