#!/usr/bin/env python3
"""Where a guest's time goes: each target run N times, its console lines timestamped as they arrive,
and the medians of each phase printed.

Phases, from the harness's call to the end of its run:
  start    the harness's set-up, the jail, the emulator's start, until the guest's first line
  kernel   from there to the init's BOOTED line (the kernel's boot; for a resumed QEMU guest, the
           resume, whose GO line the harness sends)
  init     from BOOTED to the agent's first step (the init's mounts, the job's files, Python's start)
  <step>   each step, from its STEP line to the next (the program itself: ``own``, its frame's
           duration_s; the rest is the agent's start of it and its output over the console)
  end      from the last step's end to the end of the run (the init's power-off, the emulator's exit,
           the harness reading the results)
The kernel's own uptime at BOOTED is printed beside ``kernel``.

    python3 benchmarks/boot_phases.py [--runs 5] [--targets FILE] [--cold] [TARGET ...]

``--cold``: QEMU targets boot cold (``snapshot: false``) rather than resume their saved guest.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import config, runner  # noqa: E402
from harness.backends import base  # noqa: E402
from harness.backends.console import BOOTED, STEP  # noqa: E402

DEFAULT = ["uml", "qemu-x86_64", "qemu-arm64"]
Line = Tuple[float, str]


def timestamped(seen: List[Line]) -> None:
    """Every backend's console watcher also records (arrival time, line) in ``seen``."""
    original = base.Backend.watcher

    def watcher(self: base.Backend[object], ctx: base.RunContext) -> Callable[[str], Optional[str]]:
        inner = original(self, ctx)

        def watch(line: str) -> Optional[str]:
            seen.append((time.monotonic(), line))
            return inner(line)

        return watch

    base.Backend.watcher = watcher  # type: ignore[method-assign,assignment]


def phases(start: float, end: float, lines: List[Line]) -> Tuple[Dict[str, float], Optional[float]]:
    """The phases of one run (seconds), and the kernel's uptime at BOOTED."""
    out: Dict[str, float] = {}
    first = lines[0][0] if lines else end
    out["start"] = first - start
    booted = next(((t, ln) for t, ln in lines if ln.startswith(BOOTED)), None)
    uptime = None
    mark = first
    if booted is not None:
        out["kernel"] = booted[0] - first
        mark = booted[0]
        m = re.search(r"([0-9.]+)\s*$", booted[1])
        uptime = float(m.group(1)) if m else None
    steps = [(t, ln[len(STEP):].strip()) for t, ln in lines if ln.startswith(STEP)]
    if steps:
        out["init"] = steps[0][0] - mark
    own = {}
    for _, ln in lines:
        if ln.startswith('{"agent":'):
            try:
                step = json.loads(ln)["step"]
                own[step["name"]] = float(step.get("duration_s") or 0.0)
            except (ValueError, KeyError, TypeError):
                pass
    last_frame = max((t for t, ln in lines if ln.startswith('{"agent":')), default=None)
    for i, (t, name) in enumerate(steps):
        stop = steps[i + 1][0] if i + 1 < len(steps) else (last_frame or t)
        out["step %s" % name] = stop - t
        if name in own:
            out["  own %s" % name] = own[name]
        mark = stop
    out["end"] = end - mark
    out["total"] = end - start
    return out, uptime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--targets", metavar="FILE", help="targets file (default: the shipped matrix)")
    ap.add_argument("--cold", action="store_true", help="QEMU targets boot cold (snapshot: false)")
    ap.add_argument("names", nargs="*", default=DEFAULT)
    args = ap.parse_args()
    ts = config.load(args.targets)
    seen: List[Line] = []
    timestamped(seen)
    artifacts = Path(tempfile.mkdtemp(prefix="bench-phases-"))
    for name in args.names:
        t = ts.select([name])[0]
        if args.cold and hasattr(t.options, "snapshot"):
            t = dataclasses.replace(t, options=dataclasses.replace(t.options, snapshot=False))
        runner.run([t], artifacts=artifacts)  # images built, saved guest saved: only boots are timed
        runs: Dict[str, List[float]] = {}
        uptimes: List[float] = []
        for _ in range(args.runs):
            seen.clear()
            start = time.monotonic()
            runner.run([t], artifacts=artifacts)
            ph, up = phases(start, time.monotonic(), list(seen))
            for k, v in ph.items():
                runs.setdefault(k, []).append(v)
            if up is not None:
                uptimes.append(up)
        total = statistics.median(runs["total"])
        print("%s (%s%s), medians of %d runs:" % (name, t.backend, ", cold" if args.cold else "", args.runs))
        for k, values in runs.items():
            med = statistics.median(values)
            extra = ""
            if k == "kernel" and uptimes:
                extra = "  (the kernel's uptime at BOOTED: %.2fs)" % statistics.median(uptimes)
            print("  %-26s %6.2fs %4.0f%%%s" % (k, med, 100 * med / total if total else 0, extra))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
