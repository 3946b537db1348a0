#!/usr/bin/env python3
"""Parallel efficiency of the runner: the default matrix with --jobs 1 and --jobs 2, in one invocation.

Prints the wall time of each and the efficiency T(1) / (2 * T(2)) (goal >= 0.90
on 2 cores). Images must be cached already (``arena-harness images build``), so
only boots are timed.

    python3 benchmarks/matrix_jobs.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import backends, config, runner  # noqa: E402


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
        for jobs in (1, 2):
            start = time.monotonic()
            doc = runner.run(targets, jobs=jobs, artifacts=Path(tmp))
            times[jobs] = time.monotonic() - start
            bad = [r for r in doc.records if r.status.value != "pass"]
            print("--jobs %d: %6.1fs for %d targets, %d results%s" % (
                jobs, times[jobs], len(targets), len(doc.records), ", %d not passing" % len(bad) if bad else ""),
                flush=True)
    eff = times[1] / (2 * times[2])
    print("parallel efficiency on 2 jobs: %.2f (speed-up %.2fx); goal >= 0.90" % (eff, times[1] / times[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
