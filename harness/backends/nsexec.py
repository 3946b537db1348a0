"""Exec a command inside a private mount namespace whose root is a constructed, read-only view.

    python3 -m harness.backends.nsexec --view DIR [--root ROOT] [--ro SRC:DEST ...] [--rw SRC:DEST ...]
                              [--tmp SIZE] [--dev NAME ...] [--proc] [--host-net] [--user UID:GID] [--userns]
                              -- CMD ARGS...

This is the guest-facing half of :mod:`harness.backends.jail`. Everything it mounts is
made in a new mount namespace (private propagation), so it vanishes with the
process, whatever ends it: nothing is ever left in the host's mount table. The
command runs as PID 1 of a new PID namespace, so when it ends (or is killed,
or the harness dies: parent-death signals chain down) the kernel kills every
process it left, also those that escaped its process group with ``setsid``.

The view, mounted on the empty directory DIR:

- ``/`` is either ROOT (a cached Debian root filesystem) bound read-only, or a
  small tmpfs holding read-only binds of the host's ``/usr`` and ``/etc`` and
  the host's top-level symlinks (``/bin -> usr/bin`` ...). Nothing else of the
  host is there: no ``/home``, ``/root``, ``/tmp``, ``/proc``, other runs'
  directories or the image cache;
- ``/dev`` is a tmpfs with only the named device nodes (bound from the host);
- ``/tmp`` is a private tmpfs of SIZE (UML keeps its memory file there);
- ``/mnt`` is a tmpfs made read-only once the ``--ro`` and ``--rw`` binds are
  in place below it; ``--rw`` binds are the only writable host paths (over the
  host view, binds may also go elsewhere: an interpreter outside ``/usr``);
- ``/proc`` (with ``--proc``) is the new PID namespace's own.

The command gets a network namespace of its own (no interface but a loopback
that is down) unless ``--host-net``. Then the view becomes the root
(``pivot_root``, the old root detached), drop to UID:GID (or, with ``--userns``, run as the
caller mapped to root inside a new user namespace: how an unprivileged harness
builds the same view), ask for SIGKILL when the parent dies, and exec (no new
process: :mod:`harness.proc` started this one). Exit 126 with one line on
stderr when the view cannot be built.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import resource
import signal
import sys
from typing import List, Optional, Tuple

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MNT_DETACH = 2
# pivot_root(2) has no libc wrapper: its number per machine (uname -m).
SYS_PIVOT_ROOT = {"x86_64": 155, "i686": 217, "i386": 217, "aarch64": 41, "riscv64": 41}
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1

HOST_DIRS = ("usr", "etc")
NPROC = 512

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def mount(source: Optional[str], target: str, fstype: Optional[str], flags: int, data: Optional[str] = None) -> None:
    _check(_libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                       flags, data.encode() if data else None), "mount %s on %s" % (source or fstype, target))


def _bind(src: str, dest: str, writable: bool, device: bool = False) -> None:
    if os.path.isdir(src):
        os.makedirs(dest, exist_ok=True)
    elif not os.path.lexists(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "w"):
            pass
    mount(src, dest, None, MS_BIND | MS_REC)
    # A bind's flags are set by a remount of the bind itself. Only device nodes keep working as devices.
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (0 if device else MS_NODEV) | (0 if writable else MS_RDONLY)
    mount(None, dest, None, flags)


def _pdeathsig() -> None:
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def _enter_userns(flags: int) -> None:
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(CLONE_NEWUSER | flags), "unshare(CLONE_NEWUSER|...)")
    for name, text in (("setgroups", "deny"), ("uid_map", "0 %d 1" % uid), ("gid_map", "0 %d 1" % gid)):
        with open("/proc/self/%s" % name, "w") as f:
            f.write(text)


def _spec(text: str, root: Optional[str]) -> Tuple[str, str]:
    src, sep, dest = text.partition(":")
    # Over a root filesystem (read-only) only /mnt, a tmpfs of the view's, can take new mount points.
    if not sep or not dest.startswith("/") or ".." in dest.split("/") or (root and not dest.startswith("/mnt/")):
        raise OSError(22, "expected SRC:DEST with DEST absolute%s, got %r" % (" and under /mnt" if root else "", text))
    return os.path.abspath(src), dest


def build_view(view: str, root: Optional[str], ro: List[str], rw: List[str], tmp_size: str, devs: List[str],
               with_proc: bool) -> None:
    """Mount the view on ``view`` (in the current, already private, mount namespace)."""
    if root:
        mount(root, view, None, MS_BIND | MS_REC)
        mount(None, view, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
        for d in ("dev", "tmp", "mnt"):
            if not os.path.isdir(os.path.join(view, d)):
                raise OSError(2, "the root filesystem %s has no /%s" % (root, d))
    else:
        mount("tmpfs", view, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
        for d in HOST_DIRS:
            _bind("/" + d, os.path.join(view, d), writable=False)
        for name in sorted(os.listdir("/")):
            link = os.path.join("/", name)
            if os.path.islink(link):  # merged /usr: bin -> usr/bin and friends
                os.symlink(os.readlink(link), os.path.join(view, name))
        for d in ("dev", "tmp", "mnt", "proc", "sys", "run", "var"):
            os.mkdir(os.path.join(view, d), 0o755)
        os.symlink("/tmp", os.path.join(view, "var/tmp"))  # QEMU's snapshot=on writes to /var/tmp
    mount("tmpfs", os.path.join(view, "dev"), "tmpfs", MS_NOSUID, "mode=755,size=64k")
    for name in devs:
        _bind("/dev/" + name, os.path.join(view, "dev", name), writable=True, device=True)
    mount("tmpfs", os.path.join(view, "tmp"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=%s" % tmp_size)
    mount("tmpfs", os.path.join(view, "mnt"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64k")
    for specs, writable in ((ro, False), (rw, True)):
        for text in specs:
            src, dest = _spec(text, root)
            _bind(src, os.path.join(view, dest.lstrip("/")), writable)
    if with_proc:  # a proc of the view's own PID namespace: it shows only the jailed processes
        mount("proc", os.path.join(view, "proc"), "proc", MS_NOSUID | MS_NODEV)
    mount(None, os.path.join(view, "mnt"), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    if not root:
        mount(None, view, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _pivot(view: str) -> None:
    """Make ``view`` the root and detach the old one: unlike chroot, nothing of the host is left to climb
    back to (root in a user namespace can leave a chroot with chroot and "..": not a pivoted root)."""
    os.chdir(view)
    nr = SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        raise OSError(38, "pivot_root: no system call number for %s in nsexec.SYS_PIVOT_ROOT" % os.uname().machine)
    _check(_libc.syscall(nr, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")


def _wait(child: int) -> int:
    """Wait for the namespace's PID 1 and exit as it did (a death by signal as 128+N, like a shell)."""
    # Our process group receives the harness's SIGTERM too: the namespace's init decides what it means.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            _, status = os.waitpid(child, 0)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m harness.backends.nsexec")
    ap.add_argument("--view", required=True, help="an empty directory to mount the view on")
    ap.add_argument("--root", help="a root filesystem to use (read-only) instead of the host's /usr and /etc")
    ap.add_argument("--ro", action="append", default=[], metavar="SRC:DEST")
    ap.add_argument("--rw", action="append", default=[], metavar="SRC:DEST")
    ap.add_argument("--tmp", default="64m", metavar="SIZE", help="size of the private /tmp (tmpfs)")
    ap.add_argument("--dev", action="append", default=[], metavar="NAME")
    ap.add_argument("--user", metavar="UID:GID")
    ap.add_argument("--userns", action="store_true", help="unprivileged: build the view in a new user namespace")
    ap.add_argument("--proc", action="store_true", help="mount a proc of the new PID namespace in the view")
    ap.add_argument("--host-net", action="store_true", help="keep the host's network (else a namespace of its own)")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    # The view's directories and mount points are made here, as root: with the caller's umask (077 in a
    # careful shell) they would be 0700 and the guest's own uid could not reach /mnt/arena at all.
    os.umask(0o022)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("a command is required after --")
    view = os.path.abspath(args.view)
    try:
        _pdeathsig()  # the harness's death ends us (and, through the PID namespace, everything below)
        # A network namespace of its own (only a loopback, down) unless the target needs the host's.
        flags = CLONE_NEWNS | CLONE_NEWPID | (0 if args.host_net else CLONE_NEWNET)
        if args.userns:
            _enter_userns(flags)
        else:
            _check(_libc.unshare(flags), "unshare(CLONE_NEWNS|CLONE_NEWPID|CLONE_NEWNET)")
        # The next child is PID 1 of the new namespace: when it ends, the kernel kills every process
        # left in the namespace, also those that left our process group with setsid.
        child = os.fork()
        if child:
            return _wait(child)
        _pdeathsig()
        mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing propagates back to the host
        build_view(view, os.path.abspath(args.root) if args.root else None, args.ro, args.rw, args.tmp, args.dev,
                   args.proc)
        _pivot(view)
        if args.user:
            uid, _, gid = args.user.partition(":")
            # The uid is this guest's alone, so a per-uid process cap contains a fork bomb (UML and
            # QEMU count their own processes and threads under it too).
            resource.setrlimit(resource.RLIMIT_NPROC, (NPROC, NPROC))
            os.setgroups([])
            os.setgid(int(gid or uid))
            os.setuid(int(uid))
        _pdeathsig()  # changing credentials cleared it
        os.execvp(cmd[0], cmd)
    except OSError as e:
        print("nsexec: %s" % (e.strerror or e), file=sys.stderr)
        if os.getpid() == 1:
            os._exit(126)
        return 126
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
