"""What guests get: one zipapp with the allocator and the guest agent, built once per run, read-only to every guest.

``python3 allocator.pyz agent ...`` runs the agent (:mod:`guest.agent`), anything else the allocator's
command line (:mod:`allocator.cli`).

Each module is there as source and compiled by the host's Python (``x.pyc`` beside ``x.py``, the
layout zipimport reads; unchecked hash-based, so no timestamp is compared): a guest whose Python has
the same bytecode magic (Debian 12's 3.11 here) skips compiling it, which under TCG is a third of
a short probe's time; any other Python finds the magic foreign and compiles the source, as before."""

from __future__ import annotations

import importlib.util
import io
import marshal
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


def pyc(source: bytes, name: str) -> bytes:
    """``source`` compiled by this Python, as an unchecked hash-based .pyc (PEP 552): flags 0b01, the
    source's hash, then the code; the guest's Python runs it without looking at the source."""
    code = compile(source, name, "exec", dont_inherit=True)
    header = importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little") + importlib.util.source_hash(source)
    return header + marshal.dumps(code)


def build(dest_dir: Path) -> Path:
    """Write ``allocator.pyz`` into ``dest_dir`` (mode 0444) and return its path."""
    out = dest_dir / "allocator.pyz"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("__main__.py", _EPOCH), _MAIN)
        z.writestr(zipfile.ZipInfo("__main__.pyc", _EPOCH), pyc(_MAIN, "__main__.py"))
        for package in PACKAGES:
            for entry in sorted(resources.files(package).iterdir(), key=lambda e: e.name):
                if entry.name.endswith(".py"):
                    name = "%s/%s" % (package, entry.name)
                    source = entry.read_bytes()
                    z.writestr(zipfile.ZipInfo(name, _EPOCH), source)
                    z.writestr(zipfile.ZipInfo(name + "c", _EPOCH), pyc(source, name))
    write_atomically(out, buf.getvalue(), mode=0o444)
    return out
