"""The pytest plugin (entry point ``pytest11``): one test item per (target, policy), or per target.

A test that asks for ``harness_target`` is parametrized over every selected target instead and gets
a :class:`harness.session.Session`: the target booted once per session, running commands
(``harness_target.run("uname -r")``), as testinfra's ``host.run`` does.

A test that asks for the ``harness_result`` fixture is parametrized over every
selected target and policy; each item carries its backend's name and the
target's markers, so ``pytest -m uml`` runs exactly the UML ones. A target boots
once per session and serves all its policies; under pytest-xdist the workers
share that boot through a file lock in the session's temp directory. When a
backend's tool is missing the item skips with the install hint, unless
``HARNESS_REQUIRE`` names the backend (or ``all``): then it fails, so CI
never silently stops testing something.

:func:`assert_boundary` (or the ``harness_boundary`` fixture, bound to the session's targets file) keeps a
boundary as a test: "Go starts with 700 MiB of RLIMIT_AS" is ``assert_boundary("local", "rlimit_as",
"go", "600M", "800M")``, a search (:mod:`harness.bisect`) whose points are cached like the CLI's.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

import pytest

from allocator.probe import expand_policies
from harness import backends, bisect, config, results, runner
from harness.errors import HarnessError
from harness.model import Expectation, Record, Status, Target, TargetSet, outcome_text, quote
from harness.session import Session
from harness.verdict import REQUIRE_ENV, require_list, required  # one meaning of HARNESS_REQUIRE, as in the CLI


def skip_or_fail(name: str, reason: str) -> None:
    """Skip with ``reason``, or fail when ``HARNESS_REQUIRE`` says ``name`` must run."""
    if required(name):
        pytest.fail("%s (and %s=%s requires it)" % (reason, REQUIRE_ENV, os.environ.get(REQUIRE_ENV)),
                    pytrace=False)
    pytest.skip(reason)


class HarnessState:
    """Per-session state, kept in ``config.stash``: the targets and one boot's records per target."""

    def __init__(self, cfg: pytest.Config) -> None:
        self.config = cfg
        self.targets_file: Optional[str] = cfg.getoption("harness_targets")
        self.only: Optional[List[str]] = cfg.getoption("harness_only")
        raw_policies = cfg.getoption("harness_policy")
        try:
            self.policies = expand_policies(raw_policies) if raw_policies else None
        except ValueError as e:
            raise pytest.UsageError("--harness-policy: %s" % e) from None
        self._targets: Optional[TargetSet] = None
        self._records: Dict[str, List[Record]] = {}
        self._locks: Dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.artifacts: Optional[Path] = None
        art = cfg.getoption("harness_artifacts")
        if art:
            self.artifacts = Path(art)

    @property
    def targets(self) -> TargetSet:
        if self._targets is None:
            try:
                self._targets = config.load(self.targets_file)
                self._targets.select(self.only)
            except HarnessError as e:
                raise pytest.UsageError("arena-harness: %s" % e) from None
        return self._targets

    def selected(self) -> List[Target]:
        return self.targets.select(self.only)

    def shared_dir(self, factory: pytest.TempPathFactory) -> Path:
        """A directory this session's xdist workers share (pytest's basetemp is per worker)."""
        base = factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            base = base.parent
        d = base / "arena-harness"
        d.mkdir(exist_ok=True)
        return d

    def records(self, target: Target, factory: pytest.TempPathFactory) -> List[Record]:
        """Boot ``target`` once per session (all its selected policies) and share what it reported.

        Under pytest-xdist the first worker to need a target boots it while
        holding a file lock; the others wait and read the saved records.
        """
        with self._lock:
            lock = self._locks.setdefault(target.name, threading.Lock())
        with lock:
            if target.name in self._records:
                return self._records[target.name]
            shared = self.shared_dir(factory)
            cache = shared / ("%s.records.json" % target.name)
            with open(shared / ("%s.lock" % target.name), "a") as lf:
                fcntl.flock(lf, fcntl.LOCK_EX)
                if cache.exists():
                    recs = [results.record_from_json(r) for r in json.loads(cache.read_text())]
                else:
                    artifacts = self.artifacts or shared / "logs"
                    doc = runner.run([target], policies=self.policies, artifacts=artifacts)
                    recs = doc.records
                    tmp = cache.with_suffix(".tmp")
                    tmp.write_text(json.dumps([r.to_json() for r in recs]))
                    tmp.replace(cache)
            self._records[target.name] = recs
            return recs


STATE = pytest.StashKey[HarnessState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("arena-harness", "arena-harness targets")
    group.addoption("--harness-targets", metavar="FILE", default=None,
                    help="targets file (default: the matrix shipped with arena-harness)")
    group.addoption("--harness-only", metavar="NAME", action="append", default=None,
                    help="only this target (repeatable)")
    group.addoption("--harness-policy", metavar="P", action="append", default=None,
                    help="only this policy (repeatable)")
    group.addoption("--harness-artifacts", metavar="DIR", default=None,
                    help="keep console logs here (default: under pytest's basetemp)")
    group.addoption("--harness-list", action="store_true", default=False,
                    help="show the targets this session would boot (with their probes), then stop")


def pytest_configure(config: pytest.Config) -> None:
    try:
        require_list()  # a typo in HARNESS_REQUIRE would otherwise require nothing, silently
    except HarnessError as e:
        raise pytest.UsageError("arena-harness: %s" % e) from None
    state = HarnessState(config)
    config.stash[STATE] = state
    declared = {"harness_target"}
    for name in backends.names():
        declared.add(name.replace("-", "_"))
        config.addinivalue_line("markers", "%s: a target run by the %s backend" % (name.replace("-", "_"), name))
    config.addinivalue_line("markers", "harness_target(name): the arena-harness target this item runs")
    # Markers named in the targets file are declared too, so --strict-markers accepts them; once each
    # (a target marked ``ssh`` named the ssh backend's marker a second time in ``pytest --markers``).
    # An explicit targets file is checked now: a mistake in it is a usage error, not a collection error.
    try:
        extra = {m for t in state.targets.targets for m in t.markers}
    except pytest.UsageError:
        if state.targets_file is not None:
            raise
        return
    for m in sorted(extra - declared):
        config.addinivalue_line("markers", "%s: arena-harness target marker" % m)


def pytest_cmdline_main(config: pytest.Config) -> Optional[int]:
    """``--harness-list``: the targets (after ``--harness-only``) and their probes, nothing booted."""
    if not config.getoption("harness_list"):
        return None
    state = HarnessState(config)  # before pytest_configure: nothing is set up, and nothing need be
    try:
        targets = state.selected()
    except HarnessError as e:
        raise pytest.UsageError("arena-harness: %s" % e) from None
    width = max((len(t.name) for t in targets), default=0)
    for t in targets:
        probes = ", ".join(runner.policies_for(t, state.policies))
        print("%-*s  %-9s  %s  (-m %s)" % (width, t.name, t.backend, probes, " -m ".join(t.all_markers)))
    print("%d targets" % len(targets))
    return 0


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = metafunc.config.stash[STATE]
    if "harness_target" in metafunc.fixturenames:
        params = []
        for target in state.selected():
            tmarks: List[Any] = [getattr(pytest.mark, m) for m in target.all_markers]
            tmarks += [pytest.mark.harness_target(target.name), pytest.mark.xdist_group(target.name)]
            params.append(pytest.param(target, id=target.name, marks=tmarks))
        metafunc.parametrize("harness_target", params, indirect=True, scope="session")
    if "harness_result" not in metafunc.fixturenames:
        return
    params = []
    for target in state.selected():
        for policy in runner.policies_for(target, state.policies):
            marks: List[Any] = [getattr(pytest.mark, m) for m in target.all_markers]
            marks.append(pytest.mark.harness_target(target.name))
            marks.append(pytest.mark.xdist_group(target.name))
            params.append(pytest.param((target, policy), id="%s-%s" % (target.name, policy), marks=marks))
    metafunc.parametrize("harness_result", params, indirect=True)


@pytest.fixture
def harness_result(request: pytest.FixtureRequest) -> Record:
    """The record of one (target, policy), from the target's one boot in this session."""
    target, policy = request.param
    state = request.config.stash[STATE]
    missing = backends.get(target.backend)(target).missing()
    if missing is not None:
        skip_or_fail(target.backend, str(missing))
    recs = [r for r in state.records(target, request.getfixturevalue("tmp_path_factory")) if r.policy == policy]
    if not recs:
        pytest.fail("%s/%s produced no record" % (target.name, policy), pytrace=False)
    return recs[0]


@pytest.fixture(scope="session")
def harness_target(request: pytest.FixtureRequest) -> Iterator[Session]:
    """One target, booted once per session (per xdist worker) and serving commands: ``.run(cmd)`` with a
    shell command line, an argv list or a host file (a ``Path``), returning ``returncode``, ``stdout`` and
    ``stderr`` (see :mod:`harness.session`)."""
    target: Target = request.param
    missing = backends.get(target.backend)(target).missing()
    if missing is not None:
        skip_or_fail(target.backend, str(missing))
    state = request.config.stash[STATE]
    artifacts = state.artifacts if state.artifacts else \
        state.shared_dir(request.getfixturevalue("tmp_path_factory")) / "sessions"
    session = Session(target, artifacts)
    try:
        session.open()
    except HarnessError as e:
        pytest.fail(str(e), pytrace=False)
    yield session
    session.close()


def check(record: Record) -> None:
    """Assert the record passed (or was observed: its target expects nothing of the policy); the failure
    message says what happened and where the log is."""
    if record.status in (Status.PASS, Status.OBSERVED):
        return
    if record.status is Status.SKIP:
        skip_or_fail(record.backend, record.detail or "skipped")
    lines = ["%s/%s: %s" % (record.target, record.policy, record.status.value)]
    if record.detail:
        lines.append("  %s" % record.detail)
    if record.status not in (Status.FAIL, Status.DISAGREE):  # their detail says both already: said once
        lines.append("  outcome: %s, expected: %s" % (outcome_text(record.outcome, record.crash) or "-",
                                                      record.expected or "-"))
    if record.kernel:
        lines.append("  kernel: %s %s%s" % (record.kernel, record.machine,
                                            " (%s)" % record.accel if record.accel else ""))
    if record.log:
        lines.append("  console log: %s" % record.log)
    # guest text, control characters escaped: a test report is read on a terminal
    pytest.fail("\n".join(quote(line, 1 << 30) for line in lines), pytrace=False)


def assert_boundary(target: Union[Target, str], knob: str, probe: str, lo: Union[int, str], hi: Union[int, str],
                    *, before: Optional[str] = None, after: Optional[str] = None,
                    resolution: Union[int, str, None] = None, targets: Optional[str] = None,
                    artifacts: Optional[Path] = None) -> bisect.Boundary:
    """Assert that ``probe``'s outcome on ``target`` changes between ``lo`` and ``hi`` of ``knob``, and
    return that boundary (``.last``: the last value with the one outcome, ``.first``: the first with the
    next, narrowed to ``resolution``, by default the knob's).

    ``target``: a Target, or a name in ``targets`` (a targets file; default: the shipped matrix). Sizes
    are ints or written as in a targets file ("700M", "0xf800000000"). ``before``/``after``: the
    outcomes on either side, written as a target's ``expect:`` (``crash`` is any crash, ``crash: MSG``
    that one); with several boundaries in the interval, the first that matches is the one. Only the
    interval's ends are sampled first, so a change whose both sides have one outcome (A, then B, then A
    again) is not looked for: give an interval with different outcomes at its ends. Points are cached
    as the CLI caches them (:class:`harness.bisect.PointCache`): a second run boots nothing. A backend
    whose tool is missing skips (fails under ``HARNESS_REQUIRE``), as ``harness_result`` does."""
    try:
        if isinstance(target, str):
            (target,) = config.load(targets).select([target])
        plan = bisect.plan(target, knob=knob, probes=[probe], probes_given=True, samples=2,
                           lo=lo if isinstance(lo, int) else config.size(lo, "lo"),
                           hi=hi if isinstance(hi, int) else config.size(hi, "hi"),
                           resolution=(resolution if resolution is None or isinstance(resolution, int)
                                       else config.size(resolution, "resolution")))
        if bisect.booted(knob):
            missing = backends.get(target.backend)(target).missing()
            if missing is not None:
                skip_or_fail(target.backend, str(missing))
        doc = bisect.search(plan, artifacts=artifacts or Path(tempfile.gettempdir()) / "arena-harness-bisect",
                            cache=bisect.PointCache(), quiet=True)
    except HarnessError as e:
        pytest.fail("assert_boundary: %s" % e, pytrace=False)
    where = "%s on %s (%s from %s to %s)" % (probe, target.name, knob, doc.fmt(plan.lo), doc.fmt(plan.hi))
    if doc.stopped and not doc.interrupted:
        skip_or_fail(target.backend, "%s: %s" % (where, doc.stopped))
    if doc.stopped:
        pytest.fail("%s: the search stopped: %s" % (where, doc.stopped), pytrace=False)
    found = doc.boundaries(probe)

    def matches(want: Optional[str], point: bisect.Point) -> bool:
        return want is None or Expectation.parse(want).matches(point.outcome, point.crash)

    for b in found:
        if matches(before, b.last) and matches(after, b.first):
            return b
    if not found:
        ends = doc.points[probe]
        pytest.fail("%s: no boundary: %s at both ends" % (where, ends[0].label), pytrace=False)
    said = "; ".join("%s (%s) | %s (%s)" % (doc.fmt(b.last.value), b.last.label, doc.fmt(b.first.value),
                                             b.first.label) for b in found)
    pytest.fail("%s: no boundary from %s to %s; found: %s" % (where, before or "any outcome", after or "any outcome",
                                                             said), pytrace=False)


@pytest.fixture
def harness_boundary(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> Callable[..., bisect.Boundary]:
    """:func:`assert_boundary` with a target named in the session's ``--harness-targets`` file and the
    boots' console logs kept under pytest's temp directory."""
    state = request.config.stash[STATE]
    return functools.partial(assert_boundary, targets=state.targets_file,
                             artifacts=tmp_path_factory.mktemp("bisect"))
