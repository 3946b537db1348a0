"""The data model: targets, expectations, sizes and durations, deadlines, guest runs, result records.

Pure data, read by every layer and importing nothing of the harness but its
error types: ``config`` parses YAML into it, the runner and the backends fill
it, and ``results``, ``report``, ``diff`` and ``verdict`` read it (and nothing
else). The data flows one way::

    targets.yaml -> config -> model.Target -> runner -> backends (machine, channel, probe)
                                                 -> model.GuestRun -> results.classify -> model.Record
                                                 -> results.RunDocument -> report, diff, verdict
"""

from __future__ import annotations

import difflib
import enum
import fnmatch
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from allocator.probe import POLICIES
from harness.errors import ConfigError

QUOTE_MAX = 40  # how much of a wrong value an error quotes
DEFAULT_TIMEOUT = 120.0  # seconds: a target's whole boot and probe, unless it says otherwise


def quote(text: str, limit: int = QUOTE_MAX) -> str:
    """``text`` for an error message: at most ``limit`` characters, on one line (control characters
    escaped), so an error never carries more of a file than the offending value's beginning."""
    short = text if len(text) <= limit else text[: limit - 3] + "..."
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in short)


class Size(int):
    """A number of bytes, written like "256M" or "1G"."""


class Seconds(float):
    """A duration, written like 60, "90s" or "2m"."""


# Option fields whose value names something on the host carry ``metadata`` saying so:
#   field(default="linux.uml", metadata={PROGRAM: "user-mode-linux"})   # a program, and its package
#   field(default=None, metadata={FILE: "a private key"})                # a file
#   field(default="/", metadata={DIRECTORY: "the guest's root"})         # a directory
# When the targets file sets such a key, what it names must exist here: a typo is a config
# error (exit 2), not a skip. A default that is missing stays the backend's install hint.
# Option fields whose value becomes a word of a command line the harness runs as root (mmdebstrap's suite
# and packages) carry ``metadata={DEBIAN: "a Debian release"}``: the value must be such a name, never an
# option ("--setup-hook=...") or anything else.
# Option fields that are lists whose items have a syntax of their own (a kernel config fragment's
# NAME=value) carry ``metadata={ITEM: check}``: ``check(item)`` says what is wrong with one item, or None,
# and the error names that item's own line.
DEBIAN = "arena-harness.debian-name"
DEBIAN_NAME_RE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")
PROGRAM = "arena-harness.program"
FILE = "arena-harness.file"
DIRECTORY = "arena-harness.directory"
ITEM = "arena-harness.item-check"


@dataclass(frozen=True)
class Expectation:
    outcome: str
    crash: Optional[str] = None  # for "crash: <message>": the exact Go message

    @classmethod
    def parse(cls, text: str) -> "Expectation":
        head, sep, rest = text.partition(":")
        if head.strip() == "crash" and sep:
            return cls("crash", rest.strip() or None)
        return cls(text.strip())

    def matches(self, outcome: Optional[str], crash: Optional[str]) -> bool:
        if outcome != self.outcome:
            return False
        return self.crash is None or self.crash == crash

    def __str__(self) -> str:
        return "crash: %s" % self.crash if self.crash else self.outcome


PROBE_KINDS = ("model", "go", "jvm", "program")
MODELS = {"go-modern": "go"}  # a model policy -> the real runtime probe it models (compared where both ran)
BUILTIN_PROBES = tuple(POLICIES) + ("go", "jvm")  # names that need no definition in a targets file


@dataclass(frozen=True)
class Probe:
    """What runs in a target and gives results (see :mod:`harness.probes`): a model policy, a real
    runtime (``go``, ``jvm``) or a user's ``program``. ``name`` is its results' name (a record's
    ``policy``)."""

    name: str
    kind: str
    program: Optional[str] = None  # program: a host file (delivered read-only) or a command in the guest
    args: Tuple[str, ...] = ()
    host_file: bool = False  # program names a file on the host

    @classmethod
    def builtin(cls, name: str) -> Optional["Probe"]:
        if name in POLICIES:
            return cls(name, "model")
        if name in ("go", "jvm"):
            return cls(name, name)
        return None


MODEL_PROBES = tuple(Probe(p, "model") for p in POLICIES)


@dataclass(frozen=True)
class Target:
    name: str
    backend: str
    options: Any  # the backend's frozen Options dataclass
    expect: Tuple[Tuple[str, Expectation], ...] = ()
    markers: Tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    probes: Tuple[Probe, ...] = MODEL_PROBES
    grow: Optional[str] = None
    touch_every: Optional[int] = None
    rlimit_as: Optional[int] = None
    watchdog: Optional[float] = None
    description: str = ""
    source: str = ""
    line: int = 0

    def expectation(self, policy: str) -> Optional[Expectation]:
        return dict(self.expect).get(policy)

    @property
    def policies(self) -> Tuple[str, ...]:
        """The names of its probes' results, in order (a record's ``policy``)."""
        return tuple(p.name for p in self.probes)

    def probe(self, name: str) -> Optional[Probe]:
        """Its probe of that name, else the built-in one (``--probe go`` on a target that lists no go)."""
        return next((p for p in self.probes if p.name == name), None) or Probe.builtin(name)

    @property
    def all_markers(self) -> Tuple[str, ...]:
        """The backend's name is always a marker: ``pytest -m uml`` selects every uml target
        (a dash becomes an underscore: ``-m qemu_user``)."""
        out = [self.backend.replace("-", "_")]
        out.extend(m for m in self.markers if m not in out)
        return tuple(out)


@dataclass(frozen=True)
class TargetSet:
    targets: Tuple[Target, ...]
    source: str

    def names(self) -> List[str]:
        return [t.name for t in self.targets]

    def select(self, only: Optional[List[str]] = None) -> List[Target]:
        """The targets named by ``only``: names or shell-style globs (``qemu-*``), in the order given; a
        target named twice runs once (a results file holds each result once)."""
        if not only:
            return list(self.targets)
        known = {t.name: t for t in self.targets}
        out: Dict[str, Target] = {}
        for name in only:
            if any(c in name for c in "*?["):
                hits = [t for t in self.targets if fnmatch.fnmatchcase(t.name, name)]
                if not hits:
                    raise ConfigError("no target matches %r; targets in this file: %s" % (name, ", ".join(known)),
                                      path=self.source)
                out.update((t.name, t) for t in hits)
            elif name in known:
                out.setdefault(name, known[name])
            else:
                close = difflib.get_close_matches(name, list(known), n=1)
                hint = "did you mean %s? " % close[0] if close else ""
                raise ConfigError("unknown target %r; %stargets in this file: %s" % (name, hint, ", ".join(known)),
                                  path=self.source)
        return list(out.values())


@dataclass(frozen=True)
class Group:
    name: str
    kernels: Tuple[str, ...]
    targets: Tuple[str, ...]


def outcome_text(outcome: Optional[str], crash: Optional[str]) -> Optional[str]:
    """An outcome as people read it: ``crash: <Go's message>`` for a crash, else the outcome's word."""
    if outcome == "crash" and crash:
        return "crash: %s" % crash
    return outcome


class Deadline:
    """One deadline for a whole boot, made by the runner and passed down: every wait takes what is left.

    ``left()`` is never negative; ``expired`` says whether it passed. Built on the monotonic clock.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = float(seconds)
        self._clock = clock
        self.start = clock()
        self.end = self.start + self.seconds

    def left(self, at_least: float = 0.0) -> float:
        """Seconds left (``at_least`` as a floor, for calls that need a positive timeout)."""
        return max(at_least, self.end - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self.end

    def elapsed(self) -> float:
        return self._clock() - self.start

    def __repr__(self) -> str:
        return "Deadline(%.1fs, %.1fs left)" % (self.seconds, self.left())


@dataclass
class GuestRun:
    """What one boot produced: a document per policy that reported, and what went wrong."""

    documents: Dict[str, Dict[str, Any]]
    log: Path
    duration_s: float
    panic: Optional[str] = None
    timed_out: bool = False
    silent: bool = False  # stopped by the watchdog (no output), a kind of timeout
    error: Optional[str] = None
    channel: Optional[str] = None
    steps: List[Dict[str, Any]] = field(default_factory=list)  # the agent's step results (exit status, output)
    accel: Optional[str] = None  # the emulator's accelerator (kvm, tcg), or None: Backend.accelerator


class Status(str, enum.Enum):
    PASS = "pass"
    OBSERVED = "observed"  # the target expects nothing of this policy: what happened is recorded, not judged
    FAIL = "fail"
    # the model and the real runtime it models ran on the same target and said different things: the
    # model is wrong there (a finding: it fails the run, like a fail)
    DISAGREE = "disagree"
    ERROR = "error"
    TIMEOUT = "timeout"
    PANIC = "panic"
    SKIP = "skip"

    def __str__(self) -> str:
        return self.value


# The one precedence rule: the worst status wins.
PRECEDENCE = (Status.PANIC, Status.TIMEOUT, Status.ERROR, Status.FAIL, Status.DISAGREE, Status.PASS, Status.OBSERVED,
              Status.SKIP)
GOOD = (Status.PASS, Status.OBSERVED, Status.SKIP)
"""The statuses that are no failure (whether a skip passes a gate is the gate's to say: harness.verdict)."""


def worst(statuses: Iterable[Status]) -> Status:
    """The status that wins: panic > timeout > error > fail > disagree > pass > observed > skip (skip if there
    are none)."""
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
    probe: Optional[Dict[str, Any]] = None  # the probe's document (the allocator's shape)
    kind: Optional[str] = None  # the probe's kind: model, go, jvm, program (schema 2; None in schema 1 files)
    # where a model policy and the runtime it models both ran on the target: the other side's outcome and
    # crash, and whether they agree (on both records)
    agreement: Optional[Dict[str, Any]] = None
    accel: Optional[str] = None  # how an emulator ran the guest's CPU: kvm or tcg (QEMU); None: no emulator

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d
