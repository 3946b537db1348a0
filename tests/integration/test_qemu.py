"""Real QEMU guests beyond the matrix: a warm cache builds nothing, a panicking kernel is a panic."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import images
from harness import backends, config, runner
from harness.model import Status
from harness.results import RunDocument
from tests.conftest import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.qemu]


def test_the_second_provision_downloads_and_builds_nothing() -> None:
    require_tool("qemu", "mmdebstrap", "sudo apt-get install -y mmdebstrap")
    target = config.load().select(["qemu-x86_64"])[0]
    backend = backends.get("qemu")(target)
    cache = images.Cache()
    backend.provision(cache, lambda m: None)  # cold or warm: afterwards everything is there
    again = images.Cache()
    start = time.monotonic()
    backends.get("qemu")(target).provision(again, lambda m: None)
    assert again.builds == 0 and again.hits == 3  # kernel, initramfs, the saved guest
    assert time.monotonic() - start < 1.0


def run_x86(tmp_path: Path, name: str, timeout: str, kernel_args: str) -> RunDocument:
    """One x86_64 QEMU target with these kernel arguments, booted for real (go-2012 only)."""
    require_tool("qemu", "qemu-system-x86_64", "sudo apt-get install -y qemu-system-x86")
    ts = config.parse("targets:\n  - name: %s\n    backend: qemu\n    arch: x86_64\n    timeout: %s\n"
                      "    kernel_args: [%s]\n" % (name, timeout, kernel_args), "t.yaml")
    return runner.run(ts.targets, policies=["go-2012"], artifacts=tmp_path)


def test_a_kernel_that_finds_no_init_is_a_panic(tmp_path: Path) -> None:
    doc = run_x86(tmp_path, "qemu-noinit", "120s", "quiet, rdinit=/nonexistent, init=/nonexistent")
    (rec,) = doc.records
    assert rec.status is Status.PANIC, rec.detail
    assert rec.detail is not None and rec.detail.startswith("kernel panic: Kernel panic - not syncing")
    assert "Kernel panic" in Path(rec.log or "").read_text()
    assert rec.duration_s < 60  # -no-reboot ends the VM; the deadline was not needed


def test_a_hanging_guest_times_out_within_the_deadline(tmp_path: Path) -> None:
    # PID 1 is cat reading the serial console, which never gets input: the guest hangs after booting.
    start = time.monotonic()
    doc = run_x86(tmp_path, "qemu-hang", "25s", "quiet, rdinit=/bin/cat")
    (rec,) = doc.records
    assert time.monotonic() - start < 25 + 5
    assert rec.status is Status.TIMEOUT, rec.detail
    assert rec.detail == "deadline of 25s reached; no result before the deadline"
    import subprocess

    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "rdinit=/bin/cat" not in ps
