"""The run registry: what each run of the harness created, written down before it can be lost.

One file per run, ``<state>/runs/<RUN-ID>.json``, rewritten atomically (a temp
file and one rename) whenever the run starts or reaps a process, makes or
removes a temp dir, or may have made containers. It names its owner (host,
boot, pid and the pid's start time), so that after a ``kill -9`` of the harness
``arena-harness clean`` and the next ``run`` can tell a dead run from a live one
and remove what the dead one left (:mod:`harness.cleanup`). A process is named
by its pid *and* its start time (field 22 of ``/proc/PID/stat``), so a recycled
pid is never mistaken for it. The state directory is ``$ARENA_HARNESS_STATE``,
else ``$XDG_STATE_HOME/arena-harness``, else ``~/.local/state/arena-harness``.

Mounts are not recorded: the harness makes none in the host's namespace (image
builds and chroots mount inside private mount namespaces, which vanish with
their processes). No fsync: the entries must survive a killed harness, not a
power loss, after which nothing they name is left anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from harness.errors import HarnessError
from harness.files import write_atomically

STATE_ENV = "ARENA_HARNESS_STATE"
MARKER_ENV = "ARENA_HARNESS_RUN"
"""Every child of a run gets ``ARENA_HARNESS_RUN=<run id>`` in its environment, and passes it on to its
own children: cleanup finds a dead run's processes by it even when they left the process group."""


class RegistryError(HarnessError):
    pass


def state_dir() -> Path:
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "arena-harness"


def runs_dir(root: Optional[Path] = None) -> Path:
    return (root or state_dir()) / "runs"


def boot_id() -> str:
    """Changes at every boot: after a reboot no recorded process can be alive, whatever its pid."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> Optional[List[str]]:
    """Fields 3.. of /proc/PID/stat (the command name, which may hold spaces and parentheses, cut off)."""
    try:
        text = Path("/proc/%d/stat" % pid).read_text()
    except (OSError, ValueError):
        return None
    return text.rsplit(")", 1)[1].split()


@dataclass(frozen=True)
class ProcessId:
    """One process for good: its pid and its start time in clock ticks after boot (stat field 22)."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Optional["ProcessId"]:
        fields = _stat_fields(pid)
        return cls(pid, int(fields[19])) if fields else None

    def alive(self) -> bool:
        """The same process still runs (a zombie counts as gone: it runs nothing and holds nothing)."""
        fields = _stat_fields(self.pid)
        return fields is not None and int(fields[19]) == self.start and fields[0] != "Z"

    def pgid(self) -> Optional[int]:
        fields = _stat_fields(self.pid)
        return int(fields[2]) if fields and int(fields[19]) == self.start else None


@dataclass
class Entry:
    """What one run created and has not removed yet."""

    run_id: str
    owner: ProcessId
    host: str
    boot: str
    created: float
    processes: List[ProcessId] = field(default_factory=list)
    temp_dirs: List[str] = field(default_factory=list)
    containers: bool = False  # Docker containers labelled arena-harness.run=<run_id> may exist
    path: Optional[Path] = None  # where the entry is stored (not part of it)

    def owner_alive(self) -> bool:
        """Whether the run that wrote this is still running (on another host: assumed so)."""
        if self.host != socket.gethostname():
            return True
        return self.boot == boot_id() and self.owner.alive()

    def same_boot(self) -> bool:
        return self.host == socket.gethostname() and self.boot == boot_id()

    def empty(self) -> bool:
        return not (self.processes or self.temp_dirs or self.containers)

    def to_json(self) -> Dict[str, Any]:
        return {"schema": 1, "run": self.run_id, "owner": {"pid": self.owner.pid, "start": self.owner.start},
                "host": self.host, "boot": self.boot, "created": self.created,
                "processes": [{"pid": p.pid, "start": p.start} for p in self.processes],
                "temp_dirs": list(self.temp_dirs), "containers": self.containers}

    @classmethod
    def from_json(cls, data: Dict[str, Any], path: Optional[Path] = None) -> "Entry":
        def pid(d: Dict[str, Any]) -> ProcessId:
            return ProcessId(int(d["pid"]), int(d["start"]))

        return cls(str(data["run"]), pid(data["owner"]), str(data["host"]), str(data["boot"]),
                   float(data["created"]), [pid(p) for p in data["processes"]],
                   [str(d) for d in data["temp_dirs"]], bool(data["containers"]), path)


class Recording:
    """The live entry of this process's run: every change is written before the caller goes on."""

    def __init__(self, run_id: str, root: Optional[Path] = None) -> None:
        me = ProcessId.of(os.getpid())
        if me is None:
            raise RegistryError("cannot read /proc/%d/stat: the run registry needs /proc mounted" % os.getpid())
        self.entry = Entry(run_id, me, socket.gethostname(), boot_id(), time.time())
        self.dir = runs_dir(root)
        self.path = self.dir / ("%s.json" % run_id)
        self._lock = threading.Lock()
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise RegistryError("cannot create the run registry %s: %s; set %s to a writable directory"
                                % (self.dir, e.strerror or e, STATE_ENV)) from None
        self._write()

    def _write(self) -> None:
        try:
            write_atomically(self.path, json.dumps(self.entry.to_json()), mode=0o600)
        except OSError as e:
            raise RegistryError("cannot write the run registry entry %s: %s; set %s to a writable directory"
                                % (self.path, e.strerror or e, STATE_ENV)) from None

    def add_process(self, pid: int) -> None:
        ident = ProcessId.of(pid)
        if ident is None:  # it ended already; nothing to record
            return
        with self._lock:
            self.entry.processes.append(ident)
            self._write()

    def drop_process(self, pid: int) -> None:
        with self._lock:
            self.entry.processes = [p for p in self.entry.processes if p.pid != pid]
            self._write()

    def add_temp_dir(self, path: Path) -> None:
        """Call *before* creating the directory: a kill in between leaves an entry, never an orphan."""
        with self._lock:
            self.entry.temp_dirs.append(str(path))
            self._write()

    def drop_temp_dir(self, path: Path) -> None:
        with self._lock:
            self.entry.temp_dirs = [d for d in self.entry.temp_dirs if d != str(path)]
            self._write()

    def may_have_containers(self) -> None:
        with self._lock:
            if not self.entry.containers:
                self.entry.containers = True
                self._write()

    def containers_removed(self) -> None:
        with self._lock:
            self.entry.containers = False
            self._write()

    def close(self) -> bool:
        """Remove the entry if nothing it names is left; True if it was removed."""
        with self._lock:
            if not self.entry.empty():
                return False
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            return True


_current: Optional[Recording] = None
_thread = threading.local()  # a recording of one thread's own (a pytest session's booted target)


def current() -> Optional[Recording]:
    """The recording of the run this thread is in, if any (the process module records into it): the
    thread's own (:func:`recording` with ``thread=True``), else the process's run."""
    mine: Optional[Recording] = getattr(_thread, "rec", None)
    return mine if mine is not None else _current


@contextlib.contextmanager
def recording(run_id: str, root: Optional[Path] = None, thread: bool = False) -> Iterator[Recording]:
    """The run's entry exists inside the block (this process, or with ``thread`` only this thread,
    records into it) and goes at the end if empty; otherwise it stays for ``clean`` to finish the job."""
    global _current
    rec = Recording(run_id, root)
    if thread:
        previous_own, _thread.rec = getattr(_thread, "rec", None), rec
    else:
        previous, _current = _current, rec
    try:
        yield rec
    finally:
        if thread:
            _thread.rec = previous_own
        else:
            _current = previous
        rec.close()


def entries(root: Optional[Path] = None) -> Iterator["Entry | Path"]:
    """Every stored entry; a file that cannot be read as one is yielded as its path. A file gone between
    the listing and the reading is a run that ended meanwhile (its entry removed, being empty): skipped,
    not reported as unreadable."""
    d = runs_dir(root)
    if not d.is_dir():
        return
    for p in sorted(d.glob("*.json")):
        try:
            yield Entry.from_json(json.loads(p.read_text(encoding="utf-8")), p)
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError):
            yield p


def forget(entry: Entry) -> None:
    """Delete a dead run's entry, and a temp file its owner may have been killed while writing."""
    if entry.path is None:
        return
    for p in [entry.path, *entry.path.parent.glob(".%s.*.tmp" % entry.run_id)]:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
