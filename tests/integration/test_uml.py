"""A real UML kernel: isolation from the host, hangs, panics, and nothing left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Tuple

import pytest

from harness import config, payload, proc
from harness.backends.base import RunContext
from harness.backends.uml import UmlBackend
from harness.model import GuestRun, Status
from harness.results import classify
from tests.conftest import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.uml]


def uml_target(extra: str = "") -> config.Target:
    text = "targets:\n  - name: t\n    backend: uml\n    timeout: 60s\n" + extra
    return config.parse(text, "t.yaml").targets[0]


def boot(tmp_path: Path, init_body: str, timeout: float = 60.0) -> Tuple[UmlBackend, RunContext, GuestRun]:
    """Boot the real backend, with the init replaced by ``init_body`` (after the harness wrote its own)."""
    require_tool("uml", "linux.uml", "sudo apt-get install -y user-mode-linux")
    target = uml_target()
    backend = UmlBackend(target)
    work = tmp_path / "work"
    work.mkdir()
    pyz = payload.build(tmp_path)
    ctx = RunContext("itest%d" % os.getpid(), target, ["go-2012"], work, pyz, tmp_path / "console.log", timeout)
    backend.prepare(ctx)
    init = work / "boot" / "init.sh"
    init.chmod(0o755)
    init.write_text("#!/bin/sh\nexport PATH=/usr/sbin:/usr/bin:/sbin:/bin\nmount -t proc proc /proc\n" + init_body)
    try:
        completed = backend.execute(ctx)
        run = backend.collect(ctx, completed)
    finally:
        backend.shutdown()
    return backend, ctx, run


def uml_processes(umid: str) -> list:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if umid in ln and "ps -eo" not in ln]


def test_the_guest_cannot_write_the_hosts_files(tmp_path: Path) -> None:
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir(mode=0o777)  # even a world-writable host directory
    victim = victim_dir / "owned"
    body = """
echo "uid=$(id -u)"
echo pwn > {v} 2>/dev/null && echo WROTE_VIA_ROOT || echo BLOCKED_ROOT
mount -o remount,rw / 2>/dev/null; echo pwn > {v} 2>/dev/null && echo WROTE_VIA_REMOUNT || echo BLOCKED_REMOUNT
mount -t tmpfs none /mnt
mkdir -p /mnt/h
mount -t hostfs -o {d} none /mnt/h 2>/dev/null && (echo pwn > /mnt/h/owned 2>/dev/null && echo WROTE_VIA_HOSTFS \\
    || echo BLOCKED_HOSTFS) || echo BLOCKED_HOSTFS_MOUNT
mount -t hostfs -o /mnt/arena/out none /mnt/h && echo ok > /mnt/h/allowed && echo WROTE_SHARE
echo @@ARENA-HARNESS-DONE@@
poweroff -f
"""
    _, ctx, run = boot(tmp_path, body.format(v=victim, d=victim_dir))
    log = ctx.log_path.read_text()
    assert "uid=0" in log  # the guest is root inside
    assert "BLOCKED_ROOT" in log and "BLOCKED_REMOUNT" in log
    assert "WROTE_VIA" not in log
    assert "BLOCKED_HOSTFS_MOUNT" in log  # the host's directory is not in the guest's view at all
    assert "WROTE_SHARE" in log  # the dedicated results directory is writable
    assert (ctx.workdir / "out" / "allowed").read_text() == "ok\n"
    assert not victim.exists()
    assert run.panic is None


def test_a_hanging_guest_times_out_and_leaves_nothing(tmp_path: Path) -> None:
    start = time.monotonic()
    backend, ctx, run = boot(tmp_path, "echo sleeping\nsleep 1000\n", timeout=8)
    assert time.monotonic() - start < 8 + 5
    assert run.timed_out and run.documents == {}
    rec = classify(ctx.target, "go-2012", run)
    assert rec.status is Status.TIMEOUT and rec.detail == "deadline of 60s reached; no result before the deadline"
    assert uml_processes(backend.umid(ctx)) == []
    assert proc.live_pids() == []


def test_an_init_that_exits_is_a_kernel_panic(tmp_path: Path) -> None:
    backend, ctx, run = boot(tmp_path, "echo bye\nexit 3\n", timeout=30)
    assert run.panic is not None and "Attempted to kill init" in run.panic
    rec = classify(ctx.target, "go-2012", run)
    assert rec.status is Status.PANIC and rec.detail.startswith("kernel panic: Kernel panic - not syncing")
    assert "Kernel panic" in ctx.log_path.read_text()  # the console is kept
    assert uml_processes(backend.umid(ctx)) == []


def test_the_run_leaves_no_umid_dir_or_temp_dir(tmp_path: Path) -> None:
    from harness import runner

    require_tool("uml", "linux.uml", "sudo apt-get install -y user-mode-linux")
    doc = runner.run([uml_target("    expect: {go-2012: fallback-32bit}\n")], policies=["go-2012"],
                     artifacts=tmp_path)
    (rec,) = doc.records
    assert rec.status is Status.PASS, rec.detail
    assert rec.channel == "share"
    assert rec.kernel and rec.kernel != os.uname().release  # the guest's own kernel
    # uml_dir is short enough for UML to write its pid file (it was not: "buffer too short").
    assert "umid_file_name" not in Path(rec.log or "").read_text()
    assert [p for p in os.listdir(tempfile.gettempdir()) if p.startswith("arena-harness-%s-" % doc.run_id)] == []
    assert not Path(os.path.expanduser("~/.uml")).joinpath("ah-" + doc.run_id + "-t").exists()
    assert shutil.which("linux.uml")


def test_another_releases_uml_runs_in_its_root_and_leaves_no_mount(tmp_path: Path) -> None:
    from harness import runner

    if os.geteuid() != 0:
        pytest.skip("running another release's UML needs root (a chroot)")
    target = config.load().select(["uml-6.12"])[0]
    doc = runner.run([target], policies=["go-2012"], artifacts=tmp_path)
    (rec,) = doc.records
    assert rec.status is Status.PASS, rec.detail
    assert rec.kernel is not None and rec.kernel.startswith("6.12")
    assert rec.channel == "share"  # hostfs=PATH, the new mount API's spelling, worked
    assert rec.probe is not None and rec.probe["facts"]["python"].startswith("3.13")  # trixie's python3
    mounts = Path("/proc/mounts").read_text()
    assert "arena-harness" not in mounts and "/dev/shm" not in "".join(
        ln for ln in mounts.splitlines() if "rootfs-trixie" in ln)
