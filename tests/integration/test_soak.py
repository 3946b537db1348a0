"""Soak: many consecutive real UML runs, no failures, no growth in open files or child processes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from harness import config, proc, runner
from harness.model import Status
from tests.conftest import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.uml]

RUNS = int(os.environ.get("HARNESS_SOAK_RUNS", "50"))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def children() -> int:
    me = str(os.getpid())
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = Path("/proc", pid, "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[2] == me:
                n += 1
    return n


def test_consecutive_uml_runs(tmp_path: Path) -> None:
    require_tool("uml", "linux.uml", "sudo apt-get install -y user-mode-linux")
    target = config.load().select(["uml"])[0]
    fds0, kids0 = None, None
    failures = []
    run_ids = []
    for i in range(RUNS):
        doc = runner.run([target], policies=["go-2012"], artifacts=tmp_path)
        run_ids.append(doc.run_id)
        rec = doc.records[0]
        if rec.status is not Status.PASS:
            failures.append("run %d: %s: %s" % (i, rec.status.value, rec.detail))
        if i == 0:  # after the first run: imports and caches are warm
            fds0, kids0 = open_fds(), children()
    assert failures == []
    assert open_fds() <= (fds0 or 0) and children() <= (kids0 or 0)
    assert proc.live_pids() == []
    left = [p for p in os.listdir(tempfile.gettempdir()) if any(p.startswith("arena-harness-%s-" % r)
                                                                 for r in run_ids)]
    assert left == []
