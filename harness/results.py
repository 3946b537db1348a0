"""Result records, their status rule, and the versioned run document (``{"schema": 1, ...}``).

Reports read these records, never guests.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import socket
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from harness.document import check_document
from harness.errors import ConfigError, UsageError
from harness.files import write_atomically
from harness.inputs import MAX_RESULTS_BYTES, read_text
from harness.model import GOOD, MODELS, GuestRun, Record, Status, Target, outcome_text, quote, worst

SCHEMA = 2  # 2: records name their probe's kind and carry the model-runtime agreement
READABLE = (1, 2)  # diff, merge and report read both


def record_from_json(d: Any, where: str = "result", path: str = "") -> Record:
    """A record from its JSON form, checked: a missing key, a wrong type or an unknown status is one
    ConfigError naming ``where`` (``results[3].status``), never a KeyError or TypeError."""
    if not isinstance(d, dict):
        raise ConfigError("expected a mapping, got %s" % _json_kind(d), path=path, key=where)
    raw_target = d.get("target")
    target = quote(raw_target) if isinstance(raw_target, str) else ""
    kw: Dict[str, Any] = {}
    for f in dataclasses.fields(Record):
        if f.name not in d:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError("missing", path=path, target=target, key="%s.%s" % (where, f.name))
            continue
        value = d[f.name]
        if f.name == "status":
            if value not in _STATUSES:
                raise ConfigError("unknown status %s; known: %s" % (_short(value), ", ".join(_STATUSES)),
                                  path=path, target=target, key="%s.status" % where)
            kw["status"] = Status(value)
            continue
        expected = _RECORD_TYPES[f.name]
        if not _is(value, expected):
            raise ConfigError("expected %s, got %s" % (_TYPE_NAMES[expected], _json_kind(value)), path=path,
                              target=target, key="%s.%s" % (where, f.name))
        problem = check_document(value) if f.name == "probe" and value is not None else None
        if problem:  # reports and diff read the probe document: it must have the allocator's shape
            raise ConfigError(problem, path=path, target=target, key="%s.probe" % where)
        kw[f.name] = value
    return Record(**kw)


def record(target: Target, policy: str, status: Status, detail: Optional[str], **kw: Any) -> Record:
    """The one way a record is made: the target's name, backend, expectation and markers filled in."""
    exp = target.expectation(policy)
    kw.setdefault("duration_s", 0.0)
    kw.setdefault("log", None)
    return Record(target=target.name, backend=target.backend, policy=policy, status=status,
                  expected=str(exp) if exp else None, outcome=kw.pop("outcome", None), crash=kw.pop("crash", None),
                  high_ok=kw.pop("high_ok", None), fallback_engaged=kw.pop("fallback_engaged", None),
                  detail=detail, markers=list(target.all_markers), **kw)


def judge_agreement(records: List[Record]) -> None:
    """Where a model policy and the runtime it models (``MODELS``) both gave an outcome on one target,
    record on both what the other said and whether they agree: the same outcome, and for a crash the
    same message word for word. A disagreement turns the model's record into ``disagree`` (when it was
    pass or observed): the model is wrong there."""
    by_name = {r.policy: r for r in records}
    for model, runtime in MODELS.items():
        m, r = by_name.get(model), by_name.get(runtime)
        if m is None or r is None or m.outcome is None or r.outcome is None:
            continue
        agree = m.outcome == r.outcome and (m.outcome != "crash" or m.crash == r.crash)
        m.agreement = {"with": runtime, "outcome": r.outcome, "crash": r.crash, "agree": agree}
        r.agreement = {"with": model, "outcome": m.outcome, "crash": m.crash, "agree": agree}
        if not agree and m.status in (Status.PASS, Status.OBSERVED):
            m.status = Status.DISAGREE
            m.detail = "the model says %s, real %s says %s" % (outcome_text(m.outcome, m.crash), runtime,
                                                                outcome_text(r.outcome, r.crash))


def skipped(target: Target, policy: str, reason: str) -> Record:
    return record(target, policy, Status.SKIP, reason)


def errored(target: Target, policy: str, reason: str, log: Optional[Path], duration_s: float) -> Record:
    return record(target, policy, Status.ERROR, reason, log=str(log) if log else None,
                  duration_s=round(duration_s, 3))


def classify(target: Target, policy: str, run: GuestRun) -> Record:
    """One record per (target, policy): what the guest said, judged against the expectation. With no
    expectation for the policy nothing is judged: a usable result is ``observed`` (whatever the outcome,
    a crash too), never ``pass``; a timeout, a panic or no result still wins over it."""
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
        if exp is None:
            statuses.append(Status.OBSERVED)
        elif exp.matches(outcome, crash):
            statuses.append(Status.PASS)
        else:
            statuses.append(Status.FAIL)
            detail = "expected %s, got %s" % (exp, outcome_text(outcome, crash))
    elif doc is not None:
        statuses.append(Status.ERROR)
        detail = str(doc["error"])
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
    probe = target.probe(policy)
    return record(target, policy, worst(statuses), detail, outcome=outcome, crash=crash, high_ok=high_ok,
                  fallback_engaged=fallback, duration_s=round(run.duration_s, 3), log=str(run.log), kernel=kernel,
                  machine=machine, channel=run.channel, probe=doc, kind=probe.kind if probe else None,
                  accel=run.accel)


_STATUSES = [s.value for s in Status]
_RECORD_TYPES = typing.get_type_hints(Record)
_TYPE_NAMES = {str: "a string", Optional[str]: "a string or null", Optional[bool]: "true, false or null",
               float: "a number", List[str]: "a list of strings", Optional[Dict[str, Any]]: "a mapping or null",
               bool: "true or false", Optional[List[str]]: "a list of strings or null"}


def _is(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the type ``hint`` (the few types results use)."""
    if typing.get_origin(hint) is typing.Union:
        return any(_is(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    origin = typing.get_origin(hint)
    if origin is list:
        return isinstance(value, list) and all(_is(v, typing.get_args(hint)[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    raise TypeError("no JSON check for %r" % hint)  # a new Record field needs one: a bug, not input


def _json_kind(value: Any) -> str:
    """What a JSON value is, for an error message (never its content: a results file may be anything)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):  # Python's JSON reads NaN and Infinity
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return {dict: "a mapping", list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool)) or value is None else _json_kind(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
        return any(r.status not in GOOD for r in self.records) or not self.complete

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
        """Read a results file: a regular file of at most 64 MiB, checked key by key. Anything wrong is
        one ConfigError (exit 2) naming the file and the key, never a traceback."""
        name = str(path)
        text = read_text(path, "results files", MAX_RESULTS_BYTES)
        try:
            d = json.loads(text)
        except ValueError as e:
            raise ConfigError("not valid JSON: %s" % e, path=name) from None
        except RecursionError:
            raise ConfigError("not valid JSON: nested too deeply", path=name) from None
        if not isinstance(d, dict) or d.get("schema") not in READABLE or "results" not in d:
            raise ConfigError("not an arena-harness result file of schema %s" % " or ".join(map(str, READABLE)),
                              path=name)
        run = d.get("run")
        if not isinstance(run, dict):
            raise ConfigError("expected a mapping, got %s" % _json_kind(run), path=name, key="run")
        for key, hint, required in _RUN_KEYS:
            if key not in run:
                if required:
                    raise ConfigError("missing", path=name, key="run.%s" % key)
            elif not _is(run[key], hint):
                raise ConfigError("expected %s, got %s" % (_TYPE_NAMES[hint], _json_kind(run[key])), path=name,
                                  key="run.%s" % key)
        if not isinstance(d["results"], list):
            raise ConfigError("expected a list, got %s" % _json_kind(d["results"]), path=name, key="results")
        records = [record_from_json(r, "results[%d]" % i, name) for i, r in enumerate(d["results"])]
        _check_unique(records, name)
        return cls(
            run_id=run["id"],
            started=run["started"],
            finished=run.get("finished"),
            complete=run["complete"],
            records=records,
            argv=run.get("argv") or [],
            targets_file=run.get("targets_file"),
            artifacts=run.get("artifacts"),
            interrupted=run.get("interrupted"),
        )


# The run's keys: (name, type, required). ``complete`` is required: a file that does not say whether its
# run ended must not pass a gate as if it had.
_RUN_KEYS: Tuple[Tuple[str, Any, bool], ...] = (
    ("id", str, True), ("started", str, True), ("complete", bool, True), ("finished", Optional[str], False),
    ("interrupted", Optional[str], False), ("argv", Optional[List[str]], False),
    ("targets_file", Optional[str], False), ("artifacts", Optional[str], False),
)


def _check_unique(records: List[Record], path: str) -> None:
    """One result per (target, policy) in a file: with two, every reader would pick one (report the
    first, diff and merge the last) and a failure could hide behind a pass."""
    first: Dict[Tuple[str, str], int] = {}
    for i, r in enumerate(records):
        at = first.setdefault((r.target, r.policy), i)
        if at != i:
            raise ConfigError("a second result for %s/%s (the first is results[%d]); a results file holds one "
                              "result per target and policy" % (quote(r.target), quote(r.policy), at),
                              path=path, target=quote(r.target), key="results[%d]" % i)


PREFER = ("first", "last")
"""What ``merge --prefer`` accepts: which file's result wins when files share a (target, policy)."""


def merge(docs: Sequence[RunDocument], prefer: Optional[str] = None, sources: Sequence[str] = ()) -> RunDocument:
    """Join shard result files into one run document (records in the order given).

    A (target, policy) in more than one document is a UsageError naming both files (``sources``, in
    the order of ``docs``), unless ``prefer`` says which wins: "first" keeps the earliest document's
    result, "last" the latest's (at the place of the first). Shards never share one; re-runs may."""
    if not docs:
        raise ValueError("nothing to merge")
    if prefer not in (None,) + PREFER:
        raise ValueError("prefer must be one of %s, got %r" % (", ".join(PREFER), prefer))
    names = list(sources) or ["file %d" % (i + 1) for i in range(len(docs))]
    seen: Dict[Tuple[str, str], Record] = {}
    came_from: Dict[Tuple[str, str], int] = {}
    for n, doc in enumerate(docs):
        for r in doc.records:
            key = (r.target, r.policy)
            if key in seen:
                if prefer is None:
                    raise UsageError("%s: %s/%s is also in %s; pass --prefer first or --prefer last to say "
                                     "which file's result wins" % (names[n], quote(r.target), quote(r.policy),
                                                                    names[came_from[key]]))
                if prefer == "first":
                    continue
            seen[key] = r
            came_from[key] = n
    first = docs[0]
    return RunDocument(
        run_id="+".join(dict.fromkeys(d.run_id for d in docs)),
        started=min(d.started for d in docs),
        finished=max((d.finished or "") for d in docs) or None,
        complete=all(d.complete for d in docs),
        records=list(seen.values()),
        argv=first.argv,
        targets_file=first.targets_file,
        artifacts=_common_artifacts([d.artifacts for d in docs]),
        interrupted=next((d.interrupted for d in docs if d.interrupted), None),
    )


def _common_artifacts(paths: List[Optional[str]]) -> Optional[str]:
    """The merged run's artefacts: the one directory, or the deepest one holding every shard's (each
    record keeps its own console log's path); None when they share nothing but the root."""
    known = [p for p in paths if p]
    if not known:
        return None
    if len(set(known)) == 1:
        return known[0]
    try:
        common = os.path.commonpath([os.path.abspath(p) for p in known])
    except ValueError:
        return None
    return common if common not in ("", "/") else None
