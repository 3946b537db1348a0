"""``arena-harness``: run, bisect, exec, list, doctor, images, report, diff, merge, groups, clean. Exit 0
when every result passed, 1 when any did not (or the gate failed: see harness.verdict), 2 on usage or
configuration errors (one line, never a traceback), 130 when interrupted.

This module imports only the standard library and the harness's error types at module level; each
command imports what it uses. So ``run`` (and ``bisect``) takes over SIGINT, SIGTERM and SIGHUP within
milliseconds of the interpreter's start, not after the ~0.1 s of imports and the config loading that come
before the run (a signal then killed the process with no results and status 143)."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple

from harness import __version__
from harness.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, HarnessError, UsageError

if TYPE_CHECKING:
    import images
    from harness import cleanup
    from harness.model import Target, TargetSet
    from harness.results import RunDocument

DEFAULT_ARTIFACTS = "arena-harness-out"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError("%s (see %s --help)" % (message, self.prog))


def build_parser() -> argparse.ArgumentParser:
    from allocator.probe import POLICIES
    from harness.model import BUILTIN_PROBES
    from harness.results import PREFER

    p = _Parser(prog="arena-harness", description="Does the high arena reservation work here, or does the "
                "32-bit fallback take over? Runs Go's allocator model on many kinds of machine.")
    p.add_argument("--version", action="version", version="arena-harness " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def targets_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--targets", metavar="FILE", help="targets file (default: the matrix shipped in the package)")

    def allow_skip_arg(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--allow-skip", action="store_true",
                        help="a skipped result (a tool missing here) does not fail the exit status; backends named "
                             "in HARNESS_REQUIRE must still run")

    r = sub.add_parser("run", help="run targets x policies and report")
    targets_arg(r)
    r.add_argument("--only", metavar="NAME", action="append", help="run only this target (repeatable)")
    r.add_argument("--probe", metavar="P", action="append",
                   help="run this probe (repeatable, or comma-separated): the target's own of that name, else the "
                        "built-in one: %s; a program probe where a target defines it" % ", ".join(BUILTIN_PROBES))
    r.add_argument("--policy", metavar="P", action="append", help="the model's policies to run (an alias of --probe "
                   "for them): %s, all" % ", ".join(POLICIES))
    r.add_argument("--jobs", "-j", type=int, default=1, metavar="N", help="boot N targets at once (default 1)")
    r.add_argument("--json", metavar="F", type=Path, help="write the results as JSON")
    r.add_argument("--junit", metavar="F", type=Path, help="write JUnit XML")
    r.add_argument("--markdown", metavar="F", type=Path, help="write a Markdown summary")
    r.add_argument("--html", metavar="F", type=Path, help="write a self-contained HTML report")
    r.add_argument("--shard", metavar="K/N", help="run only the K-th of N even, deterministic slices of the targets")
    r.add_argument("--group", metavar="NAME", action="append", help="only the targets of this CI group (repeatable)")
    r.add_argument("--artifacts", metavar="DIR", type=Path, default=Path(DEFAULT_ARTIFACTS),
                   help="where console logs are kept (default ./%s/RUN-ID)" % DEFAULT_ARTIFACTS)
    r.add_argument("--quiet", "-q", action="store_true", help="no progress display (a live panel on a terminal, "
                   "else plain lines)")
    allow_skip_arg(r)

    ex = sub.add_parser("exec", help="run a program in a target, streaming its output; exit with its status",
                        description="Run PROGRAM in TARGET through the guest agent (python3 in the target), its "
                        "stdout and stderr streamed apart, and exit with its exit status (128+N for a signal N). "
                        "PROGRAM is a file on this host (a path with a /: delivered read-only, built for the "
                        "target's architecture) or a command in the target. The harness's own failures exit "
                        "125, the deadline 124, as timeout(1) and docker run do.")
    targets_arg(ex)
    ex.add_argument("target", metavar="TARGET", help="the target's name")
    ex.add_argument("--timeout", metavar="D", help="the deadline for the boot and the program (default: the "
                    "target's timeout), like 60s")
    ex.add_argument("program", metavar="PROGRAM", nargs="*", help="-- PROGRAM [ARG...] (after --, so that the "
                    "program's own options are its)")

    bs = sub.add_parser("bisect", help="where along a knob (address-space size, RLIMIT_AS, memory, kernels) a "
                        "probe's outcome changes",
                        description="Search TARGET for every value of a knob at which a probe's outcome (with its "
                        "crash message) changes: sample the range, then halve every interval whose ends differ, "
                        "down to the resolution, for each probe separately. Knobs: reserved_va (qemu-user), memory "
                        "(uml, qemu), rlimit_as (any backend), task_size (the simulated kernel, the model's "
                        "policies only: no boot); or --kernels, an ordered list of Debian releases or kernel "
                        "packages (uml, qemu). Every point is cached by its inputs: a repeated search boots "
                        "nothing. Exit 0 when the search ran to the end, 1 when a point could not be measured "
                        "here, 130 when interrupted (what was found is written either way).")
    targets_arg(bs)
    bs.add_argument("target", metavar="TARGET", help="the target's name")
    bs.add_argument("--vary", metavar="KNOB", help="reserved_va, memory, rlimit_as or task_size")
    bs.add_argument("--from", dest="lo", metavar="A", help='the range\'s low end, a size like "512M" or '
                    '"0xf000000000"')
    bs.add_argument("--to", dest="hi", metavar="B", help="the range's high end")
    bs.add_argument("--kernels", metavar="K1,K2,...", help="search these kernels, in this order, instead of a "
                    "knob: Debian releases (bullseye,bookworm,trixie) or, for qemu, kernel packages")
    bs.add_argument("--probe", metavar="P", action="append",
                    help="search this probe (repeatable, or comma-separated; default: the target's own)")
    bs.add_argument("--resolution", metavar="R", help="how close a boundary's two values end (default: a page "
                    "for reserved_va and task_size, 1M for rlimit_as and memory)")
    bs.add_argument("--samples", metavar="N", type=int, default=8,
                    help="points measured over the whole range first, its ends included (default 8)")
    bs.add_argument("--confirm", metavar="N", type=int, default=0,
                    help="then measure each side of every boundary N more times, afresh: a side that gives "
                    "more than one outcome makes its boundary UNSTABLE (a runtime whose use varies from run "
                    "to run, like Go's at its RLIMIT_AS boundary; default 0)")
    bs.add_argument("--json", metavar="F", type=Path, help="write the search as JSON")
    bs.add_argument("--html", metavar="F", type=Path, help="write a self-contained HTML page: a strip per probe "
                    "over the range, coloured by outcome, its boundaries marked")
    bs.add_argument("--artifacts", metavar="DIR", type=Path, default=Path(DEFAULT_ARTIFACTS),
                    help="where the boots' console logs are kept (default ./%s/bisect-ID)" % DEFAULT_ARTIFACTS)
    bs.add_argument("--no-cache", action="store_true", help="measure every point afresh (what is measured "
                    "is still cached)")
    bs.add_argument("--quiet", "-q", action="store_true", help="no progress lines")

    ls = sub.add_parser("list", help="list the targets (with --only, --group, --shard: those run would run)")
    targets_arg(ls)
    ls.add_argument("--only", metavar="NAME", action="append", help="only this target (repeatable)")
    ls.add_argument("--group", metavar="NAME", action="append", help="only the targets of this CI group (repeatable)")
    ls.add_argument("--shard", metavar="K/N", help="only the K-th of N slices of the targets (as run --shard)")

    rp = sub.add_parser("report", help="render reports from a results file")
    rp.add_argument("results", type=Path)
    rp.add_argument("--junit", metavar="F", type=Path)
    rp.add_argument("--markdown", metavar="F", type=Path)
    rp.add_argument("--html", metavar="F", type=Path)
    rp.add_argument("--track", metavar="STATE", type=Path,
                    help="the tracking file of diff --track: the --html page says since when each failure fails")
    allow_skip_arg(rp)

    df = sub.add_parser("diff", help="compare two results files; exit 1 on regression, or when NEW is empty, "
                                     "incomplete, skipped or missing results of OLD")
    df.add_argument("old", type=Path)
    df.add_argument("new", type=Path)
    allow_skip_arg(df)
    df.add_argument("--allow-gone", action="store_true",
                    help="results of OLD missing from NEW (targets or policies removed on purpose) do not fail")
    df.add_argument("--markdown", metavar="F", type=Path, help="also write the diff as Markdown")
    df.add_argument("--track", metavar="STATE", type=Path,
                    help="open-regressions file: remembers where each regression first failed")

    mg = sub.add_parser("merge", help="join results files (shards) into one")
    mg.add_argument("output", type=Path)
    mg.add_argument("inputs", type=Path, nargs="+")
    mg.add_argument("--prefer", choices=PREFER, metavar="first|last",
                    help="which file's result wins when files share a (target, policy) (default: that is an error)")

    gr = sub.add_parser("groups", help="the CI matrix: groups of targets and the kernels they cover")
    targets_arg(gr)
    gr.add_argument("--json", action="store_true", help="print the group names as a JSON list (for CI)")

    d = sub.add_parser("doctor", help="what each target needs here, what is missing and how to install it, "
                       "KVM, and which images a run would build")
    targets_arg(d)
    d.add_argument("--only", metavar="NAME", action="append", help="only this target (repeatable)")
    d.add_argument("--group", metavar="NAME", action="append", help="only the targets of this CI group (repeatable)")
    d.add_argument("--shard", metavar="K/N", help="only the K-th of N slices of the targets (as run --shard)")
    d.add_argument("--strict", action="store_true", help="exit 1 when any target could not run here")
    d.add_argument("--kvm", action="store_true", help="boot the short trial VM that accel: auto decides by "
                   "(needs the host architecture's kernel in the image cache)")

    im = sub.add_parser("images", help="build, list or prune the cached guest images")
    isub = im.add_subparsers(dest="images_command", metavar="ACTION")
    b = isub.add_parser("build", help="build every image the targets need (nothing if cached)")
    targets_arg(b)
    b.add_argument("--only", metavar="NAME", action="append", help="only this target's images (repeatable)")
    b.add_argument("--group", metavar="NAME", action="append", help="only the images of this CI group's targets "
                   "(repeatable)")
    b.add_argument("--shard", metavar="K/N", help="only the images of the K-th of N slices of the targets "
                   "(the slice run --shard K/N runs)")
    ik = isub.add_parser("key", help="one hash of the cache keys of every image the targets use (parts included): "
                         "what changes exactly when one of them would be built anew, for a CI cache's key")
    targets_arg(ik)
    ik.add_argument("--only", metavar="NAME", action="append", help="only this target's images (repeatable)")
    ik.add_argument("--group", metavar="NAME", action="append", help="only the images of this CI group's targets "
                    "(repeatable)")
    ik.add_argument("--shard", metavar="K/N", help="only the images of the K-th of N slices of the targets")
    ik.add_argument("--list", action="store_true", help="print each image's kind, name and key instead")
    il = isub.add_parser("list", help="list the cache's entries: size, age, which targets use each, and what "
                         "tells entries of one name apart")
    targets_arg(il)
    pr = isub.add_parser("prune", help="remove entries the targets do not use (and broken leftovers)")
    targets_arg(pr)
    pr.add_argument("--all", action="store_true", help="remove every entry")
    pr.add_argument("--older-than", metavar="DAYS", type=float, help="only entries unused for DAYS days")
    pr.add_argument("--dry-run", "-n", action="store_true", help="list what would be removed, remove nothing")

    cl = sub.add_parser("clean", help="remove what killed runs left: processes, containers, temp dirs, partial "
                        "image builds (runs still going are left alone)")
    cl.add_argument("--dry-run", "-n", action="store_true", help="list what would be removed, remove nothing")
    return p


def make_output_dirs(*paths: Optional[Path]) -> None:
    """Create the parent directories of the files a command will write, before it does any work.

    A path that cannot be written is one line and exit 2 up front, not a
    traceback after a long run whose results would then be lost. Directories made are 0755 whatever the
    umask, as the files written into them are 0644.
    """
    from harness.files import make_directories

    if sum(1 for p in paths if p is not None and str(p) == "-") > 1:
        raise UsageError("only one output can be - (standard output)")
    for path in paths:
        if path is None or str(path) == "-":  # standard output
            continue
        if path.is_dir():
            raise UsageError("cannot write %s: it is a directory; name a file" % path)
        nearest = next((p for p in path.parents if p.exists()), None)
        if nearest is not None and not nearest.is_dir():
            raise UsageError("cannot write %s: %s is not a directory" % (path, nearest))
        try:
            make_directories(path.parent)
        except OSError as e:
            raise UsageError("cannot write %s: cannot create directory %s: %s"
                             % (path, path.parent, e.strerror or e)) from None
        if not os.access(path.parent, os.W_OK):
            raise UsageError("cannot write %s: directory %s is not writable" % (path, path.parent))


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_early: List[str] = []  # signals ``run`` received before its run's own handling was in place


def _remember(signum: int, frame: Optional[FrameType]) -> None:
    _early.append(signal.Signals(signum).name)


def _command(argv: Sequence[str]) -> Optional[str]:
    """The command word of ``argv`` (the top-level options take no value), without the parser."""
    return next((a for a in argv if not a.startswith("-")), None)


@contextlib.contextmanager
def signals_stop_the_run(restore: bool = True) -> Iterator[None]:
    """Inside, SIGINT, SIGTERM and SIGHUP only ask the run to stop (the first one is named in the
    results). The handler raises nothing, so no signal, however many and whenever they come, can cut
    short the stopping of the guests or the writing of the results. The command line then ignores
    them until the process exits (``restore=False``): a late signal must not turn a written result
    into a traceback or a death by signal (Python puts its own handlers back to SIG_DFL when it
    finalizes, but leaves SIG_IGN alone)."""

    from harness import proc

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        proc.request_stop(signal.Signals(signum).name)

    proc.clear_stop()
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    if _early:  # came while the command line was still starting: the run starts nothing and says so
        proc.request_stop(_early[0])
        _early.clear()
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if restore else signal.SIG_IGN)
        if restore:
            proc.clear_stop()


def select_targets(targets_set: TargetSet, only: Optional[List[str]], group: Optional[List[str]],
                   shard: Optional[str] = None) -> List[Target]:
    """The targets ``--only``, ``--group`` and ``--shard`` select (all of them when none is given), in file order.

    ``run``, ``doctor`` and ``images build`` select alike, so a CI job can check
    and build for exactly the targets it then runs.
    """
    from harness import config, runner

    targets = targets_set.select(only)
    if group:
        import fnmatch

        groups = {g.name: g for g in config.load_groups(targets_set)}
        chosen = []
        for pattern in group:  # a name or a shell-style glob (qemu-*)
            hits = [name for name in groups if fnmatch.fnmatchcase(name, pattern)]
            if not hits:
                raise UsageError("unknown group %r; groups: %s" % (pattern, ", ".join(groups)))
            chosen.extend(hits)
        wanted = {n for g in chosen for n in groups[g].targets}
        targets = [t for t in targets if t.name in wanted]
    if shard:
        try:
            targets = runner.shard(targets, shard)
        except ValueError as e:
            raise UsageError(str(e)) from None
    return targets


def _print_clean(rep: cleanup.Report, quiet: bool) -> None:
    """What ``clean`` did; before a run only what it removed or could not (as one line each, on stderr)."""
    out = sys.stderr if quiet else sys.stdout
    for line in rep.removed:
        print(("arena-harness: leftovers of a killed run: %s" if quiet else "%s") % line, file=out)
    for line in rep.problems:
        print("arena-harness: %s" % line, file=sys.stderr)
    if not quiet:
        for line in rep.left:
            print(line)


def requested_probes(probes: Optional[List[str]], policies: Optional[List[str]],
                     targets: Sequence[Any]) -> Optional[List[str]]:
    """The names ``--probe`` and ``--policy`` ask for (None: each target's own), each checked: a built-in
    probe, or a program probe one of the selected targets defines."""
    from allocator.probe import expand_policies
    from harness.model import BUILTIN_PROBES

    if not probes and not policies:
        return None
    out: List[str] = []
    if policies:
        try:
            out.extend(expand_policies(policies))
        except ValueError as e:
            raise UsageError(str(e)) from None
    defined = {p.name for t in targets for p in t.probes}
    known = list(BUILTIN_PROBES) + sorted(defined - set(BUILTIN_PROBES))
    for item in probes or []:
        for name in (n.strip() for n in item.split(",")):
            if not name or name in out:
                continue
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                raise UsageError("unknown probe %r; %sknown here: %s" % (
                    name, "did you mean %s? " % close[0] if close else "", ", ".join(known)))
            out.append(name)
    return out


EXIT_EXEC_HARNESS = 125  # the harness could not run the program (docker run's convention)
EXIT_EXEC_TIMEOUT = 124  # the deadline (timeout(1)'s)
EXIT_EXEC_SIGPIPE = 141  # our stdout was closed (128 + SIGPIPE, as a shell reports a writer in a pipeline)


def proc_stopping() -> Optional[str]:
    from harness import proc

    return proc.stopping()


class StreamOut:
    """Writes the agent's stream lines (``@@ARENA-HARNESS-STREAM@@ o|e BASE64``) to our stdout and stderr as
    they come; everything else a guest prints stays in its console log."""

    def __init__(self, out: Any = None, err: Any = None) -> None:
        self.out = out if out is not None else sys.stdout.buffer
        self.err = err if err is not None else sys.stderr.buffer
        self.closed = False  # our reader went away (exec ... | head): the program is stopped

    def __call__(self, line: str) -> None:
        import base64
        import binascii

        from guest.agent import STREAM

        at = line.find(STREAM)
        if at < 0:
            return
        parts = line[at + len(STREAM):].split()
        if len(parts) != 2 or parts[0] not in ("o", "e"):
            return
        try:
            data = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            return
        stream = self.out if parts[0] == "o" else self.err
        if self.closed:
            return
        try:
            stream.write(data)
            stream.flush()
        except (BrokenPipeError, ValueError):  # as a shell pipeline does: the writer ends with SIGPIPE's 141
            from harness import proc

            self.closed = True
            proc.request_stop("SIGPIPE")


def cmd_exec(args: argparse.Namespace) -> int:
    from harness import config, runner

    program = list(args.program)
    if program[:1] == ["--"]:
        program = program[1:]
    if not program:
        raise UsageError("exec needs a program: arena-harness exec TARGET -- PROGRAM [ARG...]")
    if any(c in args.target for c in "*?["):
        raise UsageError("exec runs in one target: give its name, not a pattern")
    (target,) = config.load(args.targets).select([args.target])
    timeout = target.timeout if args.timeout is None else float(config.duration(args.timeout, "--timeout"))
    host_file: Optional[Path] = None
    if "/" in program[0]:
        host_file = Path(program[0])
        if not host_file.is_file():
            raise UsageError("no such file here: %s (a PROGRAM with a / is a file on this host, delivered into the "
                             "target; a command of the target's is a bare name)" % program[0])
    stream = StreamOut()
    with signals_stop_the_run():
        try:
            guest, log_path = runner.exec_in(target, program, host_file, timeout=timeout,
                                             artifacts=Path(DEFAULT_ARTIFACTS) / "exec", on_line=stream,
                                             log=lambda msg: print("arena-harness: %s" % msg, file=sys.stderr))
        except HarnessError as e:
            print("arena-harness: %s: %s" % (target.name, e), file=sys.stderr)
            return EXIT_EXEC_HARNESS
        stopped = proc_stopping()  # read here: leaving the block clears it
    step = guest.steps[0] if guest.steps else None
    if stream.closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to say to a closed pipe
        return EXIT_EXEC_SIGPIPE
    if stopped and (step is None or step.get("signal")):
        print("arena-harness: %s: interrupted by %s (console log: %s)" % (target.name, stopped, log_path),
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if guest.timed_out:
        print("arena-harness: %s: deadline of %.0fs reached (console log: %s)" % (target.name, timeout, log_path),
              file=sys.stderr)
        return EXIT_EXEC_TIMEOUT
    if guest.panic:
        print("arena-harness: %s: kernel panic: %s (console log: %s)" % (target.name, guest.panic, log_path),
              file=sys.stderr)
        return EXIT_EXEC_HARNESS
    if step is None:
        print("arena-harness: %s: the program's result never came back: %s (console log: %s)"
              % (target.name, guest.error or "no result", log_path), file=sys.stderr)
        return EXIT_EXEC_HARNESS
    if step.get("signal"):
        from guest.agent import signal_number

        return 128 + signal_number(str(step["signal"])) if signal_number(str(step["signal"])) else EXIT_EXEC_HARNESS
    rc = step.get("returncode")
    return rc if isinstance(rc, int) and 0 <= rc <= 255 else EXIT_EXEC_HARNESS


def cmd_run(args: argparse.Namespace, argv: List[str], whole_process: bool = False) -> int:
    from harness import cleanup, config, progress, report, runner, verdict

    verdict.require_list()  # a bad HARNESS_REQUIRE is a usage error now, not after the run
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    targets = select_targets(config.load(args.targets), args.only, args.group, args.shard)
    policies = requested_probes(args.probe, args.policy, targets)
    if not any(runner.policies_for(t, policies) for t in targets):
        # An empty selection would "pass" with nothing run.
        raise UsageError("nothing to run: the selection (--only, --group, --shard, --probe) leaves no target and "
                         "probe")
    make_output_dirs(args.json, args.junit, args.markdown, args.html)
    with signals_stop_the_run(restore=not whole_process):
        run_id = runner.new_run_id()
        _print_clean(cleanup.clean(skip=run_id), quiet=True)
        plan = [t for t in targets if runner.policies_for(t, policies)]
        with progress.shown(plan, sys.stderr, quiet=args.quiet) as show:
            doc = runner.run(
                targets,
                policies=policies,
                jobs=args.jobs,
                artifacts=args.artifacts,
                progress=show,
                run_id=run_id,
                argv=["arena-harness"] + argv,
                targets_file=args.targets,
            )
        # Results are written before anything else can go wrong, also for an interrupted run: always
        # next to the console logs, and where --json says.
        doc.write(Path(doc.artifacts or args.artifacts) / "results.json")
        if args.json:
            doc.write(args.json)
        report.write(report.junit(doc), args.junit)
        report.write(report.markdown(doc), args.markdown)
        report.write(report.html(doc), args.html)
        # A report on standard output (-) keeps it clean: the table goes to standard error then.
        table = sys.stderr if "-" in map(str, (args.json, args.junit, args.markdown, args.html)) else sys.stdout
        print(report.table(doc, color=table.isatty()), file=table)
        print("console logs and results.json: %s" % doc.artifacts, file=table)
    if doc.interrupted:
        return EXIT_INTERRUPTED
    return _gate(doc, args.allow_skip)


def cmd_bisect(args: argparse.Namespace, argv: List[str], whole_process: bool = False) -> int:
    """``arena-harness bisect``: check everything first (one line, exit 2), then search; the results are
    written also when a signal stops the search (then exit 130)."""
    from harness import bisect, config, report, runner

    if any(c in args.target for c in "*?["):
        raise UsageError("bisect searches one target: give its name, not a pattern")
    (target,) = config.load(args.targets).select([args.target])
    probes = requested_probes(args.probe, None, [target])
    kernels = None if args.kernels is None else [k.strip() for k in args.kernels.split(",") if k.strip()]
    plan = bisect.plan(
        target, knob=args.vary, kernels=kernels, samples=args.samples, probes=probes,
        probes_given=probes is not None, confirm=args.confirm,
        lo=None if args.lo is None else config.size(args.lo, "--from"),
        hi=None if args.hi is None else config.size(args.hi, "--to"),
        resolution=None if args.resolution is None else config.size(args.resolution, "--resolution"))
    make_output_dirs(args.json, args.html)
    artifacts = args.artifacts / ("bisect-" + runner.new_run_id())
    with signals_stop_the_run(restore=not whole_process):
        doc = bisect.search(plan, artifacts=artifacts, cache=bisect.PointCache(enabled=not args.no_cache),
                            stream=sys.stderr, quiet=args.quiet, argv=["arena-harness"] + argv)
        # Written before anything else can go wrong, also for a search a signal stopped.
        if args.json:
            doc.write(args.json)
        report.write(report.bisect_html(doc), args.html)
        out = sys.stderr if "-" in map(str, (args.json, args.html)) else sys.stdout
        print(bisect.text(doc), end="", file=out)
    if doc.interrupted:
        return EXIT_INTERRUPTED
    if doc.stopped:
        print("arena-harness: the search stopped: %s" % doc.stopped, file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _gate(doc: RunDocument, allow_skip: bool) -> int:
    """The exit status of a run or a report: 1 if any result failed or the gate has a problem (said on
    stderr, one line each), else 0."""
    from harness import verdict

    problems = verdict.run_problems(doc, allow_skip)
    for problem in problems:
        print("arena-harness: gate failed: %s" % problem, file=sys.stderr)
    return EXIT_FAILED if doc.failed() or problems else EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    """The targets, or with ``--only``, ``--group`` and ``--shard`` those ``run`` would run with the same
    options (the same selection function), in the order it runs them."""
    from harness import config

    ts = config.load(args.targets)
    selected = select_targets(ts, args.only, args.group, args.shard)
    if not selected:
        raise UsageError("the selection (--only, --group, --shard) leaves no target")
    width = max(len(t.name) for t in selected)
    for t in selected:
        exp = ", ".join("%s=%s" % (p, e) for p, e in t.expect) or "no expectations"
        print("%s  %-8s %s" % (t.name.ljust(width), t.backend, exp))
        if t.description:
            print("%s  %s" % (" " * width, t.description))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from harness import diff, report, verdict
    from harness.results import RunDocument

    verdict.require_list()
    if args.track and not args.html:
        raise UsageError("--track says since when each failure fails on the --html page: give --html F too")
    doc = RunDocument.load(args.results)
    history = diff.history(args.track, doc) if args.track else None
    make_output_dirs(args.junit, args.markdown, args.html)
    report.write(report.junit(doc), args.junit)
    report.write(report.markdown(doc), args.markdown)
    report.write(report.html(doc, history), args.html)
    table = sys.stderr if "-" in map(str, (args.junit, args.markdown, args.html)) else sys.stdout
    print(report.table(doc, color=table.isatty()), file=table)
    return _gate(doc, args.allow_skip)


def cmd_diff(args: argparse.Namespace) -> int:
    from harness import diff, report, verdict
    from harness.results import RunDocument

    verdict.require_list()
    d = diff.compare(RunDocument.load(args.old), RunDocument.load(args.new))
    make_output_dirs(args.markdown, args.track)
    problems = verdict.diff_problems(d, args.allow_skip, args.allow_gone)
    if args.track:
        diff.track(d, args.track)
    print(diff.text(d))
    report.write(diff.markdown(d, problems), args.markdown)
    for problem in problems:
        print("arena-harness: gate failed: %s" % problem, file=sys.stderr)
    return EXIT_FAILED if d.regressed or problems else EXIT_OK


def cmd_merge(args: argparse.Namespace) -> int:
    from harness import report, results
    from harness.results import RunDocument

    docs = [RunDocument.load(p) for p in args.inputs]
    doc = results.merge(docs, args.prefer, [str(p) for p in args.inputs])
    make_output_dirs(args.output)
    doc.write(args.output)
    dropped = sum(len(d.records) for d in docs) - len(doc.records)
    print("%s: %d results from %d files%s; %s" % (
        args.output, len(doc.records), len(args.inputs),
        " (%d duplicates dropped, --prefer %s)" % (dropped, args.prefer) if dropped else "",
        report.summary_line(doc)))
    return EXIT_OK


def cmd_groups(args: argparse.Namespace) -> int:
    from harness import config

    groups = config.load_groups(config.load(args.targets))
    if args.json:
        print(json.dumps([g.name for g in groups]))
        return EXIT_OK
    for g in groups:
        print("%-14s %s" % (g.name, ", ".join(g.targets)))
        print("%-14s kernels: %s" % ("", "; ".join(g.kernels)))
    return EXIT_OK


def _kvm_report(cache: images.Cache, targets: Sequence[Target], trial: bool) -> str:
    """Whether KVM is usable and what ``accel: auto`` would pick: the QEMU backend's own decision."""
    import images
    from harness import arches
    from harness.backends.qemu import QemuBackend, QemuOptions
    from harness.model import Target

    auto = [t.name for t in targets if t.backend == "qemu" and t.options.accel == "auto"]
    uses = ("targets with accel: auto: %s" % ", ".join(auto)) if auto else "no target here uses accel: auto"
    arch = next((a.name for a in arches.ARCHES if a.debian == images.host_arch()), None)
    if arch is None:
        return "KVM: no QEMU architecture of the harness matches this host (%s); %s" % (os.uname().machine, uses)
    probe = QemuBackend(Target(name="(kvm trial)", backend="qemu", options=QemuOptions(arch=arch, accel="auto")))
    pick, why = probe.auto_accel(cache, trial)
    if pick is None:
        return "KVM (%s): accel: auto would decide by a trial boot: %s%s; %s" % (
            arch, why, "" if trial else "; doctor --kvm runs it", uses)
    return "KVM (%s): accel: auto would pick %s: %s; %s" % (arch, pick, why, uses)


def _recipe_names(recipes: Sequence[images.Recipe]) -> str:
    return ", ".join("%s %s" % (r.kind, r.name) for r in recipes)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Per target: every tool it needs (those only needed to build uncached images marked so), whether it
    can run here (the runner's own check, ``Backend.missing``), and its images: cached or to build."""
    import images
    from harness import backends, config
    from harness.backends.base import Need

    ts = config.load(args.targets)
    targets = select_targets(ts, args.only, args.group, args.shard)
    cache = images.Cache()
    print("arena-harness doctor: %d targets from %s; image cache %s" % (len(targets), ts.source, cache.root))
    print(_kvm_report(cache, targets, args.kvm))
    blocked: List[str] = []
    all_cached: List[images.Recipe] = []
    all_build: List[images.Recipe] = []
    for t in targets:
        backend = backends.get(t.backend)(t)
        needs = backend.needs(cache)
        problem = backend.missing()
        if problem is not None and not any(n.what == problem.tool for n in needs):
            needs.append(Need(problem.tool, False, problem.hint))
        print()
        if problem is None:
            print("  ok       %s (%s)" % (t.name, t.backend))
        else:
            blocked.append("%s: %s" % (t.name, problem.tool))
            print("  CANNOT   %s (%s): %s missing: %s" % (t.name, t.backend, problem.tool, problem.hint))

        def listed(ns: List[Need]) -> str:
            return ", ".join(n.what + ("" if n.ok else " (MISSING)") for n in ns)

        boot = [n for n in needs if not n.images]
        build = [n for n in needs if n.images]
        line = "needs: %s" % (listed(boot) or "no host program")
        if build:
            line += "; to build its images: %s" % listed(build)
        print("           %s" % line)
        cached, to_build = cache.plan(backend.recipes())
        all_cached.extend(r for r in cached if r not in all_cached)
        all_build.extend(r for r in to_build if r not in all_build)
        parts = []
        if cached:
            parts.append("cached: %s" % _recipe_names(cached))
        if to_build:
            parts.append("a run would build: %s" % _recipe_names(to_build))
        print("           images: %s" % ("; ".join(parts) or "none"))
    print()
    print("%d of %d targets can run here%s" % (len(targets) - len(blocked), len(targets),
                                               "; cannot: %s" % "; ".join(blocked) if blocked else ""))
    print("images: %d cached, %d to build (a run builds them first; or: arena-harness images build)"
          % (len(all_cached), len(all_build)))
    return EXIT_FAILED if blocked and args.strict else EXIT_OK


def _human(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return "%.0f%s" % (n, unit) if unit == "B" else "%.1f%s" % (n, unit)
        n /= 1024
    return str(n)


def _build_images(cache: images.Cache, targets: Sequence[Target]) -> int:
    from harness import backends

    start = time.monotonic()
    for t in targets:
        backend = backends.get(t.backend)(t)
        recipes = backend.recipes()
        if not recipes:
            continue
        t0 = time.monotonic()

        def log(msg: str, name: str = t.name) -> None:
            print("[ img ] %-22s %s" % (name, msg), file=sys.stderr, flush=True)

        backend.provision(cache, log)
        print("%-22s ready in %.1fs: %s" % (t.name, time.monotonic() - t0,
                                          ", ".join("%s %s" % (r.kind, r.name) for r in recipes)))
    print("%d built, %d already cached, %.1fs" % (cache.builds, cache.hits, time.monotonic() - start))
    return EXIT_OK


def cmd_images(args: argparse.Namespace) -> int:
    import images
    from harness import backends, config, registry, runner

    cache = images.Cache()
    action = args.images_command
    if action not in ("build", "key", "list", "prune"):
        raise UsageError("an action is required: build, key, list or prune")
    ts = config.load(args.targets)
    targets = ts.select(None)
    if action == "list":
        return _list_images(cache, targets, ts.source)
    if action == "key":
        return _images_key(select_targets(ts, args.only, args.group, args.shard), args.list)
    if action == "build":
        targets = select_targets(ts, args.only, args.group, args.shard)
        with registry.recording("images-" + runner.new_run_id()):
            return _build_images(cache, targets)
    keep: List[Path] = []
    if not args.all:
        for t in targets:
            keep.extend(cache.path(r) for r in backends.get(t.backend)(t).recipes())
    older = args.older_than * 86400 if args.older_than is not None else None
    removed = cache.prune(keep=keep, older_than=older, dry_run=args.dry_run)
    for path in removed:
        print("%s %s" % ("would remove" if args.dry_run else "removed", path))
    print("%d %s" % (len(removed), "to remove (dry run: nothing removed)" if args.dry_run else "removed"))
    return EXIT_OK


def _images_key(targets: Sequence[Target], listed: bool) -> int:
    """``images key``: a hash of the sorted ``kind name key`` lines of every recipe the targets use, their
    parts and the go probe's binary included. Each key is a hash of its recipe's inputs (a kernel's source
    and compiler versions, its base config and fragment; a root's suite and packages; Go's version), so
    the hash changes when, and only when, something would be built anew: a CI cache keyed by it is saved
    again exactly then."""
    import images
    from harness import backends

    lines: List[str] = []

    def add(recipe: images.Recipe) -> None:
        if not recipe.portable:  # a fact of this machine (KVM's verdict), never restored from a cache
            return
        line = "%s %s %s" % (recipe.kind, recipe.name, recipe.key())
        if line not in lines:
            lines.append(line)
            for part in recipe.parts():
                add(part)

    for t in targets:
        backend = backends.get(t.backend)(t)
        for r in backend.recipes():
            add(r)
        if any(p.kind == "go" for p in t.probes):  # the go probe's binary, built as the run would build it
            add(images.GoProbe(backend.guest_arch()))
    if listed:
        for line in sorted(lines):
            print(line)
    else:
        print(hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:32])
    return EXIT_OK


def _ago(then: float, now: float) -> str:
    """How long ago, in the largest whole unit: ``40s``, ``12m``, ``5h``, ``3d``."""
    secs = max(0.0, now - then)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return "%d%s" % (secs // size, unit)
    return "%ds" % secs


def _input_text(value: object) -> str:
    """A recipe input, short: a list comma-separated, a long hash (of a script) cut to 12 digits."""
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)
    return text[:12] if len(text) > 16 and all(c in "0123456789abcdef" for c in text) else text


def _told_apart(entries: Sequence[images.Entry]) -> Dict[Path, str]:
    """For entries sharing a kind and a name: the recipe inputs whose values differ among them
    (``packages=python3,openssh-server``), by entry path; an entry alone of its name gets nothing."""
    groups: Dict[Tuple[str, str], List[images.Entry]] = {}
    for e in entries:
        groups.setdefault((e.kind, e.name), []).append(e)
    out: Dict[Path, str] = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        keys = sorted({k for e in group for k in e.inputs})
        differ = [k for k in keys if len({_input_text(e.inputs.get(k, "-")) for e in group}) > 1]
        for e in group:
            out[e.path] = " ".join("%s=%s" % (k, _input_text(e.inputs.get(k, "-"))) for k in differ) or "same inputs"
    return out


def _users(cache: images.Cache, targets: Sequence[Target]) -> Dict[Path, List[str]]:
    """Which targets use each cache entry: those that boot from it, by name, and those whose entries are
    built from it, as ``name (part)`` (``images prune`` keeps only what targets boot from)."""
    from harness import backends

    direct: Dict[Path, Dict[str, bool]] = {}

    def add(recipe: images.Recipe, name: str, is_part: bool) -> None:
        users = direct.setdefault(cache.path(recipe).resolve(), {})
        users[name] = users.get(name, False) or not is_part
        for part in recipe.parts():
            add(part, name, True)

    for t in targets:
        for r in backends.get(t.backend)(t).recipes():
            add(r, t.name, False)
    return {path: [n if boots else "%s (part)" % n for n, boots in users.items()] for path, users in direct.items()}


def _list_images(cache: images.Cache, targets: Sequence[Target], source: str) -> int:
    """The cache's entries as an aligned table: kind, name, size, built and last used how long ago,
    key, the recipe inputs that tell entries of one name apart, and the targets of ``source`` using each."""
    entries = sorted(cache.entries(), key=lambda e: (e.kind, e.name, e.built))
    users = _users(cache, targets)
    apart = _told_apart(entries)
    now = time.time()
    head = ["KIND", "NAME", "SIZE", "BUILT", "USED", "KEY", "USED BY"]
    if apart:
        head.insert(6, "TOLD APART BY")
    rows = []
    for e in entries:
        row = [e.kind, e.name, _human(e.size), _ago(e.built, now), _ago(e.used, now), e.key,
               ", ".join(users.get(e.path.resolve(), [])) or "-"]
        if apart:
            row.insert(6, apart.get(e.path, ""))
        rows.append(row)
    print("cache: %s; used by: the targets of %s" % (cache.root, source))
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    for row in [head] + rows:
        cells = [c.rjust(widths[i]) if head[i] == "SIZE" else c.ljust(widths[i]) for i, c in enumerate(row)]
        print("  ".join(cells).rstrip())
    unused = sum(1 for e in entries if e.path.resolve() not in users)
    print("%d entries, %s; %d used by no target (images prune --dry-run lists what prune removes)"
          % (len(entries), _human(sum(e.size for e in entries)), unused))
    return EXIT_OK


def cmd_clean(args: argparse.Namespace) -> int:
    from harness import cleanup

    rep = cleanup.clean(dry_run=args.dry_run)
    _print_clean(rep, quiet=False)
    print("%d %s, %d left alone%s" % (len(rep.removed), "to do" if args.dry_run else "done", len(rep.left),
                                      ", %d problems" % len(rep.problems) if rep.problems else ""))
    return EXIT_FAILED if rep.problems else EXIT_OK


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "exec": cmd_exec,
    "list": cmd_list,
    "doctor": cmd_doctor,
    "images": cmd_images,
    "report": cmd_report,
    "diff": cmd_diff,
    "merge": cmd_merge,
    "groups": cmd_groups,
    "clean": cmd_clean,
}


def main(argv: Optional[List[str]] = None) -> int:
    whole_process = argv is None  # the command line itself, not a caller in the same process
    argv = list(sys.argv[1:] if argv is None else argv)
    if whole_process and _command(argv) in ("run", "bisect"):
        # First, before the imports and the config loading that come before the run: from now on a signal
        # only asks the run to stop (signals_stop_the_run passes it on), it no longer kills the process.
        for s in STOP_SIGNALS:
            signal.signal(s, _remember)
    try:
        program: Optional[List[str]] = None
        if _command(argv) == "exec" and "--" in argv:  # what follows -- is the program's, never ours
            at = argv.index("--")
            argv, program = argv[:at], argv[at + 1:]
        args = build_parser().parse_args(argv)
        if program is not None:
            args.program = program
        if args.command == "run":
            return cmd_run(args, argv, whole_process)
        if args.command == "bisect":
            return cmd_bisect(args, argv, whole_process)
        command = COMMANDS.get(args.command)
        if command is None:
            raise UsageError("a command is required: run, bisect, %s (see arena-harness --help)" % ", ".join(COMMANDS))
        return command(args)
    except HarnessError as e:
        print("arena-harness: %s" % e, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("arena-harness: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
