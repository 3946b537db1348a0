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
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import images
from harness import backends, cleanup, files, payload, registry
from harness import probes as probing
from harness.backends.base import RunContext
from harness.errors import HarnessError
from harness.model import Deadline, GuestRun, Target

FRAME_BEGIN = "@@ARENA-HARNESS-RESULT-BEGIN@@"
FRAME_END = "@@ARENA-HARNESS-RESULT-END@@"
READY = "@@ARENA-HARNESS-AGENT-READY@@"
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
        self._write, self._ended, self._failure, self._sent = None, None, None, {}
        run_id = "session-%s-%d" % (time.strftime("%Y%m%d-%H%M%S"), threading.get_ident() % 100000)
        logs = self.artifacts / run_id
        files.make_directories(logs)
        self.log_path = logs / ("%s.log" % self.target.name)
        files.create_file(self.log_path)
        self._thread = threading.Thread(target=self._boot, args=(run_id,), name="session-" + self.target.name,
                                        daemon=True)
        self._thread.start()
        wait = timeout if timeout is not None else self.target.timeout
        end = time.monotonic() + wait
        while not self._ready.wait(0.1):
            if not self._thread.is_alive() or time.monotonic() > end:
                why = self._why_gone() if not self._thread.is_alive() else "not serving after %.0fs" % wait
                self.close()
                raise HarnessError("%s: the session did not start: %s (console log: %s)"
                                   % (self.target.name, why, self.log_path))
        return self

    def _boot(self, run_id: str) -> None:
        assert self.log_path is not None
        backend = None
        with registry.recording(run_id) as rec:
            if self.target.backend == "docker":
                rec.may_have_containers()
            tmp = Path(tempfile.mkdtemp(prefix="arena-harness-%s-" % run_id))
            rec.add_temp_dir(tmp)
            try:
                pyz = payload.build(tmp)
                backend = backends.get(self.target.backend)(self.target)
                missing = backend.missing()
                if missing is not None:
                    raise HarnessError(str(missing))
                backend.provision(self.cache or images.Cache(), lambda msg: None)
                job = probing.Job(files={probing.PAYLOAD: pyz})
                workdir = Path(tempfile.mkdtemp(prefix="%s." % self.target.name, dir=str(tmp)))
                job.write(workdir)
                ctx = RunContext(run_id, self.target, [], workdir, pyz, self.log_path, Deadline(self.lifetime),
                                 job=job, on_line=self._line, on_stdin=self._stdin)
                self._ended = backend.run(ctx)
            except BaseException as e:  # noqa: BLE001 - kept for open() and run() to report
                self._failure = e
            finally:
                if backend is not None:
                    backend.shutdown()
                self._frames.put(None)  # wakes a run() waiting for a frame that will never come
                shutil.rmtree(tmp, ignore_errors=True)
                rec.drop_temp_dir(tmp)
                if rec.entry.containers and cleanup.remove_containers(run_id, False, cleanup.Report(), sweep=False):
                    rec.containers_removed()

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
        """Every line of the guest's output: the agent's ready line and acks, and its result frames."""
        if READY in line:
            rest = line.split(READY, 1)[1].strip()
            if rest.startswith(("put ", "put-error ")):
                self._acks.put(rest)
            else:
                self._ready.set()
            return
        if FRAME_BEGIN in line:
            self._frame = []
            return
        if self._frame is not None:
            if FRAME_END in line:
                steps, _ = probing.agent_steps("".join(self._frame))
                self._frame = None
                self._frames.put(steps[0] if steps else {"error": "an unreadable result frame"})
            else:
                self._frame.append(line.strip())

    def _send(self, message: Dict[str, Any]) -> None:
        if self._write is None:
            raise HarnessError("%s: the session has no channel to its agent" % self.target.name)
        # ASCII only, DEL escaped too: a console's line discipline would act on it
        text = json.dumps(message, separators=(",", ":")).replace("\x7f", "\\u007f")
        self._write((text + "\n").encode("ascii"))

    # -- commands ---------------------------------------------------------------------------------
    def put(self, path: Union[str, Path], timeout: float = 300.0) -> str:
        """Send a host file into the guest (once per session); its path there, as ``{put}/NAME``."""
        host = str(Path(path).resolve())
        if host in self._sent:
            return self._sent[host]
        data = Path(host).read_bytes()
        name = "f%d-%s" % (len(self._sent), "".join(c if c.isalnum() or c in "._-" else "_"
                                                     for c in Path(host).name)[:40])
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
        self._sent[host] = "{put}/" + name
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
