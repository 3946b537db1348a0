"""The allocator as a program: the real address space on this host, the CLI contract, Python 3.9."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable, List

import pytest

from allocator.probe import FRAME_BEGIN, FRAME_END
from allocator.real import RealSpace, read_maps
from allocator.space import GO_IMAGE, GO_STACK, MAP_ANON, MAP_PRIVATE, PROT_NONE
from harness import payload
from tests.conftest import ROOT


def allocator(*args: str, python: str = sys.executable, env: Any = None) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([python, "-m", "allocator", *args], capture_output=True, text=True, timeout=120,
                          cwd=str(ROOT), env=env)


# -- the real layer, on this host --------------------------------------------------------------


def test_real_probe_on_this_host_reports_high_arena() -> None:
    p = allocator("probe", "--policy", "go-2012", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["schema"] == 1 and doc["policy"] == "go-2012"
    assert doc["reservation"]["high_ok"] is True and doc["outcome"] == "high-arena"
    assert doc["reservation"]["probe"] == "0xf800000000"
    assert all(g["ok"] for g in doc["growth"])
    assert sum(g["touched"] for g in doc["growth"]) == 9 * 64  # one page per MiB
    f = doc["facts"]
    assert f["kernel"] == os.uname().release and f["machine"] == os.uname().machine
    assert f["pointer_bits"] == 64 and f["page_size"] == os.sysconf("SC_PAGE_SIZE")


def test_real_simulated_uml_what_if() -> None:
    doc = json.loads(allocator("probe", "--policy", "go-2012", "--json", "--simulate", "task-size=0x7fc0000000").stdout)
    assert doc["reservation"]["high_ok"] is False and doc["fallback"]["engaged"] is True
    assert doc["outcome"] == "fallback-32bit"
    pre = json.loads(allocator("probe", "--policy", "go-2012-pre", "--json", "--simulate", "task-size=0x7fc0000000")
                     .stdout)
    assert pre["outcome"] == "crash" and pre["crash"] == "runtime: out of memory"


def test_user_top_by_bisection_matches_the_mappings() -> None:
    space = RealSpace()
    top = space.user_top()
    highest = int(top["highest_mapping"], 16)
    value = int(top["user_top"], 16)
    assert top["method"] == "bisection" and value >= highest and value % space.page_size == 0
    if os.uname().machine == "x86_64":
        assert value in (0x7FFFFFFFF000, 0xFFFFFFFFFFF000)  # 4- or 5-level paging
    # The bisection left nothing mapped behind.
    assert max(hi for _, hi, _ in read_maps()) == highest


def test_real_mmap_errno_and_mincore() -> None:
    space = RealSpace()
    p = space.mmap(0, 1 << 16, PROT_NONE, MAP_ANON | MAP_PRIVATE)
    assert p >= 4096 and space.mincore(p, 4096) == 0
    assert space.munmap(p, 1 << 16) == 0
    assert space.mincore(p, 4096) == 12  # ENOMEM: unmapped
    assert space.mmap(0, 0, PROT_NONE, MAP_ANON | MAP_PRIVATE) == 22  # EINVAL
    assert [e["call"] for e in space.trace.entries] == ["mmap", "mincore", "munmap", "mincore", "mmap"]


@pytest.mark.parametrize("limit, grown, crash, first_message", [
    ("1G", 4, "out of memory allocating heap arena metadata", "throw: out of memory allocating heap arena metadata"),
    ("600M", 0, "out of memory", "runtime: out of memory: cannot allocate 4194304-byte block (0 in use)"),
])
def test_real_rlimit_as_gives_the_model_the_room_a_go_binary_has(limit: str, grown: int, crash: str,
                                                                 first_message: str) -> None:
    """go1.19.8 linux/amd64 static binaries under prlimit --as grew 4 blocks of 64 MiB at 1G and died
    before main at 600M. The interpreter's own 18 MiB would otherwise make the model fail 16 MiB early:
    at 1G on the fifth arena instead of its metadata, at 600M on the page summaries."""
    p = allocator("probe", "--policy", "go-modern", "--grow", "64M*20", "--rlimit-as", limit, "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert sum(1 for g in doc["growth"] if g["ok"]) == grown
    assert doc["crash"] == crash and doc["messages"][0 if grown == 0 else -1] == first_message
    f = doc["facts"]
    assert f["rlimit_as"] == int(limit[:-1]) << (30 if limit.endswith("G") else 20)
    shift = f["rlimit_as_shift"]
    # The interpreter's share: its VmSize before the run, less a Go binary's own mappings.
    assert shift["go_image"] == GO_IMAGE + GO_STACK and shift["capped_at_hard_limit"] is False
    assert 0 < shift["first"] <= shift["max"] and abs(shift["first"] - (f["vm_size"] - shift["go_image"])) < 4 << 20


def test_real_run_without_rlimit_moves_no_limit() -> None:
    doc = json.loads(allocator("probe", "--policy", "go-modern", "--json", "--no-trace").stdout)
    assert doc["facts"]["rlimit_as_shift"] is None and doc["facts"]["rlimit_as"] is None


# -- the CLI contract ---------------------------------------------------------------------------


def test_policy_all_prints_one_array_each_from_its_own_process() -> None:
    p = allocator("probe", "--policy", "all", "--json", "--simulate", "uml", "--no-trace")
    docs = json.loads(p.stdout)
    assert [d["policy"] for d in docs] == ["go-2012-pre", "go-2012", "go-modern"]
    assert [d["outcome"] for d in docs] == ["crash", "fallback-32bit", "os-chosen"]
    assert all(d["trace"] is None for d in docs)


def test_frame_and_out(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    p = allocator("probe", "--frame", "--out", str(out), "--simulate", "sv39")
    lines = p.stdout.splitlines()
    assert lines[0] == FRAME_BEGIN and lines[2] == FRAME_END and len(lines) == 3
    assert json.loads(lines[1]) == json.loads(out.read_text())
    assert [x.name for x in tmp_path.iterdir()] == ["r.json"]


def test_human_summary() -> None:
    p = allocator("probe", "--simulate", "uml", "--policy", "go-2012-pre")
    assert p.returncode == 0
    assert "hint 0xf800000000 taken unchecked" in p.stdout
    assert "outcome: crash: runtime: out of memory" in p.stdout
    modern = allocator("probe", "--simulate", "host,rlimit-as=1G", "--policy", "go-modern", "--grow", "64M*20").stdout
    assert "runtime: reserved 585.1 MiB of page summaries, 8.0 MiB of scavenge index, 0 KiB of arena metadata; " \
           "5 heap arenas of 2165776 bytes of metadata" in modern
    assert "outcome: crash: out of memory allocating heap arena metadata" in modern


@pytest.mark.parametrize(
    "args,message",
    [
        (["probe", "--policy", "go-2013"], "unknown policy 'go-2013'"),
        (["probe", "--grow", "lots"], "bad growth step 'lots'"),
        (["probe", "--simulate", "task-size=big"], "bad value for task-size: 'big'"),
        (["probe", "--simulate", "uml", "--rlimit-as", "1G"], "--rlimit-as applies to real runs"),
        (["probe", "--bogus"], "unrecognized arguments: --bogus"),
        ([], "a command is required"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: List[str], message: str) -> None:
    p = allocator(*args)
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.splitlines()) == 1 and message in p.stderr, p.stderr


def test_internal_error_exits_70_with_one_line(tmp_path: Path) -> None:
    # An address space whose mmap is broken: the model meets an exception it did not expect.
    shim = tmp_path / "sitecustomize.py"
    shim.write_text("import allocator.simulated as s\n"
                    "s.SimKernel._raw_mmap = lambda *a: (_ for _ in ()).throw(RuntimeError('kaboom'))\n")
    env = dict(os.environ, PYTHONPATH="%s:%s" % (tmp_path, ROOT))
    p = allocator("probe", "--simulate", "uml", env=env)
    assert p.returncode == 70
    assert p.stderr.count("\n") == 1 and "internal error: RuntimeError: kaboom" in p.stderr
    p = allocator("probe", "--simulate", "uml", "--policy", "all", "--json", env=env)
    assert p.returncode == 70
    assert [d["error"].split(" (at")[0] for d in json.loads(p.stdout)] == ["internal error: RuntimeError: kaboom"] * 3


def test_the_zipapp_runs_standalone(tmp_path: Path) -> None:
    pyz = payload.build(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-I", str(pyz), "probe", "--simulate", "uml", "--json"], capture_output=True,
                       text=True, timeout=60, cwd=str(tmp_path), env=env)
    assert p.returncode == 0 and json.loads(p.stdout)["outcome"] == "fallback-32bit"
    assert payload.build(tmp_path).read_bytes() == pyz.read_bytes()  # reproducible
    # ... in any process, whatever it imported (marshal's marks follow reference counts): Docker's payload
    # images are tagged by these bytes
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run([sys.executable, "-c", "import sys, jinja2, rich, yaml; sys.path.insert(0, %r); from pathlib "
                    "import Path; from harness import payload; payload.build(Path(%r))" % (str(ROOT), str(other))],
                   check=True, timeout=60)
    assert (other / "allocator.pyz").read_bytes() == pyz.read_bytes()


def rewritten(pyz: Path, out: Path, change: Callable[[str, bytes], bytes]) -> Path:
    """A copy of the zipapp with each entry's bytes passed through ``change(name, data)``."""
    with zipfile.ZipFile(pyz) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, change(info.filename, src.read(info)))
    return out


def test_the_zipapp_carries_bytecode_for_this_python_and_sources_for_any_other(tmp_path: Path) -> None:
    pyz = payload.build(tmp_path)
    with zipfile.ZipFile(pyz) as z:
        names = set(z.namelist())
    sources = {n for n in names if n.endswith(".py")}
    assert len(sources) > 10 and names == sources | {n + "c" for n in sources}

    def runs(app: Path) -> "subprocess.CompletedProcess[str]":
        return subprocess.run([sys.executable, "-I", str(app), "probe", "--simulate", "uml", "--json"],
                              capture_output=True, text=True, timeout=60, cwd=str(tmp_path))

    # This Python runs the bytecode: with every source replaced by a failure, the zipapp still works.
    broken = rewritten(pyz, tmp_path / "no-sources.pyz",
                       lambda n, b: b"raise SystemExit('source ran')\n" if n.endswith(".py") else b)
    p = runs(broken)
    assert p.returncode == 0 and json.loads(p.stdout)["outcome"] == "fallback-32bit", p.stderr
    # Another Python (another magic number: Debian 11's 3.9, 13's 3.13) skips it and compiles the sources.
    foreign = rewritten(pyz, tmp_path / "foreign.pyz",
                        lambda n, b: b"\x00\x00\r\n" + b[4:] if n.endswith(".pyc") else b)
    p = runs(foreign)
    assert p.returncode == 0 and json.loads(p.stdout)["outcome"] == "fallback-32bit", p.stderr


# -- Python 3.9 and the guest's independence ------------------------------------------------------


def test_allocator_parses_as_python_39_and_imports_only_the_stdlib() -> None:
    std = set(sys.stdlib_module_names) | {"allocator", "__future__"}
    for f in sorted((ROOT / "allocator").glob("*.py")):
        tree = ast.parse(f.read_text(), str(f), feature_version=(3, 9))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] in std, "%s:%d imports %s" % (f.name, node.lineno, n)


# Running it under 3.9 is the shipped target local-bullseye (Debian 11's python3), checked in
# tests/integration/test_targets.py on every matrix run.
