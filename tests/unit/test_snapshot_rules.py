"""Which QEMU boots resume a saved guest: only those whose init is the harness's own, under TCG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import pytest

import images
from harness import backends, config, proc
from harness.backends import qemu
from harness.backends.base import RunContext
from harness.backends.console import DONE


def boot(extra: str = "") -> object:
    t = config.parse("targets:\n  - name: q\n    backend: qemu\n    arch: x86_64\n%s" % extra, "t.yaml").targets[0]
    return backends.get("qemu")(t).boot  # type: ignore[attr-defined]


def test_a_9p_boot_under_tcg_resumes_a_saved_guest_and_lists_it_among_its_images() -> None:
    b = boot()
    assert b.snapshots() and [r.kind for r in b.recipes()] == ["snapshot"]  # host root: no rootfs


def test_no_snapshot_for_a_guest_that_never_reaches_the_save_point_or_when_asked() -> None:
    assert not boot("    kernel_args: [quiet, rdinit=/bin/cat]\n").snapshots()  # PID 1 is not our init
    assert not boot("    snapshot: false\n").snapshots()
    b = boot()
    b._cold = True  # saving it failed in this run
    assert not b.snapshots() and "arena.snapshot=1" not in " ".join(b.machine_argv())


@pytest.mark.parametrize("forced", [True, False])
def test_a_resumed_guest_gets_a_short_while_to_power_off_after_its_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forced: bool) -> None:
    """Its results are on the host at its DONE line: it gets POWEROFF_S (not a cold boot's 5 s) to end by
    itself, is stopped after that, and the saved state stays (a loaded host can be that slow)."""
    b = boot()
    saved = tmp_path / "snapshot-q"
    saved.mkdir()
    (saved / "state.bin").write_bytes(b"QEVM")
    b._state = saved / "state.bin"
    monkeypatch.setattr(b, "view", lambda ctx, base, control=False: None)
    monkeypatch.setattr(b.m, "base_view", lambda ctx: None)
    monkeypatch.setattr(b.m, "jailed", lambda ctx, view, argv: argv)
    waited: List[float] = []

    def spawn(ctx: RunContext, argv: List[str], **kw: Any) -> proc.Completed:
        waited.append(kw["after_stop_request"])
        b._resumed.set()  # the saved guest loaded and ran
        return proc.Completed(argv, 0, 4.0, "", stopped="done", forced=forced, lines=[DONE + " rc=0"])

    monkeypatch.setattr(b.m, "spawn", spawn)
    t = config.parse("targets:\n  - name: q\n    backend: qemu\n", "t.yaml").targets[0]
    ctx = RunContext("r", t, ["go-2012"], tmp_path / "work", tmp_path / "allocator.pyz", tmp_path / "q.log", 60.0)
    done = b.execute_resumed(ctx)
    assert done.stopped == "done" and waited == [qemu.POWEROFF_S] and not b._resume_failed
    assert (saved / "state.bin").is_file() and b._state == saved / "state.bin"
    log = (tmp_path / "q.log").read_text() if (tmp_path / "q.log").exists() else ""
    assert ("did not power off within 3s of its DONE line: stopped" in log) == forced


def test_a_saved_state_that_does_not_resume_well_is_saved_again(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Each saved state is resumed once before it enters the cache (riscv64 under QEMU 7.2: from some
    states the guest's timer never fires again); one that does not say RESUMED is saved anew."""
    b = boot()
    saves: List[int] = []
    verdicts = iter(["its timer never fired after the resume (no RESUMED line within 5s)", None])

    def save_once(ctx: RunContext) -> None:
        saves.append(1)
        (ctx.workdir / "ctl").mkdir(exist_ok=True)
        (ctx.workdir / "ctl" / "state.bin").write_bytes(b"state %d" % len(saves))

    monkeypatch.setattr(b, "prepare", lambda ctx: None)
    monkeypatch.setattr(b, "_save_once", save_once)
    monkeypatch.setattr(b, "_check_resume", lambda ctx, state: next(verdicts))
    entry = tmp_path / "entry"
    entry.mkdir()
    said: List[str] = []
    b.save(entry, said.append)
    assert len(saves) == 2 and (entry / "state.bin").read_bytes() == b"state 2" and not (entry / "work").exists()
    assert "[harness] saved state 1 does not resume well: its timer never fired after the resume" in \
        (entry / "build.log").read_text()
    assert said[-1].endswith("(attempt 2)")
    # None of SAVE_ATTEMPTS resumes well: no entry, and the build error names each problem
    verdicts = iter(["one", "two", "three"])
    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(images.BuildError, match="3 saved states in a row did not resume well: one; two; three"):
        b.save(again, said.append)
    assert not (again / "state.bin").exists()
