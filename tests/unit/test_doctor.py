"""``arena-harness doctor`` and what it reads: every tool a target needs, KVM, and the image plan.

Which programs exist is faked here (``proc.which``) so each missing-tool case is
exercised on any machine; tests/integration/test_doctor.py runs doctor for real.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterable, List, Optional

import pytest

import images
from harness import cli, config, proc, runner
from harness.backends import docker as docker_backend
from harness.backends import qemu
from harness.errors import ToolMissing
from harness.model import Status
from images import Cache, Rootfs, RootfsTarball, Tool


def only_missing(*absent: str) -> Callable[[str], Optional[str]]:
    """A ``proc.which`` that finds every program but ``absent``."""
    return lambda tool: None if tool in absent else "/usr/bin/" + tool


def cache_entry(cache: Cache, recipe: images.Recipe) -> None:
    """Make ``recipe`` count as cached, as a finished build leaves it."""
    d = cache.path(recipe)
    d.mkdir(parents=True)
    (d / "manifest.json").write_text("{}")


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cache:
    """An x86_64 host running as root with an empty image cache, a reachable Docker daemon, and no KVM verdict."""
    monkeypatch.setenv("ARENA_HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(images, "host_arch", lambda: "amd64")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(proc, "which", only_missing())
    monkeypatch.setattr(docker_backend, "client", lambda: object())
    monkeypatch.setattr(qemu, "_kvm_verdict", {})
    monkeypatch.setattr(qemu, "_kvm_reason", {})
    monkeypatch.setattr(qemu, "_versions", {})  # a faked QEMU's version stays in this test
    monkeypatch.setattr(qemu, "KVM_DEVICE", str(tmp_path / "no-kvm"))
    return Cache(tmp_path / "cache")


def doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> "tuple[int, str]":
    rc = cli.main(["doctor", *argv])
    return rc, capsys.readouterr().out


def block(out: str, target: str) -> List[str]:
    """The lines doctor printed for one target."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split()[1:2] == [target])
    return lines[start:start + 3]


def commands(tools: Iterable[Tool]) -> List[str]:
    return [t.command for t in tools]


def test_a_root_filesystem_needs_arch_test_for_every_architecture_but_the_hosts(machine: Cache) -> None:
    assert commands(Rootfs("amd64", "bookworm").tools()) == ["mmdebstrap"]
    # i386 runs natively, but mmdebstrap still asks arch-test whether it can.
    assert commands(Rootfs("i386", "bookworm").tools()) == ["mmdebstrap", "arch-test"]
    assert commands(Rootfs("arm64", "bookworm").tools()) == ["mmdebstrap", "arch-test", "qemu-aarch64-static",
                                                             "update-binfmts"]
    assert [t.package for t in Rootfs("riscv64", "trixie").tools()] == ["mmdebstrap", "arch-test",
                                                                       "qemu-user-static", "binfmt-support"]
    # A kernel is only extracted (--variant=extract): nothing of the guest's runs, no arch-test.
    kit = qemu.QemuBackend(config.Target(name="a", backend="qemu", options=qemu.QemuOptions(arch="arm64"))).kit()
    assert commands(kit.tools()) == ["mmdebstrap"]


def test_the_image_plan_skips_what_is_cached(machine: Cache) -> None:
    root = Rootfs("arm64", "bookworm")
    tar = RootfsTarball(root)
    assert machine.plan([tar]) == ([], [root, tar])
    assert commands(machine.build_tools(tar)) == ["mmdebstrap", "arch-test", "qemu-aarch64-static",
                                                  "update-binfmts", "tar"]
    cache_entry(machine, root)
    assert machine.plan([tar]) == ([root], [tar])
    assert commands(machine.build_tools(tar)) == ["tar"]
    cache_entry(machine, tar)
    assert machine.plan([tar]) == ([tar], []) and machine.build_tools(tar) == []


def test_a_build_whose_tool_is_missing_names_it_before_starting(machine: Cache,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "which", only_missing("arch-test"))
    with pytest.raises(images.BuildError) as e:
        machine.get(Rootfs("arm64", "bookworm"))
    assert str(e.value) == ("building rootfs bookworm-arm64 needs arch-test: "
                            "install it with: sudo apt-get install -y arch-test")
    assert machine.entries() == []


def test_doctor_names_a_missing_arch_test_and_strict_fails(machine: Cache, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(proc, "which", only_missing("arch-test"))
    rc, out = doctor(capsys, "--group", "qemu-user")
    assert rc == 0  # without --strict doctor only reports
    assert block(out, "qemu-user-arm64") == [
        "  CANNOT   qemu-user-arm64 (qemu-user): arch-test missing: install it with: sudo apt-get install -y arch-test",
        "           needs: qemu-aarch64-static; to build its images: mmdebstrap, arch-test (MISSING), "
        "update-binfmts, root",
        "           images: a run would build: rootfs bookworm-arm64",
    ]
    assert "0 of 3 targets can run here; cannot: qemu-user-arm64: arch-test; qemu-user-arm64-4g: arch-test; " \
           "qemu-user-riscv64-256g: arch-test" in out
    assert doctor(capsys, "--group", "qemu-user", "--strict")[0] == 1


def test_once_the_root_is_cached_arch_test_is_no_longer_needed(machine: Cache, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(proc, "which", only_missing("arch-test", "mmdebstrap"))
    cache_entry(machine, Rootfs("arm64", "bookworm"))
    rc, out = doctor(capsys, "--only", "qemu-user-arm64", "--strict")
    assert rc == 0
    assert block(out, "qemu-user-arm64") == [
        "  ok       qemu-user-arm64 (qemu-user)",
        "           needs: qemu-aarch64-static",
        "           images: cached: rootfs bookworm-arm64",
    ]


def test_the_run_skips_with_the_same_words_doctor_prints(machine: Cache, monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setattr(proc, "which", only_missing("arch-test"))
    (target,) = config.load().select(["qemu-user-riscv64-256g"])
    doc = runner.run([target], artifacts=tmp_path / "logs", policies=["go-2012"])
    assert [(r.status, r.detail) for r in doc.records] == [
        (Status.SKIP, "qemu-user backend needs arch-test: install it with: sudo apt-get install -y arch-test")]


def test_doctor_names_the_qemu_binary_and_the_firmware(machine: Cache, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(proc, "which", only_missing("qemu-system-riscv64"))
    firmware = str(machine.root / "fw_dynamic.bin")
    from harness import arches

    monkeypatch.setitem(arches.BY_NAME, "riscv64", dataclasses.replace(arches.BY_NAME["riscv64"],
                                                                       firmware=("-bios", firmware)))
    rc, out = doctor(capsys, "--only", "qemu-riscv64-sv39", "--strict")
    assert rc == 1
    lines = block(out, "qemu-riscv64-sv39")
    assert lines[:2] == [
        "  CANNOT   qemu-riscv64-sv39 (qemu): qemu-system-riscv64 missing: "
        "install it with: sudo apt-get install -y qemu-system-misc",
        "           needs: qemu-system-riscv64 (MISSING), %s (MISSING); to build its images: "
        "mmdebstrap, arch-test, qemu-riscv64-static, update-binfmts" % firmware]
    monkeypatch.setattr(proc, "which", only_missing())
    assert block(doctor(capsys, "--only", "qemu-riscv64-sv39")[1], "qemu-riscv64-sv39")[0] == (
        "  CANNOT   qemu-riscv64-sv39 (qemu): %s missing: install it with: sudo apt-get install -y opensbi" % firmware)
    assert lines[2] == ("           images: a run would build: kernel trixie-riscv64-riscv64, "
                        "initramfs trixie-riscv64-riscv64, rootfs trixie-riscv64, "
                        "snapshot riscv64-trixie-riscv64-riscv64")  # the saved guest too (it resumes one)


def test_doctor_names_uml_and_an_unreachable_docker_daemon(machine: Cache, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    def no_daemon() -> object:
        raise ToolMissing("docker", "a running Docker daemon", "start dockerd (scripts/setup.sh does)")

    monkeypatch.setattr(docker_backend, "client", no_daemon)
    monkeypatch.setattr(proc, "which", only_missing("linux.uml"))
    rc, out = doctor(capsys, "--only", "uml", "--only", "docker-amd64", "--strict")
    assert rc == 1
    assert block(out, "uml")[:2] == [
        "  CANNOT   uml (uml): linux.uml missing: install it with: sudo apt-get install -y user-mode-linux",
        "           needs: linux.uml (MISSING)"]
    assert block(out, "docker-amd64")[:2] == [
        "  CANNOT   docker-amd64 (docker): a running Docker daemon missing: start dockerd (scripts/setup.sh does)",
        "           needs: a running Docker daemon (MISSING); to build its images: mmdebstrap, tar"]


def test_kvm_without_a_device_is_tcg(machine: Cache, capsys: pytest.CaptureFixture[str]) -> None:
    out = doctor(capsys, "--only", "local")[1]
    assert out.splitlines()[1] == ("KVM (x86_64): accel: auto would pick tcg: there is no %s; "
                                   "no target here uses accel: auto" % qemu.KVM_DEVICE)


def test_kvm_is_tried_only_with_the_flag(machine: Cache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    device = tmp_path / "kvm"
    device.write_text("")
    monkeypatch.setattr(qemu, "KVM_DEVICE", str(device))
    boots: List[List[str]] = []

    def fake_run(argv: List[str], **kw: object) -> proc.Completed:
        if argv[1:] == ["--version"]:  # what the verdict's key names (not a boot)
            return proc.Completed(argv, 0, 0.1, "QEMU emulator version 7.2.0", lines=["QEMU emulator version 7.2.0"])
        boots.append(argv)
        return proc.Completed(argv, None, 2.0, "", stopped="booted", lines=["@@ARENA-HARNESS-BOOTED@@"])

    monkeypatch.setattr(proc, "run", fake_run)
    out = doctor(capsys, "--only", "local")[1]
    assert "accel: auto would decide by a trial boot: %s exists, but a device node alone proves nothing" % device \
        in out and "doctor --kvm runs it" in out
    out = doctor(capsys, "--only", "local", "--kvm")[1]
    assert "the trial boot needs the cached kernel bookworm-amd64-amd64: build it with arena-harness images build" \
        in out
    assert boots == []  # no kernel, no boot; and nothing was built
    assert machine.entries() == []
    probe = qemu.QemuBackend(config.Target(name="t", backend="qemu", options=qemu.QemuOptions(accel="auto")))
    cache_entry(machine, probe.kit())
    cache_entry(machine, probe.initramfs())
    out = doctor(capsys, "--only", "local", "--kvm")[1]
    assert out.splitlines()[1] == ("KVM (x86_64): accel: auto would pick kvm: a trial boot with KVM reached the "
                                   "init; no target here uses accel: auto")
    assert len(boots) == 1 and boots[0][:3] == ["qemu-system-x86_64", "-accel", "kvm"]


def test_a_failed_kvm_trial_says_what_qemu_said(machine: Cache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    device = tmp_path / "kvm"
    device.write_text("")
    monkeypatch.setattr(qemu, "KVM_DEVICE", str(device))
    msg = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69"
    monkeypatch.setattr(proc, "run", lambda argv, **kw: proc.Completed(argv, 134, 0.1, msg, lines=[msg]))
    probe = qemu.QemuBackend(config.Target(name="t", backend="qemu", options=qemu.QemuOptions(accel="auto")))
    cache_entry(machine, probe.kit())
    cache_entry(machine, probe.initramfs())
    targets = machine.root.parent / "t.yaml"
    targets.write_text("targets:\n  - name: fast\n    backend: qemu\n    accel: auto\n")
    out = doctor(capsys, "--targets", str(targets), "--kvm")[1]
    assert out.splitlines()[1] == ("KVM (x86_64): accel: auto would pick tcg: a trial boot with KVM ended before "
                                   "the init: %s; targets with accel: auto: fast" % msg)
    # The run's own decision is the same one, made once per process.
    assert probe.accel() == ["-accel", "tcg"]
