"""Verdicts never lie: the gate of run, report and diff, and results files that are not what they claim."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from harness import cli, diff, verdict
from harness.model import Record, Status
from harness.results import RunDocument

PASS_LINE = "1 regressions"


def record(target: str, policy: str, status: Status, detail: str = "") -> Record:
    return Record(target, "local" if target.startswith("l") else "qemu", policy, status, "high-arena",
                  "high-arena" if status is Status.PASS else None, None, True, False, 0.3, "/out/%s.log" % target,
                  detail=detail or None)


def run_doc(*records: Record, complete: bool = True, interrupted: str = "") -> RunDocument:
    return RunDocument("run-%d" % len(records), "2026-11-25T00:00:00+00:00", "2026-11-25T00:00:03+00:00", complete,
                       list(records), interrupted=interrupted or None)


def write(tmp_path: Path, name: str, doc: RunDocument) -> str:
    path = tmp_path / name
    doc.write(path)
    return str(path)


OLD = [record("l1", "go-2012", Status.PASS), record("l1", "go-modern", Status.PASS),
       record("qemu-x", "go-2012", Status.PASS)]
SKIPPED = record("qemu-x", "go-2012", Status.SKIP, "qemu backend needs qemu-system-x86_64: install it with: x")


@pytest.fixture(autouse=True)
def no_require(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_REQUIRE", raising=False)


def diff_of(tmp_path: Path, capsys: pytest.CaptureFixture[str], new: RunDocument, *flags: str) -> tuple:
    code = cli.main(["diff", write(tmp_path, "old.json", run_doc(*OLD)), write(tmp_path, "new.json", new), *flags])
    out, err = capsys.readouterr()
    return code, err.strip().splitlines(), out


def test_diff_passes_a_complete_run_with_every_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, out = diff_of(tmp_path, capsys, run_doc(*OLD))
    assert (code, err) == (0, []) and out.strip().endswith("0 regressions, 0 fixes")


def test_diff_fails_when_new_is_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, out = diff_of(tmp_path, capsys, run_doc())  # was: "0 regressions", exit 0
    assert code == 1 and out.strip().endswith("0 regressions, 0 fixes")
    assert err == ["arena-harness: gate failed: NEW: the run has no results: nothing ran",
                   "arena-harness: gate failed: 3 results of OLD are missing from NEW (l1/go-2012, l1/go-modern, "
                   "qemu-x/go-2012); pass --allow-gone if they were removed on purpose"]
    code, err, _ = diff_of(tmp_path, capsys, run_doc(), "--allow-gone")
    assert code == 1 and err == ["arena-harness: gate failed: NEW: the run has no results: nothing ran"]


def test_diff_fails_when_new_is_incomplete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, _ = diff_of(tmp_path, capsys, run_doc(*OLD, complete=False, interrupted="interrupted by SIGINT"))
    assert code == 1 and err == ["arena-harness: gate failed: NEW: the run is incomplete (interrupted by SIGINT)"]


def test_diff_fails_when_results_of_old_are_gone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, out = diff_of(tmp_path, capsys, run_doc(*OLD[:2]))
    assert code == 1 and "Gone (1):\n  qemu-x/go-2012: pass (high-arena) -> -" in out
    assert err == ["arena-harness: gate failed: 1 results of OLD are missing from NEW (qemu-x/go-2012); pass "
                   "--allow-gone if they were removed on purpose"]
    assert diff_of(tmp_path, capsys, run_doc(*OLD[:2]), "--allow-gone")[:2] == (0, [])


def test_diff_fails_on_skips_unless_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    new = run_doc(OLD[0], OLD[1], SKIPPED)
    md = tmp_path / "diff.md"
    code, err, _ = diff_of(tmp_path, capsys, new, "--markdown", str(md))  # was: pass -> skip, exit 0
    why = ("1 of 3 results skipped (qemu-x): qemu backend needs qemu-system-x86_64: install it with: x; pass "
           "--allow-skip if a skip is fine here")
    assert code == 1 and err == ["arena-harness: gate failed: NEW: %s" % why]
    assert "**Gate failed:** NEW: %s" % why in md.read_text()
    assert diff_of(tmp_path, capsys, new, "--allow-skip")[:2] == (0, [])
    # HARNESS_REQUIRE names what must run, whatever the flag says.
    monkeypatch.setenv("HARNESS_REQUIRE", "qemu")
    code, err, _ = diff_of(tmp_path, capsys, new, "--allow-skip")
    assert code == 1 and err == ["arena-harness: gate failed: NEW: 1 results skipped although HARNESS_REQUIRE=qemu "
                                 "requires them: qemu-x/go-2012 (qemu backend needs qemu-system-x86_64: install it "
                                 "with: x)"]
    monkeypatch.setenv("HARNESS_REQUIRE", "uml,local")
    assert diff_of(tmp_path, capsys, new, "--allow-skip")[:2] == (0, [])


def test_diff_still_fails_on_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, out = diff_of(tmp_path, capsys, run_doc(OLD[0], OLD[1], record("qemu-x", "go-2012", Status.FAIL)))
    assert code == 1 and err == [] and out.strip().endswith("1 regressions, 0 fixes")


def test_report_applies_the_same_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "r.json", run_doc(OLD[0], SKIPPED))
    assert cli.main(["report", path]) == 1
    assert capsys.readouterr().err.startswith("arena-harness: gate failed: 1 of 2 results skipped (qemu-x)")
    assert cli.main(["report", path, "--allow-skip"]) == 0


LOCAL = "targets:\n  - name: l\n    backend: local\n    policies: [go-2012]\n"


def test_a_run_whose_results_are_all_skipped_does_not_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "t.yaml"
    f.write_text(LOCAL)
    monkeypatch.setenv("PATH", str(tmp_path))  # the local backend's default python3 is missing: a skip
    monkeypatch.setattr("harness.backends.local.VIEW_PATH", str(tmp_path))  # where the jail looks for it
    argv = ["run", "--targets", str(f), "--artifacts", str(tmp_path / "out"), "-q", "--json", str(tmp_path / "r.json")]
    assert cli.main(argv) == 1  # was 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["arena-harness: gate failed: 1 of 1 results skipped (l): local backend needs python3: install it "
                   "with: sudo apt-get install -y python3; pass --allow-skip if a skip is fine here"]
    assert RunDocument.load(tmp_path / "r.json").records[0].status is Status.SKIP  # the results are still written
    assert cli.main(argv + ["--allow-skip"]) == 0
    monkeypatch.setenv("HARNESS_REQUIRE", "all")
    assert cli.main(argv + ["--allow-skip"]) == 1
    assert "HARNESS_REQUIRE=all requires them: l/go-2012" in capsys.readouterr().err


def test_a_run_that_selects_nothing_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "t.yaml"
    f.write_text(LOCAL)
    assert cli.main(["run", "--targets", str(f), "--shard", "2/2", "--artifacts", str(tmp_path)]) == 2
    assert cli.main(["run", "--targets", str(f), "--probe", "go-modrn", "--artifacts", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["arena-harness: nothing to run: the selection (--only, --group, --shard, --probe) leaves no "
                   "target and probe",
                   "arena-harness: unknown probe 'go-modrn'; did you mean go-modern? known here: go-2012-pre, go-2012, "
                   "go-modern, go, jvm"]


# -- malformed results files: one line, exit 2 -----------------------------------------------------


def good_json() -> Dict[str, Any]:
    return run_doc(*OLD).to_json()


def mutate(fn: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    d = good_json()
    fn(d)
    return d


BAD: List[tuple] = [
    (lambda d: d["results"][1].pop("status"), "[l1] results[1].status: missing"),
    (lambda d: d["results"][0].pop("target"), "results[0].target: missing"),
    (lambda d: d["results"][2].update(status="passed"),
     '[qemu-x] results[2].status: unknown status "passed"; known: pass, observed, fail, disagree, error, timeout, '
     'panic, skip'),
    (lambda d: d["results"][2].update(status=None),
     "[qemu-x] results[2].status: unknown status null; known: pass, observed, fail, disagree, error, timeout, "
     "panic, skip"),
    (lambda d: d["results"][0].update(duration_s="3s"), '[l1] results[0].duration_s: expected a number, got a string'),
    # Python's JSON reads NaN and Infinity: was "expected a number, got a number".
    (lambda d: d["results"][0].update(duration_s=float("nan")),
     "[l1] results[0].duration_s: expected a number, got NaN"),
    (lambda d: d["results"][0].update(duration_s=float("-inf")),
     "[l1] results[0].duration_s: expected a number, got -Infinity"),
    (lambda d: d["results"][0].update(high_ok="yes"), "[l1] results[0].high_ok: expected true, false or null, "
                                                     "got a string"),
    (lambda d: d["results"][0].update(markers=[1]), "[l1] results[0].markers: expected a list of strings, got a list"),
    (lambda d: d["results"][0].update(probe=[]), "[l1] results[0].probe: expected a mapping or null, got a list"),
    # The probe document is read by reports and diff: its shape is checked too (was an AttributeError).
    (lambda d: d["results"][0].update(probe={"schema": 1, "policy": "go-2012", "reservation": 5}),
     "[l1] results[0].probe: reservation: expected a mapping"),
    (lambda d: d["results"][0].update(probe={"schema": 1, "policy": "go-2012", "reservation": {"probe": "0xzz"}}),
     "[l1] results[0].probe: reservation.probe: expected an address (0x...) or null"),
    (lambda d: d["results"][0].update(probe={"schema": 1, "policy": "go-2012", "heap": {"arenas": [["0x1"]]}}),
     "[l1] results[0].probe: heap.arenas: expected a list of address pairs"),
    (lambda d: d["results"][0].update(probe={"policy": "go-2012"}),
     "[l1] results[0].probe: not an allocator document of schema 1"),
    (lambda d: d["results"].__setitem__(1, "pass"), "results[1]: expected a mapping, got a string"),
    (lambda d: d.update(results={}), "results: expected a list, got a mapping"),
    (lambda d: d.pop("run"), "run: expected a mapping, got null"),
    (lambda d: d["run"].pop("complete"), "run.complete: missing"),
    (lambda d: d["run"].update(complete="yes"), "run.complete: expected true or false, got a string"),
    (lambda d: d["run"].update(argv="arena-harness run"), "run.argv: expected a list of strings or null, got a string"),
]


@pytest.mark.parametrize("change,expected", BAD, ids=[e for _, e in BAD])
@pytest.mark.parametrize("command", ["report", "diff", "merge"])
def test_a_malformed_results_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         command: str, change: Callable, expected: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(mutate(change)))  # was: a KeyError/TypeError/ValueError traceback and exit 1
    good = write(tmp_path, "good.json", run_doc(*OLD))
    argv = {"report": ["report", str(bad)], "diff": ["diff", good, str(bad)],
            "merge": ["merge", str(tmp_path / "out.json"), good, str(bad)]}[command]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert err == "arena-harness: %s %s\n" % (bad, expected) and out == ""
    assert not (tmp_path / "out.json").exists()


def test_results_files_that_are_not_json_or_not_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "r.json"
    cases = [
        (b"[" * 100000, "%s: not valid JSON: nested too deeply" % p),
        (b'{"schema": 1, "resu', "%s: not valid JSON: Unterminated string starting at: line 1 column 15 (char 14)" % p),
        (b"\xff\xfe", "%s:1: not UTF-8 text (an invalid byte at offset 0): results files must be text" % p),
        (b'{"schema": 1, "run": {"id": "x", "started": "s", "complete": true}, "results": [{"duration_s": NaN}]}',
         "%s results[0].target: missing" % p),
    ]
    for data, expected in cases:
        p.write_bytes(data)
        assert cli.main(["report", str(p)]) == 2
        assert capsys.readouterr().err == "arena-harness: %s\n" % expected
    assert cli.main(["report", "/dev/zero"]) == 2
    assert capsys.readouterr().err == ("arena-harness: /dev/zero: is a character device: only regular files are read "
                                       "as results files\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert cli.main(["diff", str(fifo), str(fifo)]) == 2
    assert "is a FIFO: only regular files are read as results files" in capsys.readouterr().err


def test_a_damaged_tracking_file_is_an_error_not_a_fresh_start(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "regressions.json"
    state.write_text('{"open": {"l1/go-2012": {"first_failed": "run-1"}}}')
    good = write(tmp_path, "good.json", run_doc(*OLD))
    assert cli.main(["diff", good, good, "--track", str(state)]) == 2
    assert capsys.readouterr().err == ("arena-harness: %s open.l1/go-2012: expected a mapping with first_failed.run\n"
                                       % state)
    state.write_text("[]")
    assert cli.main(["diff", good, good, "--track", str(state)]) == 2
    assert state.read_text() == "[]"  # left as it was


FAIL_THEN_PASS = [record("l1", "go-2012", Status.FAIL, "expected high-arena, got crash: boom"),
                  record("l1", "go-2012", Status.PASS)]


@pytest.mark.parametrize("command", ["report", "diff", "merge"])
def test_a_duplicate_result_in_one_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               command: str) -> None:
    # Was: report said "failed" (exit 1), diff said "no changes" (exit 0), merge kept the pass.
    dup = write(tmp_path, "dup.json", run_doc(*FAIL_THEN_PASS, record("qemu-x", "go-2012", Status.PASS)))
    good = write(tmp_path, "good.json", run_doc(*OLD))
    argv = {"report": ["report", dup], "diff": ["diff", good, dup],
            "merge": ["merge", str(tmp_path / "out.json"), good, dup]}[command]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert err == ("arena-harness: %s [l1] results[1]: a second result for l1/go-2012 (the first is results[0]); "
                   "a results file holds one result per target and policy\n" % dup) and out == ""
    assert not (tmp_path / "out.json").exists()


def test_merge_refuses_files_that_share_a_result_unless_told_which_wins(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path, "a.json", run_doc(FAIL_THEN_PASS[0], record("qemu-x", "go-2012", Status.PASS)))
    b = write(tmp_path, "b.json", run_doc(FAIL_THEN_PASS[1]))
    out_path = tmp_path / "out.json"
    assert cli.main(["merge", str(out_path), a, b]) == 2  # was: exit 0, l1/go-2012 "passed"
    assert capsys.readouterr().err == ("arena-harness: %s: l1/go-2012 is also in %s; pass --prefer first or --prefer "
                                       "last to say which file's result wins\n" % (b, a))
    assert not out_path.exists()
    for prefer, status in (("first", Status.FAIL), ("last", Status.PASS)):
        assert cli.main(["merge", str(out_path), a, b, "--prefer", prefer]) == 0
        assert "2 results from 2 files (1 duplicates dropped, --prefer %s)" % prefer in capsys.readouterr().out
        merged = RunDocument.load(out_path)
        assert [(r.target, r.status) for r in merged.records] == [("l1", status), ("qemu-x", Status.PASS)]
    assert cli.main(["merge", str(out_path), a, b, "--prefer", "newest"]) == 2
    assert "argument --prefer: invalid choice: 'newest' (choose from 'first', 'last')" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "report", "diff"])
@pytest.mark.parametrize("value,bad", [("umll", '"umll"'), ("uml, qemu-usr,local", '"qemu-usr"'),
                                       ("Docker,nsexec", '"nsexec"')])
def test_an_unknown_harness_require_value_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch, command: str,
                                                           value: str, bad: str) -> None:
    # Was: ignored, so a typo required nothing and every skip passed under --allow-skip.
    monkeypatch.setenv("HARNESS_REQUIRE", value)
    path = write(tmp_path, "r.json", run_doc(OLD[0], SKIPPED))
    f = tmp_path / "t.yaml"
    f.write_text(LOCAL)
    argv = {"run": ["run", "--targets", str(f), "--artifacts", str(tmp_path / "out"), "-q", "--allow-skip"],
            "report": ["report", path, "--allow-skip"], "diff": ["diff", path, path, "--allow-skip"]}[command]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert err == ("arena-harness: HARNESS_REQUIRE: unknown value %s; accepted, comma-separated: %s (any case, '-' "
                   "or '_')\n" % (bad, ", ".join(verdict.accepted()))) and out == ""
    assert {"all", "uml", "qemu-user", "docker"} <= set(verdict.accepted())
    assert not {"console", "jail", "nsexec", "base"} & set(verdict.accepted())  # helper modules, not backends
    assert not (tmp_path / "out").exists()  # refused before anything ran


@pytest.mark.parametrize("value", ["qemu_user", "QEMU-USER", "Qemu_User", " qemu-user ", "ALL", "uml,All"])
def test_harness_require_reads_any_spelling_of_a_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    # Was: the gate took only "qemu-user" and "all"; the test suite's require_tool("qemu_user") only "qemu_user".
    skipped = Record("arm", "qemu-user", "go-2012", Status.SKIP, None, None, None, None, None, 0.0, None,
                     detail="qemu-user backend needs qemu-aarch64: install it")
    path = write(tmp_path, "r.json", run_doc(OLD[0], skipped))
    monkeypatch.setenv("HARNESS_REQUIRE", value)
    assert cli.main(["report", path, "--allow-skip"]) == 1
    assert "1 results skipped although HARNESS_REQUIRE=%s requires them: arm/go-2012" % value \
        in capsys.readouterr().err
    assert verdict.required("qemu-user") and verdict.required("qemu_user")
    monkeypatch.setenv("HARNESS_REQUIRE", "uml")
    assert cli.main(["report", path, "--allow-skip"]) == 0
    assert not verdict.required("qemu_user") and verdict.required("UML")


def test_observed_counts_as_good_in_the_gate_in_diff_and_in_the_plugin(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from harness.plugin import check

    observed = record("l1", "go-2012", Status.OBSERVED)
    observed.outcome = "high-arena"
    path = write(tmp_path, "r.json", run_doc(observed, OLD[1]))
    assert cli.main(["report", path]) == 0
    assert "1 passed, 0 failed, 1 observed" in capsys.readouterr().out
    code, err, out = diff_of(tmp_path, capsys, run_doc(observed, OLD[1], OLD[2]))
    assert (code, err) == (0, []) and "l1/go-2012: pass (high-arena) -> observed (high-arena)" in out
    old, new = run_doc(observed, OLD[1], OLD[2]), run_doc(record("l1", "go-2012", Status.FAIL), OLD[1], OLD[2])
    d = diff.compare(old, new)
    assert [c.kind for c in d.changes] == ["regression"] and [c.kind for c in diff.compare(new, old).changes] == ["fix"]
    check(observed)  # a pytest item for it passes


def test_a_target_with_no_expect_is_a_survey_that_records_and_never_fails(
        fake_backend: type, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # What the README says of a target with no expect: (issue 16 found it undocumented).
    targets = tmp_path / "t.yaml"
    targets.write_text("targets:\n  - name: survey\n    backend: fake\n    simulate: uml\n")
    out = tmp_path / "r.json"
    assert cli.main(["run", "--targets", str(targets), "--json", str(out), "-q",
                     "--artifacts", str(tmp_path / "logs")]) == 0
    assert "0 passed, 0 failed, 3 observed" in capsys.readouterr().out
    recs = RunDocument.load(out).records
    assert {r.status for r in recs} == {Status.OBSERVED}
    assert any(r.outcome == "crash" for r in recs)  # UML refuses go-2012-pre's unchecked hint: a crash, observed
