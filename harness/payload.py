"""The allocator as guests get it: a zipapp built once per run, read-only to every guest."""

from __future__ import annotations

import io
import zipfile
from importlib import resources
from pathlib import Path

from harness.files import write_atomically

_MAIN = b"import sys\nfrom allocator.cli import main\nsys.exit(main())\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # a fixed timestamp: the same sources give the same bytes


def build(dest_dir: Path) -> Path:
    """Write ``allocator.pyz`` into ``dest_dir`` (mode 0444) and return its path."""
    pkg = resources.files("allocator")
    out = dest_dir / "allocator.pyz"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("__main__.py", _EPOCH), _MAIN)
        for entry in sorted(pkg.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".py"):
                z.writestr(zipfile.ZipInfo("allocator/" + entry.name, _EPOCH), entry.read_bytes())
    write_atomically(out, buf.getvalue(), mode=0o444)
    return out
