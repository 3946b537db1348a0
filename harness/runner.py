"""The runner: targets x policies, one boot per target, parallel jobs, deadlines, cleanup.

Each target boots once and runs every requested policy in that session. The
run's temporary directory (the allocator zipapp, per-boot init scripts and
result shares) is removed when the run ends, whatever ends it; console logs
are kept under the artefacts directory. Ctrl-C or SIGTERM stops every guest and
still returns what was collected, marked incomplete.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime
import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from harness import backends, images, payload, proc
from harness.backends.base import RunContext
from harness.config import Target
from harness.errors import HarnessError
from harness.results import Record, RunDocument, Status, classify, skipped

Progress = Callable[[str, Target, str, Sequence[Record]], None]
"""progress(event, target, message, records): event is "build", "start" or "done"."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def policies_for(target: Target, requested: Optional[Sequence[str]]) -> List[str]:
    if not requested:
        return list(target.policies)
    return [p for p in target.policies if p in requested]


def run_target(
    target: Target, policies: List[str], run_id: str, tmp: Path, pyz: Path, logs: Path,
    cache: Optional[images.Cache] = None, log: Optional[images.Log] = None,
) -> List[Record]:
    """Boot one target and judge each policy; every failure becomes records, never an exception."""
    backend = backends.get(target.backend)(target)
    missing = backend.missing()
    if missing is not None:
        return [skipped(target, p, str(missing)) for p in policies]
    log_path = logs / ("%s.log" % target.name)
    start = time.monotonic()
    try:
        # Image builds are not part of the boot: they get their own (long) deadlines.
        backend.provision(cache or images.Cache(), log or (lambda msg: None))
    except HarnessError as e:
        return [_error(target, p, str(e), log_path, time.monotonic() - start) for p in policies]
    workdir = Path(tempfile.mkdtemp(prefix="%s." % target.name, dir=str(tmp)))
    ctx = RunContext(run_id, target, policies, workdir, pyz, log_path, target.timeout)
    start = time.monotonic()
    try:
        guest = backend.run(ctx)
    except HarnessError as e:
        return [_error(target, p, str(e), log_path, time.monotonic() - start) for p in policies]
    except Exception as e:  # noqa: BLE001 - a backend bug must not lose the other results
        msg = "internal error in %s backend: %s: %s" % (target.backend, type(e).__name__, e)
        return [_error(target, p, msg, log_path, time.monotonic() - start) for p in policies]
    finally:
        backend.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
    return [classify(target, p, guest) for p in policies]


def _error(target: Target, policy: str, msg: str, log: Path, duration: float) -> Record:
    exp = target.expectation(policy)
    return Record(target.name, target.backend, policy, Status.ERROR, str(exp) if exp else None, None, None,
                  None, None, round(duration, 3), str(log), detail=msg, markers=list(target.all_markers))


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
    run_id = run_id or new_run_id()
    logs = Path(artifacts) / run_id
    logs.mkdir(parents=True, exist_ok=True)
    doc = RunDocument(run_id, now_iso(), None, False, [], argv=list(argv or []), targets_file=targets_file,
                      artifacts=str(logs))
    plan = [(t, policies_for(t, policies)) for t in targets]
    plan = [(t, ps) for t, ps in plan if ps]
    results: Dict[int, List[Record]] = {}
    lock = threading.Lock()
    stopping = threading.Event()
    tmp = Path(tempfile.mkdtemp(prefix="arena-harness-%s-" % run_id))
    try:
        # Only the harness enters the run's directory: jailed guests get their own paths bound in.
        os.chmod(tmp, 0o700)
        pyz = payload.build(tmp)

        def one(i: int, target: Target, ps: List[str]) -> None:
            if progress:
                progress("start", target, "booting", [])
            def log(msg: str) -> None:
                if progress:
                    progress("build", target, msg, [])

            recs = run_target(target, ps, run_id, tmp, pyz, logs, cache, log)
            if stopping.is_set():
                for r in recs:
                    if r.status is not Status.PASS:
                        r.status = Status.ERROR
                        r.detail = "interrupted: the run was stopped before this target finished"
            with lock:
                results[i] = recs
            if progress:
                progress("done", target, "", recs)

        pool = cf.ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="target")
        futures = [pool.submit(one, i, t, ps) for i, (t, ps) in enumerate(plan)]
        try:
            for f in cf.as_completed(futures):
                f.result()
            doc.complete = True
        except KeyboardInterrupt:
            stopping.set()
            doc.interrupted = "interrupted"
            for f in futures:
                f.cancel()
            proc.stop_all()
            pool.shutdown(wait=True, cancel_futures=True)
        finally:
            pool.shutdown(wait=True)
    finally:
        proc.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
        for i in sorted(results):
            doc.records.extend(results[i])
        doc.finished = now_iso()
    return doc


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
