"""``harness_boundary`` / ``assert_boundary``: a boundary kept as a test, in an inner pytest session
(pytester): on the simulated kernel, on this machine for real (RLIMIT_AS), and for a backend whose tool
is missing."""

from __future__ import annotations

import pytest

from tests.plugin.lab import CONFTEST

TARGETS = """\
targets:
  - name: here
    backend: local
    probes: [go-2012]
  - name: notool
    backend: lab
    policies: [go-2012]
"""

TEST = """\
from harness.plugin import assert_boundary


def test_go_2012_leaves_its_fallback_once_the_probe_fits(harness_boundary):
    b = harness_boundary("here", "task_size", "go-2012", "0xf000000000", "0x10000000000",
                         before="fallback-32bit", after="crash")
    assert b.first.value - b.last.value == 4096 and b.first.crash == "runtime: out of memory"


def test_the_model_needs_this_much_rlimit_as_here(harness_boundary):
    b = harness_boundary("here", "rlimit_as", "go-2012", "64M", "4G", resolution="16M", after="high-arena")
    assert b.last.outcome == "crash" and b.first.value - b.last.value == 16 << 20
    print("from the cache: %s %s" % (b.last.cached, b.first.cached))


def test_by_function_too(tmp_path):
    assert_boundary("here", "task_size", "go-2012", 0xf000000000, 0x10000000000, targets="targets.yaml",
                    before="crash: runtime: address space conflict", after="high-arena", artifacts=tmp_path)


def test_no_change_in_the_interval(harness_boundary):
    harness_boundary("here", "task_size", "go-2012", "0xf000000000", "0xf400000000")


def test_not_the_change_asked_for(harness_boundary):
    harness_boundary("here", "task_size", "go-2012", "0xf000000000", "0x10000000000", before="high-arena")


def test_a_tool_missing(harness_boundary):
    harness_boundary("notool", "rlimit_as", "go-2012", "1G", "2G")


def test_a_knob_the_target_has_not(harness_boundary):
    harness_boundary("here", "reserved_va", "go-2012", "1G", "2G")
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("HARNESS_REQUIRE", raising=False)
    monkeypatch.setenv("ARENA_HARNESS_CACHE", str(pytester.path / "cache"))
    pytester.makefile(".yaml", targets=TARGETS)
    pytester.makepyfile(test_inner=TEST)
    pytester.makeconftest(CONFTEST)
    return pytester


def test_boundaries_pass_fail_and_skip_with_one_clear_message(inner: pytest.Pytester) -> None:
    r = inner.runpytest("--harness-targets", "targets.yaml", "-p", "no:cacheprovider", "-rs")
    r.assert_outcomes(passed=3, failed=3, skipped=1)
    out = r.stdout.str()
    assert "Traceback" not in out
    r.stdout.fnmatch_lines([
        "*go-2012 on here (task_size from 0xf000000000 to 0xf400000000): no boundary: fallback-32bit at both ends*",
        "*go-2012 on here (task_size from 0xf000000000 to 0x10000000000): no boundary from high-arena to any "
        "outcome; found: 0xf800030000 (fallback-32bit) | 0xf800031000 (crash: runtime: out of memory);*",
        "*assert_boundary: --vary reserved_va: * is a knob of qemu-user targets, and here is a local target*",
        "*lab backend needs arena-harness-lab-controller*",
    ])
    # Every point is cached: the same session again boots nothing (the boundaries are the same).
    again = inner.runpytest("--harness-targets", "targets.yaml", "-p", "no:cacheprovider", "-s", "-k", "rlimit")
    again.assert_outcomes(passed=1, deselected=6)
    again.stdout.fnmatch_lines(["*from the cache: True True*"])
