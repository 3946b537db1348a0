"""What every backend shares: options, required tools, and the lifecycle of one boot.

Lifecycle, in this order:

0. ``provision(cache, log)``  build or fetch the images the target needs (cached;
   called by the runner before the boot's deadline starts);
1. ``prepare(ctx)``  ship the allocator (read-only) and write what the guest needs;
2. ``execute(ctx)``  boot or reach the target and run the probe, under the deadline;
3. ``collect(ctx, completed)``  read the results (a share file, else console frames);
4. ``shutdown()``  always, also after errors; safe to call twice.

Steps 1-4 are driven by :meth:`Backend.run`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, List, Optional, Tuple, TypeVar

import images
from harness import proc
from harness.backends import jail
from harness.backends.console import DONE, extract_frames, find_panic, parse_documents
from harness.errors import ConfigError, ToolMissing
from harness.inputs import MiB, read_text
from harness.model import Deadline, GuestRun, Target
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


@dataclass
class RunContext:
    run_id: str
    target: Target
    policies: List[str]
    workdir: Path  # private to this target's boot; removed after
    payload: Path  # allocator.pyz, read-only
    log_path: Path  # the console log, kept as an artefact
    deadline: Deadline  # the boot's one deadline (the runner's); a number of seconds starts one now

    def __post_init__(self) -> None:
        if not isinstance(self.deadline, Deadline):
            self.deadline = Deadline(float(self.deadline))

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
        return [Need(t.command, proc.which(t.command) is not None, t.hint) for t in boot] + \
            [Need(t.command, proc.which(t.command) is not None, t.hint, images=True) for t in build]

    def missing(self) -> Optional[ToolMissing]:
        """Why this target cannot run here (the first need that is not met), or None."""
        for need in self.needs(images.Cache()):
            if not need.ok:
                return ToolMissing(self.name, need.what, need.hint)
        return None

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
            return self.collect(ctx, completed)
        finally:
            self.shutdown()

    def prepare(self, ctx: RunContext) -> None:
        """Ship the allocator and write what the guest needs. Default: nothing to do."""

    def execute(self, ctx: RunContext) -> proc.Completed:
        raise NotImplementedError

    def collect(self, ctx: RunContext, completed: proc.Completed) -> GuestRun:
        """Documents from the share file if the guest wrote one, else from console frames."""
        panic = next((p for p in (find_panic(ln) for ln in completed.lines) if p), None)
        silent = completed.stopped == "silent"
        run = GuestRun({}, ctx.log_path, completed.duration_s, panic=panic,
                       timed_out=completed.timed_out or silent, silent=silent)
        if not completed.started:
            run.error = completed.error
            return run
        share = self.result_file(ctx)
        if share is not None and os.path.lexists(share):
            # The guest wrote this file: only a regular file of a sane size is read, never through a link
            # (a symlink to /etc/shadow would make the harness, often root, read it as the result).
            try:
                text = read_text(share, "guest result files", RESULT_MAX, errors="backslashreplace", nofollow=True)
            except ConfigError as e:
                _note(ctx.log_path, "result file ignored: %s" % e)
                text = ""
            docs, problem = parse_documents(text) if text else ({}, "empty")
            if not problem:
                run.documents, run.channel = docs, "share"
                return run
        frames, problem = extract_frames(completed.lines)
        for text in frames:
            docs, bad = parse_documents(text)
            run.documents.update(docs)
            problem = problem or bad
        if run.documents:
            run.channel = "console"
        if problem:
            run.error = problem
        elif not run.documents:
            run.error = self.no_result_reason(completed)
        return run

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
        """The boot's read-only files, bound into the jail at ``/mnt/arena/boot``: the allocator as
        ``allocator.pyz`` (and whatever the backend adds, such as UML's init)."""
        boot = ctx.workdir / "boot"
        if not boot.is_dir():
            boot.mkdir(mode=0o755)
            shutil.copyfile(ctx.payload, boot / "allocator.pyz")
        return boot

    def results_dir(self, ctx: RunContext) -> Path:
        """The boot's results directory: the one host path its guest may write (0700, the guest's uid)."""
        out = ctx.workdir / "out"
        out.mkdir(exist_ok=True)
        jail.own(out, self.slot())
        return out

    def spawn(self, ctx: RunContext, argv: List[str], **kw: Any) -> proc.Completed:
        """Start the boot's process: the target's deadline and watchdog, the console log, the boot's dir."""
        kw.setdefault("cwd", ctx.workdir)
        return proc.run(argv, timeout=ctx.deadline.left(), log_path=ctx.log_path, silence=self.target.watchdog, **kw)

    def probe_args(self, ctx: RunContext) -> List[str]:
        t = self.target
        args = ["probe", "--policy", ",".join(ctx.policies), "--frame"]
        if t.grow:
            args += ["--grow", t.grow]
        if t.touch_every is not None:
            args += ["--touch-every", str(t.touch_every)]
        if t.rlimit_as is not None:
            args += ["--rlimit-as", str(t.rlimit_as)]
        return args

    @staticmethod
    def done_watcher(line: str) -> Optional[str]:
        """Stop a guest once it said it is done, or once its kernel panicked."""
        if DONE in line:
            return "done"
        if find_panic(line):
            return "panic"
        return None
