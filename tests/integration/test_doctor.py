"""``arena-harness doctor`` on this machine, as a user runs it: real tools, the real image cache, the real daemon."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness import config

pytestmark = pytest.mark.integration


def doctor(*argv: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "harness.cli", "doctor", *argv], capture_output=True, text=True,
                          timeout=120)


def test_doctor_reports_every_shipped_target_and_strict_agrees() -> None:
    names = config.load().names()
    plain = doctor()
    assert plain.returncode == 0, plain.stderr  # without --strict it only reports
    lines = plain.stdout.splitlines()
    assert lines[0].startswith("arena-harness doctor: %d targets from <default targets>" % len(names))
    assert lines[1].startswith("KVM (")  # what accel: auto would pick, or that only a trial boot can tell
    verdicts = {ln.split()[1]: ln.split()[0] for ln in lines if ln.startswith("  ") and ln.split()[0] in
                ("ok", "CANNOT")}
    assert sorted(verdicts) == sorted(names)
    assert sum(ln.startswith(" " * 11 + "needs: ") for ln in lines) == len(names)
    assert sum(ln.startswith(" " * 11 + "images: ") for ln in lines) == len(names)
    blocked = [n for n, v in verdicts.items() if v == "CANNOT"]
    assert "%d of %d targets can run here" % (len(names) - len(blocked), len(names)) in plain.stdout
    strict = doctor("--strict")
    assert strict.returncode == (1 if blocked else 0), strict.stdout
