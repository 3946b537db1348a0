#!/usr/bin/env python3
"""A minimal kernel built from source against Debian's kernel, per QEMU architecture, in one invocation.

For each architecture (x86_64, arm64, riscv64) two targets that differ only in
their kernel, both through the harness (``runner.run``) on a warm cache, the
same guest root and the same probes (the shipped defaults: the model's three
policies and real Go):

  debian   Debian's kernel (``linux-image-*``), its 9p modules loaded by the init;
  source   ``kernel: source``: tinyconfig plus the architecture's base config
           (harness/arches.py), 9p and virtio built in.

Runs alternate; it prints the median of each, the ratio source/debian (below 1:
the source-built kernel is faster), and what building each source kernel took
(from its cache entry; the first invocation builds them, minutes each).

    python3 benchmarks/kernel_source.py [--runs 3] [ARCH ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import images  # noqa: E402
from harness import backends, config, runner  # noqa: E402
from harness.model import Target  # noqa: E402

ARCHES = ["x86_64", "arm64", "riscv64"]

TARGETS = """
defaults:
  timeout: 180s
  probes: [go-2012-pre, go-2012, go-modern, go]
targets:
"""
TARGET = """
  - name: bench-{arch}-{kernel}
    backend: qemu
    arch: {arch}
    kernel: {kernel}
"""


def targets(arch: str) -> List[Target]:
    text = TARGETS + "".join(TARGET.format(arch=arch, kernel=k) for k in ("debian", "source"))
    return list(config.parse(text, "<benchmark>").targets)


def time_run(target: Target, artifacts: Path) -> float:
    start = time.monotonic()
    doc = runner.run([target], artifacts=artifacts)
    elapsed = time.monotonic() - start
    bad = [r for r in doc.records if r.status.value != "pass" and r.status.value != "observed"]
    if bad:
        print("  warning: %s/%s %s: %s" % (bad[0].target, bad[0].policy, bad[0].status.value, bad[0].detail),
              file=sys.stderr)
    return elapsed


def build_seconds(cache: images.Cache, target: Target) -> Optional[float]:
    """What compiling the target's source kernel took, from the kernel-build entry its kit links to."""
    kit = cache.path(backends.get("qemu")(target).kit())
    for entry in cache.entries():
        if entry.kind == "kernel-build" and (entry.path / "kernel").stat().st_ino == (kit / "kernel").stat().st_ino:
            return entry.build_s
    manifest = kit / "manifest.json"
    return json.loads(manifest.read_text()).get("build_s") if manifest.is_file() else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("arches", nargs="*", default=ARCHES)
    args = ap.parse_args()
    cache = images.Cache()
    rows = []
    for arch in args.arches:
        debian, source = targets(arch)
        missing = backends.get("qemu")(source).missing() or backends.get("qemu")(debian).missing()
        if missing is not None:
            print("%-8s skipped: %s" % (arch, missing))
            continue
        for t in (debian, source):  # built before timing (a cold source kernel takes minutes)
            backends.get("qemu")(t).provision(cache, lambda m, n=t.name: print("  [img] %s %s" % (n, m)))
        tmp = Path(tempfile.mkdtemp(prefix="arena-bench-"))
        try:
            time_run(debian, tmp)  # warm the page cache for both
            time_run(source, tmp)
            deb: List[float] = []
            src: List[float] = []
            for _ in range(args.runs):
                deb.append(time_run(debian, tmp))
                src.append(time_run(source, tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        d, s = statistics.median(deb), statistics.median(src)
        built = build_seconds(cache, source)
        rows.append((arch, d, s, s / d, built))
        print("%-8s debian %6.2fs  source %6.2fs  ratio %.2f  (source kernel compiled in %s)"
              % (arch, d, s, s / d, "%.0fs" % built if built else "?"), flush=True)
    if rows:
        print()
        print("| arch | Debian kernel: boot+probe (s) | minimal source-built kernel (s) | ratio | its compile (s) |")
        print("|---|---|---|---|---|")
        for arch, d, s, ratio, built in rows:
            print("| %s | %.2f | %.2f | %.2f | %s |" % (arch, d, s, ratio, "%.0f" % built if built else "?"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
