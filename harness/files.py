"""Writing files so that a reader never sees half of one: the harness's one atomic-write helper."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Union

REPORT_MODE = 0o644  # results, reports and console logs: read by other users (a CI upload step; the harness often root)
DIRECTORY_MODE = 0o755  # the directories holding them


def make_directories(path: Path, mode: int = DIRECTORY_MODE) -> None:
    """``path`` and its missing parents, each made with ``mode`` whatever the umask (under ``umask 077``, as
    with sudo on some systems, mkdir alone makes 0700, which a CI upload step running as another user
    cannot enter). Directories that exist already are left as they are."""
    path = Path(path)
    missing = []
    while not path.is_dir() and path.parent != path:
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # made meanwhile by another process: its mode is that one's to set
        os.chmod(d, mode)


def create_file(path: Path, mode: int = REPORT_MODE) -> None:
    """An empty file at ``path`` (left as it is if there is one) with ``mode`` whatever the umask, for
    others to append to: a console log, which a backend opens itself."""
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


STDOUT = "-"  # as an output path: standard output, as every Unix tool reads it


def is_stdout(path: object) -> bool:
    return path is not None and str(path) == STDOUT


def write_atomically(path: Path, data: Union[str, bytes], mode: int = REPORT_MODE) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and one rename, so a
    reader (or a kill -9 meanwhile) never leaves half a file. Missing parent directories are created
    (0755, see :func:`make_directories`); the file gets ``mode`` whatever the umask (mkstemp alone makes
    0600). ``-`` is standard output."""
    if is_stdout(path):
        if isinstance(data, str):
            sys.stdout.write(data)
        else:
            sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    path = Path(path)
    make_directories(path.parent)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=".%s." % path.name, suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
