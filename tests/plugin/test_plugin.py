"""The pytest plugin, run in an inner pytest session (pytester) against real local targets."""

from __future__ import annotations

import pytest

from tests.plugin.lab import CONFTEST

TARGETS = """\
targets:
  - name: here
    backend: local
    markers: [smoke]
    expect: {go-2012: high-arena, go-2012-pre: high-arena, go-modern: high-arena}
  - name: here-wrong
    backend: local
    policies: [go-2012]
    expect: {go-2012: fallback-32bit}
  - name: notool
    backend: lab
    policies: [go-2012]
"""

TEST = """\
from harness.plugin import check

def test_arena(harness_result):
    check(harness_result)
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("HARNESS_REQUIRE", raising=False)
    pytester.makefile(".yaml", targets=TARGETS)
    pytester.makepyfile(test_inner=TEST)
    pytester.makeconftest(CONFTEST)
    return pytester


def args(*extra: str) -> list:
    return ["--harness-targets", "targets.yaml", "-p", "no:cacheprovider", "--strict-markers", *extra]


def test_one_item_per_target_and_policy(inner: pytest.Pytester) -> None:
    r = inner.runpytest(*args("--collect-only", "-q"))
    names = [ln.split("::")[1] for ln in r.outlines if "::" in ln]
    assert names == [
        "test_arena[here-go-2012-pre]",
        "test_arena[here-go-2012]",
        "test_arena[here-go-modern]",
        "test_arena[here-wrong-go-2012]",
        "test_arena[notool-go-2012]",
    ]


def test_backend_and_target_markers_select(inner: pytest.Pytester) -> None:
    r = inner.runpytest(*args("-m", "smoke"))
    r.assert_outcomes(passed=3, deselected=2)
    r = inner.runpytest(*args("-m", "local and not smoke", "-k", "here"))
    r.assert_outcomes(failed=1, deselected=4)


def test_failure_says_what_happened_and_where_the_log_is(inner: pytest.Pytester) -> None:
    r = inner.runpytest(*args("-k", "here-wrong"))
    r.assert_outcomes(failed=1, deselected=4)
    out = r.stdout.str()
    assert "here-wrong/go-2012: fail" in out
    assert "expected fallback-32bit, got high-arena" in out
    assert "console log: " in out and "here-wrong.log" in out
    assert "Traceback" not in out
    # Each thing once: was "expected fallback-32bit, got high-arena", then "outcome: high-arena, expected:
    # fallback-32bit" (issue 16).
    start = out.index("here-wrong/go-2012: fail")
    message = out[start:out.index("console log: ", start)]
    assert message.count("fallback-32bit") == 1 and message.count("high-arena") == 1, message


def test_each_marker_is_declared_once(inner: pytest.Pytester) -> None:
    # Was: a target marked like a backend (``ssh``, in the shipped targets) declared that marker twice.
    inner.makefile(".yaml", marked=TARGETS.replace("markers: [smoke]", "markers: [smoke, ssh, local]"))
    r = inner.runpytest("--harness-targets", "marked.yaml", "-p", "no:cacheprovider", "--markers")
    declared = [ln.split(":")[0] for ln in r.outlines if ln.startswith("@pytest.mark.")]
    assert "@pytest.mark.ssh" in declared and "@pytest.mark.smoke" in declared
    assert sorted(set(declared)) == sorted(declared), declared


def test_missing_tool_skips_with_the_install_hint(inner: pytest.Pytester) -> None:
    r = inner.runpytest(*args("-k", "notool", "-rs"))
    r.assert_outcomes(skipped=1, deselected=4)
    r.stdout.fnmatch_lines(["*lab backend needs arena-harness-lab-controller: install it with: sudo apt-get "
                            "install -y arena-harness-lab*"])


def test_harness_require_turns_the_skip_into_a_failure(inner: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_REQUIRE", "lab")
    r = inner.runpytest(*args("-k", "notool"))
    r.assert_outcomes(errors=1, deselected=4)  # the fixture fails, so pytest counts an error
    r.stdout.fnmatch_lines(["*lab backend needs arena-harness-lab-controller*HARNESS_REQUIRE=lab requires it*"])


def test_policy_option(inner: pytest.Pytester) -> None:
    r = inner.runpytest(*args("--harness-policy", "go-modern", "-m", "smoke"))
    r.assert_outcomes(passed=1)


def test_works_under_xdist_without_collisions(inner: pytest.Pytester) -> None:
    r = inner.runpytest_subprocess(*args("-n", "2", "-k", "here and not wrong", "--harness-artifacts", "logs"))
    r.assert_outcomes(passed=3)
    logs = sorted(p.name for p in (inner.path / "logs").rglob("*.log"))
    assert logs == ["here.log"]  # one boot for the target's three items


def test_a_bad_targets_file_is_a_usage_error(inner: pytest.Pytester) -> None:
    inner.makefile(".yaml", bad="targets:\n  - name: x\n    backend: nope\n")
    r = inner.runpytest_subprocess("--harness-targets", "bad.yaml", "-p", "no:cacheprovider")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*arena-harness: bad.yaml:3 [[]x[]] backend: unknown backend 'nope'; known: *"])


def test_an_unknown_harness_require_value_is_a_usage_error(inner: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_REQUIRE", "lab,umll")  # was: "umll" ignored, so nothing but lab was required
    r = inner.runpytest(*args())
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(['ERROR: arena-harness: HARNESS_REQUIRE: unknown value "umll"; accepted, comma-separated: '
                            "all, *lab*qemu-user*uml (any case, '-' or '_')"])
    assert "Traceback" not in r.stderr.str()
    monkeypatch.setenv("HARNESS_REQUIRE", "LAB")  # any case, as the CLI's gate reads it
    r = inner.runpytest(*args("-k", "notool"))
    r.assert_outcomes(errors=1, deselected=4)


SESSION_TEST = """\
from pathlib import Path


def test_ask_the_target(harness_target):
    r = harness_target.run("echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\\n", "err\\n")
    assert harness_target.run(["uname", "-s"]).stdout == "Linux\\n"


def test_a_host_file_is_sent_and_run(harness_target, tmp_path):
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\\necho from-a-file $$\\n")
    r = harness_target.run(Path(script))
    assert r.returncode == 0 and r.stdout.startswith("from-a-file ")


def test_booted_once(harness_target):
    # the same agent serves every test of the session: its PID namespace's counter only grows
    first = int(harness_target.run("echo $$").stdout)
    assert int(harness_target.run("echo $$").stdout) > first
"""


def test_harness_target_boots_each_target_once_and_runs_commands(inner: pytest.Pytester) -> None:
    """A real local target and a real UML one, booted once each for three tests, commands run in them."""
    inner.makefile(".yaml", targets="""\
targets:
  - name: here
    backend: local
  - name: um
    backend: uml
""")
    inner.makepyfile(test_inner=SESSION_TEST)
    from harness import backends, config

    uml = config.parse("targets:\n  - name: um\n    backend: uml\n").targets[0]
    missing = backends.get("uml")(uml).missing()
    if missing is not None:
        from harness.plugin import skip_or_fail

        skip_or_fail("uml", str(missing))
    result = inner.runpytest(*args("-v", "--harness-artifacts", str(inner.path / "art")))
    result.assert_outcomes(passed=6)
    logs = list((inner.path / "art").rglob("um.log"))
    assert len(logs) == 1, logs  # one boot of the UML target served its three tests


def test_harness_list_shows_what_a_session_would_boot_and_boots_nothing(inner: pytest.Pytester) -> None:
    result = inner.runpytest(*args("--harness-list", "--harness-only", "here*"))
    assert result.ret == 0
    out = [ln for ln in result.outlines if ln.strip()]
    assert out[-1] == "2 targets"
    assert out[0].split()[:3] == ["here", "local", "go-2012-pre,"]
    assert out[1].split()[:3] == ["here-wrong", "local", "go-2012"]
    assert not list(inner.path.rglob("*.log"))  # nothing booted
