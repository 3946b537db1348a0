"""SIGINT and SIGTERM during a real run: guests stop, collected results are written, nothing is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_docker, require_tool

pytestmark = [pytest.mark.integration, pytest.mark.uml]

TARGETS = """
targets:
  - name: first
    backend: local
    policies: [go-2012]
    expect: {go-2012: high-arena}
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
    assert p.returncode == 130, (stdout, stderr)
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


STORM_TARGETS = """
targets:
  - name: storm-qemu
    backend: qemu
    arch: x86_64
    kernel_args: [quiet, rdinit=/bin/cat]  # PID 1 reads the console forever: a guest that hangs
    policies: [go-2012]
    timeout: 90s
  - name: storm-docker
    backend: docker
    arch: amd64
    policies: [go-2012]
    timeout: 90s
  - name: storm-uml
    backend: uml
    policies: [go-2012]
    timeout: 90s
"""

STORMS = {
    # A second Ctrl-C while the guests are being stopped (the stop takes a grace period).
    "sigint-twice": [(0.0, signal.SIGINT), (0.3, signal.SIGINT)],
    # Signals all through the stop and the writing of the results.
    "sigterm-storm": [(i * 0.1, signal.SIGTERM if i % 3 else signal.SIGINT) for i in range(40)],
}


@pytest.mark.qemu
@pytest.mark.docker
@pytest.mark.parametrize("storm", sorted(STORMS))
def test_any_number_of_signals_while_guests_stop(tmp_path: Path, storm: str) -> None:
    """UML, QEMU and Docker guests all running; the first signal is followed by more. The JSON is
    still written within seconds, the run says it is incomplete, and nothing of the run is left."""
    import images
    from harness import backends, config
    from tests.integration import leftovers

    require_tool("uml", "linux.uml", "sudo apt-get install -y user-mode-linux")
    require_tool("qemu", "qemu-system-x86_64", "sudo apt-get install -y qemu-system-x86")
    docker = require_docker()
    f = tmp_path / "t.yaml"
    f.write_text(STORM_TARGETS)
    for t in config.load(str(f)).targets:  # images are built before, not during, the interrupted run
        backends.get(t.backend)(t).provision(images.Cache(), lambda m: None)
    out = tmp_path / "r.json"
    artifacts = tmp_path / "logs"
    env = dict(os.environ, ARENA_HARNESS_STATE=str(tmp_path / "state"))
    since = int(time.time()) - 1
    p = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--targets", str(f), "--json", str(out),
                          "--jobs", "3", "--artifacts", str(artifacts)], cwd=str(ROOT), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = docker.events(since=since, filters={"label": "arena-harness.run", "event": "start"}, decode=True)
    try:
        run_id = leftovers.wait_for(lambda: leftovers.run_id_of(artifacts), 30, "the run's artefacts directory")
        paused = threading.Event()

        def pause_the_container() -> None:
            # The container would be done in a second: paused as it starts, it is one that hangs.
            for ev in events:
                if ev.get("Actor", {}).get("Attributes", {}).get("arena-harness.run") == run_id:
                    docker.containers.get(ev["id"]).pause()
                    paused.set()
                    return

        threading.Thread(target=pause_the_container, daemon=True).start()
        # The UML guest, frozen as it starts, hangs too; the QEMU guest's PID 1 hangs by itself.
        frozen, qemu = False, False
        deadline = time.monotonic() + 120
        while not (frozen and qemu and paused.is_set()):
            assert time.monotonic() < deadline and p.poll() is None, "the guests never all ran"
            procs = leftovers.cmdlines()
            uml = [pid for pid, args in procs if "umid=ah-%s-storm-uml" % run_id in args]
            if uml and not frozen:
                os.killpg(os.getpgid(uml[0]), signal.SIGSTOP)
                frozen = True
            qemu = qemu or any("qemu-system-x86_64" in a and "arena-harness-%s-" % run_id in a for _, a in procs)
            time.sleep(0.01)
        first = time.monotonic()
        for at, sig in STORMS[storm]:
            time.sleep(max(0.0, first + at - time.monotonic()))
            if p.poll() is not None:
                break
            p.send_signal(sig)
        stdout, stderr = p.communicate(timeout=120)
        took = time.monotonic() - first
    finally:
        events.close()
        if p.poll() is None:
            p.kill()
            p.wait()
    print("%s: exited %.2fs after the first signal" % (storm, took))
    assert p.returncode == 130, (stdout, stderr)
    assert took < 6, "exited %.1fs after the first signal" % took
    doc = json.loads(out.read_text())
    assert doc["run"]["complete"] is False
    first_sig = STORMS[storm][0][1].name
    assert doc["run"]["interrupted"] == "interrupted by %s" % first_sig
    by_target = {r["target"]: r for r in doc["results"]}
    assert sorted(by_target) == ["storm-docker", "storm-qemu", "storm-uml"]
    for r in by_target.values():
        assert r["status"] == "error" and r["detail"].startswith("interrupted"), r
    assert "incomplete run: interrupted by %s" % first_sig in stdout
    assert leftovers.settle(lambda: leftovers.everything(run_id)) == []
    assert leftovers.registry_entries(tmp_path / "state") == []
