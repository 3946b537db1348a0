"""The one module that starts processes: argv lists, a new session each, deadlines, escalation.

Every child runs in its own session (so its whole process group can be
signalled), its output is decoded with ``errors="backslashreplace"`` and copied
line by line to a log that starts with the command as ``$ shlex.join(argv)``,
and stopping escalates: SIGTERM to the group, a grace period, then SIGKILL.
Live children are tracked so an interrupted run can stop them all.

A child's output is untrusted (a guest may flood its console): at most
``OUTPUT_HEAD`` of its beginning and ``OUTPUT_TAIL`` of its end are kept, in the
log and in memory, with one line saying how much was dropped between them; the
end matters most, since the result frames come last. A line longer than
``LINE_MAX`` is cut.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple

LineWatcher = Callable[[str], Optional[str]]
"""Called with each output line; returning a reason (e.g. "panic") asks the process to stop."""

MiB = 1 << 20
OUTPUT_HEAD = 4 * MiB  # kept from the beginning of a child's output (boot messages)
OUTPUT_TAIL = 4 * MiB  # and from its end (the result frames, the last words before a hang)
LINE_MAX = 1 * MiB  # a result frame's JSON is one line of tens of KiB
_CHUNK = 64 * 1024
# What a kept line costs beyond its characters (a str object's overhead), so a flood of empty lines is
# bounded in memory as well as one of long lines.
_LINE_COST = 64

_live: Dict[int, "subprocess.Popen[bytes]"] = {}
_live_lock = threading.Lock()


@dataclass
class Completed:
    argv: List[str]
    returncode: Optional[int]
    duration_s: float
    output: str
    timed_out: bool = False
    stopped: Optional[str] = None  # why the harness stopped it: "timeout", a watcher's reason, "interrupt"
    started: bool = True
    error: Optional[str] = None  # the process could not be started at all
    lines: List[str] = field(default_factory=list)


def which(tool: str) -> Optional[str]:
    return shutil.which(tool)


def _signal_group(proc: "subprocess.Popen[bytes]", sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(proc: "subprocess.Popen[bytes]", grace: float = 2.0) -> None:
    """SIGTERM the process group, wait ``grace`` seconds, then SIGKILL it. Safe to call twice."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Whatever else is left in the group (helpers that ignore SIGTERM) goes too.
    _signal_group(proc, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process in D state
        pass


def stop_all(grace: float = 1.0) -> int:
    """Stop every child still running (used on SIGINT/SIGTERM). Returns how many there were."""
    with _live_lock:
        procs = list(_live.values())
    for p in procs:
        stop(p, grace)
    return len(procs)


def live_pids() -> List[int]:
    with _live_lock:
        return list(_live)


class Running:
    """A started child: its output streams to the log (and to ``lines``) on a reader thread.

    Kept: the first ``OUTPUT_HEAD`` (written to the log as it comes) and the last
    ``OUTPUT_TAIL`` (a ring, written to the log when the output ends, after a line
    saying what was dropped). Every line, kept or not, is shown to the watcher and
    to :meth:`wait_for`.
    """

    def __init__(self, argv: List[str], popen: "subprocess.Popen[bytes]", log: Optional[IO[str]],
                 watch: Optional[LineWatcher], capture: bool) -> None:
        self.argv = argv
        self.popen = popen
        self.log = log
        self.watch = watch
        self.capture = capture
        self.started_at = time.monotonic()
        self._head: List[str] = []
        self._tail: Deque[str] = deque()
        self._head_cost = self._tail_cost = 0
        self._dropped_lines = self._dropped_chars = 0
        self._waiters: List[Tuple[Callable[[str], bool], List[str]]] = []
        self.stop_reason: Optional[str] = None
        self.stop_requested_at: Optional[float] = None
        self.last_output = self.started_at
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="proc-reader-%d" % popen.pid, daemon=True)
        self._reader.start()

    @property
    def lines(self) -> List[str]:
        """The output kept so far (head, the dropped-lines notice if any, tail); [] without capture."""
        with self._cond:
            return self._kept() if self.capture else []

    def _kept(self) -> List[str]:
        out = list(self._head)
        if self._dropped_lines:
            out.append(self._gap())
        out.extend(self._tail)
        return out

    def _gap(self) -> str:
        return ("[harness] output capped: %d lines (%d bytes) dropped here; the first %d MiB and the last %d MiB "
                "are kept" % (self._dropped_lines, self._dropped_chars, OUTPUT_HEAD // MiB, OUTPUT_TAIL // MiB))

    def _read(self) -> None:
        stream = self.popen.stdout
        assert stream is not None
        parts: List[bytes] = []  # a line longer than one chunk, so far
        size = cut = 0
        while True:
            # A bounded read: one endless line must not become one endless bytes object.
            chunk = stream.readline(_CHUNK)
            ended = chunk.endswith(b"\n")
            body = chunk[:-1] if ended else chunk
            keep = body[: max(0, LINE_MAX - size)]
            if keep:
                parts.append(keep)
            size += len(keep)
            cut += len(body) - len(keep)
            if chunk and not ended:
                continue
            if chunk or parts or cut:
                self._take(b"".join(parts), cut)
                parts, size, cut = [], 0, 0
            if not chunk:
                break
        with self._cond:
            if self.log and not self.log.closed:
                if self._dropped_lines:
                    self.log.write(self._gap() + "\n")
                    self.log.writelines(line + "\n" for line in self._tail)
                self.log.flush()
            self._cond.notify_all()

    def _take(self, raw: bytes, cut: int) -> None:
        """One line of output: shown to the watcher and the waiters, then kept in the head or the tail."""
        line = raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
        if cut:
            line += " [harness: %d bytes of this line cut]" % cut
        with self._cond:
            self.last_output = time.monotonic()
            if self.watch is not None and self.stop_reason is None:
                why = self.watch(line)
                if why:
                    self.stop_reason, self.stop_requested_at = why, time.monotonic()
            for predicate, found in self._waiters:
                if not found and predicate(line):
                    found.append(line)
            cost = len(line) + _LINE_COST
            if not self._tail and self._head_cost + cost <= OUTPUT_HEAD:
                self._head.append(line)
                self._head_cost += cost
                if self.log and not self.log.closed:
                    self.log.write(line + "\n")
                    self.log.flush()
            else:
                self._tail.append(line)
                self._tail_cost += cost
                while self._tail_cost > OUTPUT_TAIL and len(self._tail) > 1:
                    old = self._tail.popleft()
                    self._tail_cost -= len(old) + _LINE_COST
                    self._dropped_lines += 1
                    self._dropped_chars += len(old) + 1
            self._cond.notify_all()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> Optional[str]:
        """The first line (seen so far or later) for which ``predicate`` holds, or None at the deadline
        or when the process ends first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = next((line for line in self._kept() if predicate(line)), None)
            if seen is not None:
                return seen
            # The reader checks every later line, also those the output cap drops.
            waiter: Tuple[Callable[[str], bool], List[str]] = (predicate, [])
            self._waiters.append(waiter)
            try:
                while not waiter[1]:
                    left = deadline - time.monotonic()
                    if left <= 0 or (not self.alive() and not self._reader.is_alive()):
                        return None
                    self._cond.wait(min(left, 0.5))
                return waiter[1][0]
            finally:
                self._waiters.remove(waiter)

    def finish(self, grace: float = 2.0) -> None:
        """Stop the group (safe if it already ended) and forget the child."""
        stop(self.popen, grace)
        self._reap()

    def _reap(self) -> None:
        # The group may hold helpers after the leader exits (UML's threads).
        _signal_group(self.popen, signal.SIGKILL)
        with _live_lock:
            _live.pop(self.popen.pid, None)
        self._reader.join(timeout=5)


def start(
    argv: Sequence[str],
    *,
    log_path: Optional[Path] = None,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[Path] = None,
    watch: Optional[LineWatcher] = None,
    user: Optional[int] = None,
    group: Optional[int] = None,
    capture: bool = True,
) -> "Running | Completed":
    """Start ``argv`` in a new session; a Completed (``started=False``) if it could not be started."""
    argv = [str(a) for a in argv]
    log: Optional[IO[str]] = None
    if log_path is not None:
        log = open(log_path, "a", encoding="utf-8", errors="backslashreplace")
        log.write("$ %s\n" % shlex.join(argv))
        log.flush()
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            user=user,
            group=group,
            extra_groups=[] if group is not None else None,
        )
    except OSError as e:
        msg = "cannot start %s: %s" % (argv[0], e.strerror or e)
        if log:
            log.write(msg + "\n")
            log.close()
        return Completed(argv, None, 0.0, "", started=False, error=msg)
    with _live_lock:
        _live[popen.pid] = popen
    return Running(argv, popen, log, watch, capture)


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    log_path: Optional[Path] = None,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[Path] = None,
    watch: Optional[LineWatcher] = None,
    after_stop_request: float = 3.0,
    grace: float = 2.0,
    user: Optional[int] = None,
    group: Optional[int] = None,
    capture: bool = True,
    silence: Optional[float] = None,
) -> Completed:
    """Run ``argv`` with a deadline, streaming its output to ``log_path``.

    When ``watch`` returns a reason for a line, the process gets
    ``after_stop_request`` seconds to end by itself (a kernel that panicked may
    still be printing), then is stopped. Output keeps being collected. With
    ``silence``, a process that prints nothing for that many seconds is stopped
    as "silent" (a watchdog for guests that hang without a word).
    """
    began = time.monotonic()
    r = start(argv, log_path=log_path, env=env, cwd=cwd, watch=watch, user=user, group=group, capture=capture)
    if isinstance(r, Completed):
        return r
    deadline = began + timeout
    timed_out = False
    stopped: Optional[str] = None
    try:
        try:
            while r.popen.poll() is None:
                now = time.monotonic()
                if now >= deadline:
                    timed_out, stopped = True, "timeout"
                    stop(r.popen, grace)
                    break
                if r.stop_requested_at is not None and now >= r.stop_requested_at + after_stop_request:
                    stopped = r.stop_reason
                    stop(r.popen, grace)
                    break
                if silence is not None and now - r.last_output >= silence:
                    stopped = "silent"
                    stop(r.popen, grace)
                    break
                try:
                    r.popen.wait(timeout=min(0.05, max(0.0, deadline - now)))
                except subprocess.TimeoutExpired:
                    pass
        except BaseException:
            stop(r.popen, grace)
            raise
        finally:
            r._reap()
        if stopped is None and r.stop_reason:
            stopped = r.stop_reason
        if r.log:
            if timed_out:
                r.log.write("[harness] deadline of %.1fs reached: process group stopped\n" % timeout)
            elif stopped == "silent":
                r.log.write("[harness] no output for %.1fs: process group stopped (watchdog)\n" % (silence or 0))
            elif stopped:
                r.log.write("[harness] stopped: %s\n" % stopped)
        lines = r.lines
        return Completed(r.argv, r.popen.returncode, time.monotonic() - began, "\n".join(lines),
                         timed_out=timed_out, stopped=stopped, lines=lines)
    finally:
        if r.log:
            with r._cond:  # a reader still draining a leftover writer checks .closed under this lock
                r.log.close()
