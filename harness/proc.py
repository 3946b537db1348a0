"""The one module that starts processes: argv lists, a new session each, deadlines, escalation.

Every child runs in its own session (so its whole process group can be
signalled), its output is decoded with ``errors="backslashreplace"`` and copied
line by line to a log that starts with the command as ``$ shlex.join(argv)``,
and stopping escalates: SIGTERM to the group, a grace period, then SIGKILL.
A child's output is untrusted (a guest may flood its console): at most
``OUTPUT_HEAD`` of its beginning and ``OUTPUT_TAIL`` of its end are kept, in the
log and in memory, with one line saying how much was dropped between them; the
end matters most, since the result frames come last. A line longer than
``LINE_MAX`` is cut.

Lifetime: every child is forked by one long-lived thread with
``PR_SET_PDEATHSIG(SIGKILL)``, so it dies with the harness (``kill -9``
included), and is written into the run registry (pid and start time) before
anyone waits for it; its environment carries ``ARENA_HARNESS_RUN=<run id>``.
Live children are tracked so an interrupted run can stop them all: after
:func:`request_stop` (safe in a signal handler) no new child starts, every
running one is stopped, and the stoppers registered with :func:`stopper` (a
container's kill, say) are called.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import queue
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar

from harness import registry

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
_owner: Dict[int, object] = {}  # pid -> the run registry's recording it was started under (None: none)
_live_lock = threading.Lock()

_stop: List[str] = []
"""Why the harness is stopping (the first entry counts). Appended by signal handlers, so no lock: a
handler runs between two bytecodes of the main thread, which may hold any lock at that moment."""
_local = threading.local()
_stoppers: List[Callable[[], None]] = []
_stoppers_lock = threading.Lock()
_T = TypeVar("_T")


def request_stop(reason: str) -> None:
    """Ask every wait of this module to end and every child to stop (safe to call from a signal handler)."""
    _stop.append(reason)


def stopping() -> Optional[str]:
    """The first reason the harness, or this thread's run (:func:`scope`), was asked to stop; or None."""
    if _stop:
        return _stop[0]
    mine: Optional[List[str]] = getattr(_local, "reasons", None)
    return mine[0] if mine else None


def clear_stop() -> None:
    """Allow new children again (a new run in the same process, after an interrupted one)."""
    del _stop[:]


@contextlib.contextmanager
def scope(reasons: List[str]) -> Iterator[None]:
    """In this thread, once ``reasons`` is not empty, waits end and no child starts: a run's own stop,
    which also holds for a thread still busy after its run returned, whatever the process does next."""
    _local.reasons = reasons
    try:
        yield
    finally:
        _local.reasons = None


@contextlib.contextmanager
def stopper(stop: Callable[[], None]) -> Iterator[None]:
    """Inside the block, a stop request also calls ``stop`` (at once, if one came already): for waits
    this module cannot end by itself, such as a container's."""
    with _stoppers_lock:
        _stoppers.append(stop)
    try:
        if stopping():
            stop()
        yield
    finally:
        with _stoppers_lock:
            _stoppers.remove(stop)


# -- the lifetime of children ---------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def _die_with(parent: int) -> Callable[[], None]:
    """The child's last step before exec: SIGKILL when the forking thread ends. It runs after the
    child's setsid and setreuid (which would clear the setting), calls only a prebuilt ctypes function
    and getppid (no import, no lock another thread may have held at fork time), and leaves at once if
    the harness died before the prctl took effect."""

    def arm() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(127)

    return arm


class _Spawner:
    """The one thread that forks every child.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not
    the process: children forked by a runner's worker thread would be killed as
    soon as that worker finished its target. This thread lives as long as the
    process (a daemon, never joined), so the signal means exactly "the harness
    is gone". Forking from one thread also keeps the registry's order of starts.
    """

    def __init__(self) -> None:
        self._jobs: "queue.SimpleQueue[Tuple[Callable[[], Any], Future[Any]]]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._owner = 0  # the pid that started the thread: a forked copy of the harness needs its own
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], _T]) -> _T:
        with self._lock:
            if self._thread is None or self._owner != os.getpid():
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._serve, name="proc-spawner", daemon=True)
                self._owner = os.getpid()
                self._thread.start()
        if threading.current_thread() is self._thread:
            return fn()
        done: "Future[_T]" = Future()
        self._jobs.put((fn, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            fn, done = self._jobs.get()
            try:
                done.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller, which raises it
                done.set_exception(e)


_spawner = _Spawner()


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
    forced: bool = False  # the harness ended it (a stop request it did not end by itself after, a deadline, ...)


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


_ALL = object()


def stop_all(grace: float = 1.0, reason: Optional[str] = "interrupt", owner: object = _ALL) -> int:
    """Stop every child still running, all at once: a process-wide stop request (unless ``reason`` is
    None: the caller stopped its own :func:`scope`), the stoppers, SIGTERM to every group, ``grace``
    seconds shared by all, SIGKILL. With ``owner`` (a run registry recording), only the children started
    under it: a run that ends stops its own, never a pytest session's booted target beside it. Returns
    how many children there were."""
    with _live_lock:  # start() checks under this lock: no child can slip past the list below
        if reason is not None and not _stop:
            request_stop(reason)
        procs = [p for pid, p in _live.items() if owner is _ALL or _owner.get(pid) is owner]
    with _stoppers_lock:
        stops = list(_stoppers)
    for fn in stops:
        try:
            fn()
        except Exception:  # noqa: BLE001 - what it stops may have ended meanwhile; the rest must still stop
            pass
    for p in procs:
        if p.poll() is None:
            _signal_group(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.02)
    for p in procs:
        _signal_group(p, signal.SIGKILL)
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline + 2 - time.monotonic()))
        except subprocess.TimeoutExpired:  # pragma: no cover - a process in D state
            pass
    return len(procs)


def live_pids() -> List[int]:
    with _live_lock:
        return list(_live)


class Capture:
    """The capped copy of one child's output, in memory and in its log: the first ``OUTPUT_HEAD`` (written
    to the log as it comes) and the last ``OUTPUT_TAIL`` (a ring, written when the output ends, after a
    line saying what was dropped). Used for every guest, also those whose output does not come through a
    pipe of this module (a container's logs, an SSH channel): see :func:`capture_lines`."""

    def __init__(self, log: Optional[IO[str]]) -> None:
        self.log = log
        self._head: List[str] = []
        self._tail: Deque[str] = deque()
        self._head_cost = self._tail_cost = 0
        self._dropped_lines = self._dropped_chars = 0

    def take(self, line: str) -> None:
        cost = len(line) + _LINE_COST
        if not self._tail and self._head_cost + cost <= OUTPUT_HEAD:
            self._head.append(line)
            self._head_cost += cost
            if self.log and not self.log.closed:
                self.log.write(line + "\n")
                self.log.flush()
            return
        self._tail.append(line)
        self._tail_cost += cost
        while self._tail_cost > OUTPUT_TAIL and len(self._tail) > 1:
            old = self._tail.popleft()
            self._tail_cost -= len(old) + _LINE_COST
            self._dropped_lines += 1
            self._dropped_chars += len(old) + 1

    def _gap(self) -> str:
        return ("[harness] output capped: %d lines (%d bytes) dropped here; the first %d MiB and the last %d MiB "
                "are kept" % (self._dropped_lines, self._dropped_chars, OUTPUT_HEAD // MiB, OUTPUT_TAIL // MiB))

    def kept(self) -> List[str]:
        out = list(self._head)
        if self._dropped_lines:
            out.append(self._gap())
        out.extend(self._tail)
        return out

    def close(self) -> None:
        """The output ended: the gap notice and the tail go to the log."""
        if self.log and not self.log.closed:
            if self._dropped_lines:
                self.log.write(self._gap() + "\n")
                self.log.writelines(line + "\n" for line in self._tail)
            self.log.flush()


class LineCapture:
    """Output that arrives as chunks of bytes (a container's log stream, an SSH channel): ``feed`` them,
    then ``close`` for the kept lines. Lines are cut at ``LINE_MAX`` and capped like a child's output
    (:class:`Capture`), so memory stays bounded whatever a guest prints."""

    def __init__(self, log: Optional[IO[str]], on_line: Optional[Callable[[str], Any]] = None) -> None:
        self._cap = Capture(log)
        self._pending = b""
        self._on_line = on_line  # sees every line as it comes (``exec`` streams through it)

    def _take(self, line: str) -> None:
        if self._on_line is not None:
            self._on_line(line)
        self._cap.take(line)

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            self._take(_decode_line(data[start:nl]))
            start = nl + 1
        self._pending = data[start:]
        if len(self._pending) > LINE_MAX:  # one endless line: keep its start
            self._take(_decode_line(self._pending[:LINE_MAX]) + " [harness: line cut]")
            self._pending = b""

    def close(self) -> List[str]:
        if self._pending:
            self._take(_decode_line(self._pending))
            self._pending = b""
        self._cap.close()
        return self._cap.kept()


def _decode_line(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace").rstrip("\r")


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
        self._kept_output = Capture(log)
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
        return self._kept_output.kept()

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
            self._kept_output.close()
            self._cond.notify_all()

    def _take(self, raw: bytes, cut: int) -> None:
        """One line of output: shown to the watcher and the waiters, then kept in the head or the tail."""
        line = raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
        if cut:
            line += " [harness: %d bytes of this line cut]" % cut
        with self._cond:
            self.last_output = time.monotonic()
            if self.watch is not None and self.stop_reason is None:
                try:
                    why = self.watch(line)
                except Exception as e:  # noqa: BLE001 - a watcher's bug must not leave the child undrained
                    why = "watcher failed: %s: %s" % (type(e).__name__, e)
                if why:
                    self.stop_reason, self.stop_requested_at = why, time.monotonic()
            for predicate, found in self._waiters:
                if not found and predicate(line):
                    found.append(line)
            self._kept_output.take(line)
            self._cond.notify_all()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def write(self, data: bytes) -> None:
        """To the child's stdin (started with ``stdin=True``); a child that is gone raises OSError."""
        assert self.popen.stdin is not None, "started without stdin=True"
        self.popen.stdin.write(data)
        self.popen.stdin.flush()

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
                    if left <= 0 or (not self.alive() and not self._reader.is_alive()) or stopping():
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
            known = _live.pop(self.popen.pid, None) is not None
            rec = _owner.pop(self.popen.pid, None)
        if known and isinstance(rec, registry.Recording):
            rec.drop_process(self.popen.pid)
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
    stdin: bool = False,
) -> "Running | Completed":
    """Start ``argv`` in a new session; a Completed (``started=False``) if it could not be started, or if
    the harness is stopping. With ``stdin``, its standard input is a pipe (:meth:`Running.write`)."""
    argv = [str(a) for a in argv]
    log: Optional[IO[str]] = None
    if log_path is not None:
        log = open(log_path, "a", encoding="utf-8", errors="backslashreplace")
        log.write("$ %s\n" % shlex.join(argv))
        log.flush()
    rec = registry.current()
    child_env = dict(os.environ if env is None else env)
    if rec is not None:
        child_env[registry.MARKER_ENV] = rec.entry.run_id

    def fork() -> "subprocess.Popen[bytes]":
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=child_env,
            cwd=str(cwd) if cwd else None,
            user=user,
            group=group,
            extra_groups=[] if group is not None else None,
            preexec_fn=_die_with(os.getpid()),
        )

    msg: Optional[str] = None
    with _live_lock:  # a stop request either comes before this check or sees the child in _live
        if stopping():
            msg = "not started: the harness is stopping (%s)" % stopping()
        else:
            try:
                popen = _spawner.call(fork)
                _live[popen.pid] = popen
                _owner[popen.pid] = rec
            except OSError as e:
                msg = "cannot start %s: %s" % (argv[0], e.strerror or e)
    if msg is not None:
        if log:
            log.write(msg + "\n")
            log.close()
        return Completed(argv, None, 0.0, "", started=False, error=msg, stopped="interrupt" if stopping() else None)
    if rec is not None:
        rec.add_process(popen.pid)
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
    on_start: Optional[Callable[["Running"], None]] = None,
) -> Completed:
    """Run ``argv`` with a deadline, streaming its output to ``log_path``.

    When ``watch`` returns a reason for a line, the process gets
    ``after_stop_request`` seconds to end by itself (a kernel that panicked may
    still be printing), then is stopped. Output keeps being collected. With
    ``silence``, a process that prints nothing for that many seconds is stopped
    as "silent" (a watchdog for guests that hang without a word). With
    ``on_start``, its stdin is a pipe and ``on_start`` gets the started child.
    """
    began = time.monotonic()
    r = start(argv, log_path=log_path, env=env, cwd=cwd, watch=watch, user=user, group=group, capture=capture,
              stdin=on_start is not None)
    if isinstance(r, Completed):
        return r
    if on_start is not None:  # a session writes to its stdin (harness.session)
        on_start(r)
    deadline = began + timeout
    timed_out = forced = False
    stopped: Optional[str] = None
    try:
        try:
            while r.popen.poll() is None:
                now = time.monotonic()
                if now >= deadline:
                    timed_out, stopped = True, "timeout"
                    forced = True
                    stop(r.popen, grace)
                    break
                if r.stop_requested_at is not None and now >= r.stop_requested_at + after_stop_request:
                    stopped = r.stop_reason
                    forced = True
                    stop(r.popen, grace)
                    break
                if silence is not None and now - r.last_output >= silence:
                    stopped = "silent"
                    forced = True
                    stop(r.popen, grace)
                    break
                if stopping():
                    stopped = "interrupt"
                    forced = True
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
                         timed_out=timed_out, stopped=stopped, lines=lines, forced=forced)
    finally:
        if r.log:
            with r._cond:  # a reader still draining a leftover writer checks .closed under this lock
                r.log.close()
