"""kill -9 of the harness, mid-boot and mid-build: what is left, and that `clean` or the next run removes it.

Real guests (UML, UML of another release through a chroot, QEMU) and a real
mmdebstrap build. The harness is killed with SIGKILL, so nothing of its own
cleanup runs: what goes must go by PR_SET_PDEATHSIG, by namespaces dying with
their processes, or by the run registry read by a later process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, List, Optional

import pytest

import images
from tests.conftest import ROOT, require_docker, require_tool
from tests.integration import leftovers

pytestmark = [pytest.mark.integration]

GUESTS = """
targets:
  - name: crash-uml
    backend: uml
    policies: [go-2012]
    timeout: 120s
  - name: crash-escaper
    backend: local
    python: {escaper}
    policies: [go-2012]
    timeout: 120s
  - name: crash-docker
    backend: docker
    arch: amd64
    policies: [go-2012]
    timeout: 120s
  - name: crash-qemu
    backend: qemu
    arch: x86_64
    kernel_args: [quiet, rdinit=/bin/cat]  # PID 1 reads the console forever: a guest that hangs
    policies: [go-2012]
    timeout: 120s
"""

ESCAPER = """#!/bin/sh
# A guest that leaves its process group (setsid) from a forked child, which does not inherit
# PR_SET_PDEATHSIG: only the jail's PID namespace, or else the run's marker in its environment, finds it.
setsid sleep 300 &
echo escaped
exec sleep 300
"""

QUICK = """
targets:
  - name: quick
    backend: local
    policies: [go-2012]
"""


def harness(tmp_path: Path, *args: str, **env: str) -> "subprocess.Popen[str]":
    """``arena-harness ARGS`` in a session of its own (so a kill -9 of it is a kill of the leader only).
    PYTHONPATH: the launchers it starts (``python -m harness.backends.nsexec``) are this tree's too."""
    e = dict(os.environ, ARENA_HARNESS_STATE=str(tmp_path / "state"), PYTHONPATH=str(ROOT), **env)
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=str(ROOT), env=e, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def finish(p: "subprocess.Popen[str]", timeout: float = 120) -> str:
    out, err = p.communicate(timeout=timeout)
    return out + err


@pytest.mark.uml
@pytest.mark.qemu
@pytest.mark.docker
@pytest.mark.parametrize("then", ["clean", "run"])
def test_kill_9_mid_boot_then_nothing_is_left(tmp_path: Path, then: str, request: pytest.FixtureRequest) -> None:
    """UML (frozen), QEMU (hanging), a local guest that escapes its group, a Docker container (paused);
    the harness gets SIGKILL. Its children die with it; the container, which the Docker daemon runs, and
    the run's temp dir stay until ``clean`` or the next run."""
    require_tool("uml", "linux.uml", "sudo apt-get install -y user-mode-linux")
    require_tool("qemu", "qemu-system-x86_64", "sudo apt-get install -y qemu-system-x86")
    from harness import backends, config

    docker = require_docker()
    # The jailed guest runs as a uid of its own: its "interpreter" must be where that uid may read it.
    prefix = Path(tempfile.mkdtemp(prefix="arena-ctest-"))
    request.addfinalizer(lambda: shutil.rmtree(prefix))
    prefix.chmod(0o755)
    (prefix / "bin").mkdir(mode=0o755)
    escaper = prefix / "bin" / "escaper"
    escaper.write_text(ESCAPER)
    escaper.chmod(0o755)
    f = tmp_path / "t.yaml"
    f.write_text(GUESTS.format(escaper=escaper))
    for t in config.load(str(f)).targets:  # images are built before, not during, the killed run
        backends.get(t.backend)(t).provision(images.Cache(), lambda m: None)
    artifacts = tmp_path / "logs"
    since = int(time.time()) - 1
    p = harness(tmp_path, "run", "--targets", str(f), "--jobs", "4", "--artifacts", str(artifacts))
    events = docker.events(since=since, filters={"label": "arena-harness.run", "event": "start"}, decode=True)
    try:
        run_id = leftovers.wait_for(lambda: leftovers.run_id_of(artifacts), 30, "the run's artefacts directory")
        paused = threading.Event()

        def pause_the_container() -> None:
            for ev in events:  # paused as it starts: a container that does not finish by itself
                if ev.get("Actor", {}).get("Attributes", {}).get("arena-harness.run") == run_id:
                    docker.containers.get(ev["id"]).pause()
                    paused.set()
                    return

        threading.Thread(target=pause_the_container, daemon=True).start()
        # The UML guest would be done in seconds: frozen as it starts, it hangs.
        frozen = False
        deadline = time.monotonic() + 120
        log = artifacts / run_id / "crash-escaper.log"
        while not (frozen and paused.is_set() and "escaped" in (log.read_text() if log.exists() else "")
                   and any("qemu-system" in a for _, a in leftovers.cmdlines() if run_id in a)):
            assert time.monotonic() < deadline and p.poll() is None, "the guests never all ran"
            uml = [pid for pid, args in leftovers.cmdlines()
                   if args.split(" ")[0].endswith("linux.uml") and "umid=ah-%s-crash-uml" % run_id in args]
            if uml and not frozen:
                os.killpg(os.getpgid(uml[0]), signal.SIGSTOP)
                frozen = True
            time.sleep(0.01)
        running = leftovers.processes(run_id)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        events.close()
        if p.poll() is None:
            p.kill()
            p.wait()
    time.sleep(0.5)
    survivors = leftovers.processes(run_id)
    print("running before the kill: %s\nstill running after it: %s" % (running, survivors))
    # The daemon's, not ours: it stays, unless another harness run on this host (a test beside this one
    # under pytest -n 2) swept it first as a dead run's, which is the same promise kept by someone else.
    name = "ah-%s-crash-docker" % run_id
    assert leftovers.containers(run_id) in ([], [name])
    assert leftovers.temp_dirs(run_id) != []
    assert leftovers.registry_entries(tmp_path / "state") == ["%s.json" % run_id]

    started = time.time_ns()
    if then == "clean":
        out = finish(harness(tmp_path, "clean"))
        assert "removed the registry entry of run %s" % run_id in out, out
    else:
        q = tmp_path / "quick.yaml"
        q.write_text(QUICK)
        out = finish(harness(tmp_path, "run", "--targets", str(q), "--artifacts", str(tmp_path / "logs2")))
        assert "leftovers of a killed run: removed the registry entry of run %s" % run_id in out, out
    # Removed by this command, or by another harness run that swept it before this command started
    # (the daemon's own record of when it went says which).
    gone = destroyed_at(docker, name, since)
    assert gone is not None, "the container %s is still there" % name
    assert "removed container %s" % name in out or gone < started, out
    assert "removed /tmp/arena-harness-%s-" % run_id in out
    for s in survivors:  # what outlived the harness (none where the jail's PID namespace reaches)
        pid = s.split(" ")[0]
        assert "killed process group %s " % pid in out or "killed process %s " % pid in out, out
    assert leftovers.settle(lambda: leftovers.everything(run_id)) == []
    assert leftovers.registry_entries(tmp_path / "state") == []


def destroyed_at(docker: Any, name: str, since: int) -> Optional[int]:
    """When the Docker daemon destroyed the container ``name`` (ns since the epoch), or None."""
    for ev in docker.events(since=since, until=int(time.time()) + 1, decode=True,
                            filters={"container": name, "event": "destroy"}):
        return int(ev["timeNano"])
    return None


@pytest.mark.qemu
def test_clean_leaves_a_live_run_alone(tmp_path: Path) -> None:
    require_tool("qemu", "qemu-system-x86_64", "sudo apt-get install -y qemu-system-x86")
    f = tmp_path / "t.yaml"
    f.write_text("targets:\n  - name: crash-qemu" + GUESTS.split("  - name: crash-qemu")[1])
    assert "escaper" not in f.read_text()
    artifacts = tmp_path / "logs"
    p = harness(tmp_path, "run", "--targets", str(f), "--json", str(tmp_path / "r.json"), "--artifacts",
                str(artifacts))
    try:
        run_id = leftovers.wait_for(lambda: leftovers.run_id_of(artifacts), 60, "the run's artefacts directory")
        # The QEMU process itself (started by the jail's launcher, which shows up first): then nothing else
        # of the run's appears while clean looks.
        leftovers.wait_for(lambda: [x for x in leftovers.everything(run_id)
                                    if " qemu-system" in x and "nsexec" not in x], 120, "the QEMU guest")
        before = leftovers.everything(run_id)
        out = finish(harness(tmp_path, "clean"))
        assert "run %s is still running (pid %d): left alone" % (run_id, p.pid) in out, out
        assert leftovers.everything(run_id) == before
        assert leftovers.registry_entries(tmp_path / "state") == ["%s.json" % run_id]
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 130
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert leftovers.settle(lambda: leftovers.everything(run_id)) == []
    assert leftovers.registry_entries(tmp_path / "state") == []


def host_mounts_under(path: Path) -> List[str]:
    return [ln.split(" ")[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
            if str(path) in ln.split(" ")[4]]


def build_mounts(cache: Path) -> List[str]:
    """Mounts under the cache seen from inside the build's own namespace (those of any process of it)."""
    found: List[str] = []
    for pid, args in leftovers.cmdlines():
        if "mmdebstrap" in args and str(cache) in args:
            try:
                text = Path("/proc/%d/mountinfo" % pid).read_text()
            except OSError:
                continue
            found += [ln.split(" ")[4] for ln in text.splitlines() if str(cache) in ln.split(" ")[4]]
    return found


@pytest.mark.parametrize("then", ["clean", "build"])
def test_kill_9_mid_build_leaves_no_mount_and_the_partial_goes(tmp_path: Path, then: str) -> None:
    require_tool("mmdebstrap", "mmdebstrap", "sudo apt-get install -y mmdebstrap")
    if os.geteuid() != 0:
        pytest.skip("as a normal user mmdebstrap mounts nothing on the host (unshare or fakechroot mode)")
    cache = tmp_path / "cache"
    f = tmp_path / "t.yaml"
    # A root filesystem of its own (mmdebstrap --variant=essential: maintainer scripts in a chroot with
    # proc, sys, dev/shm and dev/pts mounted).
    f.write_text("targets:\n  - name: build-me\n    backend: uml\n    suite: bookworm\n")
    p = harness(tmp_path, "images", "build", "--targets", str(f), ARENA_HARNESS_CACHE=str(cache))
    try:
        inside = leftovers.wait_for(lambda: [m for m in build_mounts(cache) if m.endswith(("/proc", "/sys"))],
                                    300, "mmdebstrap's mounts in the build's root")
        print("mounted inside the build's namespace: %s" % inside)
        assert host_mounts_under(tmp_path) == []  # never in the host's table, even while building
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    partials = sorted(cache.glob(".*.partial"))
    assert partials, "the build left no .partial (it was killed mid-build)"
    assert leftovers.settle(lambda: [a for _, a in leftovers.cmdlines() if str(cache) in a]) == []
    assert host_mounts_under(tmp_path) == []
    if then == "clean":
        out = finish(harness(tmp_path, "clean", ARENA_HARNESS_CACHE=str(cache)))
        for d in partials:
            assert "removed %s (a killed build's)" % d in out, out
        assert "removed the registry entry of run images-" in out
    else:
        out = finish(harness(tmp_path, "images", "build", "--targets", str(f), ARENA_HARNESS_CACHE=str(cache)),
                     timeout=900)
        assert "1 built" in out, out
        assert images.Cache(cache).entries()[0].name == "bookworm-amd64"
    assert sorted(cache.glob(".*.partial")) == []
    assert host_mounts_under(tmp_path) == []
