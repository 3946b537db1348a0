"""What guests get: one zipapp with the allocator and the guest agent, built once per run, read-only to every guest.

``python3 allocator.pyz agent ...`` runs the agent (:mod:`guest.agent`), anything else the allocator's
command line (:mod:`allocator.cli`).

Each module is there as source and compiled by the host's Python (``x.pyc`` beside ``x.py``, the
layout zipimport reads; unchecked hash-based, so no timestamp is compared): a guest whose Python has
the same bytecode magic (Debian 12's 3.11 here) skips compiling it, which under TCG is a third of
a short probe's time; any other Python finds the magic foreign and compiles the source, as before."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path
from typing import Dict

from harness.errors import HarnessError
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


# Compiles each source (JSON on stdin: name -> base64) into an unchecked hash-based .pyc (PEP 552: flags
# 0b01, the source's hash, then the code) and writes them back the same way. Run in a fresh, isolated
# interpreter: marshal marks objects by their reference counts, which depend on what else a process has
# imported, and the zipapp's bytes must depend on its sources alone (Docker's payload images are tagged
# by them).
_COMPILE = """import base64, importlib.util, json, marshal, sys
out = {}
for name, text in json.load(sys.stdin).items():
    source = base64.b64decode(text)
    code = compile(source, name, "exec", dont_inherit=True, optimize=0)
    head = importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little") + importlib.util.source_hash(source)
    out[name] = base64.b64encode(head + marshal.dumps(code)).decode()
json.dump(out, sys.stdout)
"""


def compiled(sources: Dict[str, bytes]) -> Dict[str, bytes]:
    """``sources`` (name -> bytes) compiled by this Python, as .pyc bytes, the same in every process."""
    p = subprocess.run([sys.executable, "-I", "-S", "-c", _COMPILE], capture_output=True, timeout=120,
                       input=json.dumps({n: base64.b64encode(b).decode() for n, b in sources.items()}).encode())
    if p.returncode != 0:
        raise HarnessError("compiling the guest's modules failed: %s" % p.stderr.decode(errors="replace")[-500:])
    return {n: base64.b64decode(t) for n, t in json.loads(p.stdout).items()}


def build(dest_dir: Path) -> Path:
    """Write ``allocator.pyz`` into ``dest_dir`` (mode 0444) and return its path."""
    out = dest_dir / "allocator.pyz"
    buf = io.BytesIO()
    sources = {"__main__.py": _MAIN}
    for package in PACKAGES:
        for entry in sorted(resources.files(package).iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".py"):
                sources["%s/%s" % (package, entry.name)] = entry.read_bytes()
    code = compiled(sources)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, source in sources.items():
            z.writestr(zipfile.ZipInfo(name, _EPOCH), source)
            z.writestr(zipfile.ZipInfo(name + "c", _EPOCH), code[name])
    write_atomically(out, buf.getvalue(), mode=0o444)
    return out
