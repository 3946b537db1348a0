"""Targets files: what is accepted, and the one-line error for each kind of mistake."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import cli, config
from harness.config import Expectation, Seconds, Size
from harness.errors import ConfigError

GOOD = """\
schema: 1
defaults:
  timeout: 30s
targets:
  - name: local
    backend: local
    expect:
      go-2012: high-arena
  - name: uml-256m
    backend: uml
    memory: 256M
    kernel_args: [quiet, loglevel=3]
    markers: [slow]
    expect:
      go-2012-pre: "crash: runtime: out of memory"
      go-2012: fallback-32bit
"""


def parse(text: str) -> config.TargetSet:
    return config.parse(textwrap.dedent(text), "targets.yaml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse(text)
    return str(e.value)


def test_a_good_file_becomes_frozen_dataclasses() -> None:
    ts = parse(GOOD)
    local, uml = ts.targets
    assert local.timeout == 30.0 and uml.timeout == 30.0  # from defaults
    assert uml.options.memory == 256 << 20 and isinstance(uml.options.memory, Size)
    assert uml.options.kernel_args == ("quiet", "loglevel=3")
    assert uml.expectation("go-2012-pre") == Expectation("crash", "runtime: out of memory")
    assert uml.all_markers == ("uml", "slow")
    assert uml.line == 9
    with pytest.raises(dataclasses.FrozenInstanceError):
        uml.name = "other"  # type: ignore[misc]


def test_the_shipped_matrix_is_valid_and_has_local_and_uml() -> None:
    ts = config.load()
    names = ts.names()
    assert "local" in names and "uml" in names
    uml = ts.select(["uml"])[0]
    assert str(uml.expectation("go-2012")) == "fallback-32bit"
    assert str(uml.expectation("go-modern")) == "os-chosen"


def test_wrong_type_names_file_line_target_and_key() -> None:
    bad = GOOD.replace("memory: 256M", "memory: 256")
    assert error_of(bad) == 'targets.yaml:11 [uml-256m] memory: expected a size like "256M", got 256'


def test_unknown_key_lists_the_known_ones() -> None:
    bad = GOOD.replace("    memory: 256M\n", "    memroy: 256M\n")
    msg = error_of(bad)
    assert msg.startswith("targets.yaml:11 [uml-256m] memroy: unknown key for a uml target; known keys: ")
    assert "memory" in msg and "expect" in msg


def test_unknown_backend_lists_the_known_ones() -> None:
    msg = error_of(GOOD.replace("backend: uml", "backend: umll"))
    assert msg.startswith("targets.yaml:10 [uml-256m] backend: unknown backend 'umll'; known: ")
    assert "local" in msg and "uml" in msg


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ("timeout: 30s", "timeout: soon", 'targets.yaml:3 [local] timeout: expected a duration like "60s" or "2m", '
                                          'got "soon"'),
        ("go-2012: fallback-32bit", "go-2012: fallback",
         'targets.yaml:16 [uml-256m] expect.go-2012: expected one of high-arena, fallback-32bit, native-32bit, '
         'os-chosen, crash (or "crash: <message>"), got "fallback"'),
        ("go-2012: high-arena", "go-2013: high-arena",
         "targets.yaml:8 [local] expect: unknown policy 'go-2013'; known: go-2012-pre, go-2012, go-modern"),
        ("markers: [slow]", "markers: slow", 'targets.yaml:13 [uml-256m] markers: expected a list, got "slow"'),
        ("kernel_args: [quiet, loglevel=3]", "kernel_args: [mem=1G]",
         "targets.yaml:12 [uml-256m] kernel_args: 'mem=1G' is set by the harness; use the target's own keys instead"),
        ("  - name: uml-256m", "  - name: local",
         "targets.yaml:9 [local] name: duplicate target name (first at line 5)"),
        ("  - name: uml-256m", "  - name: bad name", "targets.yaml:9 name: expected a name of letters, "
                                                   "digits, '.', '_' or '-', got \"bad name\""),
    ],
)
def test_each_mistake_has_one_clear_line(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    assert error_of(GOOD.replace(old, new, 1)) == expected


def test_bad_grow_plan() -> None:
    msg = error_of(GOOD.replace("    memory: 256M\n", "    memory: 256M\n    grow: lots\n"))
    assert msg.startswith("targets.yaml:12 [uml-256m] grow: bad growth step 'lots'")


def test_not_yaml_and_not_a_mapping() -> None:
    assert error_of("targets: [a\n").startswith("targets.yaml:2: not valid YAML")
    assert error_of("- 1\n") == "targets.yaml:1: expected a mapping with a targets: list, got a list"
    assert error_of("targets: []\n") == "targets.yaml:1 targets: expected a non-empty list of targets, got a list"
    assert error_of("target: []\n").startswith("targets.yaml:1 target: unknown top-level key")


def test_unknown_target_in_select() -> None:
    with pytest.raises(ConfigError, match="unknown target 'nope'; targets in this file: local, uml-256m"):
        parse(GOOD).select(["nope"])


def test_durations_and_sizes() -> None:
    ctx = config._Ctx("f")
    assert config.convert("2m", Seconds, ctx, 1, "timeout") == 120
    assert config.convert(90, Seconds, ctx, 1, "timeout") == 90
    assert config.convert("1G", Size, ctx, 1, "memory") == 1 << 30
    assert config.convert("0x1000", Size, ctx, 1, "memory") == 4096


@pytest.mark.parametrize(
    "mutation",
    [
        ("memory: 256M", "memory: 256"),
        ("backend: uml", "backend: nope"),
        ("    memory: 256M\n", "    bogus: 1\n"),
    ],
)
def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path: Path, mutation: tuple) -> None:
    f = tmp_path / "targets.yaml"
    f.write_text(GOOD.replace(*mutation))
    p = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--targets", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("arena-harness: %s:" % f)
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--jobs", "0"]) == 2
    assert cli.main(["run", "--policy", "go-2013"]) == 2
    assert cli.main(["frobnicate"]) == 2
    assert cli.main(["run", "--targets", "/nonexistent/targets.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("arena-harness: ") for line in err)
    assert "cannot read" in err[3]
