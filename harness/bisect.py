"""Boundary search (``arena-harness bisect``): where along one knob a probe's outcome changes.

A knob is one input of a target: ``reserved_va`` (qemu-user's ``-R``), ``memory`` (uml, qemu),
``rlimit_as`` (any backend: every probe runs under it), ``task_size`` (the simulated kernel's, which
runs the model in this process and boots nothing), or an ordered list of kernels (``--kernels``: the
suites or kernel packages of uml and qemu targets). The search:

1. measures the range's ends and evenly spaced points between them (``samples``, 8 by default), all
   probes in one boot per point;
2. for each probe separately (the model's policies and real runtimes flip at different places),
   halves every interval whose ends differ in outcome (the outcome word and the crash's message)
   until its ends are one ``resolution`` apart. A middle point with a third outcome splits the
   interval in two, each halved in turn: so a window of one outcome between two others is found
   however narrow (go-2012's crash between its fallback and the high arena, which no sample hits).
   What no search of this kind sees is a window with the same outcome on both sides (A, then B,
   then A again) that no measured point lands in: more ``samples`` find narrower ones.

A boundary is then two neighbouring points: the last value with one outcome and the first with the
next. Every measured point is cached by its inputs (the target's definition with the knob applied,
the probe, the value, the harness's version and a digest of the code that runs in guests, this
host's kernel release) as a small JSON file under the image cache's directory (``bisect/``), so a
repeated search boots nothing. Points without an outcome (an error, a timeout, a panic) are not
cached: they may be the machine's, not the knob's, and are measured again next time. An ssh target's
remote machine is not part of the key (``--no-cache`` measures afresh).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple

from harness import progress
from harness.errors import HarnessError, UsageError
from harness.files import write_atomically
from harness.model import DEBIAN_NAME_RE, Size, Target, outcome_text, quote

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
PAGE = 4096
"""The resolution of address sizes: a page (4 KiB on every architecture the harness runs)."""
DEFAULT_SAMPLES = 8
MAX_SAMPLES = 1000
MAX_CONFIRM = 50
NO_OUTCOME = ("error", "timeout", "panic", "skip")  # a point's label when its probe gave no outcome
SCHEMA = 1
KIND = "arena-harness-bisect"
KERNEL = "kernel"
"""The knob of a ``--kernels`` search: its values are the kernels' positions in the list given."""


@dataclass(frozen=True)
class Knob:
    """One input a search varies: which backends have it, its default resolution, and how its values read."""

    name: str
    what: str
    backends: Tuple[str, ...]  # empty: every backend
    resolution: int
    address: bool  # its values read as addresses (hex), else as sizes ("700M")
    booted: bool = True  # False: the simulated kernel, in this process


KNOBS: Dict[str, Knob] = {k.name: k for k in (
    Knob("reserved_va", "the guest address space qemu-user reserves (-R)", ("qemu-user",), PAGE, True),
    Knob("memory", "the guest's memory", ("uml", "qemu"), MiB, False),
    Knob("rlimit_as", "RLIMIT_AS, under which every probe runs", (), MiB, False),
    Knob("task_size", "the simulated kernel's task size (the model in this process: no boot)", (), PAGE, True,
         booted=False),
)}
KERNEL_BACKENDS = ("uml", "qemu")


def format_size(value: int) -> str:
    """A size as the targets file and ``--from`` read it: ``1G``, ``700M``, ``64K``, else bytes."""
    for unit, size in (("G", GiB), ("M", MiB), ("K", KiB)):
        if value and value % size == 0:
            return "%d%s" % (value // size, unit)
    return str(value)


# -- points, boundaries, the document ---------------------------------------------------------


@dataclass
class Point:
    """What one probe did at one value of the knob."""

    value: int
    outcome: Optional[str]
    crash: Optional[str]
    status: str  # the record's: observed, disagree, error, timeout, panic (expectations are not judged here)
    detail: Optional[str] = None
    seconds: float = 0.0
    cached: bool = False
    log: Optional[str] = None
    kernel: Optional[str] = None  # the release the guest reported
    # a side of a boundary measured again (--confirm): how often each label came, this point's included;
    # empty when measured once
    seen: Dict[str, int] = field(default_factory=dict)

    @property
    def stable(self) -> bool:
        """Whether every measurement of this point that gave an outcome gave the same one (a machine's
        error, timeout or panic is tallied, but says nothing of the probe)."""
        return len([label for label in self.seen if label not in NO_OUTCOME]) <= 1

    @property
    def label(self) -> str:
        """What the search compares: the outcome with its crash message (``crash: runtime: out of memory``),
        or, when the probe gave none, the status alone (``error``, ``timeout``): its detail (a log path, a
        time) would differ at every point."""
        if self.outcome and self.status not in ("error", "timeout", "panic", "skip"):
            return outcome_text(self.outcome, self.crash) or self.outcome
        return self.status

    @property
    def cacheable(self) -> bool:
        """A result of the probe's, not of the machine's: the probe ran to the end and gave an outcome."""
        return self.outcome is not None and self.status in ("observed", "pass", "fail", "disagree")

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Point":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Boundary:
    """Two neighbouring points of different outcomes: ``last`` the last value with the one, ``first`` the
    first value with the next. ``resolved``: one resolution apart (False only for a stopped search)."""

    probe: str
    last: Point
    first: Point
    resolved: bool

    @property
    def stable(self) -> bool:
        """Whether both sides gave one outcome each time they were measured (``--confirm``): where a
        runtime's own use varies from run to run, the boundary is a band, not a value."""
        return self.last.stable and self.first.stable


@dataclass(frozen=True)
class Run:
    """Neighbouring points of one outcome: from ``first`` to ``last`` (measured values)."""

    label: str
    first: Point
    last: Point
    count: int


@dataclass
class BisectDocument:
    """A search and what it found, per probe; written as JSON (``--json``) and read by the HTML report."""

    target: str
    backend: str
    knob: str
    lo: int
    hi: int
    resolution: int
    samples: int
    points: Dict[str, List[Point]]  # per probe, in the order searched, each list sorted by value
    kernels: List[str] = field(default_factory=list)  # a kernel search: the value i is kernels[i]
    started: str = ""
    finished: Optional[str] = None
    seconds: float = 0.0
    measurements: int = 0  # boots (or runs of the simulated kernel), each measuring one or more probes
    measured: int = 0  # points those measured
    cached: int = 0  # points read from the cache
    stopped: Optional[str] = None  # why the search ended before it was done
    interrupted: bool = False  # stopped by a signal or Ctrl-C (else by a point it could not measure)
    notes: List[str] = field(default_factory=list)
    argv: List[str] = field(default_factory=list)
    artifacts: Optional[str] = None
    confirm: int = 0  # each side of every boundary measured this many more times

    @property
    def complete(self) -> bool:
        return self.stopped is None

    @property
    def address(self) -> bool:
        knob = KNOBS.get(self.knob)
        return knob is not None and knob.address

    def fmt(self, value: int) -> str:
        """A value as the command line takes it back: a kernel's name, an address in hex, a size."""
        if self.knob == KERNEL:
            return self.kernels[value] if 0 <= value < len(self.kernels) else "#%d" % value
        return hex(value) if self.address else format_size(value)

    def fmt_resolution(self) -> str:
        if self.knob == KERNEL:
            return "one kernel"
        return "0x%x" % self.resolution if self.address else format_size(self.resolution)

    def runs(self, probe: str) -> List[Run]:
        out: List[Run] = []
        for p in self.points.get(probe, []):
            if out and out[-1].label == p.label:
                r = out[-1]
                out[-1] = Run(r.label, r.first, p, r.count + 1)
            else:
                out.append(Run(p.label, p, p, 1))
        return out

    def boundaries(self, probe: str) -> List[Boundary]:
        runs = self.runs(probe)
        return [Boundary(probe, a.last, b.first, b.first.value - a.last.value <= self.resolution)
                for a, b in zip(runs, runs[1:])]

    def to_json(self) -> Dict[str, Any]:
        def point(p: Point) -> Dict[str, Any]:
            return dict(p.to_json(), text=self.fmt(p.value), label=p.label)

        return {
            "kind": KIND, "schema": SCHEMA, "target": self.target, "backend": self.backend, "knob": self.knob,
            "from": self.lo, "to": self.hi, "from_text": self.fmt(self.lo), "to_text": self.fmt(self.hi),
            "resolution": self.resolution, "samples": self.samples, "confirm": self.confirm,
            "kernels": self.kernels,
            "started": self.started, "finished": self.finished, "seconds": round(self.seconds, 3),
            "boots": self.measurements if booted(self.knob) else 0, "measured": self.measured,
            "cached": self.cached,
            "complete": self.complete, "stopped": self.stopped, "interrupted": self.interrupted,
            "notes": self.notes, "argv": self.argv, "artifacts": self.artifacts,
            "probes": [{"probe": name,
                        "boundaries": [{"last": point(b.last), "first": point(b.first), "resolved": b.resolved,
                                        "stable": b.stable} for b in self.boundaries(name)],
                        "points": [point(p) for p in pts]} for name, pts in self.points.items()],
        }

    def write(self, path: Path) -> None:
        write_atomically(path, json.dumps(self.to_json(), indent=1) + "\n")


def text(doc: BisectDocument) -> str:
    """The summary on standard output: per probe, the runs of one outcome (from the first to the last
    value measured with it) and each boundary, then the totals."""
    what = "kernels %s" % ", ".join(doc.kernels) if doc.knob == KERNEL else "%s from %s to %s, resolution %s" % (
        doc.knob, doc.fmt(doc.lo), doc.fmt(doc.hi), doc.fmt_resolution())
    lines = ["bisect %s (%s): %s" % (doc.target, doc.backend, what)]
    lines += ["  note: %s" % n for n in doc.notes]
    if doc.knob == KERNEL:  # what each release's guest said it ran
        releases = {p.value: p.kernel for pts in doc.points.values() for p in pts if p.kernel}
        if releases:
            lines.append("  kernels: %s" % ", ".join("%s %s" % (doc.fmt(v), quote(releases[v], 60))
                                                      for v in sorted(releases)))
    width = max([len(doc.fmt(p.value)) for pts in doc.points.values() for p in pts] + [4])
    for probe, pts in doc.points.items():
        bounds = doc.boundaries(probe)
        lines.append("%s: %s, %d points" % (probe, "no change of outcome" if not bounds else
                                            "%d boundar%s" % (len(bounds), "y" if len(bounds) == 1 else "ies"),
                                            len(pts)))
        for r in doc.runs(probe):
            detail = "  (%s)" % quote(r.first.detail, 100) if r.label == r.first.status and r.first.detail else ""
            upto = ".. %s" % doc.fmt(r.last.value) if r.last.value != r.first.value else ""
            lines.append("  %s %s  %s%s" % (doc.fmt(r.first.value).rjust(width), upto.ljust(width + 3), r.label,
                                            detail))
        for b in bounds:
            lines.append("  boundary: last %s (%s), first %s (%s)%s" % (
                doc.fmt(b.last.value), b.last.label, doc.fmt(b.first.value), b.first.label,
                "" if b.resolved else "  [not narrowed to the resolution: the search stopped]"))
            for p in (b.last, b.first):
                if p.seen:
                    tally = ", ".join("%s %d of %d" % (label, n, sum(p.seen.values()))
                                      for label, n in sorted(p.seen.items(), key=lambda kv: -kv[1]))
                    lines.append("    %s at %s: %s" % ("UNSTABLE" if not p.stable else "confirmed",
                                                      doc.fmt(p.value), tally))
    lines.append("%d points measured in %d %s, %d from the cache; %.1fs%s" % (
        doc.measured, doc.measurements, "boots" if booted(doc.knob) else "runs of the simulated kernel", doc.cached,
        doc.seconds, "" if doc.complete else "; INCOMPLETE: %s" % doc.stopped))
    return "\n".join(lines) + "\n"


# -- the search ---------------------------------------------------------------------------------

Measure = Callable[[int, Sequence[str]], Dict[str, Point]]
"""measure(value, probes) -> a point per probe measured at ``value`` (all in one boot). A probe missing
from the answer was not measured: the search stops (``stop()`` says why, else :class:`Unmeasurable`)."""


class Unmeasurable(HarnessError):
    """A point that cannot be measured here (the target's tool is missing): the search stops, keeping
    what it found."""


def sample_values(lo: int, hi: int, resolution: int, samples: int) -> List[int]:
    """``samples`` values from ``lo`` to ``hi`` (both included), evenly spaced on the grid ``lo + k *
    resolution`` (``hi`` itself whether or not it lies on it)."""
    steps = (hi - lo) // resolution
    out = [lo + (steps * i // (samples - 1)) * resolution for i in range(samples - 1)] + [hi]
    return sorted(set(out))


def middle(lo: int, hi: int, resolution: int) -> int:
    """The grid value halfway from ``lo`` to ``hi`` (more than one resolution apart)."""
    return lo + max(1, (hi - lo) // resolution // 2) * resolution


class Search:
    """The points measured so far, per probe; what is left to narrow."""

    def __init__(self, probes: Sequence[str], lo: int, hi: int, resolution: int, samples: int) -> None:
        self.probes = list(probes)
        self.lo, self.hi, self.resolution, self.samples = lo, hi, resolution, samples
        self.points: Dict[str, Dict[int, Point]] = {p: {} for p in probes}

    def sorted_points(self, probe: str) -> List[Point]:
        return [self.points[probe][v] for v in sorted(self.points[probe])]

    def pending(self, probe: str) -> Optional[Tuple[Point, Point]]:
        """The lowest interval of ``probe`` whose ends differ in outcome and lie over one resolution apart."""
        pts = self.sorted_points(probe)
        return next(((a, b) for a, b in zip(pts, pts[1:])
                     if a.label != b.label and b.value - a.value > self.resolution), None)

    def run(self, measure: Measure, stop: Callable[[], Optional[str]],
            show: Optional["Display"] = None) -> Optional[str]:
        """Measure and narrow until every boundary is found. Returns None, or ``stop()``'s reason when it
        stopped the search first; an :class:`Unmeasurable` point rises (what was found stays here)."""
        for value in sample_values(self.lo, self.hi, self.resolution, self.samples):
            todo = [p for p in self.probes if value not in self.points[p]]
            why = self._measure(measure, stop, show, value, todo, None) if todo else None
            if why:
                return why
        for probe in self.probes:
            while True:
                interval = self.pending(probe)
                if interval is None:
                    break
                a, b = interval
                why = self._measure(measure, stop, show, middle(a.value, b.value, self.resolution), [probe],
                                    (a.value, b.value))
                if why:
                    return why
        return None

    def confirm(self, measure: Measure, stop: Callable[[], Optional[str]], times: int,
                show: Optional["Display"] = None) -> Optional[str]:
        """Measure both sides of every boundary ``times`` more times (all the probes that need a value in
        one boot), tallying each point's labels in ``seen``. Returns None, or ``stop()``'s reason."""
        need: Dict[int, List[str]] = {}
        for probe in self.probes:
            pts = self.sorted_points(probe)
            for a, b in zip(pts, pts[1:]):
                if a.label != b.label:
                    for side in (a, b):
                        if probe not in need.setdefault(side.value, []):
                            need[side.value].append(probe)
        for value in sorted(need):
            for _ in range(times):
                why = stop()
                if why:
                    return why
                if show is not None:
                    show.trying(need[value], value, None)
                got = measure(value, need[value])
                why = stop()
                if why:
                    return why
                for p in need[value]:
                    if p not in got:
                        raise Unmeasurable("%s gave no result at %d" % (p, value))
                    point = self.points[p][value]
                    if not point.seen:  # its first measurement counts from the first one again
                        point.seen = {point.label: 1}
                    point.seen[got[p].label] = point.seen.get(got[p].label, 0) + 1
                if show is not None:
                    show.measured(value, {p: got[p] for p in need[value]})
        return None

    def _measure(self, measure: Measure, stop: Callable[[], Optional[str]], show: Optional["Display"],
                 value: int, probes: List[str], interval: Optional[Tuple[int, int]]) -> Optional[str]:
        why = stop()
        if why:
            return why
        if show is not None:
            show.trying(probes, value, interval)
        got = measure(value, probes)
        why = stop()
        if why:  # what was measured while the stop came is not trusted: the guest was being stopped
            return why
        for p in probes:
            if p not in got:
                raise Unmeasurable("%s gave no result at %d" % (p, value))
            self.points[p][value] = got[p]
        if show is not None:
            show.measured(value, {p: got[p] for p in probes})
        return None


# -- what a search shows while it runs ----------------------------------------------------------


class Display:
    """On standard error while a search runs: a line per measurement (each written whole, by one
    ``write``), and on a terminal a live line below them naming the interval being narrowed, about how
    many steps are left, the value being measured and a timer. ``quiet``: nothing."""

    def __init__(self, doc: BisectDocument, stream: Optional[IO[str]], quiet: bool = False) -> None:
        self.doc = doc
        self.stream = stream
        self.quiet = quiet or stream is None
        self.count = 0
        self.now: str = ""
        self.since = time.monotonic()
        self._live: Any = None
        self._console: Any = None

    def __enter__(self) -> "Display":
        if not self.quiet and self.stream is not None and progress.live_terminal(self.stream):
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=self.stream, highlight=False, markup=False, emoji=False)
            self._live = Live(console=self._console, get_renderable=self._render, refresh_per_second=4,
                              transient=True, redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _render(self) -> Any:
        from rich.text import Text

        return Text("%s  %s" % (self.now, progress.elapsed(time.monotonic() - self.since)), style="bold")

    def say(self, line: str) -> None:
        if self.quiet or self.stream is None:
            return
        if self._console is not None:
            self._console.print(line, soft_wrap=True)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def trying(self, probes: Sequence[str], value: int, interval: Optional[Tuple[int, int]]) -> None:
        doc = self.doc
        self.since = time.monotonic()
        where = "sample %s" % doc.fmt(value)
        if interval is not None:
            steps = max(1, ((interval[1] - interval[0]) // doc.resolution - 1).bit_length())
            where = "in %s .. %s (about %d step%s left): %s" % (doc.fmt(interval[0]), doc.fmt(interval[1]), steps,
                                                                "" if steps == 1 else "s", doc.fmt(value))
        self.now = "%s %s" % (",".join(probes), where)
        if self._live is not None:
            self._live.refresh()

    def measured(self, value: int, points: Dict[str, Point]) -> None:
        self.count += 1
        took = max((p.seconds for p in points.values()), default=0.0)
        cached = all(p.cached for p in points.values())
        said = " ".join("%s=%s" % (name, p.label) for name, p in points.items())
        self.say("[%3d] %s  -> %s  %s" % (self.count, self.now, said, "cached" if cached else progress.elapsed(took)))

    def note(self, line: str) -> None:
        self.say("[img] %s" % line)


# -- the cache ------------------------------------------------------------------------------------


def code_digest() -> str:
    """A digest of what runs in targets (the payload's packages, the go probe's source) with the harness's
    version: a changed model makes new points."""
    from importlib import resources

    from harness import __version__, payload
    from harness.probes import go as go_probe

    h = hashlib.sha256(__version__.encode())
    for package in payload.PACKAGES:
        for entry in sorted(resources.files(package).iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".py"):
                h.update(entry.name.encode() + b"\0" + entry.read_bytes())
    source = Path(str(go_probe.SOURCE))
    for f in sorted(source.glob("*")) if source.is_dir() else []:
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def definition(target: Target) -> Dict[str, Any]:
    """What a target is, for a point's key: everything that can change what its probes do (its name,
    description and expectations cannot)."""
    opts = target.options
    options = dataclasses.asdict(opts) if dataclasses.is_dataclass(opts) and not isinstance(opts, type) else repr(opts)
    return {"backend": target.backend, "options": options, "timeout": target.timeout, "grow": target.grow,
            "touch_every": target.touch_every, "rlimit_as": target.rlimit_as, "watchdog": target.watchdog}


class PointCache:
    """Points by the hash of their inputs, one small JSON file each under ``root`` (by default
    ``bisect/`` in the image cache's directory: ``images prune`` leaves it alone, as it has no manifest).
    ``enabled`` False: nothing is read (every point is measured afresh), what is measured is written."""

    def __init__(self, root: Optional[Path] = None, enabled: bool = True) -> None:
        if root is None:
            import images

            root = images.cache_root() / "bisect"
        self.root = Path(root)
        self.enabled = enabled
        self._digest: Optional[str] = None

    def key(self, target: Target, knob: str, value: str, probe: str) -> str:
        if self._digest is None:
            self._digest = code_digest()
        p = target.probe(probe)
        probe_def: Dict[str, Any] = dataclasses.asdict(p) if p is not None else {"name": probe}
        if p is not None and p.host_file and p.program:
            with contextlib.suppress(OSError):
                probe_def["digest"] = hashlib.sha256(Path(p.program).read_bytes()).hexdigest()
        inputs = {"target": definition(target), "knob": knob, "value": value, "probe": probe_def,
                  "code": self._digest, "host_kernel": os.uname().release}
        return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / ("%s.json" % key)

    def get(self, key: str, value: int) -> Optional[Point]:
        if not self.enabled:
            return None
        try:
            d = json.loads(self._path(key).read_text())
            point = Point.from_json(d)
        except (OSError, ValueError, TypeError):  # absent, or a torn or foreign file: measured again
            return None
        point.value, point.cached = value, True
        return point

    def put(self, key: str, point: Point) -> None:
        if not point.cacheable:
            return
        d = dict(point.to_json(), cached=False)
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs the next search time
            write_atomically(self._path(key), json.dumps(d, sort_keys=True) + "\n")


# -- plans: a target, a knob, a range, validated ----------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A search, validated: the knob applies to the target, the range and the resolution make sense."""

    target: Target
    knob: str
    lo: int
    hi: int
    resolution: int
    samples: int
    probes: Tuple[str, ...]
    kernels: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = ()
    confirm: int = 0  # each side of every boundary found, measured this many more times (never from the cache)


def _check_options(target: Target, what: str) -> None:
    check = getattr(target.options, "validate", None)
    problem = check() if check is not None else None
    if problem is not None:
        key, message = problem
        raise UsageError("%s: target %s %s: %s" % (what, target.name, key, message))


def apply(target: Target, knob: str, value: int, kernels: Sequence[str] = ()) -> Target:
    """``target`` with the knob at ``value`` (for kernels: the kernel at that position), its expectations
    dropped (a search observes; it judges nothing)."""
    t = dataclasses.replace(target, expect=())
    if knob in ("memory", KERNEL) and t.backend == "qemu":
        # Each value is another machine, booted once (the point cache keeps its answer): a saved guest
        # would only cost a save, and its warm files would take some of the memory being searched.
        t = dataclasses.replace(t, options=dataclasses.replace(t.options, snapshot=False))
    if knob == "reserved_va":
        return dataclasses.replace(t, options=dataclasses.replace(t.options, reserved_va=Size(value)))
    if knob == "memory":
        return dataclasses.replace(t, options=dataclasses.replace(t.options, memory=Size(value)))
    if knob == "rlimit_as":
        return dataclasses.replace(t, rlimit_as=Size(value))
    if knob == KERNEL:
        name = kernels[value]
        if t.backend == "qemu" and name.startswith("linux-"):
            return dataclasses.replace(t, options=dataclasses.replace(t.options, kernel_package=name))
        return dataclasses.replace(t, options=dataclasses.replace(t.options, suite=name))
    return t  # task_size: the target is not booted; the value goes to the simulated kernel


def plan(target: Target, *, knob: Optional[str] = None, lo: Optional[int] = None, hi: Optional[int] = None,
         kernels: Optional[Sequence[str]] = None, resolution: Optional[int] = None, samples: int = DEFAULT_SAMPLES,
         probes: Optional[Sequence[str]] = None, probes_given: bool = False, confirm: int = 0) -> Plan:
    """Check a search before anything runs; a UsageError (one line) for what does not fit.

    Either ``knob`` with ``lo`` and ``hi``, or ``kernels``. ``probes``: names (None: the target's own);
    ``probes_given``: the user named them (then a probe a ``task_size`` search cannot run is an error,
    rather than left out)."""
    from harness import runner

    if (knob is None) == (kernels is None):
        raise UsageError("give either --vary KNOB --from A --to B or --kernels K1,K2,...; knobs: %s"
                         % ", ".join(KNOBS))
    if not MAX_CONFIRM >= confirm >= 0:
        raise UsageError("--confirm: expected 0 to %d more measurements of each side of a boundary, got %d"
                         % (MAX_CONFIRM, confirm))
    if not MAX_SAMPLES >= samples >= 2:
        raise UsageError("--samples: expected 2 to %d points (the range's ends included), got %d"
                         % (MAX_SAMPLES, samples))
    names = runner.policies_for(target, probes)
    notes: List[str] = []
    if knob is not None:
        if knob not in KNOBS:
            raise UsageError("unknown knob %r; knobs: %s" % (knob, ", ".join(KNOBS)))
        k = KNOBS[knob]
        if k.backends and target.backend not in k.backends:
            raise UsageError("--vary %s: %s is a knob of %s targets, and %s is a %s target" % (
                knob, k.what, " and ".join(k.backends), target.name, target.backend))
        if lo is None or hi is None:
            raise UsageError("--vary %s needs --from and --to" % knob)
        if lo >= hi:
            raise UsageError("--from must be below --to, got %s and %s" % (lo, hi))
        res = k.resolution if resolution is None else resolution
        if res > hi - lo:
            raise UsageError("--resolution %d is wider than the range (%d)" % (res, hi - lo))
        if knob == "memory" and (res % MiB or lo % MiB or hi % MiB):
            raise UsageError("--vary memory: guests take whole MiB: give --from, --to and --resolution in M")
        if not k.booted:
            real = [n for n in names if getattr(target.probe(n), "kind", None) != "model"]
            if real and probes_given:
                raise UsageError("--vary task_size runs the model on the simulated kernel; %s %s a real "
                                 "runtime that needs a target (vary reserved_va, rlimit_as or memory instead)"
                                 % (", ".join(real), "is" if len(real) == 1 else "are"))
            if real:
                notes.append("%s left out: task_size runs the model's policies only" % ", ".join(real))
            names = [n for n in names if n not in real]
        else:
            for value, what in ((lo, "--from"), (hi, "--to")):
                _check_options(apply(target, knob, value), what)
        kernel_list: Tuple[str, ...] = ()
    else:
        if target.backend not in KERNEL_BACKENDS:
            raise UsageError("--kernels: %s is a %s target; kernels are a knob of %s targets" % (
                target.name, target.backend, " and ".join(KERNEL_BACKENDS)))
        if resolution is not None or lo is not None or hi is not None:
            raise UsageError("--kernels takes no --from, --to or --resolution: the list is the range")
        kernel_list = tuple(kernels or ())
        if len(kernel_list) < 2:
            raise UsageError("--kernels: expected at least two, comma-separated, like bookworm,trixie")
        for name in kernel_list:
            if not DEBIAN_NAME_RE.fullmatch(name):
                raise UsageError("--kernels: expected Debian releases or kernel package names, like bookworm or "
                                 "linux-image-amd64, got %r" % quote(name))
            if target.backend == "uml" and name.startswith("linux-"):
                raise UsageError("--kernels: a uml target takes Debian releases (its linux.uml comes from the "
                                 "release's user-mode-linux), got the package %s" % name)
        if len(set(kernel_list)) != len(kernel_list):
            raise UsageError("--kernels: a kernel is named twice")
        for i in range(len(kernel_list)):
            _check_options(apply(target, KERNEL, i, kernel_list), "--kernels %s" % kernel_list[i])
        knob, lo, hi, res = KERNEL, 0, len(kernel_list) - 1, 1
    if not names:
        raise UsageError("no probe to search on %s: --probe names none it can run" % target.name)
    return Plan(target, knob, lo, hi, res, samples, tuple(names), kernel_list, tuple(notes), confirm)


# -- measuring points ---------------------------------------------------------------------------


def simulated_spec(target: Target, task_size: int) -> str:
    """The simulated kernel's spec for ``target`` at ``task_size``: its architecture's machine (go-modern's
    hints depend on it) and pointer size, and its RLIMIT_AS."""
    from harness import arches

    arch = getattr(target.options, "arch", None)
    table = arches.BY_NAME if target.backend == "qemu" else arches.BY_DEBIAN
    rec = table.get(arch) if isinstance(arch, str) else None
    rec = rec or arches.BY_NAME.get(arch or "") or arches.BY_DEBIAN.get(arch or "") or arches.host()
    spec = "task-size=%d,machine=%s" % (task_size, rec.uname)
    if rec.name == "i386":
        spec += ",pointer-bits=32"
    if target.rlimit_as is not None:
        spec += ",rlimit-as=%d" % target.rlimit_as
    return spec


def simulated_point(target: Target, probe: str, value: int) -> Point:
    """One model policy on the simulated kernel, in this process (milliseconds)."""
    from allocator.probe import internal_error, run_policy
    from allocator.runtime import DEFAULT_GROW, DEFAULT_TOUCH_EVERY

    began = time.monotonic()
    try:
        doc = run_policy(probe, simulate=simulated_spec(target, value), grow=target.grow or DEFAULT_GROW,
                         touch_every=DEFAULT_TOUCH_EVERY if target.touch_every is None else target.touch_every,
                         trace=False)
    except Exception as e:  # noqa: BLE001 - a model bug at one value is that point's error, not the search's end
        return Point(value, None, None, "error", internal_error(e), time.monotonic() - began)
    return Point(value, doc.get("outcome"), doc.get("crash"), "observed", None, time.monotonic() - began,
                 kernel="simulated")


def booted(knob: str) -> bool:
    """Whether the knob's points boot the target (all but ``task_size``)."""
    k = KNOBS.get(knob)
    return k is None or k.booted


def booted_measure(plan_: Plan, artifacts: Path, display: Optional[Display]) -> Measure:
    """Boot the target with the knob at a value, all the probes asked in one boot, through the runner (its
    image builds, deadlines, registry and cleanup); build lines go to the display."""
    from harness import runner

    def progress_event(event: str, target: Target, message: str, records: Sequence[Any]) -> None:
        if event == "build" and display is not None:
            display.note(message)

    def measure(value: int, probes: Sequence[str]) -> Dict[str, Point]:
        target = apply(plan_.target, plan_.knob, value, plan_.kernels)
        doc = runner.run([target], policies=list(probes), artifacts=artifacts, progress=progress_event)
        if doc.interrupted:
            raise Stopped(doc.interrupted)
        out: Dict[str, Point] = {}
        for r in doc.records:
            if r.status.value == "skip":
                raise Unmeasurable("%s cannot run here: %s" % (target.name, r.detail or "skipped"))
            out[r.policy] = Point(value, r.outcome, r.crash, r.status.value, r.detail, r.duration_s, log=r.log,
                                  kernel=r.kernel)
        return out

    return measure


def simulated_measure(plan_: Plan) -> Measure:
    def measure(value: int, probes: Sequence[str]) -> Dict[str, Point]:
        return {p: simulated_point(plan_.target, p, value) for p in probes}

    return measure


def cached_measure(plan_: Plan, measure: Measure, cache: Optional[PointCache], doc: BisectDocument) -> Measure:
    """``measure`` behind the point cache: at each value only the probes not cached are measured (and
    then cached); the document counts both."""

    def value_text(value: int) -> str:
        return plan_.kernels[value] if plan_.knob == KERNEL else str(value)

    def wrapped(value: int, probes: Sequence[str]) -> Dict[str, Point]:
        keys: Dict[str, str] = {}
        out: Dict[str, Point] = {}
        if cache is not None:
            target = apply(plan_.target, plan_.knob, value, plan_.kernels)
            keys = {p: cache.key(target, plan_.knob, value_text(value), p) for p in probes}
            for p in probes:
                hit = cache.get(keys[p], value)
                if hit is not None:
                    out[p] = hit
                    doc.cached += 1
        todo = [p for p in probes if p not in out]
        if todo:
            got = measure(value, todo)
            doc.measurements += 1
            doc.measured += len(got)
            for p, point in got.items():
                if cache is not None and p in keys:
                    cache.put(keys[p], point)
            out.update(got)
        return out

    return wrapped


def counted_measure(measure: Measure, doc: BisectDocument) -> Measure:
    """``measure``, counted in the document (boots, points), never cached."""

    def wrapped(value: int, probes: Sequence[str]) -> Dict[str, Point]:
        got = measure(value, probes)
        doc.measurements += 1
        doc.measured += len(got)
        return got

    return wrapped


class Stopped(Exception):
    """A measurement was interrupted: the search ends, its reason the document's ``stopped``."""


def search(plan_: Plan, *, artifacts: Path, cache: Optional[PointCache] = None,
           stream: Optional[IO[str]] = None, quiet: bool = False, argv: Sequence[str] = (),
           stop: Optional[Callable[[], Optional[str]]] = None, measure: Optional[Measure] = None) -> BisectDocument:
    """Run the search and return what it found, also when it ended early: ``stop()`` (by default the
    harness's stop request, which the CLI's signal handler makes) or a KeyboardInterrupt between points
    (``interrupted``), or a point that cannot be measured here (``stopped`` alone says why).

    ``measure``: the point function (by default a boot through the runner, or the simulated kernel for
    ``task_size``); the cache sits in front of it either way. A booted search whose backend cannot run
    here is refused before it starts (a HarnessError naming the tool and how to install it)."""
    from harness import backends, proc
    from harness.runner import now_iso

    stop = stop or proc.stopping
    is_booted = booted(plan_.knob)
    if measure is None and is_booted:
        problem = backends.get(plan_.target.backend)(plan_.target).missing()
        if problem is not None:
            raise HarnessError("cannot search on %s here: %s" % (plan_.target.name, problem))
    doc = BisectDocument(plan_.target.name, plan_.target.backend, plan_.knob, plan_.lo, plan_.hi,
                         plan_.resolution, plan_.samples, {p: [] for p in plan_.probes}, list(plan_.kernels),
                         started=now_iso(), notes=list(plan_.notes), argv=list(argv),
                         artifacts=str(artifacts) if is_booted else None, confirm=plan_.confirm)
    began = time.monotonic()
    state = Search(plan_.probes, plan_.lo, plan_.hi, plan_.resolution, plan_.samples)
    display = Display(doc, stream, quiet)
    try:
        with display:
            base = measure or (booted_measure(plan_, artifacts, display) if is_booted else simulated_measure(plan_))
            why = state.run(cached_measure(plan_, base, cache, doc), stop, display)
            if not why and plan_.confirm:  # afresh: a cached point is the same one measurement again
                why = state.confirm(counted_measure(base, doc), stop, plan_.confirm, display)
        if why:
            doc.stopped, doc.interrupted = "interrupted by %s" % why, True
    except Stopped as e:
        doc.stopped, doc.interrupted = str(e), True
    except KeyboardInterrupt:
        doc.stopped, doc.interrupted = "interrupted", True
    except Unmeasurable as e:
        doc.stopped = str(e)
    finally:
        doc.points = {p: state.sorted_points(p) for p in plan_.probes}
        doc.seconds = time.monotonic() - began
        doc.finished = now_iso()
    return doc
