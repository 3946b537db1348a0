"""Targets files: what is accepted, and the one-line error for each kind of mistake."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness import cli, config
from harness.errors import ConfigError
from harness.model import Expectation, Seconds, Size

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
    # Was: no suggestion, the near miss to be found in the list (issue 16).
    assert msg.startswith("targets.yaml:11 [uml-256m] memroy: unknown key for a uml target; did you mean memory? "
                          "known keys: ")
    assert "memory" in msg and "expect" in msg
    far = error_of(GOOD.replace("    memory: 256M\n", "    colour: blue\n"))
    assert "colour: unknown key for a uml target; known keys: " in far  # nothing close: no guess


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
         "targets.yaml:8 [local] expect: unknown probe 'go-2013'; did you mean go-2012? known: go-2012-pre, "
         "go-2012, go-modern, go, jvm"),
        ("markers: [slow]", "markers: slow", 'targets.yaml:13 [uml-256m] markers: expected a list, got "slow"'),
        ("kernel_args: [quiet, loglevel=3]", "kernel_args: [mem=1G]",
         "targets.yaml:12 [uml-256m] kernel_args: 'mem=1G' is set by the harness; use the target's own keys instead"),
        ("  - name: uml-256m", "  - name: local",
         "targets.yaml:9 [local] name: duplicate target name (first at line 5)"),
        ("  - name: uml-256m", "  - name: bad name", "targets.yaml:9 name: expected a name of 1 to 64 letters, "
                                                   "digits, '.', '_' or '-', beginning with a letter or digit, "
                                                   "got \"bad name\""),
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
    assert error_of("target: []\n") == ("targets.yaml:1 target: unknown top-level key; did you mean targets? known: "
                                       "schema, defaults, targets")


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


# -- bounds on every input -------------------------------------------------------------------

NAME_RULE = "expected a name of 1 to 64 letters, digits, '.', '_' or '-', beginning with a letter or digit"


@pytest.mark.parametrize(
    "name,shown",
    [
        ("x" * 65, '"%s..."' % ("x" * 37)),  # 65 characters: one too many (the error quotes only the start)
        ("x" * 300, '"%s..."' % ("x" * 37)),  # was an OSError at run time (file name too long) and no JSON
        ('"local\\n"', '"local\\n"'),  # a trailing newline was accepted and broke the table and log names
        ('"a/b"', '"a/b"'),
        ("..", '".."'),
        ("-x", '"-x"'),
        ('"tab\\there"', '"tab\\there"'),
    ],
)
def test_a_name_is_a_short_safe_file_name_token(name: str, shown: str) -> None:
    msg = error_of(GOOD.replace("  - name: local", "  - name: %s" % name))
    assert msg == "targets.yaml:5 name: %s, got %s" % (NAME_RULE, shown)
    assert "\n" not in msg


def test_a_name_of_64_characters_is_fine() -> None:
    assert parse(GOOD.replace("  - name: local", "  - name: %s" % ("x" * 64))).targets[0].name == "x" * 64


@pytest.mark.parametrize(
    "value,expected",
    [
        (".inf", "expected a duration above 0 and at most 7 days, got inf"),  # was: no deadline at all
        ("-.inf", "expected a duration above 0 and at most 7 days, got -inf"),
        (".nan", "expected a duration above 0 and at most 7 days, got nan"),
        ("-5", "expected a duration above 0 and at most 7 days, got -5"),
        ("0s", 'expected a duration above 0 and at most 7 days, got "0s"'),
        ("1.0e+9", "expected a duration above 0 and at most 7 days, got 1000000000.0"),
        ("200h", 'expected a duration above 0 and at most 7 days, got "200h"'),
        ("1.2.3s", 'expected a duration like "60s" or "2m", got "1.2.3s"'),  # was a ValueError traceback
    ],
)
def test_timeouts_are_finite_positive_and_bounded(value: str, expected: str) -> None:
    assert error_of(GOOD.replace("timeout: 30s", "timeout: %s" % value)) == "targets.yaml:3 [local] timeout: %s" \
        % expected
    watchdog = GOOD.replace("    memory: 256M\n", "    memory: 256M\n    watchdog: %s\n" % value)
    assert error_of(watchdog) == "targets.yaml:12 [uml-256m] watchdog: %s" % expected


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("rlimit_as", "-1G", 'expected a size above 0 and at most 1 EiB, got "-1G"'),  # was accepted, never applied
        ("rlimit_as", '"0"', 'expected a size above 0 and at most 1 EiB, got "0"'),
        ("memory", "-256M", 'expected a size above 0 and at most 1 EiB, got "-256M"'),
        ("memory", '"0x0"', 'expected a size above 0 and at most 1 EiB, got "0x0"'),
        ("touch_every", '"0"', 'expected a size above 0 and at most 1 EiB, got "0"'),
        ("rlimit_as", "2048P", 'expected a size like "256M", got "2048P"'),
        ("rlimit_as", "1.e999G", 'expected a size like "256M", got "1.e999G"'),  # was an OverflowError traceback
        ("memory", "100000000000T", 'expected a size above 0 and at most 1 EiB, got "100000000000T"'),
        ("memory", '"0x%s"' % ("f" * 60), 'expected a size like "256M", got "0x%s..."' % ("f" * 35)),
    ],
)
def test_sizes_and_limits_are_positive_and_bounded(key: str, value: str, expected: str) -> None:
    text = GOOD.replace("    memory: 256M\n", "    %s: %s\n" % (key, value))
    assert error_of(text) == "targets.yaml:11 [uml-256m] %s: %s" % (key, expected)


def test_an_empty_policy_list_is_an_error_not_a_silently_dropped_target() -> None:
    msg = error_of(GOOD.replace("    markers: [slow]\n", "    markers: [slow]\n    policies: []\n"))
    assert msg == ("targets.yaml:14 [uml-256m] policies: expected a list of at least one of go-2012-pre, go-2012, "
                   "go-modern, go, jvm, or {name: ..., program: ...} (or leave the key out for the model's policies)")
    msg = error_of(GOOD.replace("    markers: [slow]\n", "    markers: [slow]\n    policies: [go-2012, go-2012]\n"))
    assert msg == "targets.yaml:14 [uml-256m] policies[1]: probe 'go-2012' is listed twice"


def test_a_huge_growth_plan_is_refused_without_being_expanded(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import tracemalloc

    f = tmp_path / "t.yaml"
    f.write_text(GOOD.replace("    memory: 256M\n", '    memory: 256M\n    grow: "64M*300000000"\n'))
    tracemalloc.start()
    try:
        code = cli.main(["list", "--targets", str(f)])  # was 4.7 GB of memory just for list
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 2 and peak < 8 << 20
    assert capsys.readouterr().err == ("arena-harness: %s:12 [uml-256m] grow: growth plan too large at "
                                       "'64M*300000000': at most 10000 steps and 1 PiB in all\n" % f)
    for plan, why in [("64M*0", "count must be at least 1"), ("1M*6000,1M*6000", "at most 10000 steps"),
                      ("64M*" + "9" * 40, "expected [grow:|sysalloc:]SIZE[*COUNT]")]:
        assert why in error_of(GOOD.replace("    memory: 256M\n", '    grow: "%s"\n' % plan))
    assert "1G*2000,1G*2000" not in error_of(GOOD.replace("    memory: 256M\n", '    grow: "1G*5000,1G*6000"\n'))


def test_too_many_targets() -> None:
    body = "targets:\n" + "".join("  - {name: t%d, backend: local}\n" % i for i in range(1001))
    assert error_of(body) == "targets.yaml:1 targets: 1001 targets; at most 1000 fit in one file"


def run_cli(*argv: str, timeout: float = 60) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "harness.cli", *argv], capture_output=True, text=True,
                          timeout=timeout)


def one_line(p: "subprocess.CompletedProcess[str]") -> str:
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stdout == ""
    return lines[0]


def test_a_binary_targets_file_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_bytes(b"targets:\n  - name: x\n\xff\xfe\x00binary")  # was a UnicodeDecodeError traceback
    assert one_line(run_cli("list", "--targets", str(f))) == (
        "arena-harness: %s:3: not UTF-8 text (an invalid byte at offset 21): targets files must be text" % f)
    f.write_bytes(b"targets: [\x00]\n")  # valid UTF-8, but no YAML
    assert one_line(run_cli("list", "--targets", str(f))) == (
        "arena-harness: %s:1: not valid YAML: unacceptable character #x0000" % f)


def test_only_regular_files_are_read_as_targets(tmp_path: Path) -> None:
    start = time.monotonic()
    assert one_line(run_cli("list", "--targets", "/dev/zero", timeout=30)) == (  # was: read forever
        "arena-harness: /dev/zero: is a character device: only regular files are read as targets files")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert one_line(run_cli("run", "--targets", str(fifo), timeout=30)) == (  # no writer: an open would block
        "arena-harness: %s: is a FIFO: only regular files are read as targets files" % fifo)
    assert one_line(run_cli("list", "--targets", str(tmp_path), timeout=30)) == (
        "arena-harness: %s: is a directory: only regular files are read as targets files" % tmp_path)
    assert time.monotonic() - start < 30
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * (500 * 1024))  # 5 MiB
    assert one_line(run_cli("list", "--targets", str(big))) == (
        "arena-harness: %s: is larger than 4 MiB, the limit for targets files" % big)


SECRET = "s3cr3t-Hash-Do-Not-Print"


@pytest.mark.parametrize(
    "content,expected",
    [
        # /etc/shadow's shape: YAML reads it as a mapping whose keys are whole lines
        ("root:$6$%s:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n" % SECRET,
         "1 <a key of 50 characters that is not a name>: unknown top-level key; known: schema, defaults, targets"),
        ("a token %s\nand more words\n" % SECRET, "1: expected a mapping with a targets: list, got text"),
        ("password: '%s\n" % SECRET, "2: not valid YAML: found unexpected end of stream"),
        ("targets: [%s\n" % SECRET, "2: not valid YAML: expected ',' or ']', but got '<stream end>'"),
        ("x: *%s%s\n" % (SECRET, SECRET), "1: not valid YAML: found undefined alias '%s...'" % (SECRET + SECRET)[:37]),
        ("%s: 1\n" % SECRET, "1 %s: unknown top-level key; known: schema, defaults, targets" % SECRET),
        ("targets:\n  - name: a\n    backend: local\n    %s/x: 1\n" % SECRET,
         "4 [a] <a key of 26 characters that is not a name>: unknown key for a local target; known keys: "
         "backend, description, expect, grow, markers, name, policies, probes, rlimit_as, timeout, touch_every, "
         "watchdog, python, suite"),
        ("targets:\n  - name: a\n    backend: local\n    expect: {go-2012: '%s%s'}\n" % (SECRET, SECRET),
         "4 [a] expect.go-2012: expected one of high-arena, fallback-32bit, native-32bit, os-chosen, crash "
         "(or \"crash: <message>\"), got \"%s...\"" % (SECRET + SECRET)[:37]),
        ("[" * 100000, ": not valid YAML: nested too deeply"),  # was a RecursionError traceback
    ],
)
def test_errors_quote_no_file_content_beyond_the_offending_key(tmp_path: Path, content: str, expected: str) -> None:
    f = tmp_path / "secret.yaml"
    f.write_text(content)
    line = one_line(run_cli("list", "--targets", str(f)))
    assert line == "arena-harness: %s:%s" % (f, expected) or line == "arena-harness: %s%s" % (f, expected)
    if SECRET + SECRET not in content and not content.startswith(SECRET):
        assert SECRET not in line


# -- an explicitly configured program or path must exist ----------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("    backend: uml\n    kernel: linux.umll\n",  # was: a skip, and run exited 0
         "kernel: no such program on PATH: linux.umll (install user-mode-linux, or fix the path)"),
        ("    backend: uml\n    kernel: /nonexistent/linux.uml\n",
         "kernel: no such program: /nonexistent/linux.uml (install user-mode-linux, or fix the path)"),
        ("    backend: local\n    python: python3-nonexistent\n",
         "python: no such program on PATH: python3-nonexistent (install python3, or fix the path)"),
        ("    backend: local\n    python: /etc/passwd\n",  # exists, but is not a program
         "python: no such program: /etc/passwd (install python3, or fix the path)"),
        ("    backend: uml\n    python: python3.99\n",
         "python: no such program in the guest's root /: python3.99 (on its PATH /usr/sbin:/usr/bin:/sbin:/bin)"),
        ("    backend: uml\n    root: /nonexistent-root\n",
         "root: no such directory: /nonexistent-root (the host directory the guest boots as its root)"),
        ("    backend: ssh\n    host: h\n    key_file: /nonexistent/id_ed25519\n",
         "key_file: no such file: /nonexistent/id_ed25519 (the private key to log in with)"),
    ],
)
def test_an_explicit_program_or_path_that_does_not_exist_is_a_config_error(text: str, expected: str) -> None:
    body = "targets:\n  - name: t\n" + text
    line = 3 + text.count("\n") - 1
    assert error_of(body) == "targets.yaml:%d [t] %s" % (line, expected)


def test_explicit_programs_that_exist_are_fine() -> None:
    ts = parse("targets:\n  - name: t\n    backend: local\n    python: %s\n"
               "  - name: u\n    backend: uml\n    python: /usr/bin/env\n    root: /\n" % sys.executable)
    assert ts.targets[0].options.python == sys.executable


@pytest.mark.parametrize("backend,key", [("uml", "suite"), ("local", "suite"), ("qemu", "suite"),
                                         ("qemu", "rootfs_suite"), ("qemu", "kernel_package"),
                                         ("qemu-user", "suite"), ("docker", "suite")])
def test_a_debian_name_that_is_an_option_is_refused(backend: str, key: str) -> None:
    """A suite becomes a word of mmdebstrap's command line, run as root: "--setup-hook=..." must not."""
    text = "targets:\n  - name: a\n    backend: %s\n    %s: \"--setup-hook=id > /tmp/pwn\"\n" % (backend, key)
    with pytest.raises(ConfigError) as e:
        config.parse(text, "t.yaml")
    assert str(e.value).startswith("t.yaml:4 [a] %s: expected a Debian " % key), str(e.value)
    assert "setup-hook" in str(e.value)  # quoted, so the user sees what was refused


@pytest.mark.parametrize("text,expected", [
    ("  - name: 2024-01-01\n    backend: local\n",
     "targets.yaml:2 name: expected a name of 1 to 64 letters, digits, '.', '_' or '-', beginning with a letter or "
     "digit, got a date (2024-01-01)"),
    ("  - name: t\n    backend: local\n    timeout: 2024-01-01\n",
     'targets.yaml:4 [t] timeout: expected a duration like "60s" or "2m", got a date (2024-01-01)'),
])
def test_a_yaml_date_is_described_as_a_date(text: str, expected: str) -> None:
    # YAML reads 2024-01-01 unquoted as a date: was "got datetime.date(2024, 1, 1)".
    assert error_of("targets:\n" + text) == expected
