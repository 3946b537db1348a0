"""A session: one boot of a target that runs many commands (the pytest fixture ``harness_target``).

The target boots as for a run, but its guest agent serves (``agent --serve``,
:mod:`guest.agent`): the session writes one JSON message a line to the agent's
stdin (the console of a UML or QEMU guest, a pipe, an SSH channel, the
container's attached stdin) and reads the framed results from its output. So a
test can ask a booted target anything, as testinfra's ``host.run`` does::

    def test_uname(harness_target):
        r = harness_target.run("uname -r")
        assert r.returncode == 0 and r.stdout.startswith("6.")

A host file (a path) is sent to the guest first (base64 lines), then run. The
whole session has one deadline (``lifetime``); each command has its own
``timeout``. A command that outlives its timeout ends the session (the agent is
still busy with it): the next ``run`` boots the target again.
"""

from __future__ import annotations

import base64
import json
import queue
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import images
from guest.agent import FRAME_BEGIN, FRAME_END, READY
from harness import probes as probing
from harness import proc, runner
from harness.errors import HarnessError
from harness.model import GuestRun, Target

FRAME_MAX = proc.LINE_MAX  # what the agent's one frame line may be at most
CHUNK = 1536  # bytes of a file per message: 2 KiB of base64, well under a console's 4 KiB line
LIFETIME = 3600.0  # seconds a session's boot may last


@dataclass
class Result:
    """What one command did: its exit status (None if a signal ended it), its output, and why it could not
    start, if it could not."""

    returncode: Optional[int]
    stdout: str
    stderr: str
    signal: Optional[str] = None
    error: Optional[str] = None

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0


class Session:
    """One booted target serving commands; ``close`` ends the boot (also on ``with`` exit)."""

    def __init__(self, target: Target, artifacts: Path, lifetime: float = LIFETIME,
                 cache: Optional[images.Cache] = None) -> None:
        self.target = target
        self.artifacts = Path(artifacts)
        self.lifetime = lifetime
        self.cache = cache
        self._write: Optional[Callable[[bytes], None]] = None
        self._stop: Optional[Callable[[], None]] = None  # stops this session's boot only
        self._ready = threading.Event()
        self._frames: "queue.Queue[Any]" = queue.Queue()
        self._acks: "queue.Queue[str]" = queue.Queue()
        self._frame: Optional[List[str]] = None
        self._frame_size = 0
        self._put_dir: Optional[str] = None  # where the agent keeps the files it is sent
        self._thread: Optional[threading.Thread] = None
        self._ended: Optional[GuestRun] = None
        self._failure: Optional[BaseException] = None
        self._sent: Dict[str, str] = {}  # host file -> its name in the guest
        self.log_path: Optional[Path] = None

    # -- the boot -----------------------------------------------------------------------------------
    def open(self, timeout: Optional[float] = None) -> "Session":
        """Boot the target and wait until its agent serves (within ``timeout``, default the target's)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._ready.clear()
        self._write, self._stop, self._ended, self._failure, self._sent = None, None, None, None, {}
        self._put_dir = None
        run_id = "session-" + runner.new_run_id()  # unique: its registry entry, labels and logs are its own
        self.log_path = runner.log_path_for(self.artifacts, run_id, self.target)
        self._thread = threading.Thread(target=self._boot, args=(run_id,), name="session-" + self.target.name,
                                        daemon=True)
        self._thread.start()
        wait = timeout if timeout is not None else self.target.timeout
        end = time.monotonic() + wait
        while not self._ready.wait(0.1):
            if not self._thread.is_alive() or time.monotonic() > end:
                why = self._why_gone() if not self._thread.is_alive() else "not serving after %.0fs" % wait
                self.close(busy=True)
                raise HarnessError("%s: the session did not start: %s (console log: %s)"
                                   % (self.target.name, why, self.log_path))
        return self

    def _boot(self, run_id: str) -> None:
        try:
            # The session's own registry entry (thread=True): a run beside it in this process stops only
            # its own children, never this boot.
            self._ended = runner.boot_agent(self.target, [], {}, run_id, timeout=self.lifetime,
                                            artifacts=self.artifacts, on_line=self._line, on_stdin=self._stdin,
                                            cache=self.cache, thread=True)
        except BaseException as e:  # noqa: BLE001 - kept for open() and run() to report
            self._failure = e
        finally:
            self._frames.put(None)  # wakes a run() waiting for a frame that will never come

    def _why_gone(self) -> str:
        if self._failure is not None:
            return str(self._failure)
        if self._ended is not None:
            return self._ended.error or ("kernel panic: %s" % self._ended.panic if self._ended.panic else
                                         "the guest ended")
        return "the guest ended"

    def _stdin(self, write: Callable[[bytes], None], stop: Callable[[], None]) -> None:
        self._write, self._stop = write, stop

    def _line(self, line: str) -> None:
        """Every line of the guest's output: the agent's ready line and acks, and its result frames. A
        marker counts only at the start of a line of its own: a command's output (inside a frame's JSON
        line) can never pass for one."""
        text = line.strip()
        if text.startswith(READY):
            rest = text[len(READY):].strip()
            if rest.startswith(("put ", "put-error ")):
                self._acks.put(rest)
            elif not self._ready.is_set():
                self._put_dir = rest or None
                self._ready.set()
            return
        if text == FRAME_BEGIN:
            self._frame, self._frame_size = [], 0
            return
        if self._frame is not None:
            if text == FRAME_END:
                steps, _ = probing.agent_steps("".join(self._frame))
                self._frame = None
                self._frames.put(steps[0] if steps else {"error": "an unreadable result frame"})
            elif self._frame_size + len(text) > FRAME_MAX:  # a frame that never ends must not grow forever
                self._frame = None
                self._frames.put({"error": "a result frame over %d bytes" % FRAME_MAX})
            else:
                self._frame.append(text)
                self._frame_size += len(text)

    def _send(self, message: Dict[str, Any]) -> None:
        if self._write is None:
            raise HarnessError("%s: the session has no channel to its agent" % self.target.name)
        # ASCII only, DEL escaped too: a console's line discipline would act on it
        text = json.dumps(message, separators=(",", ":")).replace("\x7f", "\\u007f")
        try:
            self._write((text + "\n").encode("ascii"))
        except (OSError, ValueError) as e:  # the boot is gone (its stdin closed)
            raise HarnessError("%s: the session's guest is gone: %s (console log: %s)"
                               % (self.target.name, self._why_gone() if self._thread and not
                                  self._thread.is_alive() else e, self.log_path)) from None

    # -- commands ---------------------------------------------------------------------------------
    def put(self, path: Union[str, Path], timeout: float = 300.0) -> str:
        """Send a host file into the guest (once per session); its path there."""
        host = str(Path(path).resolve())
        if host in self._sent:
            return self._sent[host]
        data = Path(host).read_bytes()
        name = "f%d-%s" % (len(self._sent), "".join(c if c.isalnum() or c in "._-" else "_"
                                                     for c in Path(host).name)[:40])
        while not self._acks.empty():  # a put that timed out before may have left its acks
            self._acks.get_nowait()
        end = time.monotonic() + timeout
        for seq, at in enumerate(range(0, max(len(data), 1), CHUNK)):
            last = at + CHUNK >= len(data)
            self._send({"put": name, "seq": seq, "data": base64.b64encode(data[at:at + CHUNK]).decode(),
                        "last": last})
            # one chunk in flight: a console drops input its buffer cannot take
            try:
                while True:
                    ack = self._acks.get(timeout=max(0.1, end - time.monotonic()))
                    if ack.startswith("put-error"):
                        raise HarnessError("%s: sending %s: %s" % (self.target.name, host, ack))
                    if ack == "put %s %d" % (name, seq):
                        break
            except queue.Empty:
                raise HarnessError("%s: sending %s took longer than %.0fs" % (self.target.name, host,
                                                                                timeout)) from None
        self._sent[host] = "%s/%s" % (self._put_dir or ".", name)
        return self._sent[host]

    def run(self, command: Union[str, Sequence[str], Path], timeout: float = 60.0) -> Result:
        """Run ``command`` in the target: a shell command line (a string, run by ``sh -c``), an argv list,
        or a host file (a :class:`~pathlib.Path`, sent first). Returns its exit status and output."""
        self.open()
        if isinstance(command, Path):
            argv = [self.put(command)]
        elif isinstance(command, str):
            argv = ["sh", "-c", command]
        else:
            argv = [str(a) for a in command]
        while not self._frames.empty():  # anything left from before is not this command's
            self._frames.get_nowait()
        self._send({"step": {"name": "run", "argv": argv, "rlimit_as": self.target.rlimit_as}})
        try:
            step = self._frames.get(timeout=timeout)
        except queue.Empty:
            self.close(busy=True)  # the agent is still busy with it: the next run boots again
            raise HarnessError("%s: %s did not end within %.0fs (the session was closed)"
                               % (self.target.name, shlex.join(argv), timeout)) from None
        if step is None:
            raise HarnessError("%s: the session ended: %s (console log: %s)"
                               % (self.target.name, self._why_gone(), self.log_path))
        return Result(step.get("returncode"), str(step.get("stdout") or ""), str(step.get("stderr") or ""),
                      step.get("signal"), step.get("error"))

    def close(self, busy: bool = False) -> None:
        """End the boot: the agent is told to stop (the guest then powers off), then the boot is stopped
        (at once when ``busy``: the agent is running a command and reads nothing)."""
        if self._thread is None:
            return
        try:
            if self._write is not None and not busy:
                self._send({"bye": True})
        except (OSError, HarnessError, ValueError):
            pass  # the guest is gone already: nothing to tell
        self._thread.join(timeout=0 if busy else 30)
        if self._thread.is_alive() and self._stop is not None:  # busy with a command past its timeout
            try:
                self._stop()
            except Exception as e:  # noqa: BLE001 - docker/paramiko errors: the boot may be gone meanwhile
                print("arena-harness: %s: stopping the session: %s" % (self.target.name, e))
            self._thread.join(timeout=30)
        self._thread = None
        self._write = None

    def __enter__(self) -> "Session":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()
