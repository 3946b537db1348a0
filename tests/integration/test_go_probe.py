"""The go probe built and run for real, beside the model.

``GoProbe`` builds probes/go for amd64, 386, arm64 and riscv64 with the host's golang-go (in a cache of
this module's own, so every run builds); amd64 and 386 binaries run natively, arm64 and riscv64 through
qemu-<arch>-static, with and without ``prlimit --as``; :func:`harness.probes.go.document` reads what
they print. tests/integration/test_real_go.py holds Go's crashes under RLIMIT_AS against the model in
detail (blocks grown, "cannot allocate" sizes, bytes in use).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import images
from allocator.probe import run_policy
from harness import arches
from harness.document import check_document
from harness.plugin import skip_or_fail
from harness.probes import go
from tests.conftest import require_tool
from tests.integration.goprobes import fatal_line, require_go_1_19, run

pytestmark = [pytest.mark.integration]

PLAN = "64M*20"
ARCHES = ("amd64", "i386", "arm64", "riscv64")
LIMITS = {"600M": 600 << 20, "1G": 1 << 30}
QEMU_USER = {"arm64": "aarch64", "riscv64": "riscv64"}
# Go's first hint (runtime/malloc.go, mallocinit), where its first arena lands when the kernel honours it.
HINT = {"amd64": 0xC000000000, "arm64": 0x4000000000, "riscv64": 0xC000000000}
# The simulated kernel that gives the model the probe's address space: qemu-user without -R shares the
# host's 47-bit one; a 386 process on this host is the i386 preset.
SIMULATE = {"amd64": "host", "i386": "i386", "arm64": "host,machine=aarch64", "riscv64": "host,machine=riscv64"}
Built = Tuple[Path, Dict[str, Path]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    require_go_1_19()
    root = tmp_path_factory.mktemp("image-cache")
    cache = images.Cache(root)
    exes = {}
    for arch in ARCHES:
        start = time.monotonic()
        exes[arch] = cache.get(images.GoProbe(arch)) / go.BINARY
        print("built the go probe for %s in %.1fs" % (arch, time.monotonic() - start))
    assert cache.builds == len(ARCHES)
    return root, exes


def emulator(arch: str) -> List[str]:
    """How this host runs a binary of ``arch``: natively, or through qemu-user."""
    if arches.runs_natively(arch):
        return []
    if arch not in QEMU_USER:
        skip_or_fail("qemu_user", "a %s binary does not run on this host, natively or through qemu-user" % arch)
    return [require_tool("qemu_user", "qemu-%s-static" % QEMU_USER[arch], "sudo apt-get install -y qemu-user-static")]


def test_every_build_is_then_a_cache_hit_of_the_source_it_names(built: Built) -> None:
    root, exes = built
    cache = images.Cache(root)
    start = time.monotonic()
    for arch in ARCHES:
        assert cache.get(images.GoProbe(arch)) / go.BINARY == exes[arch]
    print("four cache hits in %.3fs" % (time.monotonic() - start))
    assert (cache.hits, cache.builds) == (len(ARCHES), 0)
    for exe in exes.values():
        assert (exe.parent / "src" / "main.go").read_bytes() == (go.SOURCE / "main.go").read_bytes()
        assert exe.stat().st_size > 1 << 20 and not (exe.parent / "work").exists()


@pytest.mark.parametrize("arch", ARCHES)
def test_without_a_limit_the_heap_lands_where_the_model_puts_it(built: Built, arch: str, tmp_path: Path) -> None:
    ran = run(built[1][arch], PLAN, emulator=emulator(arch), tmp=tmp_path)
    d = ran.doc
    assert d["error"] is None and check_document(d) is None, ran.stderr[-2000:]
    assert d["grows"] == 20 and all(g["ok"] and g["touched"] == 64 for g in d["growth"])
    assert (d["facts"]["goarch"], d["facts"]["go_version"][:6]) == (images.GoProbe(arch).goarch, "go1.19")
    model = run_policy("go-modern", simulate=SIMULATE[arch], grow=PLAN, trace=False)
    assert d["outcome"] == model["outcome"]
    if arch == "i386":
        assert (d["outcome"], d["facts"]["pointer_bits"], d["reservation"]) == ("native-32bit", 32, None)
        return
    assert (d["outcome"], d["reservation"]["high_ok"]) == ("high-arena", True)
    assert d["heap"]["arena_start"] == hex(HINT[arch]) == model["heap"]["arenas"][0][0]
    assert int(d["heap"]["arena_end"], 16) >= HINT[arch] + 20 * (64 << 20)  # the heap grew on from there
    if arch == "amd64":  # and where the model itself lands on this host, for real
        real = run_policy("go-modern", grow=PLAN, trace=False)
        assert (real["outcome"], real["heap"]["arenas"][0][0]) == ("high-arena", d["heap"]["arena_start"])


def test_in_a_256_gib_space_no_hint_is_honoured_in_go_nor_in_the_model(built: Built, tmp_path: Path) -> None:
    """qemu-user -R 0x4000000000 reserves 256 GiB for the guest, as Sv39 gives a process: every hint lies above."""
    ran = run(built[1]["riscv64"], PLAN, emulator=emulator("riscv64") + ["-R", "0x4000000000"], tmp=tmp_path)
    d = ran.doc
    assert d["error"] is None and check_document(d) is None, ran.stderr[-2000:]
    assert d["outcome"] == run_policy("go-modern", simulate="sv39", grow=PLAN, trace=False)["outcome"] == "os-chosen"
    assert int(d["heap"]["arena_start"], 16) < 0x4000000000 and d["reservation"]["high_ok"] is False


@pytest.mark.parametrize("limit", sorted(LIMITS))
@pytest.mark.parametrize("arch", ARCHES)
def test_under_rlimit_as_the_crash_is_gos_word_for_word(built: Built, arch: str, limit: str, tmp_path: Path) -> None:
    ran = run(built[1][arch], PLAN, limit=LIMITS[limit], emulator=emulator(arch), tmp=tmp_path)
    d, fatal = ran.doc, fatal_line(ran.stderr)
    assert fatal is not None and ran.returncode == 2, "Go did not throw under %s: %s" % (limit, ran.stderr[-1500:])
    assert (d["outcome"], d["crash"], d["error"]) == ("crash", fatal, None) and check_document(d) is None
    said = [ln for ln in ran.stderr.split("\nfatal error: ")[0].splitlines() if ln.startswith("runtime: ")]
    assert d["messages"] == said + ["throw: " + fatal]
    assert d["grows"] == ran.stdout.count('{"grew":') == sum(1 for g in d["growth"] if g["ok"])
    if arches.runs_natively(arch):
        # The model under the same limit says the same; under qemu-user the limit also holds qemu's own
        # mappings, which the model does not have (and which make Go die sooner: no comparison there).
        model = run_policy("go-modern", simulate="%s,rlimit-as=%s" % (SIMULATE[arch], limit), grow=PLAN,
                           trace=False)
        assert (d["outcome"], d["crash"]) == (model["outcome"], model["crash"])
    if (arch, limit) == ("amd64", "1G"):  # in a growth step, its arena's metadata: the failed step is recorded
        assert d["crash"] == "out of memory allocating heap arena metadata"
        assert d["growth"][-1] == {"step": d["grows"] + 1, "kind": "grow", "size": 64 << 20, "addr": None,
                                   "ok": False, "error": d["crash"]}
