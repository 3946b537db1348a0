#!/usr/bin/env python3
"""Boot overhead of the harness: the same guest booted raw and through the harness, in one invocation.

For each target, the harness prepares a boot once (cached images, initrd with
the allocator), then alternately times

  raw      the exact command line the backend would run, as a user would type it
           (subprocess, output to /dev/null), and
  harness  ``runner.run([target])``: payload, provisioning on a warm cache,
           prepare, boot under the deadline, collect, classify.

Both run the same guest work (every policy of the target). It prints the
median of each and the ratio harness/raw (goal: <= 1.10).

    python3 benchmarks/boot_overhead.py [--runs 3] [TARGET ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import images
from harness import backends, config, payload, runner  # noqa: E402
from harness.backends.base import RunContext  # noqa: E402

DEFAULT = ["local", "uml", "qemu-x86_64", "qemu-i386", "qemu-arm64", "qemu-riscv64-sv39"]


def raw_command(target: config.Target, tmp: Path) -> Tuple[List[str], Path]:
    """The backend's own command line for one boot, with everything it needs prepared in ``tmp``."""
    backend = backends.get(target.backend)(target)
    backend.provision(images.Cache(), lambda m: None)
    tmp.chmod(0o755)
    pyz = payload.build(tmp)
    work = Path(tempfile.mkdtemp(dir=str(tmp)))
    ctx = RunContext("bench", target, list(target.policies), work, pyz, tmp / "raw.log", target.timeout)
    backend.prepare(ctx)
    argv = backend.argv(ctx)  # type: ignore[attr-defined]  # the jailed command line, guest uid included
    return argv, work


def time_raw(argv: List[str], work: Path, target: config.Target) -> float:
    out = work / "out"
    if out.is_dir():  # the guest writes its result here each time
        for f in out.iterdir():
            f.unlink()
    start = time.monotonic()
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=target.timeout, cwd=str(work), check=False)
    return time.monotonic() - start


def time_harness(target: config.Target, artifacts: Path) -> float:
    start = time.monotonic()
    doc = runner.run([target], artifacts=artifacts)
    elapsed = time.monotonic() - start
    bad = [r for r in doc.records if r.status.value != "pass"]
    if bad:
        print("  warning: %s/%s %s: %s" % (bad[0].target, bad[0].policy, bad[0].status.value, bad[0].detail),
              file=sys.stderr)
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--targets", metavar="FILE", help="targets file (default: the shipped matrix)")
    ap.add_argument("names", nargs="*", default=DEFAULT)
    args = ap.parse_args()
    ts = config.load(args.targets)
    # The raw command is a cold boot's: a QEMU target boots, not resumes (benchmarks/snapshot_boot.py
    # measures snapshots), so both sides run the same guest work.
    ts = dataclasses.replace(ts, targets=tuple(
        dataclasses.replace(t, options=dataclasses.replace(t.options, snapshot=False))
        if hasattr(t.options, "snapshot") else t for t in ts.targets))
    rows = []
    for target in ts.select(args.names):
        if backends.get(target.backend)(target).missing() is not None:
            print("%-20s skipped: %s" % (target.name, backends.get(target.backend)(target).missing()))
            continue
        tmp = Path(tempfile.mkdtemp(prefix="arena-bench-"))
        try:
            argv, work = raw_command(target, tmp)
            time_raw(argv, work, target)  # warm the page cache for both sides
            raw, through = [], []
            for _ in range(args.runs):
                raw.append(time_raw(argv, work, target))
                through.append(time_harness(target, tmp / "artifacts"))
            r, h = statistics.median(raw), statistics.median(through)
            rows.append((target.name, r, h, h / r))
            print("%-20s raw %6.2fs  harness %6.2fs  ratio %.3f" % (target.name, r, h, h / r), flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if rows:
        print()
        print("| target | raw boot+probe (s) | through the harness (s) | ratio |")
        print("|---|---|---|---|")
        for name, r, h, ratio in rows:
            print("| %s | %.2f | %.2f | %.3f |" % (name, r, h, ratio))
        worst = max(rows, key=lambda row: row[3])
        print("\nworst ratio %.3f (%s); goal <= 1.10" % (worst[3], worst[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
