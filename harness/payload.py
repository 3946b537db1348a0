"""What guests get: one zipapp with the allocator and the guest agent, built once per run, read-only to every guest.

``python3 allocator.pyz agent ...`` runs the agent (:mod:`guest.agent`), anything else the allocator's
command line (:mod:`allocator.cli`)."""

from __future__ import annotations

import io
import zipfile
from importlib import resources
from pathlib import Path

from harness.files import write_atomically

_MAIN = b"""import sys
if sys.argv[1:2] == ["agent"]:
    from guest.agent import main
    sys.exit(main(sys.argv[2:]))
from allocator.cli import main
sys.exit(main())
"""
PACKAGES = ("allocator", "guest")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # a fixed timestamp: the same sources give the same bytes


def build(dest_dir: Path) -> Path:
    """Write ``allocator.pyz`` into ``dest_dir`` (mode 0444) and return its path."""
    out = dest_dir / "allocator.pyz"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("__main__.py", _EPOCH), _MAIN)
        for package in PACKAGES:
            for entry in sorted(resources.files(package).iterdir(), key=lambda e: e.name):
                if entry.name.endswith(".py"):
                    z.writestr(zipfile.ZipInfo("%s/%s" % (package, entry.name), _EPOCH), entry.read_bytes())
    write_atomically(out, buf.getvalue(), mode=0o444)
    return out
