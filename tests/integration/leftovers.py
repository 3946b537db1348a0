"""What a run of the harness may leave on the host, found the way a user would find it.

Processes are read from /proc (every cmdline, every environment the test may
read), containers from the Docker daemon by the run's label, temp dirs from the
system temp dir, registry entries from the state directory.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, List, Optional


def cmdlines() -> List[tuple]:
    """(pid, argv as one string) of every process, skipping the ones that ended while we looked."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            raw = Path("/proc", pid, "cmdline").read_bytes()
            state = Path("/proc", pid, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if raw and state != "Z":
            out.append((int(pid), raw.replace(b"\0", b" ").decode(errors="replace")))
    return out


def marked(run_id: str) -> List[int]:
    """Processes whose environment carries the run's marker (everything the run started, and their children)."""
    found = []
    needle = ("ARENA_HARNESS_RUN=%s" % run_id).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = Path("/proc", pid, "environ").read_bytes().split(b"\0")
            state = Path("/proc", pid, "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state != "Z":
            found.append(int(pid))
    return found


def processes(run_id: str) -> List[str]:
    """Live processes of the run: its id in their arguments, or its marker in their environment."""
    env = set(marked(run_id))
    return ["%d %s" % (pid, args[:160]) for pid, args in cmdlines() if run_id in args or pid in env]


def temp_dirs(run_id: str) -> List[str]:
    return [p for p in os.listdir(tempfile.gettempdir()) if p.startswith("arena-harness-%s-" % run_id)]


def containers(run_id: str) -> List[str]:
    try:
        from harness.backends.docker import client

        c = client()
    except Exception:  # noqa: BLE001 - no daemon: no containers either
        return []
    return [ct.name for ct in c.containers.list(all=True, filters={"label": "arena-harness.run=%s" % run_id})]


def registry_entries(state: Path) -> List[str]:
    runs = state / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []


def everything(run_id: str) -> List[str]:
    return processes(run_id) + temp_dirs(run_id) + ["container " + n for n in containers(run_id)]


def settle(check: Callable[[], List[Any]], timeout: float = 3.0) -> List[Any]:
    """``check()`` until it is empty or ``timeout`` passed (reaping by the kernel takes a moment)."""
    deadline = time.monotonic() + timeout
    left = check()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = check()
    return left


def wait_for(found: Callable[[], Optional[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))


def run_id_of(artifacts: Path) -> Optional[str]:
    """The run's id, as soon as the run made its artefacts directory."""
    if not artifacts.is_dir():
        return None
    ids = [p.name for p in artifacts.iterdir() if p.is_dir()]
    return ids[0] if len(ids) == 1 else None
