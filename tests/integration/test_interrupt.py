"""SIGINT and SIGTERM during a real run: guests stop, collected results are written, nothing is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_tool

pytestmark = [pytest.mark.integration, pytest.mark.uml]

TARGETS = """
targets:
  - name: first
    backend: local
    policies: [go-2012]
  - name: slow-uml-%s
    backend: uml
    policies: [go-2012]
    timeout: 120s
"""


def leftovers(run_id: str) -> list:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    procs = [ln for ln in ps.splitlines() if "ah-%s" % run_id in ln]
    dirs = [p for p in os.listdir(tempfile.gettempdir()) if p.startswith("arena-harness-%s-" % run_id)]
    return procs + dirs


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_boot_writes_what_was_collected(tmp_path: Path, sig: signal.Signals) -> None:
    require_tool("uml", "linux.uml", "sudo apt-get install -y user-mode-linux")
    f = tmp_path / "t.yaml"
    f.write_text(TARGETS % sig.name)
    slow = "slow-uml-%s" % sig.name
    out = tmp_path / "r.json"
    p = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--targets", str(f), "--json", str(out),
                          "--artifacts", str(tmp_path / "logs")], cwd=str(ROOT), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    # Wait until the UML guest is booting, then interrupt.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        if "umid=ah-" in ps and "-%s" % slow in ps:
            break
        time.sleep(0.05)
    else:
        p.kill()
        pytest.fail("the UML guest never started")
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 130, stderr
    doc = json.loads(out.read_text())
    assert doc["run"]["complete"] is False
    assert doc["run"]["interrupted"] == "interrupted by %s" % sig.name
    by_target = {r["target"]: r for r in doc["results"]}
    assert by_target["first"]["status"] == "pass"  # collected before the signal, kept
    if slow in by_target:
        assert by_target[slow]["detail"].startswith("interrupted")
    assert "incomplete run: interrupted by %s" % sig.name in stdout
    time.sleep(0.3)
    assert leftovers(doc["run"]["id"]) == []
