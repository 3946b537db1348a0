"""go-modern beside Go 1.19 itself under RLIMIT_AS: the same crash message, blocks grown within one.

tests/data/gogrow is built with Debian's golang-go (CGO_ENABLED=0, static, amd64 and 386: a 386
binary runs natively on an x86_64 host) and run under ``prlimit --as``. The model runs the same
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
from tests.conftest import ROOT, require_tool

pytestmark = [pytest.mark.integration]

MiB = 1 << 20
SOURCE = ROOT / "tests" / "data" / "gogrow"
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


def build(go: str, goarch: str, out: Path) -> Path:
    work = out / "go-home"
    env = dict(os.environ, CGO_ENABLED="0", GOARCH=goarch, GOOS="linux", HOME=str(work),
               GOCACHE=str(work / "cache"), GOPATH=str(work / "path"), GOPROXY="off", GOFLAGS="-mod=mod")
    exe = out / ("gogrow-" + goarch)
    r = proc.run([go, "build", "-trimpath", "-o", str(exe), "."], timeout=600, env=env, cwd=SOURCE)
    assert r.returncode == 0, "go build (%s) failed: %s" % (goarch, r.output[-2000:])
    return exe


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    go = require_tool("go", "go", "sudo apt-get install -y golang-go (Go 1.19 on Debian 12)")
    version = proc.run([go, "version"], timeout=60).output
    if " go1.19" not in version:
        skip_or_fail("go", "go-modern models Go 1.19; this go is %s (Debian 12's golang-go is 1.19)"
                     % version.strip())
    out = tmp_path_factory.mktemp("gogrow")
    return {arch: build(go, arch, out) for arch in ("amd64", "386")}


def run_go(exe: Path, limit: int) -> GoRun:
    prlimit = require_tool("go", "prlimit", "sudo apt-get install -y util-linux")
    r = proc.run([prlimit, "--as=%d" % limit, str(exe), PLAN.split("*")[1]], timeout=120)
    lines = r.output.splitlines()
    grown = sum(1 for ln in lines if ln.startswith("grew "))
    fatal = next((ln[len("fatal error: "):].strip() for ln in lines if ln.startswith("fatal error: ")), None)
    m = next((m for m in (_OOM.search(ln) for ln in lines) if m), None)
    return GoRun(grown, fatal, int(m.group(1)) if m else None, int(m.group(2)) if m else None, r.output)


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
def test_amd64_model_agrees_with_go_1_19(binaries: Dict[str, Path], limit: str) -> None:
    go = run_go(binaries["amd64"], LIMITS[limit])
    assert go.fatal is not None, "Go 1.19 did not crash under %s: %s" % (limit, go.output[-1000:])
    for where, doc in (("real", model_real(limit)),
                       ("simulated", run_policy("go-modern", simulate="host,rlimit-as=%s" % limit, grow=PLAN))):
        assert agrees(go, doc) == [], "%s model under %s; Go said:\n%s" % (where, limit, go.output[-1500:])


@pytest.mark.parametrize("limit", sorted(LIMITS))
def test_386_model_agrees_with_go_1_19(binaries: Dict[str, Path], limit: str) -> None:
    if os.uname().machine != "x86_64":
        skip_or_fail("go", "a 386 binary runs natively only on an x86_64 host")
    go = run_go(binaries["386"], LIMITS[limit])
    assert go.fatal == "out of memory" and go.in_use is not None, go.output[-1000:]
    doc = run_policy("go-modern", simulate="i386,rlimit-as=%s" % limit, grow=PLAN)
    assert agrees(go, doc) == [], go.output[-1500:]
    # Go's "in use" leaves out its goroutine stacks (a few 32 KiB spans); the model has none.
    model_in_use = next(int(m.group(2)) for m in (_OOM.search(x) for x in doc["messages"]) if m)
    assert 0 <= model_in_use - go.in_use <= 16 * 32 * 1024


def test_an_idle_go_1_19_reserves_what_the_model_reserves(binaries: Dict[str, Path]) -> None:
    """VmSize at main: the model's mappings plus a 2 MiB image (space.GO_IMAGE) within 1 MiB."""
    r = proc.run([str(binaries["amd64"]), "0"], timeout=60)
    m = re.search(r"start VmSize (\d+) kB", r.output)
    assert m, r.output
    go_vm = int(m.group(1)) * 1024
    doc = run_policy("go-modern", simulate="host", grow="1M")
    model_vm = sum((e["len"] + 4095) & ~4095 for e in doc["trace"]
                   if e["call"] == "mmap" and e["flags"] == "ANON|PRIVATE" and e["result"].startswith("0x"))
    model_vm += doc["facts"]["vm_size"]
    assert abs(go_vm - model_vm) < MiB, (go_vm, model_vm)
