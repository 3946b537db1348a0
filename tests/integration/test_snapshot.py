"""Snapshot boots: a resumed QEMU guest reports what a cold boot reports, on every architecture; a saved
guest that does not load is dropped, the boot goes on cold, and the next run saves it again."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, List, Tuple

import pytest

import images
from harness import backends, config, runner
from harness.model import Status, Target
from harness.plugin import skip_or_fail

pytestmark = [pytest.mark.integration, pytest.mark.qemu]

PROBES = ["go-2012", "go-modern"]


def target(name: str, snapshot: bool) -> Target:
    t = config.load(None).select([name])[0]
    missing = backends.get(t.backend)(t).missing()
    if missing is not None:
        skip_or_fail("qemu", str(missing))
    return dataclasses.replace(t, options=dataclasses.replace(t.options, snapshot=snapshot))


def facts(doc: Any) -> List[Tuple[Any, ...]]:
    return [(r.policy, r.status, r.outcome, r.crash, ((r.probe or {}).get("facts") or {}).get("user_top"),
             r.kernel, r.machine) for r in doc.records]


def snapshot_dir(t: Target) -> Path:
    backend = backends.get("qemu")(t)
    return images.Cache().path(backend.boot.snapshot())  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["qemu-x86_64", "qemu-i386", "qemu-arm64", "qemu-riscv64-sv48"])
def test_a_resumed_guest_reports_what_a_cold_boot_reports(name: str, tmp_path: Path) -> None:
    warm, cold = target(name, True), target(name, False)
    runner.run([warm], policies=PROBES, artifacts=tmp_path)  # saves the guest if the cache has none
    assert (snapshot_dir(warm) / "state.bin").is_file()
    resumed = runner.run([warm], policies=PROBES, artifacts=tmp_path)
    booted = runner.run([cold], policies=PROBES, artifacts=tmp_path)
    assert facts(resumed) == facts(booted)
    assert all(r.status is Status.PASS for r in resumed.records), [(r.policy, r.detail) for r in resumed.records]
    log = Path(resumed.records[0].log or "").read_text()
    assert "@@ARENA-HARNESS-RESUMED@@" in log and "-incoming" in log  # it did resume
    assert "@@ARENA-HARNESS-RESUMED@@" not in Path(booted.records[0].log or "").read_text()


def test_a_corrupt_saved_guest_is_dropped_the_boot_goes_on_cold_and_the_next_run_saves_it(tmp_path: Path) -> None:
    t = target("qemu-x86_64", True)
    runner.run([t], policies=PROBES, artifacts=tmp_path)
    state = snapshot_dir(t) / "state.bin"
    with open(state, "r+b") as f:  # a truncated stream: QEMU refuses to load it
        f.truncate(state.stat().st_size // 3)
    doc = runner.run([t], policies=PROBES, artifacts=tmp_path)
    assert all(r.status is Status.PASS for r in doc.records), [(r.policy, r.detail) for r in doc.records]
    log = Path(doc.records[0].log or "").read_text()
    assert log.count("did not resume") == 1 and "booting cold" in log
    assert not snapshot_dir(t).exists()  # dropped: never resumed again
    again = runner.run([t], policies=PROBES, artifacts=tmp_path)
    assert (snapshot_dir(t) / "state.bin").is_file()  # saved anew
    assert "@@ARENA-HARNESS-RESUMED@@" in Path(again.records[0].log or "").read_text()
    assert all(r.status is Status.PASS for r in again.records)
