"""Comparing two runs: regressions, fixes, changed outcomes and addresses, targets added or gone.

A regression is a (target, policy) whose status got worse (passing, observed
or skipped before, failing, erroring, timing out or panicking now) or whose
outcome turned into a crash. With a tracking file (KernelCI-style), each open regression remembers
the run where it first failed, and a fix reports the span it was open for.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from harness.errors import ConfigError
from harness.inputs import MAX_RESULTS_BYTES, read_text
from harness.model import GOOD, Record, outcome_text, quote
from harness.report import markdown_name, markdown_text
from harness.results import RunDocument

Key = Tuple[str, str]


@dataclass
class Change:
    target: str
    policy: str
    kind: str  # regression | fix | outcome | facts | added | gone
    old: str
    new: str
    note: str = ""
    first_failed: Optional[str] = None

    @property
    def key(self) -> str:
        return "%s/%s" % (self.target, self.policy)


@dataclass
class Diff:
    old: RunDocument
    new: RunDocument
    changes: List[Change] = field(default_factory=list)

    def of(self, kind: str) -> List[Change]:
        return [c for c in self.changes if c.kind == kind]

    @property
    def regressed(self) -> bool:
        return bool(self.of("regression"))


def _summary(r: Record) -> str:
    return "%s (%s)" % (r.status.value, outcome_text(r.outcome, r.crash) or "-")


def _facts(r: Record) -> Dict[str, Any]:
    p = r.probe or {}
    res = p.get("reservation") or {}
    fb = p.get("fallback") or {}
    return {
        "user top": (p.get("facts") or {}).get("user_top"),
        "kernel": r.kernel,
        "probe landed at": res.get("probe"),
        "fallback arena": "-".join(fb.get("arena") or []) or None,
    }


def compare(old: RunDocument, new: RunDocument) -> Diff:
    d = Diff(old, new)
    a: Dict[Key, Record] = {(r.target, r.policy): r for r in old.records}
    b: Dict[Key, Record] = {(r.target, r.policy): r for r in new.records}
    for key in sorted(set(a) | set(b)):
        ra, rb = a.get(key), b.get(key)
        if ra is None and rb is not None:
            d.changes.append(Change(key[0], key[1], "added", "-", _summary(rb)))
            continue
        if rb is None and ra is not None:
            d.changes.append(Change(key[0], key[1], "gone", _summary(ra), "-"))
            continue
        assert ra is not None and rb is not None
        worse_status = ra.status in GOOD and rb.status not in GOOD
        better_status = ra.status not in GOOD and rb.status in GOOD
        to_crash = ra.outcome not in (None, "crash") and rb.outcome == "crash"
        from_crash = ra.outcome == "crash" and rb.outcome not in (None, "crash")
        if worse_status or (to_crash and not better_status):
            d.changes.append(Change(key[0], key[1], "regression", _summary(ra), _summary(rb), rb.detail or ""))
        elif better_status or (from_crash and rb.status in GOOD):
            d.changes.append(Change(key[0], key[1], "fix", _summary(ra), _summary(rb)))
        elif (ra.outcome, ra.crash) != (rb.outcome, rb.crash) or ra.status != rb.status:
            d.changes.append(Change(key[0], key[1], "outcome", _summary(ra), _summary(rb)))
        fa, fb = _facts(ra), _facts(rb)
        moved = ["%s %s -> %s" % (k, fa[k], fb[k]) for k in fa if fa[k] != fb[k] and fa[k] and fb[k]]
        if moved:
            d.changes.append(Change(key[0], key[1], "facts", "", "", "; ".join(moved)))
    return d


def _load_state(state_path: Path) -> Dict[str, Any]:
    """The open-regressions file, checked: a damaged one is an error (exit 2), not a silent fresh start
    that would forget where every open regression first failed."""
    if not state_path.exists():
        return {}
    name = str(state_path)
    try:
        state = json.loads(read_text(state_path, "tracking files", MAX_RESULTS_BYTES))
    except ValueError as e:
        raise ConfigError("not valid JSON: %s" % e, path=name) from None
    except RecursionError:
        raise ConfigError("not valid JSON: nested too deeply", path=name) from None
    if not isinstance(state, dict) or not isinstance(state.get("open", {}), dict):
        raise ConfigError("not an arena-harness tracking file (expected {\"open\": {...}})", path=name)
    for key, entry in state.get("open", {}).items():
        first = entry.get("first_failed") if isinstance(entry, dict) else None
        if not isinstance(first, dict) or not isinstance(first.get("run"), str):
            raise ConfigError("expected a mapping with first_failed.run", path=name, key="open.%s" % quote(key))
    seen = state.get("updated_by")
    if seen is not None and not (isinstance(seen, dict) and isinstance(seen.get("run"), str)):
        raise ConfigError("expected a mapping with run", path=name, key="updated_by")
    return state


def track(d: Diff, state_path: Path) -> List[Dict[str, Any]]:
    """Update the open-regressions file; returns the regressions this diff closed (with their span).

    The file: ``open`` (per ``target/policy``, the run it first failed in, ``first_failed``, the last it
    passed in before, and the last it failed in), ``closed_last`` (what this diff closed) and
    ``updated_by`` (the new run of this diff: a report of a later run can tell the file is behind)."""
    state = _load_state(state_path)
    open_: Dict[str, Any] = state.get("open", {})
    closed: List[Dict[str, Any]] = []
    now = {"run": d.new.run_id, "at": d.new.started}
    failing = {"%s/%s" % (r.target, r.policy) for r in d.new.records if r.status not in GOOD}
    for c in d.of("regression"):
        entry = open_.setdefault(c.key, {"first_failed": now, "last_passed": {"run": d.old.run_id,
                                                                              "at": d.old.started}})
        c.first_failed = entry["first_failed"]["run"]
    for key in list(open_):
        if key in failing:
            open_[key]["last_failed"] = now
        else:
            entry = open_.pop(key)
            closed.append({"key": key, "first_failed": entry["first_failed"], "fixed": now})
    for c in d.changes:
        if c.kind == "fix":
            span = next((x for x in closed if x["key"] == c.key), None)
            if span:
                c.note = "open since run %s" % span["first_failed"]["run"]
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps({"open": open_, "closed_last": closed, "updated_by": now}, indent=1) + "\n")
    return closed


@dataclass(frozen=True)
class Since:
    """Since when one failing result fails, as a tracking file says: ``kind`` new (it first failed in the
    run reported), open (in an earlier run) or untracked (the file does not list it); ``text`` for the
    page, ``why`` for its tooltip."""

    kind: str
    text: str
    why: str

    @property
    def new(self) -> bool:
        return self.kind == "new"


@dataclass(frozen=True)
class History:
    """What a tracking file (``diff --track``) says of the failures of one run (``run_id``): since which
    run each one fails (:meth:`since`), and whether the file has seen that run at all (:attr:`behind`)."""

    path: str
    run_id: str
    entries: Dict[str, Any]  # the file's open regressions, by target/policy
    updated_by: Optional[Dict[str, Any]]  # the new run of the last diff recorded; None in files written before

    def since(self, r: Record) -> Since:
        entry = self.entries.get("%s/%s" % (r.target, r.policy))
        if entry is None:
            return Since("untracked", "not tracked", "%s lists no open regression for it: it was failing already "
                         "in the run it was compared with, or was not in that run" % self.path)
        first = entry["first_failed"]
        if first["run"] == self.run_id:
            before = entry.get("last_passed")
            return Since("new", "new in this run", "first failed in this run%s" % (
                "; it passed in run %s" % _run_at(before) if isinstance(before, dict) else ""))
        return Since("open", "failing since run %s" % _run_at(first),
                     "first failed in run %s, and in every run diffed since" % _run_at(first, day=False))

    @staticmethod
    def summary(sinces: Sequence[Since]) -> str:
        """``1 new in this run, 2 failing since earlier runs, 1 not tracked`` (the kinds there are)."""
        words = (("new", "new in this run", "new in this run"), ("open", "failing since an earlier run",
                 "failing since earlier runs"), ("untracked", "not tracked", "not tracked"))
        counts = [(sum(1 for s in sinces if s.kind == kind), one, many) for kind, one, many in words]
        return ", ".join("%d %s" % (n, one if n == 1 else many) for n, one, many in counts if n)

    @property
    def behind(self) -> Optional[str]:
        """The run that last updated the file when it is not the run reported (then a failure it does not
        list may be new), else None."""
        if self.updated_by is None or self.updated_by["run"] == self.run_id:
            return None
        return _run_at(self.updated_by)


def _run_at(seen: Dict[str, Any], day: bool = True) -> str:
    """``RUN, 2026-11-20`` (``day``) or ``RUN (2026-11-20T03:00:00+00:00)`` from a tracking file's
    ``{"run", "at"}`` (the run's start); just the run when ``at`` is not a timestamp."""
    run, at = str(seen.get("run", "?")), seen.get("at")
    if not isinstance(at, str) or not re.match(r"\d{4}-\d\d-\d\d", at):
        return run
    return "%s, %s" % (run, at[:10]) if day else "%s (%s)" % (run, at)


def history(state_path: Path, doc: RunDocument) -> History:
    """The tracking file at ``state_path`` read for the run ``doc`` (``report --track``). Unlike ``diff
    --track``, which starts a missing file, a report needs it there: a wrong path is an error, not every
    failure untracked."""
    if not state_path.exists():
        raise ConfigError("no such tracking file (arena-harness diff OLD NEW --track STATE writes it)",
                          path=str(state_path))
    state = _load_state(state_path)
    return History(str(state_path), doc.run_id, state.get("open", {}), state.get("updated_by"))


_TITLES = [("regression", "Regressions"), ("fix", "Fixes"), ("outcome", "Changed outcomes"),
           ("facts", "Changed addresses and facts"), ("added", "Added"), ("gone", "Gone")]


def text(d: Diff) -> str:
    lines = ["runs %s -> %s" % (d.old.run_id, d.new.run_id)]
    for kind, title in _TITLES:
        items = d.of(kind)
        if not items:
            continue
        lines.append("%s (%d):" % (title, len(items)))
        for c in items:
            if kind == "facts":
                lines.append("  %s: %s" % (c.key, c.note))
                continue
            extra = ""
            if c.first_failed:
                extra = " [first failed in run %s]" % c.first_failed
            if c.note and kind != "facts":
                extra += " (%s)" % c.note
            lines.append("  %s: %s -> %s%s" % (c.key, c.old, c.new, extra))
    if len(lines) == 1:
        lines.append("no changes")
    lines.append("%d regressions, %d fixes" % (len(d.of("regression")), len(d.of("fix"))))
    return "\n".join(lines)


def markdown(d: Diff, problems: Sequence[str] = ()) -> str:
    """The diff as Markdown; ``problems`` are the gate's reasons to fail besides regressions. Every
    text from the results files (outcomes, details, addresses, names, run ids) is escaped: guests wrote
    much of it (see :func:`harness.report.markdown_text`)."""
    md = markdown_text
    out = ["## arena-harness: %s → %s" % (md(d.old.run_id), md(d.new.run_id)), ""]
    out.append("**%d regressions, %d fixes**" % (len(d.of("regression")), len(d.of("fix"))))
    for problem in problems:
        out += ["", "**Gate failed:** %s" % md(problem)]
    for kind, title in _TITLES:
        items = d.of(kind)
        if not items:
            continue
        out += ["", "### %s" % title, ""]
        if kind == "facts":
            out += ["- %s: %s" % (markdown_name(c.key), md(c.note)) for c in items]
            continue
        out += ["| target/policy | before | after | note |", "|---|---|---|---|"]
        for c in items:
            note = c.note
            if c.first_failed:
                note = ("first failed in run %s. " % c.first_failed) + note
            out.append("| %s | %s | %s | %s |" % (markdown_name(c.key), md(c.old), md(c.new), md(note)))
    return "\n".join(out) + "\n"
