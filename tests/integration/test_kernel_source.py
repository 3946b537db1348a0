"""Kernels built from source, for real: a fragment option that olddefconfig drops is the target's
clear error (a real build up to olddefconfig, no compile), a second run builds nothing, and a
``kill -9`` mid-compile leaves no process behind and a ``.partial`` that ``clean`` removes.

The shipped targets built this way (qemu-arm64-va39, qemu-arm64-64k-va42) boot in
tests/integration/test_targets.py like every other target.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

import images
from harness import arches, backends, config
from harness.plugin import skip_or_fail
from tests.conftest import ROOT, require_tool
from tests.integration import leftovers

pytestmark = [pytest.mark.integration, pytest.mark.qemu]

HINT = ("sudo apt-get install -y --no-install-recommends %s gcc-aarch64-linux-gnu bison flex bc make "
        "(./scripts/setup.sh does)" % arches.KERNEL_SOURCE)


def require_kernel_build() -> None:
    """The kernel source, the arm64 cross compiler and mmdebstrap (busybox), or a skip with the hint."""
    tarball = Path("/usr/src/%s.tar.xz" % arches.KERNEL_SOURCE)
    if not tarball.is_file():
        skip_or_fail("qemu", "%s not found: %s" % (tarball, HINT))
    for tool in ("aarch64-linux-gnu-gcc", "make", "bison", "flex", "bc"):
        require_tool("qemu", tool, HINT)
    require_tool("qemu", "mmdebstrap", "sudo apt-get install -y mmdebstrap")


def harness(tmp_path: Path, *args: str, **env: str) -> "subprocess.Popen[str]":
    """``arena-harness ARGS`` in a session of its own, so that a kill -9 of it kills the leader only."""
    e = dict(os.environ, ARENA_HARNESS_STATE=str(tmp_path / "state"), PYTHONPATH=str(ROOT), **env)
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=str(ROOT), env=e, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def finish(p: "subprocess.Popen[str]", timeout: float) -> str:
    out, err = p.communicate(timeout=timeout)
    return out + err


def test_a_fragment_option_that_does_not_survive_olddefconfig_is_a_clear_error(tmp_path: Path) -> None:
    """Two ways an option is dropped: ARM64_VA_BITS_42 needs 64K pages, and the base's 9P_FS needs the
    INET this fragment turns off. The run's record names file, line, target and key, each option and
    why; nothing was compiled, and the log of the failed build is kept."""
    require_kernel_build()
    cache = tmp_path / "cache"
    f = tmp_path / "t.yaml"
    f.write_text("targets:\n  - name: dropped\n    backend: qemu\n    arch: arm64\n    policies: [go-2012]\n"
                 "    kernel_config: [ARM64_VA_BITS_42=y, INET=n]\n")
    began = time.monotonic()
    p = harness(tmp_path, "run", "--targets", str(f), "--json", str(tmp_path / "r.json"), "--quiet",
                "--artifacts", str(tmp_path / "out"), ARENA_HARNESS_CACHE=str(cache))
    out = finish(p, 900)
    took = time.monotonic() - began
    assert p.returncode == 1, out
    (rec,) = json.loads((tmp_path / "r.json").read_text())["results"]
    detail = rec["detail"]
    print("%.0fs: %s" % (took, detail))
    assert rec["status"] == "error"
    assert detail.startswith("%s:2 [dropped] kernel_config: " % f), detail
    assert "ARM64_VA_BITS_42=y did not survive olddefconfig: it depends on ARM64_64K_PAGES (arch/arm64/Kconfig:" \
        in detail and "and here ARM64_64K_PAGES=n" in detail
    assert "9P_FS=y did not survive olddefconfig: it depends on INET && NET_9P (fs/9p/Kconfig:4), and here " \
        "INET=n, NET_9P=y" in detail
    kept = Path(detail.rsplit("(build log: ", 1)[1].rstrip(")"))
    assert kept.is_file() and "olddefconfig" in kept.read_text()
    entries = images.Cache(cache).entries()
    assert [e.kind for e in entries] == [], entries  # no kit, and no compile started
    assert not list(cache.glob(".*.partial"))
    assert took < 300  # the busybox fetch, unpacking and two config steps: no compile


def test_a_second_run_builds_nothing() -> None:
    """The shipped VA39 target from the run's cache (built first if it is cold), then once more: the
    kit, its initramfs and root are hits, nothing is unpacked, configured or compiled."""
    require_kernel_build()
    target = config.load().select(["qemu-arm64-va39"])[0]
    backends.get("qemu")(target).provision(images.Cache(), lambda m: None)  # cold or warm: now all there
    before = {e.path: e.built for e in images.Cache().entries()}
    again = images.Cache()
    said: List[str] = []
    began = time.monotonic()
    backends.get("qemu")(target).provision(again, said.append)
    assert (again.builds, again.hits, said) == (0, 4, [])  # kit, initramfs, root filesystem, saved guest
    assert time.monotonic() - began < 2.0
    assert {e.path: e.built for e in images.Cache().entries()} == before


def test_a_kill_during_a_compile_leaves_no_process_and_clean_removes_the_partials(tmp_path: Path) -> None:
    require_kernel_build()
    cache = tmp_path / "cache"
    f = tmp_path / "t.yaml"
    f.write_text("targets:\n  - name: build-me\n    backend: qemu\n    arch: arm64\n    kernel: source\n")
    p = harness(tmp_path, "images", "build", "--targets", str(f), ARENA_HARNESS_CACHE=str(cache))

    def compiling() -> List[int]:
        """The cross compiler at work on the kernel itself: cc1 in the kernel-build entry being built (the
        host's gcc compiles kconfig's own tools earlier, in the kit's entry)."""
        found = []
        for pid, args in leftovers.cmdlines():
            try:
                cwd = os.readlink("/proc/%d/cwd" % pid)
            except OSError:
                continue
            if cwd.startswith(str(cache / ".kernel-build-")) and "gcc-cross" in args and "cc1" in args:
                found.append(pid)
        return found

    try:
        leftovers.wait_for(compiling, 600, "a compiler working in the cache")
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    partials = sorted(cache.glob(".*.partial"))
    assert [d.name.split("-")[0:2] for d in partials] == [[".kernel", "build"], [".source", "kernel"]], partials

    def in_the_cache() -> List[str]:
        out = []
        for pid, args in leftovers.cmdlines():
            try:
                cwd = os.readlink("/proc/%d/cwd" % pid)
            except OSError:
                cwd = ""
            if str(cache) in args or cwd.startswith(str(cache)):
                out.append("%d %s" % (pid, args[:120]))
        return out

    # At once: the namespace dies with the harness (without it, a compile already started runs to its end).
    assert leftovers.settle(in_the_cache, timeout=1.0) == []
    out = finish(harness(tmp_path, "clean", ARENA_HARNESS_CACHE=str(cache)), 120)
    for d in partials:
        assert "removed %s (a killed build's)" % d in out, out
    assert sorted(cache.glob(".*.partial")) == []
    assert images.Cache(cache).entries() == []
