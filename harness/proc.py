"""The one module that starts processes: argv lists, a new session each, deadlines, escalation.

Every child runs in its own session (so its whole process group can be
signalled), its output is decoded with ``errors="backslashreplace"`` and copied
line by line to a log that starts with the command as ``$ shlex.join(argv)``,
and stopping escalates: SIGTERM to the group, a grace period, then SIGKILL.
Live children are tracked so an interrupted run can stop them all.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Dict, List, Mapping, Optional, Sequence

LineWatcher = Callable[[str], Optional[str]]
"""Called with each output line; returning a reason (e.g. "panic") asks the process to stop."""

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

    @property
    def cmdline(self) -> str:
        return shlex.join(self.argv)


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
    argv = [str(a) for a in argv]
    start = time.monotonic()
    log: Optional[IO[str]] = None
    if log_path is not None:
        log = open(log_path, "a", encoding="utf-8", errors="backslashreplace")
        log.write("$ %s\n" % shlex.join(argv))
        log.flush()
    try:
        try:
            proc = subprocess.Popen(
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
            return Completed(argv, None, time.monotonic() - start, "", started=False, error=msg)
        with _live_lock:
            _live[proc.pid] = proc
        lines: List[str] = []
        stop_reason: List[str] = []
        stop_requested_at: List[float] = []
        last_output = [time.monotonic()]

        def reader() -> None:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                last_output[0] = time.monotonic()
                line = raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
                if capture:
                    lines.append(line)
                if log:
                    log.write(line + "\n")
                    log.flush()
                if watch is not None and not stop_reason:
                    why = watch(line)
                    if why:
                        stop_reason.append(why)
                        stop_requested_at.append(time.monotonic())

        t = threading.Thread(target=reader, name="proc-reader-%d" % proc.pid, daemon=True)
        t.start()
        deadline = start + timeout
        timed_out = False
        stopped: Optional[str] = None
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if now >= deadline:
                    timed_out, stopped = True, "timeout"
                    stop(proc, grace)
                    break
                if stop_requested_at and now >= stop_requested_at[0] + after_stop_request:
                    stopped = stop_reason[0]
                    stop(proc, grace)
                    break
                if silence is not None and now - last_output[0] >= silence:
                    stopped = "silent"
                    stop(proc, grace)
                    break
                try:
                    proc.wait(timeout=min(0.05, max(0.0, deadline - now)))
                except subprocess.TimeoutExpired:
                    pass
        except BaseException:
            stop(proc, grace)
            raise
        finally:
            # The group may hold helpers after the leader exits (UML's threads).
            _signal_group(proc, signal.SIGKILL)
            with _live_lock:
                _live.pop(proc.pid, None)
        t.join(timeout=5)
        if stopped is None and stop_reason:
            stopped = stop_reason[0]
        if log:
            if timed_out:
                log.write("[harness] deadline of %.1fs reached: process group stopped\n" % timeout)
            elif stopped == "silent":
                log.write("[harness] no output for %.1fs: process group stopped (watchdog)\n" % (silence or 0))
            elif stopped:
                log.write("[harness] stopped: %s\n" % stopped)
        return Completed(
            argv,
            proc.returncode,
            time.monotonic() - start,
            "\n".join(lines),
            timed_out=timed_out,
            stopped=stopped,
            lines=lines,
        )
    finally:
        if log:
            log.close()
