"""Writing files so that a reader never sees half of one: the harness's one atomic-write helper."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

REPORT_MODE = 0o644  # results and reports: read by other users (a CI upload step, the harness often root)


def write_atomically(path: Path, data: Union[str, bytes], mode: int = REPORT_MODE) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and one rename, so a
    reader (or a kill -9 meanwhile) never leaves half a file. Missing parent directories are created;
    the file gets ``mode`` whatever the umask (mkstemp alone makes 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
