"""Kernels built from source, without building one: fragments, merging, the Kconfig reader's
explanations, the target keys and their errors, the recipes' keys, and the initramfs of a kit
without modules. The builds themselves are in tests/integration/test_kernel_source.py."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List

import pytest

import images
from harness import arches, cli, config
from harness.backends.qemu import QemuBackend
from harness.errors import ConfigError
from images import Cache, kbuild, kconfig
from tests.conftest import stopped_while_waiting
from tests.unit.test_config import error_of, parse
from tests.unit.test_images import HOLD_LOCK, parse_newc

# -- fragments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, parsed", [
    ("ARM64_VA_BITS_39=y", ("ARM64_VA_BITS_39", "y")),
    ("CONFIG_IPV6=n", ("IPV6", "n")),
    ("NR_CPUS=4", ("NR_CPUS", "4")),
    ("PHYSICAL_START=0x1000000", ("PHYSICAL_START", "0x1000000")),
    ('CMDLINE="quiet panic=-1"', ("CMDLINE", '"quiet panic=-1"')),
    ("9P_FS=m", ("9P_FS", "m")),
])
def test_fragment_items_parse(text: str, parsed: Any) -> None:
    assert kconfig.parse_option(text) == parsed
    assert kconfig.normalize(text) == "%s=%s" % parsed


@pytest.mark.parametrize("text", ["ARM64_VA_BITS_39", "ARM64_VA_BITS_39=yes", "=y", "A B=y", "X=$(shell id)",
                                  'X="a"b"', "X=y # comment", "X" * 65 + "=y", ""])
def test_bad_fragment_items_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        kconfig.parse_option(text)


def test_merge_replaces_earlier_lines_and_writes_n_as_not_set() -> None:
    tiny = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=3\nCONFIG_AB=y\n"
    out = kconfig.merge(tiny, ["B=y", "A=n", "C=5", "B=m"])
    assert out.splitlines() == ["CONFIG_AB=y", "# CONFIG_A is not set", "CONFIG_C=5", "CONFIG_B=m"]
    assert kconfig.config_values(out) == {"AB": "y", "A": "n", "C": "5", "B": "m"}


@pytest.mark.parametrize("expr, value", [
    ("A", 2), ("B", 0), ("M", 1), ("A && M", 1), ("B || M", 1), ("!B", 2), ("!M", 1), ("!(A && B)", 2),
    ("A && (B || M)", 1), ("N=3", 2), ("N!=3", 0), ("N>2", 2), ("N<=2", 0), ("S=\"x y\"", 2), ("A=y", 2),
    ("M=m && A", 2), ("UNKNOWN", 0), ("!UNKNOWN", 2), ("9P_FS=m && FSCACHE || 9P_FS=y && FSCACHE=y", 0),
])
def test_kconfig_expressions(expr: str, value: int) -> None:
    values = {"A": "y", "B": "n", "M": "m", "N": "3", "S": '"x y"'}
    assert kconfig.evaluate(expr, values) == value


def test_an_expression_this_reader_cannot_parse_is_unknown() -> None:
    assert kconfig.evaluate("A &&", {}) is None
    assert kconfig.evaluate("(A", {}) is None


# -- the Kconfig reader, on a small tree ---------------------------------------------------------------

TREE: Dict[str, str] = {
    "Kconfig": """\
        mainmenu "toy"
        source "net/Kconfig"
        source "fs/Kconfig"
        source "arch/$(SRCARCH)/Kconfig"
        """,
    "net/Kconfig": """\
        menuconfig NET
        \tbool "Networking"

        if NET
        config INET
        \tbool "TCP/IP"
        endif
        """,
    "fs/Kconfig": """\
        menu "Network file systems"
        \tdepends on NET

        config 9P_FS
        \ttristate "9p"
        \tdepends on INET && \\
        \t\tNET
        \tselect NETFS
        \thelp
        \t  Plan 9.
        \t  if you say Y here, nothing: this help line starts with a keyword
        \t  config NOT_AN_OPTION

        config NETFS
        \ttristate
        endmenu
        """,
    "arch/toy/Kconfig": """\
        choice
        \tprompt "Page size"
        \tdefault PAGES_4K

        config PAGES_4K
        \tbool "4K"

        config PAGES_64K
        \tbool "64K" if EXPERT
        endchoice

        choice
        \tprompt "VA bits"
        config VA_39
        \tbool "39"
        \tdepends on PAGES_4K
        config VA_42
        \tbool "42"
        \tdepends on PAGES_64K
        config VA_48
        \tbool "48"
        endchoice

        config EXPERT
        \tbool "expert"
        """,
    "arch/other/Kconfig": """\
        config OTHER_ONLY
        \tbool "not ours"
        """,
}


@pytest.fixture
def index(tmp_path: Path) -> kconfig.Index:
    for name, text in TREE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    return kconfig.Index(tmp_path, "toy")


def test_the_reader_follows_sources_and_inherits_conditions(index: kconfig.Index) -> None:
    (fs,) = index.definitions("9P_FS")
    assert (fs.path, fs.line, fs.prompt) == ("fs/Kconfig", 4, True)
    assert [(c.kind, c.expr, c.path, c.line) for c in fs.conditions] == [
        ("menu", "NET", "fs/Kconfig", 2), ("depends on", "INET && NET", "fs/Kconfig", 6)]
    assert fs.selects == [("NETFS", "")]
    assert [(c.kind, c.expr) for c in index.definitions("INET")[0].conditions] == [("if", "NET")]
    assert index.definitions("NOT_AN_OPTION") == []  # in a help text
    assert index.definitions("OTHER_ONLY") == [] and index.elsewhere("OTHER_ONLY") == ["arch/other/Kconfig"]
    assert index.choice("VA_39") == index.choice("VA_48") != index.choice("PAGES_4K")
    assert index.selectors("NETFS") == [("9P_FS", "")]


def test_a_fragments_choice_member_displaces_the_bases() -> None:
    class Choices:
        def choice(self, name: str) -> Any:
            return {"VA_39": 1, "VA_42": 1, "VA_48": 1, "PAGES_64K": 2}.get(name)

    base = ["NET=y", "VA_48=y", "INET=y"]
    assert kconfig.requested(base, ["VA_39=y"], Choices()) == {"NET": "y", "INET": "y", "VA_39": "y"}  # type: ignore
    assert kconfig.requested(base, ["PAGES_64K=y", "VA_42=y", "INET=n"], Choices()) == {  # type: ignore
        "NET": "y", "PAGES_64K": "y", "VA_42": "y", "INET": "n"}
    assert kconfig.requested(base, [], None) == {"NET": "y", "VA_48": "y", "INET": "y"}


@pytest.mark.parametrize("name, value, final, said", [
    ("9P_FS", "y", {"NET": "y", "INET": "n"},
     "it depends on INET && NET (fs/Kconfig:6), and here INET=n, NET=y"),
    ("9P_FS", "y", {"NET": "n"},
     "its menu depends on NET (fs/Kconfig:2), and here NET=n; it depends on INET && NET (fs/Kconfig:6), "
     "and here INET=n, NET=n"),
    ("INET", "y", {}, "it is inside `if NET` (net/Kconfig:4), and here NET=n"),
    ("VA_42", "y", {"PAGES_4K": "y"}, "it depends on PAGES_64K (arch/toy/Kconfig:19), and here PAGES_64K=n"),
    ("PAGES_64K", "y", {"PAGES_4K": "y"},
     "its prompt shows only if EXPERT (arch/toy/Kconfig:9), and here EXPERT=n"),
    ("NETFS", "y", {"NET": "y"}, "it has no prompt (fs/Kconfig:14): only another option's select turns it on"),
    ("NETFS", "n", {"9P_FS": "y", "NETFS": "y"}, "it is selected by 9P_FS (on here)"),
    ("OTHER_ONLY", "y", {}, "OTHER_ONLY is not an option of this architecture (it is defined in "
     "arch/other/Kconfig only)"),
    ("TYPO", "y", {}, "TYPO is not an option of linux-source-6.1 (a typo?)"),
    ("9P_FS", "m", {"NET": "y", "INET": "y", "9P_FS": "y", "MODULES": "n"},
     "the final .config has 9P_FS=y: modules are off (MODULES=n), use y"),
])
def test_why_an_option_did_not_stick(index: kconfig.Index, name: str, value: str, final: Dict[str, str],
                                     said: str) -> None:
    assert kconfig.explain(name, value, final, index, "linux-source-6.1") == said


def test_unmet_compares_values_and_treats_absent_as_n() -> None:
    assert kconfig.unmet({"A": "y", "B": "n", "C": "4", "D": "n"}, {"A": "m", "C": "4", "D": "n"}) == [("A", "y")]


# -- the target keys ------------------------------------------------------------------------------------


def test_kernel_config_implies_a_kernel_built_from_source() -> None:
    ts = parse("""\
        targets:
          - name: va39
            backend: qemu
            arch: arm64
            kernel_config: [CONFIG_ARM64_VA_BITS_39=y]
          - name: minimal
            backend: qemu
            arch: riscv64
            kernel: source
          - name: debian
            backend: qemu
            arch: arm64
        """)
    va39, minimal, debian = (QemuBackend(t) for t in ts.targets)
    kit = va39.kit()
    assert isinstance(kit, images.SourceKernelKit) and kit.fragment == ("ARM64_VA_BITS_39=y",)
    assert kit.name == "arm64-6.1+ARM64_VA_BITS_39"
    assert isinstance(minimal.kit(), images.SourceKernelKit) and minimal.kit().name == "riscv64-6.1-minimal"
    assert isinstance(debian.kit(), images.KernelKit)
    assert va39.initramfs().kit == kit


@pytest.mark.parametrize("body, said", [
    ("    kernel_config: [ARM64_VA_BITS_39=y, ARM64_VA_BITS_39]\n",
     'targets.yaml:5 [t] kernel_config: "ARM64_VA_BITS_39": expected NAME=VALUE'),
    ("    kernel_config:\n      - A=y\n      - B = y\n",
     'targets.yaml:7 [t] kernel_config: "B = y": expected NAME=VALUE'),
    ("    kernel: custom\n", "targets.yaml:5 [t] kernel: expected debian or source, got 'custom'"),
    ("    kernel: debian\n    kernel_config: [A=y]\n",
     "targets.yaml:6 [t] kernel_config: a config fragment needs a kernel built from source"),
    ("    kernel_config: [A=y, CONFIG_A=n]\n", "targets.yaml:5 [t] kernel_config: A is given twice (A=y and "
     "CONFIG_A=n): give it once"),
    ("    kernel: source\n    suite: trixie\n", "targets.yaml:6 [t] suite: picks Debian's kernel"),
    ("    kernel_config: [9P_FS=m]\n", "targets.yaml:5 [t] kernel_config: 9P_FS=m: a kernel built from source "
     "has everything built in"),
    ("    kernel_config: [MODULES=y]\n", "targets.yaml:5 [t] kernel_config: MODULES=y: a kernel built from source "
     "has everything built in"),
    ("    kernel: source\n    boot: ssh\n", "targets.yaml:6 [t] boot: the ssh boot needs the kernel modules"),
])
def test_kernel_key_errors_name_file_line_and_key(body: str, said: str) -> None:
    text = "targets:\n  - name: t\n    backend: qemu\n    arch: arm64\n" + body
    assert error_of(text).startswith(said)


def test_no_source_built_kernel_for_an_arch_without_a_base() -> None:
    said = error_of("targets:\n  - name: t\n    backend: qemu\n    arch: i386\n    kernel: source\n")
    assert said == ("targets.yaml:5 [t] kernel: no kernel built from source for i386: harness/arches.py has a "
                    "base config for x86_64, arm64, riscv64")


def test_the_shipped_source_targets() -> None:
    ts = config.load()
    va39, k64 = (QemuBackend(t) for t in ts.select(["qemu-arm64-va39", "qemu-arm64-64k-va42"]))
    assert va39.kit().fragment == ("ARM64_VA_BITS_39=y",)  # type: ignore[attr-defined]
    assert k64.kit().fragment == ("ARM64_64K_PAGES=y", "ARM64_VA_BITS_42=y")  # type: ignore[attr-defined]
    assert va39.kit().key() != k64.kit().key()


# -- keys ------------------------------------------------------------------------------------------------


@pytest.fixture
def versions(monkeypatch: pytest.MonkeyPatch) -> Dict[str, str]:
    """The source's and compiler's versions as the keys read them, set by the test."""
    v = {"source": "linux-source-6.1 6.1.192-2", "compiler": "aarch64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0"}
    monkeypatch.setattr(kbuild, "source_version", lambda package: v["source"])
    monkeypatch.setattr(kbuild, "compiler_version", lambda prefix: v["compiler"])
    return v


def test_a_kits_key_is_what_was_asked(versions: Dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    kit = images.SourceKernelKit("arm64", ("ARM64_VA_BITS_39=y",))
    key = kit.key()
    assert images.SourceKernelKit("arm64", ("ARM64_VA_BITS_39=y",)).key() == key
    assert images.SourceKernelKit("arm64", ("ARM64_VA_BITS_39=y", "NR_CPUS=2")).key() != key
    assert images.SourceKernelKit("arm64").key() != key
    versions["source"] = "linux-source-6.1 6.1.193-1"
    assert kit.key() != key
    versions["source"] = "linux-source-6.1 6.1.192-2"
    versions["compiler"] = "aarch64-linux-gnu-gcc (Debian 12.2.0-15) 12.2.0"
    assert kit.key() != key
    versions["compiler"] = "aarch64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0"
    rec = arches.BY_NAME["arm64"]
    assert rec.source_kernel is not None
    changed = rec.source_kernel.__class__(**{**rec.source_kernel.__dict__, "config": rec.source_kernel.config
                                             + ("NR_CPUS=2",)})
    monkeypatch.setitem(arches.BY_NAME, "arm64", rec.__class__(**{**rec.__dict__, "source_kernel": changed}))
    assert kit.key() != key  # the architecture's base config is part of it


def test_a_builds_key_is_source_config_hash_and_compiler(versions: Dict[str, str]) -> None:
    build = images.KernelBuild("arm64", "CONFIG_A=y\n")
    assert set(build.inputs()) == {"arch", "source", "compiler", "config"}
    assert images.KernelBuild("arm64", "CONFIG_A=y\n", tree=Path("/elsewhere")).key() == build.key()
    assert images.KernelBuild("arm64", "CONFIG_A=n\n").key() != build.key()
    key = build.key()
    versions["compiler"] = "other"
    assert build.key() != key


def test_an_arch_without_a_base_is_a_build_error() -> None:
    with pytest.raises(images.BuildError, match="no source-built kernel for 'i386'"):
        images.SourceKernelKit("i386").inputs()


# -- the fragment's failure is the target's config error ------------------------------------------------


def test_a_fragment_option_that_did_not_stick_is_a_config_error_naming_the_target(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ts = parse("""\
        targets:
          - name: wrong
            backend: qemu
            arch: arm64
            kernel_config: [ARM64_VA_BITS_42=y]
          - name: base-only
            backend: qemu
            arch: arm64
            kernel: source
        """)
    problems = [("ARM64_VA_BITS_42=y", "it depends on ARM64_64K_PAGES (arch/arm64/Kconfig:1343), and here "
                 "ARM64_64K_PAGES=n")]

    def fail(self: Cache, recipe: images.Recipe, log: Any = None) -> Path:
        raise images.KernelConfigError("arm64", problems, ["ARM64_VA_BITS_42=y"], Path("/cache/failed/x.log"))

    monkeypatch.setattr(Cache, "get", fail)
    wrong, base_only = (QemuBackend(t) for t in ts.targets)
    with pytest.raises(ConfigError) as e:
        wrong.provision(Cache(Path("/nonexistent")), lambda msg: None)
    assert str(e.value) == ("targets.yaml:2 [wrong] kernel_config: ARM64_VA_BITS_42=y did not survive olddefconfig: "
                            "it depends on ARM64_64K_PAGES (arch/arm64/Kconfig:1343), and here ARM64_64K_PAGES=n "
                            "(build log: /cache/failed/x.log)")
    with pytest.raises(images.KernelConfigError):  # no fragment: the base config's problem, not the target's
        base_only.provision(Cache(Path("/nonexistent")), lambda msg: None)


# -- a kit without modules ------------------------------------------------------------------------------


@pytest.fixture
def fake_kit(tmp_path: Path, versions: Dict[str, str]) -> images.SourceKernelKit:
    """A source kernel kit's entry, as if built: a kernel, busybox, no modules."""
    kit = images.SourceKernelKit("arm64")
    cache = Cache(tmp_path)
    entry = cache.path(kit)
    (entry / "modules").mkdir(parents=True)
    (entry / "modules" / "order").write_text("")
    (entry / "busybox").write_bytes(b"\x7fELF busybox")
    (entry / "kernel").write_bytes(b"Image")
    (entry / "manifest.json").write_text("{}")
    return kit


def test_the_initramfs_of_a_kit_without_modules(tmp_path: Path, fake_kit: images.SourceKernelKit) -> None:
    init = images.recipe_text("qemu", "init.sh")
    out = Cache(tmp_path).get(images.Initramfs(fake_kit, init))
    entries = {name: body for name, _, body, _ in parse_newc(gzip.decompress((out / "initramfs.cpio.gz").read_bytes()))}
    assert entries["modules/order"] == b""
    assert not [n for n in entries if n.endswith(".ko")]
    assert entries["bin/busybox"] == b"\x7fELF busybox" and entries["init"] == init.encode()
    # the init's loop over modules/order reads nothing from an empty file, and inserts nothing
    assert 'done < /modules/order' in init and '[ -n "$m" ] && insmod' in init


def test_tools_name_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    tools = {t.command: t.package for t in kbuild.kernel_tools("arm64")}
    assert tools["/usr/src/linux-source-6.1.tar.xz"] == "linux-source-6.1"
    assert tools["aarch64-linux-gnu-gcc"] == "gcc-aarch64-linux-gnu"
    assert {"make", "bison", "flex", "bc"} <= set(tools)
    x86 = {t.command: t.package for t in kbuild.kernel_tools("x86_64")}
    assert x86["/usr/include/gelf.h"] == "libelf-dev"
    monkeypatch.setattr(arches, "host_debian", lambda: "amd64")
    assert {t.command: t.package for t in kbuild.kernel_tools("x86_64")}["x86_64-linux-gnu-gcc"] == "gcc"
    monkeypatch.setattr(arches, "host_debian", lambda: "arm64")
    assert {t.command: t.package for t in kbuild.kernel_tools("x86_64")}["x86_64-linux-gnu-gcc"] == \
        "gcc-x86-64-linux-gnu"


def test_a_file_tool_is_present_when_the_file_exists(tmp_path: Path) -> None:
    f = tmp_path / "linux-source-9.9.tar.xz"
    tool = images.Tool(str(f), "linux-source-9.9")
    assert not tool.present()
    f.write_bytes(b"")
    assert tool.present()  # a file, not a program: no execute bit needed
    assert images.Tool("sh", "dash").present() and not images.Tool("no-such-program-x", "x").present()


def test_every_arch_with_a_base_has_the_9p_options() -> None:
    built: List[str] = []
    for rec in arches.ARCHES:
        if rec.source_kernel is None:
            assert rec.kernel_config == ()
            continue
        built.append(rec.name)
        names = dict(kconfig.parse_option(o) for o in rec.kernel_config)
        assert names["9P_FS"] == names["INET"] == names["NET_9P_VIRTIO"] == "y" and names["MODULES"] == "n"
    assert built == ["x86_64", "arm64", "riscv64"]


# -- one compile at a time ------------------------------------------------------------------------------


def test_the_compile_lock_says_it_waits_and_an_interrupt_ends_the_wait(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    said: List[str] = []
    with cache.exclusive(kbuild.COMPILE_LOCK, said.append, "another kernel compile"):
        pass
    assert said == []  # free: no word
    (tmp_path / "locks").mkdir(exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "locks" / "kernel-compile.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        errors: List[BaseException] = []

        def wait() -> None:
            try:
                with cache.exclusive(kbuild.COMPILE_LOCK, said.append, "another kernel compile"):
                    errors.append(AssertionError("entered while another held it"))
            except images.BuildError as e:
                errors.append(e)

        assert stopped_while_waiting(wait) and said == ["waiting for another kernel compile"]
        assert [str(e) for e in errors] == ["interrupted while waiting for another kernel compile"]
    finally:
        holder.kill()
        holder.wait()


# -- images key --------------------------------------------------------------------------------------------


def test_images_key_changes_with_a_fragment_and_lists_every_image(tmp_path: Path, versions: Dict[str, str],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def key(fragment: str, *extra: str) -> str:
        f = tmp_path / "t.yaml"
        f.write_text("targets:\n  - name: k\n    backend: qemu\n    arch: arm64\n    probes: [go-2012, go]\n"
                     "    kernel_config: [%s]\n" % fragment)
        assert cli.main(["images", "key", "--targets", str(f), *extra]) == 0
        return capsys.readouterr().out

    one = key("ARM64_VA_BITS_39=y")
    assert len(one.strip()) == 32 and int(one, 16) >= 0
    assert key("ARM64_VA_BITS_39=y") == one
    assert key("ARM64_64K_PAGES=y") != one
    versions["compiler"] = "aarch64-linux-gnu-gcc (Debian 12.2.0-15) 12.2.0"
    assert key("ARM64_VA_BITS_39=y") != one
    kinds = [line.split()[0] for line in key("ARM64_VA_BITS_39=y", "--list").splitlines()]
    assert kinds == ["go-probe", "initramfs", "rootfs", "snapshot", "source-kernel"]
