#!/usr/bin/env python3
"""Snapshot boots against cold boots of the same QEMU targets, in one invocation.

For each QEMU architecture's target, it runs it once with snapshots (so the saved guest exists), then
alternates a cold boot (``snapshot: false``) and a resume of the saved guest, each through
``runner.run([target])`` with the target's own probes, and prints the medians and their ratio. Every
pair of results must be identical (outcome, crash, user-space top, kernel release), or it says so.
Its last line is ``snapshot/cold worst ratio X.XX``.

    python3 benchmarks/snapshot_boot.py [--runs 3] [--probe P ...] [TARGET ...]

``--probe`` runs only those probes (default: each target's own); with a short one (``go``: a static
binary, no Python) the ratio is mostly the boot's, with the target's own (the model's three policies,
Go, the JVM) mostly the guest's own work, which no resume shortens.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import config, runner  # noqa: E402
from harness.model import Target  # noqa: E402

DEFAULT = ["qemu-x86_64", "qemu-i386", "qemu-arm64", "qemu-riscv64-sv48"]


def with_snapshot(t: Target, on: bool) -> Target:
    return dataclasses.replace(t, options=dataclasses.replace(t.options, snapshot=on))


def facts(doc: Any) -> List[Tuple[Any, ...]]:
    """What must not differ between a cold boot and a resume."""
    out = []
    for r in doc.records:
        top = ((r.probe or {}).get("facts") or {}).get("user_top")
        out.append((r.policy, r.status.value, r.outcome, r.crash, top, r.kernel))
    return out


def timed(t: Target, artifacts: Path, probes: Optional[List[str]]) -> Tuple[float, List[Tuple[Any, ...]]]:
    start = time.monotonic()
    doc = runner.run([t], artifacts=artifacts, policies=probes)
    return time.monotonic() - start, facts(doc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--targets", metavar="FILE", help="targets file (default: the shipped matrix)")
    ap.add_argument("--probe", action="append", help="run only this probe (repeatable; default: the target's own)")
    ap.add_argument("names", nargs="*", default=DEFAULT)
    args = ap.parse_args()
    ts = config.load(args.targets)
    artifacts = Path(tempfile.mkdtemp(prefix="bench-snapshot-"))
    worst = 0.0
    for name in args.names:
        t = ts.select([name])[0]
        cold_t, warm_t = with_snapshot(t, False), with_snapshot(t, True)
        timed(warm_t, artifacts, args.probe)  # the saved guest exists from here on (built now if the cache had none)
        times: Dict[str, List[float]] = {"cold": [], "snapshot": []}
        same = True
        for _ in range(args.runs):
            c, cf = timed(cold_t, artifacts, args.probe)
            w, wf = timed(warm_t, artifacts, args.probe)
            times["cold"].append(c)
            times["snapshot"].append(w)
            if cf != wf:
                same = False
                print("  %s: results differ:\n    cold     %s\n    snapshot %s" % (name, cf, wf))
        cold, warm = statistics.median(times["cold"]), statistics.median(times["snapshot"])
        ratio = warm / cold
        worst = max(worst, ratio)
        print("%-22s cold %6.2fs  snapshot %6.2fs  ratio %.2f  results %s" % (
            name, cold, warm, ratio, "identical" if same else "DIFFER"), flush=True)
    print("snapshot/cold worst ratio %.2f" % worst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
