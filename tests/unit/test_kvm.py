"""``accel: auto``, the default: KVM only where a trial boot shows it works, its verdict cached per
architecture, host kernel and QEMU version; and the accelerator each result records.

The trial's QEMU is faked here (``proc.run``); tests/integration/test_kvm.py asks this machine for real.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

import pytest

from harness import config, proc, report, results
from harness.backends import docker, qemu, qemu_user
from harness.model import GuestRun, Status
from images import Cache
from tests.unit.test_doctor import cache_entry, machine  # noqa: F401 - the fixture

BOOTED = proc.Completed([], None, 2.0, "", stopped="booted", lines=["@@ARENA-HARNESS-BOOTED@@"])
HUNG = proc.Completed([], None, 15.0, "", timed_out=True, lines=[])


def backend(arch: str = "x86_64", **kw: object) -> qemu.QemuBackend:
    return qemu.QemuBackend(config.Target(name="t", backend="qemu", options=qemu.QemuOptions(arch=arch, **kw)))


@pytest.fixture
def kvm(machine: Cache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> List[List[str]]:  # noqa: F811
    """A host with a KVM device node and a cached kernel; the trial boots recorded (they reach the init)."""
    device = tmp_path / "kvm"
    device.write_text("")
    monkeypatch.setattr(qemu, "KVM_DEVICE", str(device))
    monkeypatch.setattr(qemu, "qemu_version", lambda binary: "QEMU emulator version 7.2.0")
    boots: List[List[str]] = []

    def fake_run(argv: List[str], **kw: object) -> proc.Completed:
        boots.append(argv)
        return BOOTED
    monkeypatch.setattr(proc, "run", fake_run)
    b = backend()
    for r in (b.kit(), b.initramfs()):
        cache_entry(machine, r)
        (machine.path(r) / "kernel").write_text("")
    (machine.path(b.initramfs()) / "initramfs.cpio.gz").write_text("")
    return boots


def forget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new process: the per-process verdicts are gone, the cache stays."""
    monkeypatch.setattr(qemu, "_kvm_verdict", {})
    monkeypatch.setattr(qemu, "_kvm_reason", {})


def provisioned(b: qemu.QemuBackend, cache: Cache) -> qemu.QemuBackend:
    b._cache = cache
    b._kit = cache.path(b.kit())
    b._initramfs = cache.path(b.initramfs()) / "initramfs.cpio.gz"
    return b


def test_auto_is_the_default() -> None:
    assert qemu.QemuOptions().accel == "auto"


def test_the_trial_boots_once_and_its_verdict_outlives_the_process(machine: Cache, kvm: List[List[str]],  # noqa: F811
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    b = provisioned(backend(), machine)
    assert b.accel() == ["-accel", "kvm"] and b.accelerator() == "kvm"
    assert len(kvm) == 1 and kvm[0][:3] == ["qemu-system-x86_64", "-accel", "kvm"]
    verdict = machine.path(b.kvm_verdict()) / "verdict.json"
    assert verdict.read_text() == '{"kvm": true, "why": "a trial boot with KVM reached the init"}\n'
    forget(monkeypatch)
    # the next process reads the cache, even before its kernel is provisioned: no second trial
    assert backend().accel() == ["-accel", "kvm"] and len(kvm) == 1
    assert b.kvm_verdict() in backend().recipes()  # kept by images prune, listed by images list


def test_a_new_host_kernel_or_qemu_is_tried_again(machine: Cache, kvm: List[List[str]],  # noqa: F811
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    provisioned(backend(), machine).accel()
    forget(monkeypatch)
    monkeypatch.setattr(qemu, "qemu_version", lambda binary: "QEMU emulator version 8.2.2")
    monkeypatch.setattr(proc, "run", lambda argv, **kw: kvm.append(argv) or HUNG)
    b = provisioned(backend(), machine)
    assert b.accel() == ["-accel", "tcg"] and len(kvm) == 2
    assert qemu._kvm_reason["x86_64"] == "a trial boot with KVM did not reach the init within 15s"
    assert len([e for e in machine.entries() if e.kind == "kvm-verdict"]) == 2
    forget(monkeypatch)
    real = os.uname()
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(real[:2] + ("6.12.0-new",) + real[3:]))
    provisioned(backend(), machine).accel()
    assert len(kvm) == 3


def test_a_hung_trial_is_no_and_snapshots_stay_on(machine: Cache, kvm: List[List[str]],  # noqa: F811
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "run", lambda argv, **kw: kvm.append(argv) or HUNG)
    b = provisioned(backend(), machine)
    assert b.accel() == ["-accel", "tcg"]
    assert isinstance(b.boot, qemu.NinePBoot) and b.boot.snapshots()  # resuming saved guests is TCG's


def test_no_trial_where_kvm_cannot_be(machine: Cache, kvm: List[List[str]]) -> None:  # noqa: F811
    arm = provisioned(backend("arm64"), machine)
    assert arm.accel() == ["-accel", "tcg"] and kvm == []
    assert qemu._kvm_reason["arm64"] == "KVM runs only guests of the host's architecture (amd64), not arm64"
    assert not any(r.kind == "kvm-verdict" for r in arm.recipes())
    tcg = provisioned(backend(accel="tcg"), machine)
    assert tcg.accel() == ["-accel", "tcg"] and kvm == [] and tcg.kvm_verdict() not in tcg.recipes()


def test_i386_guests_are_tried_on_an_amd64_host(machine: Cache, kvm: List[List[str]]) -> None:  # noqa: F811
    b = backend("i386")
    for r in (b.kit(), b.initramfs()):
        cache_entry(machine, r)
    assert provisioned(b, machine).accel() == ["-accel", "kvm"]
    assert kvm[0][:3] == ["qemu-system-i386", "-accel", "kvm"]


def test_each_result_records_its_accelerator(machine: Cache, tmp_path: Path) -> None:  # noqa: F811
    t = config.Target(name="t", backend="qemu-user", options=qemu_user.QemuUserOptions(arch="arm64"))
    assert qemu_user.QemuUserBackend(t).accelerator() == "tcg"
    assert docker.DockerBackend(config.Target(name="d", backend="docker",
                                              options=docker.DockerOptions(arch="arm64"))).accelerator() == "tcg"
    assert docker.DockerBackend(config.Target(name="d", backend="docker",
                                              options=docker.DockerOptions(arch="amd64"))).accelerator() is None
    doc = {"schema": 1, "policy": "go-modern", "outcome": "high-arena", "crash": None, "error": None,
           "facts": {"kernel": "6.1.0-28-amd64", "machine": "x86_64"}}
    run = GuestRun({"go-modern": doc}, tmp_path / "log", 1.0, accel="tcg")
    rec = results.classify(t, "go-modern", run)
    assert rec.accel == "tcg" and rec.status == Status.OBSERVED
    again = results.record_from_json(rec.to_json())
    assert again.accel == "tcg"
    old = rec.to_json()
    del old["accel"]  # a results file from before this field
    assert results.record_from_json(old).accel is None
    assert "6.1.0-28-amd64 (tcg)" in report.markdown(results.RunDocument("r", "now", None, True, [rec]))
