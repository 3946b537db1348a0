"""Reading the files a user hands the harness (targets files, results files): regular files only,
a size cap, strict UTF-8, and errors that quote nothing of the file's content.

A path given on the command line may be anything: ``/dev/zero`` (endless), a
FIFO (blocks on open), ``/etc/shadow`` (secrets that must not end up in a CI
log). Only regular files are opened, at most ``limit`` bytes are read, and a
decoding error names the line and byte offset, never the bytes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Union

from harness.errors import ConfigError

MiB = 1 << 20
MAX_TARGETS_BYTES = 4 * MiB
MAX_RESULTS_BYTES = 64 * MiB  # a full matrix with every probe's trace is well under 1 MiB

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


def _refuse_unless_regular(mode: int, path: str, what: str) -> None:
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise ConfigError("is %s: only regular files are read as %s" % (kind, what), path=path)


def read_text(path: Union[str, Path], what: str, limit: int, errors: str = "strict", nofollow: bool = False) -> str:
    """The text of the regular file ``path``: a ConfigError (one line, no content) for anything else.

    ``what`` names the kind of file in errors ("targets files"). The file is
    checked before it is opened (a FIFO would block the open) and again through
    the open descriptor (it may have been swapped in between). ``errors`` is
    how invalid UTF-8 is decoded; with "strict" it is an error naming the line.
    With ``nofollow`` a symbolic link is refused too (a file a guest wrote: it
    must not make the harness, often root, read a host file in its stead).
    """
    name = str(path)
    try:
        _refuse_unless_regular((os.lstat if nofollow else os.stat)(name).st_mode, name, what)
        # O_NONBLOCK: should a FIFO be swapped in after the check, the open does not hang.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (os.O_NOFOLLOW if nofollow else 0)
        fd = os.open(name, flags)
    except OSError as e:
        raise ConfigError("cannot read: %s" % (e.strerror or e), path=name) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        _refuse_unless_regular(st.st_mode, name, what)
        too_big = ConfigError("is larger than %d MiB, the limit for %s" % (limit // MiB, what), path=name)
        if st.st_size > limit:
            raise too_big
        try:
            data = f.read(limit + 1)  # the file may grow while we read: never more than the limit
        except OSError as e:
            raise ConfigError("cannot read: %s" % (e.strerror or e), path=name) from None
        if len(data) > limit:
            raise too_big
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError("not UTF-8 text (an invalid byte at offset %d): %s must be text" % (e.start, what),
                          path=name, line=line) from None
