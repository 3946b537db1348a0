#!/usr/bin/env python3
"""Parallel efficiency of the runner: the default matrix with --jobs 1 and --jobs 2, in one invocation;
then --jobs 2 again with every QEMU target's snapshots off (``snapshot: false``: cold boots).

Prints the wall time of each, the efficiency T(1) / (2 * T(2)) (goal >= 0.90 on 2
cores), and the snapshots-on time over the snapshots-off one (goal <= 0.50).
Images must be cached already (``arena-harness images build``, saved guests
included), so only boots are timed.

    python3 benchmarks/matrix_jobs.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import backends, config, runner  # noqa: E402
from harness.model import Target  # noqa: E402


def cold(t: Target) -> Target:
    """The target with its saved guest unused (a QEMU 9p boot's ``snapshot: false``); others as they are."""
    if hasattr(t.options, "snapshot"):
        return dataclasses.replace(t, options=dataclasses.replace(t.options, snapshot=False))
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append")
    ap.add_argument("--targets", metavar="FILE")
    args = ap.parse_args()
    targets = [t for t in config.load(args.targets).select(args.only)
               if backends.get(t.backend)(t).missing() is None]
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        runner.run(targets[:1], artifacts=Path(tmp))  # warm imports and the page cache
        for key, jobs, ts in ((1, 1, targets), (2, 2, targets), (0, 2, [cold(t) for t in targets])):
            start = time.monotonic()
            doc = runner.run(ts, jobs=jobs, artifacts=Path(tmp))
            times[key] = time.monotonic() - start
            bad = [r for r in doc.records if r.status.value != "pass"]
            print("--jobs %d%s: %6.1fs for %d targets, %d results%s" % (
                jobs, ", snapshots off" if key == 0 else "", times[key], len(targets), len(doc.records),
                ", %d not passing" % len(bad) if bad else ""), flush=True)
    eff = times[1] / (2 * times[2])
    print("parallel efficiency on 2 jobs: %.2f (speed-up %.2fx); goal >= 0.90" % (eff, times[1] / times[2]))
    print("snapshots on/off at --jobs 2: %.2f (%.1fs against %.1fs); goal <= 0.50" % (
        times[2] / times[0], times[2], times[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
