"""Crash-only cleanup: remove what runs of the harness that died left behind, and nothing else.

For each run registry entry (:mod:`harness.registry`) whose owner is gone
(same host; same boot; no process with the owner's pid *and* start time):

* processes: each recorded one that still runs (pid and start time match) is
  SIGKILLed with its whole process group; then every process whose environment
  carries the run's marker (``ARENA_HARNESS_RUN=<run id>``: the run's children
  and theirs, even those that left the group) is SIGKILLed;
* containers: the Docker containers labelled with the run's id, and those
  whose owner label names a dead process (``docker.sweep``);
* temp dirs: each recorded directory that still exists, is named
  ``arena-harness-*``, is no symlink and belongs to this user, after detaching
  anything mounted inside;
* then the entry itself.

A run whose owner is alive, or that ran on another host, is left alone. The
image cache's ``.partial`` directories whose key lock no builder holds go too.
``arena-harness clean`` runs this; ``arena-harness run`` runs it first, quietly.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import images
from harness import mounts, registry
from harness.errors import HarnessError, ToolMissing
from harness.registry import Entry, ProcessId


@dataclass
class Report:
    """What was (or, with ``dry_run``, would be) removed, what was left alone and why, what failed."""

    removed: List[str] = field(default_factory=list)
    left: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)


def _cmdline(pid: int) -> str:
    try:
        raw = Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="backslashreplace").strip()[:100] or "?"


def marked(run_id: str) -> List[ProcessId]:
    """Live processes whose environment carries the run's marker (readable for this user's processes,
    and for everyone's as root)."""
    needle = ("%s=%s" % (registry.MARKER_ENV, run_id)).encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            env = Path("/proc", name, "environ").read_bytes()
        except OSError:
            continue
        ident = ProcessId.of(int(name))
        if needle in env.split(b"\0") and ident is not None and ident.alive():
            found.append(ident)
    return found


def _kill(entry: Entry, dry_run: bool, report: Report) -> bool:
    """SIGKILL what the dead run left running; True if nothing of it runs afterwards."""
    if not entry.same_boot():
        return True  # a reboot ended every process the entry names; its pids are someone else's now
    targets: List[ProcessId] = [p for p in entry.processes if p.alive()]
    targets += [p for p in marked(entry.run_id) if p not in targets]
    for p in targets:
        what = "process %d (%s)" % (p.pid, _cmdline(p.pid))
        if dry_run:
            report.removed.append("would kill %s" % what)
            continue
        try:
            if p.pgid() == p.pid:  # its group leader, as the harness starts every child
                os.killpg(p.pid, signal.SIGKILL)
                what = "process group " + what[len("process "):]
            elif p.alive():  # checked again just before: never a recycled pid
                os.kill(p.pid, signal.SIGKILL)
            report.removed.append("killed %s" % what)
        except ProcessLookupError:
            pass
        except PermissionError as e:
            report.problems.append("cannot kill %s: %s" % (what, e.strerror))
    if dry_run:
        return True
    deadline = time.monotonic() + 3
    while any(p.alive() for p in targets) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(p.alive() for p in targets)


def remove_containers(run_id: str, dry_run: bool, report: Report, sweep: bool = True) -> bool:
    """Remove the containers labelled with the run's id (and, with ``sweep``, those whose owner label
    names a dead process); True if none of the run's is left."""
    from harness.backends import docker

    try:
        c = docker.client()
    except ToolMissing:
        # Containers live in the daemon: none is reachable to remove, and the next Docker target's
        # sweep removes any that come back with it (their owner label names a dead process).
        return True
    try:
        for ct in c.containers.list(all=True, filters={"label": "arena-harness.run=%s" % run_id}):
            if dry_run:
                report.removed.append("would remove container %s" % ct.name)
            else:
                ct.remove(force=True)
                report.removed.append("removed container %s" % ct.name)
        if sweep and not dry_run:
            report.removed.extend("removed container %s" % n for n in docker.sweep(c))
    except Exception as e:  # noqa: BLE001 - docker.errors.APIError and friends: keep the entry, say why
        report.problems.append("cannot remove the containers of run %s: %s" % (run_id, e))
        return False
    return True


def _ours(path: Path) -> Optional[str]:
    """Why ``path`` must not be removed, or None: only the harness's own temp dirs go."""
    if not path.is_absolute() or not path.name.startswith("arena-harness-") or ".." in path.parts:
        return "not a temp dir of the harness"
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if path.is_symlink() or not path.is_dir():
        return "not a directory"
    if st.st_uid != os.geteuid():
        return "owned by uid %d" % st.st_uid
    return None


def _dirs(entry: Entry, dry_run: bool, report: Report) -> bool:
    ok = True
    for d in map(Path, entry.temp_dirs):
        why = _ours(d)
        if why is not None:
            report.problems.append("left %s alone: %s" % (d, why))
            continue
        if not d.exists():
            continue
        if dry_run:
            report.removed.append("would remove %s" % d)
            continue
        try:
            mounts.remove_tree(d)
        except HarnessError as e:
            report.problems.append(str(e))
            ok = False
            continue
        report.removed.append("removed %s" % d)
    return ok


def clean(dry_run: bool = False, cache: Optional[images.Cache] = None, root: Optional[Path] = None,
          skip: Optional[str] = None) -> Report:
    """Remove what dead runs left (see the module's docstring); ``skip`` names a run to leave alone."""
    report = Report()
    for entry in registry.entries(root):
        if isinstance(entry, Path):
            report.problems.append("%s is not a registry entry this version can read; remove it by hand"
                                   % entry)
            continue
        if entry.run_id == skip:
            continue
        if entry.owner_alive():
            where = "pid %d" % entry.owner.pid if entry.host == socket.gethostname() else entry.host
            report.left.append("run %s is still running (%s): left alone" % (entry.run_id, where))
            continue
        done = _kill(entry, dry_run, report)
        done = (not entry.containers or remove_containers(entry.run_id, dry_run, report)) and done
        done = _dirs(entry, dry_run, report) and done
        if dry_run:
            report.removed.append("would remove the registry entry of run %s" % entry.run_id)
        elif done:
            registry.forget(entry)
            report.removed.append("removed the registry entry of run %s" % entry.run_id)
        else:
            report.problems.append("kept the registry entry of run %s: not everything could be removed"
                                   % entry.run_id)
    cache = cache or images.Cache()
    for d in cache.stale_partials():
        if dry_run:
            report.removed.append("would remove %s (a killed build's)" % d)
            continue
        try:
            mounts.remove_tree(d)
            report.removed.append("removed %s (a killed build's)" % d)
        except HarnessError as e:
            report.problems.append(str(e))
    return report
