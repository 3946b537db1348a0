"""Result records, their status rule, and the versioned run document (``{"schema": 1, ...}``).

Reports read these records, never guests.
"""

from __future__ import annotations

import enum
import json
import os
import platform
import socket
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from harness.backends.base import GuestRun
from harness.config import Target
from harness.errors import ConfigError

SCHEMA = 1
FILE_MODE = 0o644


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader never sees half a file, even if the run is killed meanwhile.

    Missing parent directories are created. The file is mode 0644 whatever the
    umask and whoever runs the harness: results and reports are read by other
    users (a CI upload step runs as the runner's user, the harness often as root).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=".%s." % path.name)
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Status(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    TIMEOUT = "timeout"
    PANIC = "panic"
    SKIP = "skip"

    def __str__(self) -> str:
        return self.value


# The one precedence rule: the worst status wins.
PRECEDENCE = (Status.PANIC, Status.TIMEOUT, Status.ERROR, Status.FAIL, Status.PASS, Status.SKIP)


def worst(statuses: Iterable[Status]) -> Status:
    """The status that wins: panic > timeout > error > fail > pass > skip (skip if there are none)."""
    found = set(statuses)
    for s in PRECEDENCE:
        if s in found:
            return s
    return Status.SKIP


@dataclass
class Record:
    target: str
    backend: str
    policy: str
    status: Status
    expected: Optional[str]
    outcome: Optional[str]
    crash: Optional[str]
    high_ok: Optional[bool]
    fallback_engaged: Optional[bool]
    duration_s: float
    log: Optional[str]
    detail: Optional[str] = None
    kernel: Optional[str] = None
    machine: Optional[str] = None
    markers: List[str] = field(default_factory=list)
    channel: Optional[str] = None
    probe: Optional[Dict[str, Any]] = None

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Record":
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        kw["status"] = Status(d["status"])
        return cls(**kw)


def skipped(target: Target, policy: str, reason: str) -> Record:
    exp = target.expectation(policy)
    return Record(
        target.name, target.backend, policy, Status.SKIP, str(exp) if exp else None,
        None, None, None, None, 0.0, None, detail=reason, markers=list(target.all_markers),
    )


def classify(target: Target, policy: str, run: GuestRun) -> Record:
    """One record per (target, policy): what the guest said, judged against the expectation."""
    doc = run.documents.get(policy)
    exp = target.expectation(policy)
    statuses: List[Status] = []
    detail: Optional[str] = None
    outcome = crash = None
    high_ok = fallback = None
    kernel = machine = None
    if doc is not None and not doc.get("error"):
        outcome, crash = doc.get("outcome"), doc.get("crash")
        res = doc.get("reservation") or None
        high_ok = res.get("high_ok") if res else None
        fallback = (doc.get("fallback") or {}).get("engaged")
        facts = doc.get("facts") or {}
        kernel, machine = facts.get("kernel"), facts.get("machine")
        if exp is None or exp.matches(outcome, crash):
            statuses.append(Status.PASS)
        else:
            statuses.append(Status.FAIL)
            got = "crash: %s" % crash if outcome == "crash" else outcome
            detail = "expected %s, got %s" % (exp, got)
    elif doc is not None:
        statuses.append(Status.ERROR)
        detail = "allocator: %s" % doc["error"]
    else:
        statuses.append(Status.ERROR)
        detail = run.error or "no result for this policy"
    if run.timed_out:
        statuses.append(Status.TIMEOUT)
        if run.silent:
            detail = "watchdog: no output from the guest for %.0fs" % (target.watchdog or 0)
        else:
            detail = "deadline of %.0fs reached%s" % (target.timeout, "; " + detail if detail else "")
    if run.panic:
        statuses.append(Status.PANIC)
        detail = "kernel panic: %s" % run.panic
    status = worst(statuses)
    return Record(
        target=target.name,
        backend=target.backend,
        policy=policy,
        status=status,
        expected=str(exp) if exp else None,
        outcome=outcome,
        crash=crash,
        high_ok=high_ok,
        fallback_engaged=fallback,
        duration_s=round(run.duration_s, 3),
        log=str(run.log),
        detail=detail,
        kernel=kernel,
        machine=machine,
        markers=list(target.all_markers),
        channel=run.channel,
        probe=doc,
    )


@dataclass
class RunDocument:
    run_id: str
    started: str
    finished: Optional[str]
    complete: bool
    records: List[Record]
    argv: List[str] = field(default_factory=list)
    targets_file: Optional[str] = None
    artifacts: Optional[str] = None
    interrupted: Optional[str] = None

    @property
    def status(self) -> Status:
        return worst(r.status for r in self.records)

    def failed(self) -> bool:
        return any(r.status not in (Status.PASS, Status.SKIP) for r in self.records) or not self.complete

    def to_json(self) -> Dict[str, Any]:
        return {
            "schema": SCHEMA,
            "run": {
                "id": self.run_id,
                "started": self.started,
                "finished": self.finished,
                "complete": self.complete,
                "interrupted": self.interrupted,
                "argv": self.argv,
                "targets_file": self.targets_file,
                "artifacts": self.artifacts,
                "host": {"hostname": socket.gethostname(), "kernel": platform.release(),
                         "machine": platform.machine()},
            },
            "results": [r.to_json() for r in self.records],
        }

    def write(self, path: Path) -> None:
        """The document as JSON at ``path``, atomically (see :func:`write_atomically`)."""
        write_atomically(path, json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> "RunDocument":
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError("cannot read results: %s" % e, path=str(path)) from None
        if not isinstance(d, dict) or d.get("schema") != SCHEMA or "results" not in d:
            raise ConfigError("not an arena-harness result file of schema %d" % SCHEMA, path=str(path))
        run = d.get("run") or {}
        return cls(
            run_id=run.get("id", ""),
            started=run.get("started", ""),
            finished=run.get("finished"),
            complete=bool(run.get("complete", True)),
            records=[Record.from_json(r) for r in d["results"]],
            argv=run.get("argv") or [],
            targets_file=run.get("targets_file"),
            artifacts=run.get("artifacts"),
            interrupted=run.get("interrupted"),
        )


def merge(docs: List[RunDocument]) -> RunDocument:
    """Join shard result files into one run document (records in the order given)."""
    if not docs:
        raise ValueError("nothing to merge")
    seen: Dict[Tuple[str, str], Record] = {}
    for doc in docs:
        for r in doc.records:
            seen[(r.target, r.policy)] = r
    first = docs[0]
    return RunDocument(
        run_id="+".join(dict.fromkeys(d.run_id for d in docs)),
        started=min(d.started for d in docs),
        finished=max((d.finished or "") for d in docs) or None,
        complete=all(d.complete for d in docs),
        records=list(seen.values()),
        argv=first.argv,
        targets_file=first.targets_file,
        artifacts=first.artifacts,
        interrupted=next((d.interrupted for d in docs if d.interrupted), None),
    )
