"""The gate: when a run, or a comparison of two runs, may pass.

Statuses say what happened to each result; the gate says whether the whole
counts as passing. Nothing passes silently that did not run:

- a run that is incomplete (interrupted) or has no results fails;
- a skip (a backend's tool is missing here) fails unless the user said skips
  are fine (``--allow-skip``); even then, a backend named in
  ``HARNESS_REQUIRE`` (or every backend, with ``all``) must not be skipped.
  ``HARNESS_REQUIRE`` has this one meaning everywhere: the CLI's gates, the
  pytest plugin and the test suite's tool checks. It is a comma-separated list
  of backend names, each in any case and with ``-`` or ``_`` (``qemu-user`` and
  its marker spelling ``qemu_user`` are one name), or ``all``; any other value
  is a usage error, since a typo (``umll``) would silently require nothing;
- ``diff OLD NEW`` applies the same to NEW, and also fails when a (target,
  policy) of OLD is gone from NEW, unless ``--allow-gone`` says the removal
  was on purpose.

Failed results (``fail``, ``error``, ``timeout``, ``panic``) are the run's
own exit status; an ``observed`` result (its target expects nothing of the
policy) never fails a gate; for ``diff`` only a regression fails, a known failure that
stays is not news.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, FrozenSet, Iterable, List, Optional

from harness.errors import UsageError
from harness.model import Record, Status, quote
from harness.results import RunDocument

if TYPE_CHECKING:
    from harness.diff import Diff

REQUIRE_ENV = "HARNESS_REQUIRE"


def spelling(name: str) -> str:
    """A name as ``HARNESS_REQUIRE`` compares it: lower case, ``_`` read as ``-`` (a backend's marker spelling,
    ``qemu_user``, is its name, ``qemu-user``)."""
    return name.strip().lower().replace("_", "-")


def _is_backend(name: str) -> bool:
    # Deferred: reading results loads no backend; only a value to check brings in the registry.
    from harness import backends

    if name not in backends.names():
        return False
    try:
        backends.get(name)
    except KeyError:  # a helper module of the backends package (console, jail...), not a backend
        return False
    except ImportError:  # a backend whose optional module is missing here is still a backend to require
        return True
    return True


def accepted() -> List[str]:
    """Every value ``HARNESS_REQUIRE`` accepts, as its error lists them."""
    from harness import backends

    return ["all"] + [n for n in backends.names() if _is_backend(n)]


def require_list() -> FrozenSet[str]:
    """``HARNESS_REQUIRE`` read and checked: the names it gives (see :func:`spelling`), ``all`` among
    them for every backend. Any value that is neither is a UsageError listing what is accepted."""
    given = [w.strip() for w in os.environ.get(REQUIRE_ENV, "").split(",") if w.strip()]
    unknown = [w for w in given if spelling(w) != "all" and not _is_backend(spelling(w))]
    if unknown:
        raise UsageError("%s: unknown value %s; accepted, comma-separated: %s (any case, '-' or '_')" % (
            REQUIRE_ENV, ", ".join('"%s"' % quote(w) for w in unknown), ", ".join(accepted())))
    return frozenset(spelling(w) for w in given)


def required(name: str) -> bool:
    """Whether ``HARNESS_REQUIRE`` says ``name`` (a backend, or a tool the test suite needs: only ``all``
    names those) must not be skipped. UsageError if the variable holds an unknown value."""
    wanted = require_list()
    return "all" in wanted or spelling(name) in wanted


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
