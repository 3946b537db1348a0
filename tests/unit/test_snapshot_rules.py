"""Which QEMU boots resume a saved guest: only those whose init is the harness's own, under TCG."""

from __future__ import annotations

from harness import backends, config


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
