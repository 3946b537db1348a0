"""The runner: targets x policies, one boot per target, parallel jobs, deadlines, cleanup.

Each target boots once and runs every requested policy in that session. The
run's temporary directory (the allocator zipapp, per-boot init scripts and
result shares) is removed when the run ends, whatever ends it; console logs
are kept under the artefacts directory. An interrupt (a stop request from the
CLI's signal handler, or a KeyboardInterrupt) stops every guest at once and
returns what was collected within a few seconds, marked incomplete; further
signals change nothing. Targets run on daemon threads, each bound to the run's
own stop (``proc.scope``), so one stuck in a wait no stop can end neither delays
the results nor starts anything after the run returned. The run's temp dir,
processes and containers are recorded in the run registry while they exist.
"""

from __future__ import annotations

import datetime
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import images
from harness import backends, cleanup, payload, proc, registry
from harness import files as files_module
from harness import probes as probing
from harness.backends.base import RunContext, StdinHook
from harness.backends.console import STEP
from harness.errors import HarnessError
from harness.model import Deadline, GuestRun, Record, Status, Target, quote
from harness.results import RunDocument, classify, errored, judge_agreement, skipped

Progress = Callable[[str, Target, str, Sequence[Record]], None]
"""progress(event, target, message, records), called from the targets' threads (so it must lock what it
shares): "start" (the target is taken up), "phase" (``message`` names the phase it enters: "provision",
its images checked or built; "boot", its guest starting; "probe NAME", the guest agent running that
step; "collect", the guest done and its results read), "build" (``message``: a line of an image build)
or "done" (``records``: its results)."""
Phase = Callable[[str], None]


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def policies_for(target: Target, requested: Optional[Sequence[str]]) -> List[str]:
    """The names of the probes to run on ``target``: its own, or those ``requested`` (``--probe``): a
    name the target lists, else a built-in probe of that name; a program probe of another target's is
    not run here."""
    if not requested:
        return list(target.policies)
    return [name for name in requested if target.probe(name) is not None]


def run_target(
    target: Target, policies: List[str], run_id: str, tmp: Path, pyz: Path, logs: Path,
    cache: Optional[images.Cache] = None, log: Optional[images.Log] = None, phase: Phase = lambda name: None,
) -> List[Record]:
    """Boot one target and judge each policy; every failure becomes records, never an exception.

    A HarnessError says what went wrong in the user's terms; any other exception, in any step (finding
    the backend, its tool check, provisioning, the boot, shutting down, judging), is a bug of the
    backend: an error record "internal error in <backend> backend: <Type>: <message>". Raised out of
    the target's thread it would leave the target busy, reported as interrupted though nothing was."""
    log_path = logs / ("%s.log" % target.name)
    began = [time.monotonic()]  # moved on when the boot starts: a record's duration is the boot's, not the build's
    try:
        return _boot_and_judge(target, policies, run_id, tmp, pyz, log_path, cache, log, began, phase)
    except HarnessError as e:
        return [errored(target, p, str(e), log_path, time.monotonic() - began[0]) for p in policies]
    except Exception as e:  # noqa: BLE001 - a backend bug must not lose this target's results or the run's
        msg = "internal error in %s backend: %s: %s" % (target.backend, type(e).__name__, e)
        return [errored(target, p, msg, log_path, time.monotonic() - began[0]) for p in policies]


def _boot_and_judge(target: Target, policies: List[str], run_id: str, tmp: Path, pyz: Path, log_path: Path,
                    cache: Optional[images.Cache], log: Optional[images.Log], began: List[float],
                    phase: Phase) -> List[Record]:
    backend = backends.get(target.backend)(target)
    missing = backend.missing()
    if missing is not None:
        return [skipped(target, p, str(missing)) for p in policies]
    phase("provision")
    # Image builds are not part of the boot: they get their own (long) deadlines.
    backend.provision(cache or images.Cache(), log or (lambda msg: None))
    workdir = Path(tempfile.mkdtemp(prefix="%s." % target.name, dir=str(tmp)))
    # The boot's one deadline starts here (image builds above have their own) and flows down to every wait.
    probes = [p for p in (target.probe(n) for n in policies) if p is not None]
    job = probing.job(target, probes, pyz, probing.provision(probes, backend, cache or images.Cache(), log))
    job.write(workdir)
    def step_started(line: str) -> None:  # the guest agent names each step as it begins
        at = line.find(STEP)
        if at >= 0:
            phase("probe %s" % quote(line[at + len(STEP):].strip(), 40))  # the guest's words: escaped

    ctx = RunContext(run_id, target, policies, workdir, pyz, log_path, Deadline(target.timeout), job=job,
                     on_line=step_started, on_phase=phase)
    # 0644 whatever the umask, and every backend appends to it (the process module and those that write
    # it themselves): a CI upload step running as another user must read it.
    files_module.create_file(log_path)
    began[0] = time.monotonic()
    phase("boot")
    try:
        guest = backend.run(ctx)
    finally:
        backend.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    records = [classify(target, p, guest) for p in policies]
    judge_agreement(records)
    return records


STOP_GRACE = 1.0
"""Seconds every guest gets, all at once, between SIGTERM and SIGKILL when the run is interrupted."""
SETTLE = 2.5
"""Seconds the interrupted run waits for its targets to report after their guests were stopped; a target
still busy then (a wait no stop can end) is reported as interrupted, and the results are written."""
INTERRUPTED = "interrupted: the run was stopped before this target finished"


def run(
    targets: Sequence[Target],
    *,
    policies: Optional[Sequence[str]] = None,
    jobs: int = 1,
    artifacts: Path,
    progress: Optional[Progress] = None,
    run_id: Optional[str] = None,
    argv: Optional[List[str]] = None,
    targets_file: Optional[str] = None,
    cache: Optional[images.Cache] = None,
) -> RunDocument:
    """Run every target; an interrupt (``proc.request_stop``, e.g. from a signal handler, or a
    KeyboardInterrupt here) stops all guests at once and returns within ``STOP_GRACE + SETTLE`` seconds
    or so, with what was collected and ``interrupted`` set. Everything the run creates is recorded in the
    run registry (:mod:`harness.registry`) while it exists."""
    run_id = run_id or new_run_id()
    logs = Path(artifacts) / run_id
    files_module.make_directories(logs)  # 0755 whatever the umask, as the logs in it are 0644
    doc = RunDocument(run_id, now_iso(), None, False, [], argv=list(argv or []), targets_file=targets_file,
                      artifacts=str(logs))
    plan = [(t, policies_for(t, policies)) for t in targets]
    plan = [(t, ps) for t, ps in plan if ps]
    with registry.recording(run_id) as rec:
        if any(t.backend == "docker" for t, _ in plan):
            rec.may_have_containers()  # labelled with the run's id: found again after a crash
        _run_plan(plan, run_id, doc, logs, rec, jobs, progress, cache)
    return doc


def _make_temp_dir(run_id: str, rec: registry.Recording) -> Path:
    """The run's temp dir, recorded before it exists (so a kill in between leaves no orphan)."""
    while True:
        tmp = Path(tempfile.gettempdir()) / ("arena-harness-%s-%s" % (run_id, secrets.token_hex(4)))
        rec.add_temp_dir(tmp)
        try:
            # 0700: only the harness enters the run's directory; jailed guests get their own paths bound in.
            tmp.mkdir(mode=0o700)
            return tmp
        except FileExistsError:
            rec.drop_temp_dir(tmp)


def _run_plan(plan: List[Tuple[Target, List[str]]], run_id: str, doc: RunDocument, logs: Path,
              rec: registry.Recording, jobs: int, progress: Optional[Progress],
              cache: Optional[images.Cache]) -> None:
    results: Dict[int, List[Record]] = {}
    busy: Dict[int, Tuple[Target, List[str], float]] = {}
    lock = threading.Lock()
    todo = list(enumerate(plan))
    finished = threading.Event()
    workers_left = [max(1, min(jobs, len(plan)))]
    ended: List[str] = []  # this run's own stop (proc.scope): its threads start nothing once it is set
    tmp = _make_temp_dir(run_id, rec)
    try:
        pyz = payload.build(tmp)

        def one(i: int, target: Target, ps: List[str]) -> None:
            if progress:
                progress("start", target, "booting", [])

            def log(msg: str) -> None:
                if progress:
                    progress("build", target, msg, [])

            def phase(name: str) -> None:
                if progress:
                    progress("phase", target, name, [])

            recs = run_target(target, ps, run_id, tmp, pyz, logs, cache, log, phase)
            if proc.stopping():
                for r in recs:
                    if r.status not in (Status.PASS, Status.OBSERVED):  # collected before the stop: kept
                        r.status = Status.ERROR
                        r.detail = INTERRUPTED
            with lock:
                if i not in busy:  # reported as interrupted already: the run did not wait for it
                    return
                results[i] = recs
                busy.pop(i)
            if progress:
                progress("done", target, "", recs)

        def worker() -> None:
            try:
                with proc.scope(ended):
                    while not proc.stopping():
                        with lock:
                            if not todo:
                                return
                            i, (target, ps) = todo.pop(0)
                            busy[i] = (target, ps, time.monotonic())
                        one(i, target, ps)
            finally:
                with lock:
                    workers_left[0] -= 1
                    if workers_left[0] == 0:
                        finished.set()

        # Daemon threads, not an executor: a target stuck in a wait no stop can end must not keep the
        # harness from writing its results and exiting (an executor's threads are joined at exit).
        for n in range(workers_left[0] if plan else 0):
            threading.Thread(target=worker, name="target-%d" % n, daemon=True).start()
        if not plan:
            finished.set()
        try:
            while not finished.wait(0.05) and not proc.stopping():
                pass
        except KeyboardInterrupt:  # no signal handler of ours: Python's default SIGINT
            ended.append("SIGINT")
        why = proc.stopping() or (ended[0] if ended else None)
        if why:
            ended.append(why)
            doc.interrupted = "interrupted by %s" % why
            _stop_everything(finished)
        else:
            doc.complete = True
    finally:
        ended.append("the run ended")
        proc.stop_all(STOP_GRACE, reason=None, owner=rec)  # nothing a target started outlives the run
        shutil.rmtree(tmp, ignore_errors=True)
        rec.drop_temp_dir(tmp)
        with lock:
            for i, (target, ps, began) in busy.items():  # still busy after the settle time
                results[i] = [errored(target, p, INTERRUPTED, logs / ("%s.log" % target.name),
                                     time.monotonic() - began) for p in ps]
            stragglers = bool(busy)
            busy.clear()
            for i in sorted(results):
                doc.records.extend(results[i])
        # A target still busy may yet make a container: then the entry keeps saying so, for `clean`.
        if rec.entry.containers and not stragglers and cleanup.remove_containers(run_id, False, cleanup.Report(),
                                                                                  sweep=False):
            rec.containers_removed()
        doc.finished = now_iso()


def exec_in(target: Target, argv: List[str], program: Optional[Path], *, timeout: float, artifacts: Path,
            on_line: Callable[[str], None], log: Optional[images.Log] = None,
            cache: Optional[images.Cache] = None) -> Tuple[GuestRun, Path]:
    """``arena-harness exec``: boot or reach ``target`` and run ``argv`` there through the guest agent,
    streaming its output (``on_line`` gets every line of the guest's; the agent's stream lines carry the
    program's). ``program``: a host file delivered read-only and run as ``argv[0]``. Returns what the
    boot produced (``steps[0]`` holds the exit status) and the console log's path."""
    # Only the harness's own placeholder is expanded, never the user's arguments ({dir} stays {dir}).
    step: Dict[str, Any] = {"name": "exec", "argv": argv, "stream": True, "rlimit_as": target.rlimit_as,
                            "expand": 0}
    files: Dict[str, Path] = {}
    if program is not None:
        files["program-exec"] = program
        step.update(argv=["{dir}/program-exec"] + argv[1:], expand=1)
    run_id = new_run_id()
    return boot_agent(target, [step], files, run_id, timeout=timeout, artifacts=artifacts, on_line=on_line,
                      log=log, cache=cache), log_path_for(artifacts, run_id, target)


def log_path_for(artifacts: Path, run_id: str, target: Target) -> Path:
    """Where a boot's console log goes: ``ARTIFACTS/RUN-ID/TARGET.log``."""
    return Path(artifacts) / run_id / ("%s.log" % target.name)


def boot_agent(target: Target, steps: List[Dict[str, Any]], files: Dict[str, Path], run_id: str, *,
               timeout: float, artifacts: Path, on_line: Callable[[str], None],
               on_stdin: Optional[StdinHook] = None,
               log: Optional[images.Log] = None, cache: Optional[images.Cache] = None,
               thread: bool = False) -> GuestRun:
    """One boot of ``target`` whose guest agent runs ``steps`` (with ``files`` delivered beside it), and,
    with ``on_stdin``, then serves messages (a session). What exec and sessions share; a run's boots go
    through :func:`run_target`. Everything it creates is recorded in the run registry (the calling
    thread's own entry with ``thread``: a session beside a run) and removed when it returns, whatever
    ends it; the dead leftovers of earlier ones go first (as ``run`` does)."""
    log_path = log_path_for(artifacts, run_id, target)
    files_module.make_directories(log_path.parent)
    files_module.create_file(log_path)
    cleanup.clean(skip=run_id)
    with registry.recording(run_id, thread=thread) as rec:
        if target.backend == "docker":
            rec.may_have_containers()
        tmp = _make_temp_dir(run_id, rec)
        backend = None
        try:
            pyz = payload.build(tmp)
            backend = backends.get(target.backend)(target)
            missing = backend.missing()
            if missing is not None:
                raise HarnessError(str(missing))
            backend.provision(cache or images.Cache(), log or (lambda msg: None))
            job = probing.Job(steps=list(steps), files={probing.PAYLOAD: pyz, **files})
            workdir = Path(tempfile.mkdtemp(prefix="%s." % target.name, dir=str(tmp)))
            job.write(workdir)
            ctx = RunContext(run_id, target, [], workdir, pyz, log_path, Deadline(timeout), job=job,
                             on_line=on_line, on_stdin=on_stdin)
            return backend.run(ctx)
        finally:
            if backend is not None:
                backend.shutdown()
            proc.stop_all(STOP_GRACE, reason=None, owner=rec)
            shutil.rmtree(tmp, ignore_errors=True)
            rec.drop_temp_dir(tmp)
            if rec.entry.containers and cleanup.remove_containers(run_id, False, cleanup.Report(), sweep=False):
                rec.containers_removed()


def _stop_everything(finished: threading.Event) -> None:
    """Stop all guests at once and give the targets ``SETTLE`` seconds to report. More signals (or
    KeyboardInterrupts) meanwhile change nothing: the stop goes on, the deadline stays."""
    deadline = time.monotonic() + STOP_GRACE + SETTLE
    stopped = False
    while True:
        try:
            if not stopped:
                proc.stop_all(STOP_GRACE, reason=None)  # cut short by a KeyboardInterrupt: done again
                stopped = True
            finished.wait(max(0.0, deadline - time.monotonic()))
            return
        except KeyboardInterrupt:
            if time.monotonic() >= deadline:
                return


def shard(items: List[Any], spec: str) -> List[Any]:
    """``K/N``: the K-th of N even, deterministic slices (round-robin over the given order)."""
    try:
        k_text, n_text = spec.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise ValueError("--shard expects K/N, like 2/4, got %r" % spec) from None
    if not (n >= 1 and 1 <= k <= n):
        raise ValueError("--shard K/N needs 1 <= K <= N, got %r" % spec)
    return [x for i, x in enumerate(items) if i % n == k - 1]
