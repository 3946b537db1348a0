"""``accel: auto`` on this machine: the trial's verdict, cached, is what a run uses, what its results
record, and what ``doctor`` (another process, no trial) names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import images
from harness import config, runner
from harness.backends import qemu
from tests.conftest import require_tool

pytestmark = pytest.mark.integration


@pytest.mark.qemu
def test_a_run_records_the_accelerator_its_cached_verdict_names(tmp_path: Path) -> None:
    require_tool("qemu", "qemu-system-x86_64", "sudo apt-get install -y qemu-system-x86")
    t = config.load().select(["qemu-x86_64"])[0]
    assert t.options.accel == "auto"  # the default, not set in the shipped matrix
    doc = runner.run([t], artifacts=tmp_path / "logs")
    accel = {r.accel for r in doc.records}
    assert len(accel) == 1 and accel <= {"kvm", "tcg"}, accel
    verdict = images.Cache().path(qemu.QemuBackend(t).kvm_verdict()) / "verdict.json"
    saved = json.loads(verdict.read_text())
    assert ("kvm" if saved["kvm"] else "tcg") in accel
    out = subprocess.run([sys.executable, "-m", "harness.cli", "doctor", "--only", "qemu-x86_64"],
                         capture_output=True, text=True, timeout=120).stdout
    assert out.splitlines()[1].startswith("KVM (x86_64): accel: auto would pick %s: %s; " % (accel.pop(),
                                                                                           saved["why"])), out
