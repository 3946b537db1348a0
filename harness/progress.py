"""What a run shows while it runs (the runner's ``progress`` callback), on standard error.

On a terminal: a live panel (rich) of the targets in flight, each with its phase and a timer that keeps
counting while a guest boots, redrawn four times a second; each target's result is printed above it as
it arrives, and the panel goes when the run ends (the results table follows). Anywhere else (a CI log,
a file, a pipe) or with ``TERM=dumb``: plain lines, each written whole by one ``write`` under one lock,
so lines from parallel targets never merge, with a line every 30 s naming what is still in flight when
nothing else was said. Columns keep their width either way: the target names' width is the run's
longest, a status is one word of at most eight letters.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence

from harness.model import Record, Status, Target, worst

Progress = Callable[[str, Target, str, Sequence[Record]], None]  # harness.runner.Progress
HEARTBEAT = 30.0
"""Seconds of silence after which plain output names the targets still in flight."""
STATUS_WIDTH = max(len(s.value) for s in Status)


def elapsed(seconds: float) -> str:
    """``4.2s`` under a minute, then ``3m05s``: a timer's text."""
    if seconds < 60:
        return "%.1fs" % seconds
    return "%dm%02ds" % (seconds // 60, seconds % 60)


@dataclass
class Flight:
    """A target in flight: its phase and since when (the run's clock)."""

    target: Target
    started: float
    phase: str = "start"
    phase_started: float = 0.0
    note: str = ""  # the last line of its image build


class Board:
    """The run as the progress callback saw it: the targets in flight and how many are done. Events come
    from the targets' threads, a live panel reads it from its own: everything under one lock."""

    def __init__(self, targets: Sequence[Target], clock: Callable[[], float] = time.monotonic) -> None:
        self.total = len(targets)
        self.width = max([len(t.name) for t in targets] + [6])
        self.tag_width = max(5, 2 * len(str(self.total)) + 1)  # "[ .. ]" and "[12/12]" alike
        self.clock = clock
        self.began = clock()
        self.done = 0
        self.flights: Dict[str, Flight] = {}
        self.lock = threading.Lock()

    def tag(self, text: str) -> str:
        """A line's first column: ``[ .. ]``, ``[ img ]``, ``[ 3/12]``, all of one width."""
        return "[%s]" % text.center(self.tag_width)

    def event(self, event: str, target: Target, message: str, records: Sequence[Record]) -> Optional[str]:
        """Record an event; the line it says, if any: a start, the boot after images that took a while,
        an image build's line, a result."""
        now = self.clock()
        with self.lock:
            name = target.name.ljust(self.width)
            if event == "start":
                self.flights[target.name] = Flight(target, now, "start", now)
                return "%s %s %s %s, boot deadline %.0fs" % (self.tag(".."), name, "start".ljust(STATUS_WIDTH),
                                                             target.backend, target.timeout)
            flight = self.flights.get(target.name)
            if event == "phase" and flight is not None:
                took = now - flight.phase_started
                flight.phase, flight.phase_started, flight.note = message, now, ""
                if message != "boot" or took < 1.0:
                    return None  # start said it: only a boot after images that took time is news
                return "%s %s %s images ready after %s" % (self.tag(".."), name, "boot".ljust(STATUS_WIDTH),
                                                           elapsed(took))
            if event == "build":
                if flight is not None:
                    flight.note = message
                return "%s %s %s" % (self.tag("img"), name, message)
            if event == "done":
                self.done += 1
                self.flights.pop(target.name, None)
                took = now - flight.started if flight is not None else max((r.duration_s for r in records),
                                                                            default=0.0)
                count = "%*d/%d" % (len(str(self.total)), self.done, self.total)
                return "%s %s %s %7s  %s" % (self.tag(count), name,
                                             worst(r.status for r in records).value.ljust(STATUS_WIDTH),
                                             elapsed(took), outcomes(records))
            return None

    def in_flight(self) -> List[Flight]:
        with self.lock:
            return sorted(self.flights.values(), key=lambda f: f.started)

    def heartbeat(self) -> Optional[str]:
        """``[ ..  ] 1m30s: in flight: uml (boot 12.0s), ...``, or None when nothing is."""
        flights = self.in_flight()
        if not flights:
            return None
        now = self.clock()
        return "%s %s: %d of %d done; in flight: %s" % (
            self.tag(".."), elapsed(now - self.began), self.done, self.total,
            ", ".join("%s (%s %s)" % (f.target.name, f.phase, elapsed(now - f.phase_started)) for f in flights))


def outcomes(records: Sequence[Record]) -> str:
    """``go-2012=fallback-32bit go-2012-pre=crash[fail]``: each policy's outcome, with its status when
    that failed (with no outcome, the status alone: ``go-2012=timeout``)."""
    out = []
    for r in records:
        text = "%s=%s" % (r.policy, r.outcome or r.status.value)
        if r.outcome and r.status in (Status.FAIL, Status.DISAGREE, Status.ERROR, Status.TIMEOUT, Status.PANIC):
            text += "[%s]" % r.status.value
        out.append(text)
    return " ".join(out)


class Plain:
    """Plain lines on ``stream``: one ``write`` of a whole line each, under a lock, then a flush; a
    heartbeat line after ``HEARTBEAT`` seconds of silence while targets are in flight."""

    def __init__(self, board: Board, stream: IO[str], heartbeat: float = HEARTBEAT) -> None:
        self.board = board
        self.stream = stream
        self.lock = threading.Lock()
        self.heartbeat = heartbeat
        self.last = board.clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="progress-heartbeat", daemon=True)

    def say(self, line: str) -> None:
        with self.lock:
            self.stream.write(line + "\n")  # one write: a line from another thread cannot land inside it
            self.stream.flush()
            self.last = self.board.clock()

    def __call__(self, event: str, target: Target, message: str, records: Sequence[Record]) -> None:
        line = self.board.event(event, target, message, records)
        if line is not None:
            self.say(line)

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.heartbeat / 4)):
            if self.board.clock() - self.last >= self.heartbeat:
                line = self.board.heartbeat()
                if line is None:
                    self.last = self.board.clock()
                else:
                    self.say(line)

    def __enter__(self) -> "Plain":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)


class Live:
    """The terminal's live panel (rich): the targets in flight with phase, timer and the last image-build
    line, under a line of totals; results, image-build lines and phase changes printed above it."""

    def __init__(self, board: Board, stream: IO[str]) -> None:
        from rich.console import Console
        from rich.live import Live as RichLive

        self.board = board
        self.console = Console(file=stream, highlight=False, markup=False, emoji=False)
        self.live = RichLive(console=self.console, get_renderable=self.render, refresh_per_second=4,
                             transient=True, redirect_stdout=True, redirect_stderr=True)

    def render(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        now = self.board.clock()
        flights = self.board.in_flight()
        table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
        table.add_column("target", no_wrap=True, style="bold")
        table.add_column("phase", no_wrap=True, style="cyan")
        table.add_column("time", no_wrap=True, justify="right")
        table.add_column("note", no_wrap=True, overflow="ellipsis", style="dim")
        for f in flights:
            table.add_row(f.target.name, f.phase, elapsed(now - f.started), f.note)
        head = Text("%s  %d of %d done, %d in flight" % (elapsed(now - self.board.began), self.board.done,
                                                         self.board.total, len(flights)), style="bold")
        from rich.console import Group

        return Group(head, table)

    def __call__(self, event: str, target: Target, message: str, records: Sequence[Record]) -> None:
        line = self.board.event(event, target, message, records)
        if line is not None:
            from rich.text import Text

            style = ""
            if event == "done":
                status = worst(r.status for r in records)
                style = {Status.PASS: "green", Status.OBSERVED: "cyan", Status.SKIP: "dim"}.get(status, "bold red")
            self.console.print(Text(line, style=style), soft_wrap=True)  # Console locks: lines never merge
        self.live.refresh()  # the panel as it is now, not as at the last tick

    def __enter__(self) -> "Live":
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()


def live_terminal(stream: IO[str]) -> bool:
    """Whether ``stream`` is a terminal a live panel can redraw (not ``TERM=dumb``)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # closed, or no file at all
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


@contextlib.contextmanager
def shown(targets: Sequence[Target], stream: IO[str], quiet: bool = False) -> Iterator[Optional[Progress]]:
    """The run's progress callback for the time of the ``with``: a live panel when ``stream`` is a
    terminal, else plain lines; None when ``quiet``."""
    if quiet:
        yield None
        return
    board = Board(targets)
    display = Live(board, stream) if live_terminal(stream) else Plain(board, stream)
    with display:
        yield display
