"""What every backend shares: options, required tools, and the lifecycle of one boot.

Lifecycle, in this order:

0. ``provision(cache, log)``  build or fetch the images the target needs (cached;
   called by the runner before the boot's deadline starts);
1. ``prepare(ctx)``  deliver the job's files (read-only) and write what the guest needs;
2. ``execute(ctx)``  boot or reach the target and run the guest agent there
   (``python3 DIR/allocator.pyz agent --plan DIR/plan.json``, :mod:`guest.agent`), under the deadline;
3. ``collect(ctx, completed)``  read the agent's step results (a share file, else console frames) and
   turn them into documents (:mod:`harness.probes`);
4. ``shutdown()``  always, also after errors; safe to call twice.

Steps 1-4 are driven by :meth:`Backend.run`. Every backend is a machine (how the target starts and
stops) plus a channel (how the files get in, the agent runs and its output comes back); the job, the
agent and the interpretation are the same for all of them, so a probe or ``arena-harness exec`` is one
feature, not one per backend.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Generic, List, Optional, Tuple, TypeVar

import images
from harness import probes as probing
from harness import proc
from harness.backends import jail
from harness.backends.console import DONE, extract_frames, find_panic, is_agent_line
from harness.errors import ConfigError, HarnessError, ToolMissing
from harness.inputs import MiB, read_text
from harness.model import Deadline, GuestRun, Probe, Target
from images import Tool

__all__ = ["Backend", "GuestRun", "Need", "NoOptions", "RunContext", "Tool"]


@dataclass(frozen=True)
class Need:
    """One thing a target needs on this host, and whether it is there (what ``doctor`` lists)."""

    what: str  # a program, or a condition such as "a running Docker daemon"
    ok: bool
    hint: str = ""  # how to get it, when it is missing
    images: bool = False  # needed only to build images the cache does not have yet


RESULT_MAX = 16 * MiB  # a guest's result file: the allocator's documents are tens of KiB


def _note(log_path: Path, text: str) -> None:
    """A line from the harness in a console log (what it did not trust, and why)."""
    with open(log_path, "a", encoding="utf-8", errors="backslashreplace") as log:
        log.write("[harness] %s\n" % text)


@dataclass(frozen=True)
class NoOptions:
    def validate(self) -> Optional[Tuple[str, str]]:
        return None


StdinHook = Callable[[Callable[[bytes], None], Callable[[], None]], None]
"""A session's hook: given a function that writes to the agent's stdin and one that stops the boot."""


@dataclass
class RunContext:
    run_id: str
    target: Target
    policies: List[str]  # the names of the probes to run (their results' names)
    workdir: Path  # private to this target's boot; removed after
    payload: Path  # allocator.pyz (with the guest agent), read-only
    log_path: Path  # the console log, kept as an artefact
    deadline: Deadline  # the boot's one deadline (the runner's); a number of seconds starts one now
    job: Optional[probing.Job] = None  # what the agent runs; by default the named probes (no go binary)
    on_line: Optional[Callable[[str], None]] = None  # sees each line of the guest's output as it comes
    # a session (harness.session): the agent serves messages from its stdin, and the backend hands this
    # a function that writes to that stdin, and one that stops the boot, once the agent's process or
    # channel is up
    on_stdin: Optional[StdinHook] = None
    on_phase: Optional[Callable[[str], None]] = None  # told "collect" when the guest is done (progress)

    def __post_init__(self) -> None:
        if not isinstance(self.deadline, Deadline):
            self.deadline = Deadline(float(self.deadline))
        if self.job is None:
            self.job = probing.job(self.target, self.probes, self.payload)
        if probing.PLAN not in self.job.files:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.job.write(self.workdir)

    @property
    def probes(self) -> List[Probe]:
        out = []
        for name in self.policies:
            p = self.target.probe(name)
            if p is None:
                raise HarnessError("%s: no probe named %r" % (self.target.name, name))
            out.append(p)
        return out

    @property
    def files(self) -> Dict[str, Path]:
        """The files every channel delivers into the guest's one directory (name -> host file)."""
        assert self.job is not None
        return self.job.files

    @property
    def timeout(self) -> float:
        """The deadline's whole length, for messages ("deadline of 60s reached")."""
        return self.deadline.seconds


OptionsT = TypeVar("OptionsT")  # a backend's frozen Options dataclass


class Backend(Generic[OptionsT]):
    """Generic in its options' type: ``class UmlBackend(Backend[UmlOptions])`` makes every access to
    ``self.options`` checked by mypy."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    tools: ClassVar[Tuple[Tool, ...]] = ()
    description: ClassVar[str] = ""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.options: OptionsT = target.options  # config built it from this backend's Options
        self._slot: Optional[jail.Slot] = None

    # -- availability -------------------------------------------------------------------------
    def required_tools(self) -> Tuple[Tool, ...]:
        """The host programs a boot of this target runs."""
        return self.tools

    def needs(self, cache: images.Cache) -> List[Need]:
        """Everything this target needs here: the programs its boot runs, then those that building
        its images runs when ``cache`` lacks them (mmdebstrap, arch-test, qemu-user, ...)."""
        boot = list(dict.fromkeys(self.required_tools()))
        build: List[Tool] = []
        for recipe in self.recipes():
            build.extend(t for t in cache.build_tools(recipe) if t not in build and t not in boot)
        return [Need(t.command, t.present(), t.hint) for t in boot] + \
            [Need(t.command, t.present(), t.hint, images=True) for t in build]

    def missing(self) -> Optional[ToolMissing]:
        """Why this target cannot run here (the first need that is not met), or None."""
        for need in self.needs(images.Cache()):
            if not need.ok:
                return ToolMissing(self.name, need.what, need.hint)
        return None

    def guest_arch(self) -> str:
        """The guest's Debian architecture (the go probe is built for it): the host's, unless the
        backend emulates or names another."""
        return images.host_arch()

    # -- the lifecycle ---------------------------------------------------------------------------
    def recipes(self) -> List[images.Recipe]:
        """The cached images this target boots from (none by default)."""
        return []

    def provision(self, cache: images.Cache, log: images.Log) -> None:
        """Make sure every image this target needs is in the cache. Default: build its recipes."""
        for recipe in self.recipes():
            cache.get(recipe, log)

    def run(self, ctx: RunContext) -> GuestRun:
        try:
            self.prepare(ctx)
            completed = self.execute(ctx)
            if ctx.on_phase is not None:
                ctx.on_phase("collect")
            return self.collect(ctx, completed)
        finally:
            self.shutdown()

    def prepare(self, ctx: RunContext) -> None:
        """Ship the allocator and write what the guest needs. Default: nothing to do."""

    def execute(self, ctx: RunContext) -> proc.Completed:
        raise NotImplementedError

    def collect(self, ctx: RunContext, completed: proc.Completed) -> GuestRun:
        """The agent's step results from the share file if the guest wrote one, else from console frames
        (one per step, so a deadline after a step keeps it), turned into documents by the probes."""
        panic = next((p for p in (find_panic(ln) for ln in completed.lines) if p), None)
        silent = completed.stopped == "silent"
        run = GuestRun({}, ctx.log_path, completed.duration_s, panic=panic,
                       timed_out=completed.timed_out or silent, silent=silent, accel=self.accelerator())
        if not completed.started:
            run.error = completed.error
            return run
        steps: List[Any] = []
        problem: Optional[str] = None
        share = self.result_file(ctx)
        if share is not None and os.path.lexists(share):
            # The guest wrote this file: only a regular file of a sane size is read, never through a link
            # (a symlink to /etc/shadow would make the harness, often root, read it as the result).
            try:
                text = read_text(share, "guest result files", RESULT_MAX, errors="backslashreplace", nofollow=True)
            except ConfigError as e:
                _note(ctx.log_path, "result file ignored: %s" % e)
                text = ""
            steps, problem = probing.agent_steps(text) if text else ([], "empty")
            if not problem:
                run.channel = "share"
        if not run.channel:
            steps, problem = [], None
            frames, problem = extract_frames(completed.lines)
            for text in frames:
                found, bad = probing.agent_steps(text)
                steps.extend(found)
                problem = problem or bad
            if steps:
                run.channel = "console"
        run.steps = steps
        run.documents = probing.interpret(steps, ctx.probes)
        if problem:
            run.error = problem
        elif not run.documents:
            run.error = self.no_result_reason(completed)
        return run

    def accelerator(self) -> Optional[str]:
        """How an emulator runs the guest's CPU: ``kvm`` or ``tcg`` (QEMU's translator); None where no
        emulator does (the host's CPU runs it, or the backend cannot tell)."""
        return None

    def result_file(self, ctx: RunContext) -> Optional[Path]:
        """Where the guest writes its results through a writable share, if this backend has one."""
        return None

    def no_result_reason(self, completed: proc.Completed) -> str:
        if completed.timed_out:
            return "no result before the deadline"
        if completed.stopped == "silent":
            return "no output from the guest for %.0fs (watchdog)" % (self.target.watchdog or 0)
        tail = [ln for ln in completed.lines if ln.strip()][-5:]
        rc = completed.returncode
        what = "no result (exit status %s)" % rc
        return what + (": " + " | ".join(tail) if tail else ", no output")

    def shutdown(self) -> None:
        """Release what the boot holds (its guest uid, if jailed). Safe to call twice."""
        if self._slot is not None:
            self._slot.release()
            self._slot = None

    # -- helpers for subclasses ----------------------------------------------------------------
    def slot(self) -> Optional[jail.Slot]:
        """This boot's own guest uid (root harness only; held until shutdown)."""
        if self._slot is None and jail.jailed_uid_available():
            self._slot = jail.acquire_slot()
        return self._slot

    def jailed(self, ctx: RunContext, view: jail.View, argv: List[str]) -> List[str]:
        """``argv`` run inside ``view`` as this boot's guest uid (see :mod:`harness.backends.jail`)."""
        mountpoint = ctx.workdir / "view"
        mountpoint.mkdir(exist_ok=True)
        return jail.launcher(view, mountpoint, self.slot()) + ["--"] + argv

    def boot_dir(self, ctx: RunContext) -> Path:
        """The boot's read-only files, bound into the jail at ``/mnt/arena/boot``: the job's files (the
        allocator zipapp, the plan, the programs it runs) and whatever the backend adds (UML's init)."""
        return probing.stage(ctx.files, ctx.workdir / "boot")

    def results_dir(self, ctx: RunContext) -> Path:
        """The boot's results directory: the one host path its guest may write (0700, the guest's uid)."""
        out = ctx.workdir / "out"
        out.mkdir(exist_ok=True)
        jail.own(out, self.slot())
        return out

    def spawn(self, ctx: RunContext, argv: List[str], **kw: Any) -> proc.Completed:
        """Start the boot's process: the target's deadline and watchdog, the console log, the boot's dir. An
        ``on_start`` given here takes over the session's stdin too (``ctx.on_stdin``)."""
        kw.setdefault("cwd", ctx.workdir)
        if ctx.on_stdin is not None and "on_start" not in kw:
            on_stdin = ctx.on_stdin
            kw["on_start"] = lambda running: on_stdin(running.write, lambda: proc.stop(running.popen, 1.0))
        return proc.run(argv, timeout=ctx.deadline.left(), log_path=ctx.log_path,
                        silence=None if ctx.on_stdin else self.target.watchdog, **kw)

    @staticmethod
    def agent_args(directory: str, via: Optional[List[str]] = None) -> List[str]:
        """The guest's command after its ``python3``: the agent, with the job's files in ``directory``
        (``via``: the emulator every step's program runs through, see :mod:`guest.agent`)."""
        args = [directory + "/" + probing.PAYLOAD, "agent", "--plan", directory + "/" + probing.PLAN]
        return args + (["--via", shlex.join(via)] if via else [])

    @staticmethod
    def serve_args(ctx: RunContext) -> List[str]:
        """``--serve`` when the boot is a session's (the agent then reads messages from its stdin)."""
        return ["--serve"] if ctx.on_stdin is not None else []

    def watcher(self, ctx: RunContext) -> Callable[[str], Optional[str]]:
        """:meth:`done_watcher`, also handing each line to ``ctx.on_line`` (``exec`` streams through it)."""
        if ctx.on_line is None:
            return self.done_watcher
        on_line = ctx.on_line

        def watch(line: str) -> Optional[str]:
            on_line(line)
            return self.done_watcher(line)

        return watch

    @staticmethod
    def done_watcher(line: str) -> Optional[str]:
        """Stop a guest once it said it is done, or once its kernel panicked."""
        if DONE in line and not is_agent_line(line):  # a program printing the marker is no guest's end
            return "done"
        if find_panic(line):
            return "panic"
        return None
