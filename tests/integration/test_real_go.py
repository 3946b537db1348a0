"""go-modern beside Go 1.19 itself under RLIMIT_AS: the same crash message, blocks grown within one.

The go probe (probes/go, built by its image recipe with Debian's golang-go: CGO_ENABLED=0, static,
amd64 and 386: a 386 binary runs natively on an x86_64 host) runs the model's growth plan under
``prlimit --as``; :func:`harness.probes.go.document` reads what it printed. The model runs the same
plan for real on this host (amd64) and on the simulated kernel (the ``host`` and ``i386`` presets).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from allocator.probe import run_policy
from harness import proc
from harness.plugin import skip_or_fail
from tests.conftest import ROOT
from tests.integration import goprobes

pytestmark = [pytest.mark.integration]

MiB = 1 << 20
PLAN = "64M*20"
LIMITS = {"1G": 1 << 30, "600M": 600 * MiB}
_OOM = re.compile(r"runtime: out of memory: cannot allocate (\d+)-byte block \((\d+) in use\)")


@dataclass
class GoRun:
    grown: int
    fatal: Optional[str]  # what follows "fatal error: "
    block: Optional[int]  # N of "cannot allocate N-byte block"
    in_use: Optional[int]
    output: str


@pytest.fixture(scope="module")
def binaries() -> Dict[str, Path]:
    return {arch: goprobes.binary(arch) for arch in ("amd64", "i386")}


def run_go(exe: Path, limit: int, tmp: Path) -> GoRun:
    ran = goprobes.run(exe, PLAN, limit=limit, tmp=tmp)
    doc = ran.doc
    assert doc["outcome"] == "crash" or doc["error"] is None, doc["error"]
    m = next((m for m in (_OOM.search(x) for x in doc["messages"]) if m), None)
    return GoRun(doc["grows"], doc["crash"], int(m.group(1)) if m else None, int(m.group(2)) if m else None,
                 ran.stderr)


def model_real(limit: str) -> Dict[str, Any]:
    r = proc.run([sys.executable, "-m", "allocator", "probe", "--policy", "go-modern", "--grow", PLAN,
                  "--rlimit-as", limit, "--json", "--no-trace"], timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.output[-2000:]
    doc: Dict[str, Any] = json.loads(r.output[r.output.index("{"):])
    return doc


def agrees(go: GoRun, doc: Dict[str, Any]) -> List[str]:
    """What differs between Go's run and the model's document (nothing, when they agree)."""
    problems = []
    grown = sum(1 for g in doc["growth"] if g.get("ok"))
    if abs(grown - go.grown) > 1:
        problems.append("blocks grown: Go %d, model %d" % (go.grown, grown))
    if go.fatal != doc["crash"]:
        problems.append("crash: Go %r, model %r" % (go.fatal, doc["crash"]))
    ooms = [m for m in (_OOM.search(x) for x in doc["messages"]) if m]
    if (go.block is None) != (not ooms) or (ooms and int(ooms[0].group(1)) != go.block):
        problems.append("'cannot allocate' block: Go %r, model %r" % (go.block, ooms[0].group(0) if ooms else None))
    return problems


@pytest.mark.parametrize("limit", sorted(LIMITS))
def test_amd64_model_agrees_with_go_1_19(binaries: Dict[str, Path], limit: str, tmp_path: Path) -> None:
    go = run_go(binaries["amd64"], LIMITS[limit], tmp_path)
    assert go.fatal is not None, "Go 1.19 did not crash under %s: %s" % (limit, go.output[-1000:])
    for where, doc in (("real", model_real(limit)),
                       ("simulated", run_policy("go-modern", simulate="host,rlimit-as=%s" % limit, grow=PLAN))):
        assert agrees(go, doc) == [], "%s model under %s; Go said:\n%s" % (where, limit, go.output[-1500:])


@pytest.mark.parametrize("limit", sorted(LIMITS))
def test_386_model_agrees_with_go_1_19(binaries: Dict[str, Path], limit: str, tmp_path: Path) -> None:
    if os.uname().machine != "x86_64":
        skip_or_fail("go", "a 386 binary runs natively only on an x86_64 host")
    go = run_go(binaries["i386"], LIMITS[limit], tmp_path)
    assert go.fatal == "out of memory" and go.in_use is not None, go.output[-1000:]
    doc = run_policy("go-modern", simulate="i386,rlimit-as=%s" % limit, grow=PLAN)
    assert agrees(go, doc) == [], go.output[-1500:]
    # Go's "in use" leaves out its goroutine stacks (a few 32 KiB spans); the model has none.
    model_in_use = next(int(m.group(2)) for m in (_OOM.search(x) for x in doc["messages"]) if m)
    assert 0 <= model_in_use - go.in_use <= 16 * 32 * 1024


def test_an_idle_go_1_19_reserves_what_the_model_reserves(binaries: Dict[str, Path], tmp_path: Path) -> None:
    """VmSize at main: the model's mappings plus a 2 MiB image (space.GO_IMAGE) within 1 MiB."""
    ran = goprobes.run(binaries["amd64"], "", tmp=tmp_path)  # an empty plan: no block
    assert ran.doc["error"] is None and ran.doc["grows"] == 0, ran.stderr
    go_vm = ran.doc["facts"]["vm_size"]
    doc = run_policy("go-modern", simulate="host", grow="1M")
    model_vm = sum((e["len"] + 4095) & ~4095 for e in doc["trace"]
                   if e["call"] == "mmap" and e["flags"] == "ANON|PRIVATE" and e["result"].startswith("0x"))
    model_vm += doc["facts"]["vm_size"]
    assert abs(go_vm - model_vm) < MiB, (go_vm, model_vm)
