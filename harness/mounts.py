"""The host's mount table, read before a tree is removed: ``shutil.rmtree`` crosses mount points.

The harness mounts nothing in the host's namespace (image builds and chroots
mount in private namespaces), but a tree left by a killed process of an older
version may still hold mounts (proc, sys, dev/pts of a build's root). They are
detached first, deepest first, so removing the tree never reaches into what
they show.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from pathlib import Path
from typing import List

from harness.errors import HarnessError

MNT_DETACH = 2


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in a path as octal escapes."""
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def under(path: Path) -> List[str]:
    """Mount points at or below ``path`` in this process's namespace, deepest first."""
    base = os.path.realpath(path)
    found = []
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            point = _unescape(fields[4])
            if point == base or point.startswith(base.rstrip("/") + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def detach_under(path: Path) -> List[str]:
    """Detach (lazily unmount) every mount at or below ``path``; the ones that were detached."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    done = []
    for point in under(path):
        if libc.umount2(point.encode(), MNT_DETACH) == 0:
            done.append(point)
    return done


def remove_tree(path: Path) -> None:
    """``rmtree`` that first detaches what is mounted inside; a mount it cannot detach (not root) is an
    error, and nothing is removed."""
    detach_under(path)
    left = under(path)
    if left:
        raise HarnessError("cannot remove %s: %s is mounted inside and cannot be unmounted by this user; "
                           "unmount it as root (umount -l %s), then run arena-harness clean"
                           % (path, left[0], left[0]))
    shutil.rmtree(path, ignore_errors=True)
