"""The gate: when a run, or a comparison of two runs, may pass.

Statuses say what happened to each result; the gate says whether the whole
counts as passing. Nothing passes silently that did not run:

- a run that is incomplete (interrupted) or has no results fails;
- a skip (a backend's tool is missing here) fails unless the user said skips
  are fine (``--allow-skip``); even then, a backend named in
  ``HARNESS_REQUIRE`` (or every backend, with ``all``) must not be skipped.
  ``HARNESS_REQUIRE`` has this one meaning everywhere: the CLI's gates, the
  pytest plugin and the test suite's tool checks;
- ``diff OLD NEW`` applies the same to NEW, and also fails when a (target,
  policy) of OLD is gone from NEW, unless ``--allow-gone`` says the removal
  was on purpose.

Failed results (``fail``, ``error``, ``timeout``, ``panic``) are the run's
own exit status; for ``diff`` only a regression fails, a known failure that
stays is not news.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable, List, Optional

from harness.model import Record, Status
from harness.results import RunDocument

if TYPE_CHECKING:
    from harness.diff import Diff

REQUIRE_ENV = "HARNESS_REQUIRE"


def required(name: str) -> bool:
    """Whether ``HARNESS_REQUIRE`` says ``name`` (a backend or tool) must not be skipped."""
    wanted = {w.strip() for w in os.environ.get(REQUIRE_ENV, "").split(",") if w.strip()}
    return "all" in wanted or name in wanted


def _names(items: Iterable[str], limit: int = 5) -> str:
    found = sorted(set(items))
    shown = ", ".join(found[:limit])
    return shown + (", and %d more" % (len(found) - limit) if len(found) > limit else "")


def skip_problem(records: List[Record], allow_skip: bool) -> Optional[str]:
    """Why the skips among ``records`` fail the gate, or None."""
    skips = [r for r in records if r.status is Status.SKIP]
    if not skips:
        return None
    must = [r for r in skips if required(r.backend)]
    if must:
        return "%d results skipped although %s=%s requires them: %s (%s)" % (
            len(must), REQUIRE_ENV, os.environ.get(REQUIRE_ENV, ""), _names("%s/%s" % (r.target, r.policy)
                                                                         for r in must),
            must[0].detail or "skipped")
    if allow_skip:
        return None
    return "%d of %d results skipped (%s): %s; pass --allow-skip if a skip is fine here" % (
        len(skips), len(records), _names(r.target for r in skips), skips[0].detail or "skipped")


def run_problems(doc: RunDocument, allow_skip: bool) -> List[str]:
    """Why ``doc`` fails the gate apart from its failed results: incomplete, empty, skipped."""
    problems = []
    if not doc.complete:
        problems.append("the run is incomplete (%s)" % (doc.interrupted or "stopped before every target ended"))
    if not doc.records:
        problems.append("the run has no results: nothing ran")
    skip = skip_problem(doc.records, allow_skip)
    if skip:
        problems.append(skip)
    return problems


def diff_problems(d: "Diff", allow_skip: bool, allow_gone: bool) -> List[str]:
    """Why NEW fails the gate against OLD apart from regressions: NEW's own problems, and results gone."""
    problems = ["NEW: %s" % p for p in run_problems(d.new, allow_skip)]
    gone = d.of("gone")
    if gone and not allow_gone:
        problems.append("%d results of OLD are missing from NEW (%s); pass --allow-gone if they were removed on "
                        "purpose" % (len(gone), _names(c.key for c in gone)))
    return problems
