"""The go probe's host side: its command line, its source, its image recipe's key, and :func:`document` on
what the real program printed (tests/data/goprobe: captured from Go 1.19.8 builds of probes/go, natively,
under ``prlimit --as`` and under qemu-aarch64-static) and on whatever else a guest might print."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

import images
from allocator.runtime import MAX_GROW_STEPS
from harness import arches, proc
from harness.document import check_document
from harness.probes import go
from tests.conftest import ROOT, installed_tree

CANNED = ROOT / "tests" / "data" / "goprobe"
MiB = 1 << 20


def canned(name: str) -> Dict[str, Any]:
    run: Dict[str, Any] = json.loads((CANNED / (name + ".json")).read_text())
    return run


def doc_of(name: str, merged: bool = False) -> Dict[str, Any]:
    run = canned(name)
    if merged:  # a channel that mixes the two streams, as a serial console does
        return go.document(run["stdout"] + run["stderr"], "", run["returncode"])
    return go.document(run["stdout"], run["stderr"], run["returncode"])


# -- the program and its command line ----------------------------------------------------------------


def test_the_source_is_the_go_module_at_the_top_of_the_repository() -> None:
    assert go.SOURCE == ROOT / "probes" / "go"
    assert (go.SOURCE / "go.mod").read_text().split("\n")[:3] == ["module arena-harness/goprobe", "", "go 1.19"]
    imports = re.search(r"import \((.*?)\)", (go.SOURCE / "main.go").read_text(), re.S)
    assert imports is not None
    # The standard library only: nothing to fetch (the recipe builds with GOPROXY=off).
    assert all("." not in pkg.split("/")[0] for pkg in re.findall(r'"([^"]+)"', imports.group(1)))


def test_argv_passes_the_plan_and_the_stride_as_one_word_each() -> None:
    assert go.argv("/payload/goprobe", "64M*8,sysalloc:64M", 1 << 20) == [
        "/payload/goprobe", "-grow=64M*8,sysalloc:64M", "-touch-every=1048576"]
    # The model touches nothing for a stride of zero or less; the program's flag takes no negative size.
    assert go.argv("g", "-1", -5) == ["g", "-grow=-1", "-touch-every=0"]


def test_an_install_ships_the_source_where_the_probe_finds_it(tmp_path: Path) -> None:
    """What a wheel holds (tests.conftest.installed_tree) has the go probe's source where it looks."""
    site = installed_tree(tmp_path)
    shipped = {f.name for f in (site / "harness" / "probes" / "go_source").iterdir()}
    assert {"main.go", "go.mod"} <= shipped and shipped == {f.name for f in go.SOURCE.iterdir()
                                                            if f.suffix in (".go", ".mod")}
    r = proc.run([sys.executable, "-c", "from harness.probes import go; print(go.SOURCE)"], timeout=60,
                 cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert r.output.strip() == str(site / "harness" / "probes" / "go_source"), r.output


# -- the recipe -------------------------------------------------------------------------------------


def test_every_architecture_of_the_table_has_its_go_port() -> None:
    assert {a.debian: a.goarch for a in arches.ARCHES} == {
        "amd64": "amd64", "i386": "386", "arm64": "arm64", "riscv64": "riscv64"}
    assert images.GoProbe("i386").goarch == "386"
    with pytest.raises(images.BuildError, match=r"no Go port for architecture 'mips'.*amd64, i386, arm64, riscv64"):
        images.GoProbe("mips")


def test_the_recipe_key_changes_with_the_source_the_go_version_and_the_arch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.recipes, "go_version", lambda: "go version go1.19.8 linux/amd64")
    src = tmp_path / "src"
    shutil.copytree(go.SOURCE, src)
    base = images.GoProbe("amd64", source=src)
    assert images.GoProbe("amd64", source=src).key() == base.key()
    assert images.GoProbe("arm64", source=src).key() != base.key()
    (src / "README").write_text("not read by go build")
    assert images.GoProbe("amd64", source=src).key() == base.key()
    (src / "main.go").write_text((src / "main.go").read_text() + "\n// changed\n")
    changed = images.GoProbe("amd64", source=src)
    assert changed.key() != base.key()
    assert base.key() == images.GoProbe("amd64", source=go.SOURCE).key()  # where the tree lies does not count
    keys = {base.key(), changed.key()}
    monkeypatch.setattr(images.recipes, "go_version", lambda: "go version go1.19.13 linux/amd64")
    assert images.GoProbe("amd64", source=src).key() not in keys
    monkeypatch.setattr(images.recipes, "go_version", lambda: None)  # no Go: a key still, and no entry matches
    assert images.GoProbe("amd64", source=src).key() not in keys


def test_a_source_changed_after_the_key_was_made_is_not_built_under_that_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images.recipes, "go_version", lambda: "go version go1.19.8 linux/amd64")
    src = tmp_path / "src"
    shutil.copytree(go.SOURCE, src)
    recipe = images.GoProbe("amd64", source=src)
    (src / "main.go").write_text("package main\n\nfunc main() {}\n")
    with pytest.raises(images.BuildError, match="changed after this run read it"):
        recipe.build(tmp_path / "out", images.Cache(tmp_path / "cache"), lambda msg: None)


def test_the_build_runs_no_user_go_setting_and_nothing_outside_its_directory(tmp_path: Path) -> None:
    env = images.recipes.go_env(tmp_path / "work", "riscv64")
    assert env["GOARCH"] == "riscv64" and env["CGO_ENABLED"] == "0" and env["GOPROXY"] == "off"
    assert "GOROOT" not in env and env["GOENV"] == "off" and env["GOTOOLCHAIN"] == "local"
    for key in ("HOME", "GOCACHE", "GOPATH", "GOTMPDIR"):
        assert Path(env[key]).is_relative_to(tmp_path / "work"), key


def test_a_binary_for_another_machine_or_a_dynamic_one_is_refused(tmp_path: Path) -> None:
    exe = tmp_path / "exe"
    # An ELF64 header for x86_64 with one program header, PT_INTERP (a dynamically linked binary).
    header = bytearray(64 + 56)
    header[:7] = b"\x7fELF\x02\x01\x01"
    header[18:20] = (62).to_bytes(2, "little")
    header[32:40] = (64).to_bytes(8, "little")
    header[54:56] = (56).to_bytes(2, "little")
    header[56:58] = (1).to_bytes(2, "little")
    header[64:68] = (3).to_bytes(4, "little")
    exe.write_bytes(bytes(header))
    with pytest.raises(images.BuildError, match="ELF machine 62, not arm64"):
        images.recipes.check_static_elf(exe, "arm64")
    with pytest.raises(images.BuildError, match="dynamically linked"):
        images.recipes.check_static_elf(exe, "amd64")
    header[64:68] = (1).to_bytes(4, "little")  # PT_LOAD: static
    exe.write_bytes(bytes(header))
    images.recipes.check_static_elf(exe, "amd64")
    exe.write_text("#!/bin/sh\n")
    with pytest.raises(images.BuildError, match="not a little-endian ELF"):
        images.recipes.check_static_elf(exe, "amd64")


# -- document(): what the real program printed --------------------------------------------------------


@pytest.mark.parametrize("merged", [False, True], ids=["separate", "merged"])
def test_a_finished_run_is_its_own_document(merged: bool) -> None:
    d = doc_of("amd64-ok", merged)
    assert check_document(d) is None and d["error"] is None
    assert (d["policy"], d["outcome"], d["crash"]) == ("go", "high-arena", None)
    assert d["heap"]["arena_start"] == "0xc000000000" and d["reservation"]["high_ok"] is True
    assert [(g["kind"], g["ok"]) for g in d["growth"]] == [("grow", True)] * 3 + [("sysalloc", True)]
    assert d["growth"][3]["as"] == "grow" and d["grows"] == 4
    assert d["facts"]["go_version"].startswith("go1.19") and d["facts"]["goarch"] == "amd64"
    assert d["facts"]["pointer_bits"] == 64 and int(d["facts"]["user_top"], 16) > 1 << 46


def test_a_386_run_is_native_32bit_and_arm64_under_qemu_user_lands_at_its_hint() -> None:
    d = doc_of("386-ok")
    assert (d["outcome"], d["reservation"], d["facts"]["pointer_bits"]) == ("native-32bit", None, 32)
    assert d["heap"]["arenas"] == [[d["heap"]["arena_start"], d["heap"]["arena_end"]]]
    a = doc_of("arm64-qemu-user-ok")
    assert (a["outcome"], a["heap"]["arena_start"], a["facts"]["machine"]) == ("high-arena", "0x4000000000",
                                                                               "aarch64")


@pytest.mark.parametrize("merged", [False, True], ids=["separate", "merged"])
def test_the_runtime_dying_in_a_growth_step_is_a_crash_with_gos_words(merged: bool) -> None:
    d = doc_of("amd64-as1G", merged)
    assert check_document(d) is None
    assert (d["outcome"], d["crash"], d["error"]) == ("crash", "out of memory allocating heap arena metadata", None)
    assert d["messages"] == ["throw: out of memory allocating heap arena metadata"]
    assert d["grows"] == 4 and [g["ok"] for g in d["growth"]] == [True] * 4 + [False]
    assert d["growth"][-1] == {"step": 5, "kind": "grow", "size": 64 * MiB, "addr": None, "ok": False,
                               "error": "out of memory allocating heap arena metadata"}
    assert d["heap"] == {"arena_start": "0xc000000000", "arena_end": "0xc014000000",
                         "arenas": [["0xc000000000", "0xc014000000"]]}


def test_the_runtime_dying_before_main_has_no_failed_step_as_in_the_model() -> None:
    d = doc_of("amd64-as600M")
    assert (d["outcome"], d["crash"]) == ("crash", "out of memory")
    assert d["messages"] == ["runtime: out of memory: cannot allocate 4194304-byte block (0 in use)",
                             "throw: out of memory"]
    assert d["growth"] == [] and d["grows"] == 0
    assert d["heap"] == {"arena_start": None, "arena_end": None, "arenas": []}


def test_a_crash_in_a_sysalloc_step_names_its_kind() -> None:
    d = doc_of("386-sysalloc-as600M")
    assert (d["outcome"], d["crash"]) == ("crash", "out of memory")
    assert re.fullmatch(r"runtime: out of memory: cannot allocate 67108864-byte block \(\d+ in use\)",
                        d["messages"][0])
    assert [g["kind"] for g in d["growth"]] == ["grow"] * 2 + ["sysalloc"] * 4
    assert d["growth"][-1]["ok"] is False and d["growth"][-1]["size"] == 64 * MiB


def test_a_refused_plan_is_an_error_that_quotes_the_program() -> None:
    d = doc_of("bad-plan")
    assert d["outcome"] is None and d["crash"] is None and check_document(d) is None
    assert d["error"] == ("the go probe exited 2 after 0 blocks without a document: goprobe: bad growth step "
                          "'64Q*2': expected [grow:|sysalloc:]SIZE[*COUNT], e.g. 64M*8")


# -- document(): deaths other than Go's throw ----------------------------------------------------------

BLOCKS = "".join('{"grew":%d,"addr":"0x%x","kind":"grow","size":67108864,"arena":["0x%x","0x%x"]}\n'
                 % (i, 0xc000100000 + (i - 1) * 64 * MiB, 0xc000000000 + (i - 1) * 64 * MiB,
                    0xc008000000 + (i - 1) * 64 * MiB) for i in (1, 2))


@pytest.mark.parametrize("stderr, returncode, timed_out, error", [
    ("", -9, False, "the go probe was killed by SIGKILL after 2 blocks without a document"),
    ("", None, True, "the go probe timed out after 2 blocks without a document"),
    ("", None, False, "the go probe ended with no exit status after 2 blocks without a document"),
    ("", -200, False, "the go probe was killed by signal 200 after 2 blocks without a document"),
    ("panic: runtime error: makeslice: len out of range\n\ngoroutine 1 [running]:\nmain.main()\n", 2, False,
     "the go probe exited 2 after 2 blocks without a document: panic: runtime error: makeslice: len out of "
     "range | goroutine 1 [running]: | main.main()"),
])
def test_other_deaths_are_errors_with_the_blocks_grown(stderr: str, returncode: Optional[int], timed_out: bool,
                                                      error: str) -> None:
    d = go.document(BLOCKS, stderr, returncode, timed_out)
    assert (d["outcome"], d["crash"], d["error"]) == (None, None, error)
    assert d["grows"] == 2 and d["heap"]["arena_start"] == "0xc000000000"
    assert d["heap"]["arena_end"] == "0xc00c000000" and check_document(d) is None


def test_a_document_followed_by_a_bad_end_says_so() -> None:
    run = canned("amd64-ok")
    d = go.document(run["stdout"], "something went wrong\n", 1)
    assert d["outcome"] == "high-arena"
    assert d["error"] == "the go probe printed its document, then exited 1: something went wrong"
    assert go.document(run["stdout"], "", None, timed_out=True)["error"].endswith("then timed out")


def test_a_throw_after_the_document_is_the_crash_the_process_died_of() -> None:
    # Seen at 695M of RLIMIT_AS: the plan completed and printed, then the background GC's persistentalloc
    # failed (1 run in 16 under load).
    run = canned("amd64-ok")
    stderr = ("fatal error: runtime: cannot allocate memory\n\nruntime stack:\nruntime.throw({0x4c422f?, 0x0?})\n"
              "\truntime/panic.go:1047 +0x5d\n\ngoroutine 19 [running]:\n\tgoroutine running on other thread; "
              "stack unavailable\ncreated by runtime.gcBgMarkStartWorkers\n")
    d = go.document(run["stdout"], stderr, 2)
    assert (d["outcome"], d["crash"], d["error"]) == ("crash", "runtime: cannot allocate memory", None)
    assert d["messages"][-1] == "throw: runtime: cannot allocate memory (after the plan completed)"
    assert d["grows"] > 0 and check_document(d) is None
    # Any other end after the document stays an error: exit 2 without a throw (a panic's status too), a
    # throw that is the probe's own bug, not the address space's
    assert go.document(run["stdout"], "panic: boom\n", 2)["error"].startswith("the go probe printed its document")
    asleep = go.document(run["stdout"], "fatal error: all goroutines are asleep - deadlock!\n", 2)
    assert asleep["outcome"] == "high-arena" and asleep["error"].startswith("the go probe printed its document")
    # stdout and stderr merged (a backend that cannot keep them apart): the throw is found there too
    merged = go.document(run["stdout"] + "\nfatal error: runtime: out of memory\n", "", 2)
    assert (merged["outcome"], merged["crash"]) == ("crash", "runtime: out of memory")


# -- document(): hostile output -------------------------------------------------------------------------


def _final(**change: Any) -> str:
    d = json.loads(canned("amd64-ok")["stdout"].splitlines()[-1])
    d.update(change)
    return json.dumps(d)


HOSTILE: Dict[str, List[Any]] = {
    "nothing": ["", "", 0],
    "binary noise": ["\x00\xff{\x01" * 1000, "\x1b[2J" * 100, 0],
    "deep nesting": ["[" * 100000 + "\n" + "{" * 100000 + "\n" + '{"a":' * 50000, "", 0],
    "huge number": ['{"grew": %s, "addr": "0x1"}\n' % ("9" * 5000), "", 0],
    "wrong types": ['{"grew": true, "addr": "0x1"}\n{"grew": 1, "addr": 5}\n{"grew": 1, "addr": "0xzz"}\n'
                    '{"grew": 3, "addr": "0x1", "arena": ["0x1"], "size": -4, "kind": "<b>"}\n', "", 0],
    "misshapen document": [_final(reservation=5), "", 0],
    "another policy": [_final(policy="go-modern"), "", 0],
    "unknown outcome": [_final(outcome="pass"), "", 0],
    "not a mapping": ['{"schema": 1}\n[1, 2]\n"text"\n', "", 0],
    "long lines": ["{" + "x" * (go.MAX_LINE + 10) + "\n", "fatal error: " + "y" * 100000 + "\n", 2],
    "flood of blocks": ['{"grew": 1, "addr": "0x1000"}\n' * (MAX_GROW_STEPS + 500), "", -9],
    "flood of messages": ["", "runtime: x\n" * 100000 + "fatal error: out of memory\n", 2],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_anything_a_guest_prints_becomes_a_well_formed_document(case: str) -> None:
    stdout, stderr, rc = HOSTILE[case]
    d = go.document(stdout, stderr, rc)
    assert check_document(d) is None, d
    assert d["policy"] == "go" and d["schema"] == 1
    assert (d["outcome"] is None) == (d["error"] is not None)
    assert len(d["growth"]) <= MAX_GROW_STEPS + 1 and len(d["messages"]) <= go.MAX_MESSAGES + 1
    assert all(len(m) <= go.MAX_MESSAGE + len("throw: ") for m in d["messages"])
    assert len(json.dumps(d)) < 2 * 1024 * 1024


def test_hostile_documents_are_refused_with_the_reason() -> None:
    assert go.document(*HOSTILE["misshapen document"])["error"] == (
        "the go probe printed a malformed document (reservation: expected a mapping)")
    assert "policy: expected 'go'" in go.document(*HOSTILE["another policy"])["error"]
    assert "outcome: expected one of high-arena" in go.document(*HOSTILE["unknown outcome"])["error"]
    wrong = go.document(*HOSTILE["wrong types"])
    assert [(g["step"], g["addr"], g["kind"], g["size"]) for g in wrong["growth"]] == [(3, "0x1", None, None)]
    assert go.document(*HOSTILE["long lines"])["crash"] == "y" * go.MAX_MESSAGE
