"""The status rule, classification, the run document, and the reports (golden files).

Golden files are regenerated with ``HARNESS_REGEN_GOLDEN=1 pytest tests/unit``, never by hand.
"""

from __future__ import annotations

import dataclasses
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from harness import config, report
from harness.errors import ConfigError
from harness.model import PRECEDENCE, GuestRun, Record, Status, worst
from harness.plugin import skip_or_fail
from harness.results import RunDocument, classify

GOLDEN = Path(__file__).parent / "golden"
TARGETS = config.parse(
    """
targets:
  - name: uml
    backend: uml
    timeout: 30
    expect:
      go-2012: fallback-32bit
      go-2012-pre: "crash: runtime: out of memory"
""",
    "t.yaml",
)
UML = TARGETS.targets[0]


def doc(policy: str, outcome: str, crash: Optional[str] = None, high_ok: bool = False) -> Dict[str, Any]:
    return {
        "schema": 1,
        "policy": policy,
        "facts": {"kernel": "6.1.176", "machine": "x86_64"},
        "reservation": {"hint": "0xf800000000", "high_ok": high_ok},
        "fallback": {"engaged": outcome == "fallback-32bit"},
        "outcome": outcome,
        "crash": crash,
        "error": None,
    }


def guest(**docs: Dict[str, Any]) -> GuestRun:
    return GuestRun({k.replace("_", "-"): v for k, v in docs.items()}, Path("/logs/uml.log"), 2.5)


def test_precedence_is_one_rule() -> None:
    assert [s.value for s in PRECEDENCE] == ["panic", "timeout", "error", "fail", "disagree", "pass", "observed",
                                             "skip"]
    assert worst([Status.PASS, Status.FAIL, Status.SKIP]) is Status.FAIL
    assert worst([Status.OBSERVED, Status.PASS]) is Status.PASS
    assert worst([Status.SKIP, Status.OBSERVED]) is Status.OBSERVED
    assert worst([Status.ERROR, Status.TIMEOUT]) is Status.TIMEOUT
    assert worst([Status.TIMEOUT, Status.PANIC, Status.PASS]) is Status.PANIC
    assert worst([Status.SKIP, Status.PASS]) is Status.PASS
    assert worst([]) is Status.SKIP


def test_pass_and_fail_against_the_expectation() -> None:
    g = guest(go_2012=doc("go-2012", "fallback-32bit"), go_2012_pre=doc("go-2012-pre", "crash", "runtime: oops"))
    ok = classify(UML, "go-2012", g)
    assert ok.status is Status.PASS and ok.fallback_engaged is True and ok.high_ok is False
    assert ok.kernel == "6.1.176" and ok.log == "/logs/uml.log"
    bad = classify(UML, "go-2012-pre", g)
    assert bad.status is Status.FAIL
    assert bad.detail == "expected crash: runtime: out of memory, got crash: runtime: oops"


def test_no_expectation_is_observed_not_passed() -> None:
    # Was: "pass", for every outcome, a crash included (issue 16).
    for outcome, crash in (("os-chosen", None), ("crash", "runtime: oops")):
        r = classify(UML, "go-modern", guest(go_modern=doc("go-modern", outcome, crash)))
        assert r.status is Status.OBSERVED and r.expected is None and r.detail is None
    g = guest(go_modern=doc("go-modern", "os-chosen"))
    g.timed_out = True  # what went wrong still wins over "nothing was expected"
    assert classify(UML, "go-modern", g).status is Status.TIMEOUT
    assert classify(UML, "go-modern", guest()).status is Status.ERROR


def test_observed_results_never_fail_and_are_counted_apart() -> None:
    g = guest(go_2012=doc("go-2012", "fallback-32bit"), go_modern=doc("go-modern", "crash", "runtime: oops"))
    run = RunDocument("r", "s", "f", True, [classify(UML, "go-2012", g), classify(UML, "go-modern", g)])
    assert not run.failed() and run.status is Status.PASS
    assert report.summary_line(run) == "1 passed, 0 failed, 1 observed"  # "N passed, N failed" first, for CI parsers
    assert "🔍 crash: runtime: oops" in report.markdown(run)
    assert "observed" in report.table(run).splitlines()[2]
    assert "<testcase" in report.junit(run) and "<failure" not in report.junit(run)


def test_missing_document_is_an_error_with_the_reason() -> None:
    g = guest()
    g.error = "no result (exit status 1): boom"
    r = classify(UML, "go-2012", g)
    assert r.status is Status.ERROR and r.detail == "no result (exit status 1): boom"


def test_allocator_error_document() -> None:
    d = {"schema": 1, "policy": "go-2012", "outcome": None, "error": "policy process killed by SIGSEGV"}
    r = classify(UML, "go-2012", guest(go_2012=d))
    assert r.status is Status.ERROR and r.detail == "policy process killed by SIGSEGV"


def test_timeout_and_panic_win_over_what_was_collected() -> None:
    g = guest(go_2012=doc("go-2012", "fallback-32bit"))
    g.timed_out = True
    assert classify(UML, "go-2012", g).status is Status.TIMEOUT
    g.panic = "Kernel panic - not syncing: Attempted to kill init!"
    r = classify(UML, "go-2012", g)
    assert r.status is Status.PANIC and r.detail == "kernel panic: Kernel panic - not syncing: Attempted to kill init!"


def sample_run() -> RunDocument:
    g = guest(go_2012=doc("go-2012", "fallback-32bit"), go_2012_pre=doc("go-2012-pre", "crash", "runtime: oops"))
    recs = [classify(UML, "go-2012-pre", g), classify(UML, "go-2012", g)]
    for r in recs:
        r.probe = None  # keep goldens small
    skipped = Record("qemu-x", "qemu", "go-2012", Status.SKIP, None, None, None, None, None, 0.0, None,
                     detail="qemu backend needs qemu-system-x86_64: install it")
    return RunDocument("20261125-000000-abcdef", "2026-11-25T00:00:00+00:00", "2026-11-25T00:00:03+00:00", True,
                       recs + [skipped], argv=["arena-harness", "run"], artifacts="/out/20261125-000000-abcdef")


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("HARNESS_REGEN_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), "golden file %s missing: run with HARNESS_REGEN_GOLDEN=1" % path
    assert text == path.read_text(encoding="utf-8")


def test_table_golden() -> None:
    golden("table.txt", report.table(sample_run()) + "\n")


def test_markdown_golden() -> None:
    golden("report.md", report.markdown(sample_run()))


def test_junit_golden_and_well_formed() -> None:
    text = report.junit(sample_run())
    golden("junit.xml", text)
    root = ET.fromstring(text.split("\n", 1)[1])
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == ["go-2012-pre", "go-2012", "go-2012"]
    assert cases[0].find("failure") is not None and cases[2].find("skipped") is not None


JUNIT_XSD = Path(__file__).parent.parent / "data" / "junit-10.xsd"  # its origin is noted inside


def junit_schema() -> Any:
    try:
        import xmlschema
    except ImportError:
        skip_or_fail("xmlschema", "xmlschema not installed: pip install -e '.[test]' (./scripts/setup.sh does)")
    return xmlschema.XMLSchema10(str(JUNIT_XSD))


def three_policy_boot(log: Path) -> RunDocument:
    """One 6 s boot of a target with all three policies: a failure, a pass, an observed result; then a
    timed-out boot of another target and a skip."""
    g = GuestRun({"go-2012": doc("go-2012", "fallback-32bit"),
                  "go-2012-pre": doc("go-2012-pre", "crash", "runtime: oops"),
                  "go-modern": doc("go-modern", "os-chosen")}, log, 6.0)
    recs = [classify(UML, p, g) for p in ("go-2012-pre", "go-2012", "go-modern")]
    slow = GuestRun({}, log, 30.0, timed_out=True)
    recs.append(classify(dataclasses.replace(UML, name="uml-slow"), "go-2012", slow))
    recs.append(Record("qemu-x", "qemu", "go-2012", Status.SKIP, None, None, None, None, None, 0.0, None,
                       detail="qemu backend needs qemu-system-x86_64: install it"))
    return RunDocument("r1", "2026-11-25T00:00:00+00:00", "2026-11-25T00:00:31.5+00:00", True, recs)


def test_junit_validates_against_junit_10_xsd(tmp_path: Path) -> None:
    # Was: "Element 'properties': This element is not expected" once per testcase (issue 16).
    log = tmp_path / "uml.log"
    # A console log holds what XML 1.0 cannot carry even escaped (terminal escapes, NUL): the failure's
    # body quotes it, and one such character made the whole file unreadable.
    log.write_bytes(b"booting\n\x1b[0m\x00 login: \xff\n")
    schema = junit_schema()
    for run in (three_policy_boot(log), sample_run(), RunDocument("e", "s", None, False, [])):
        text = report.junit(run)
        errors = [e.reason for e in schema.iter_errors(text)]
        assert errors == [], errors
    assert "\\x1b[0m\\x00 login: \\xff" in report.junit(three_policy_boot(log))


def test_junit_time_is_each_results_share_of_its_boot(tmp_path: Path) -> None:
    # Was: every testcase carried its whole boot, so three policies of a 6 s boot added up to 18 s.
    root = ET.fromstring(report.junit(three_policy_boot(tmp_path / "uml.log")).split("\n", 1)[1])
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert [c.get("time") for c in suites["uml"].findall("testcase")] == ["2.000", "2.000", "2.000"]
    assert suites["uml"].get("time") == "6.000"
    assert [c.get("time") for c in suites["uml-slow"].findall("testcase")] == ["30.000"]
    assert root.get("time") == "31.500"  # the run's wall time
    props = {p.get("name"): p.get("value") for p in suites["uml"].iter("property")}
    assert props["boot_s"] == "6.000" and props["go-2012-pre.outcome"] == "crash: runtime: oops"
    assert props["go-2012.fallback_engaged"] == "true" and props["go-modern.status"] == "observed"
    assert all(c.find("properties") is None for c in root.iter("testcase"))


def test_junit_failure_carries_the_detail_and_the_console_tail(tmp_path: Path) -> None:
    # Was: a one-line reason and no console text.
    log = tmp_path / "uml.log"
    log.write_text("".join("line %d\n" % i for i in range(100)))
    root = ET.fromstring(report.junit(three_policy_boot(log)).split("\n", 1)[1])
    case = next(c for c in root.iter("testcase") if c.get("name") == "go-2012-pre")
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("message") == "expected crash: runtime: out of memory, got crash: runtime: oops"
    body = (failure.text or "").splitlines()
    assert body[0] == failure.get("message") and body.count(failure.get("message")) == 1
    assert "console log: %s" % log in body and body[-1] == "line 99" and "line 59" not in body
    assert "line 60" in body
    out = case.findtext("system-out") or ""
    assert "outcome: crash: runtime: oops" in out and "hint: 0xf800000000" in out
    timeout = next(c for c in root.iter("testcase") if c.get("classname") == "arena-harness.uml-slow")
    error = timeout.find("error")
    assert error is not None and error.get("type") == "timeout" and "line 99" in (error.text or "")


def test_run_document_round_trips_and_is_written_atomically(tmp_path: Path) -> None:
    run = sample_run()
    path = tmp_path / "sub" / "r.json"
    run.write(path)
    data = json.loads(path.read_text())
    assert data["schema"] == 2 and data["run"]["complete"] is True
    assert set(data["results"][0]) >= {"target", "backend", "policy", "status", "expected", "outcome", "high_ok",
                                       "fallback_engaged", "duration_s", "log", "probe"}
    back = RunDocument.load(path)
    assert [r.to_json() for r in back.records] == [r.to_json() for r in run.records]
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left


def test_failed_and_incomplete_runs() -> None:
    run = sample_run()
    assert run.failed() and run.status is Status.FAIL
    run.records = [r for r in run.records if r.status is not Status.FAIL]
    assert not run.failed()
    run.complete = False
    assert run.failed()
    assert report.summary_line(run).endswith("(incomplete run: stopped early)")


def test_load_rejects_other_files(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text('{"schema": 2}')
    with pytest.raises(Exception, match="not an arena-harness result file of schema 1"):
        RunDocument.load(p)


# -- guest text in Markdown -------------------------------------------------------------------

HOSTILE = ("<img src=x> [fix CI here](https://example.invalid) ![i](https://example.invalid/i.png) **bold** _em_ "
           "`code` ~~gone~~ $x^2$ www.example.invalid &amp; a | b \\| c\nsecond line")


def github_html(markdown: str) -> str:
    """The Markdown as GitHub renders it (cmark-gfm: tables, autolinks, strikethrough), raw HTML let through
    as if nothing sanitised it afterwards: the strictest reading."""
    try:
        import cmarkgfm
        from cmarkgfm.cmark import Options
    except ImportError:
        skip_or_fail("cmarkgfm", "cmarkgfm not installed: pip install -e '.[test]' (./scripts/setup.sh does)")
    return str(cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE))


def shown(text: str) -> str:
    """``text`` as it must appear in the rendered HTML: literally, on one line."""
    import html

    return html.escape(" ".join(text.split("\n")), quote=False).replace('"', "&quot;")


def hostile_record(target: str, status: Status, kernel: str) -> Record:
    return Record(target, "uml", "go-2012", status, "fallback-32bit", "crash", HOSTILE, False, False, 1.0, None,
                  detail="expected fallback-32bit, got crash: " + HOSTILE, kernel=kernel)


def test_guest_text_in_the_markdown_report_is_shown_not_rendered() -> None:
    # Was: the crash message, detail and kernel went into the job summary as Markdown and HTML.
    doc = RunDocument("run-1", "s", "f", True, [hostile_record("uml", Status.FAIL, "6.1 <b>k</b> | x")])
    page = github_html(report.markdown(doc))
    for made in ("<img", "<a ", "<em>", "<code>", "<del>", "<b>"):
        assert made not in page, made
    assert page.count("<strong>") == 1  # the note's own "**uml / go-2012**", nothing of the guest's
    assert page.count("<td>") == 3  # target, kernel, one policy: the guest's "|" made no cell
    assert "<td>%s</td>" % shown("6.1 <b>k</b> | x") in page
    assert "<td>❌ crash: %s</td>" % shown(HOSTILE) in page
    assert "(fail): expected fallback-32bit, got crash: %s</li>" % shown(HOSTILE) in page


def test_guest_text_in_the_markdown_diff_is_shown_not_rendered() -> None:
    from harness import diff

    old = Record("uml", "uml", "go-2012", Status.PASS, "fallback-32bit", "fallback-32bit", None, False, True, 1.0,
                 None, kernel="6.1")
    new = hostile_record("uml", Status.FAIL, "<script>k</script>")
    d = diff.compare(RunDocument("old<i>", "s", "f", True, [old]), RunDocument("new", "s", "f", True, [new]))
    page = github_html(diff.markdown(d, ["NEW: skipped: " + HOSTILE]))
    for made in ("<img", "<a ", "<em>", "<del>", "<script>", "<i>"):
        assert made not in page, made
    assert page.count("<code>") == 2  # the key, in the table and in the facts list
    assert page.count("<td>") == 4  # one row of four cells
    assert "<td>fail (crash: %s)</td>" % shown(HOSTILE) in page
    assert "<td>expected fallback-32bit, got crash: %s</td>" % shown(HOSTILE) in page
    assert "<strong>Gate failed:</strong> NEW: skipped: %s</p>" % shown(HOSTILE) in page
    assert "kernel 6.1 -&gt; &lt;script&gt;k&lt;/script&gt;</li>" in page
    assert "old&lt;i&gt; → new" in page


def test_a_name_that_is_not_plain_is_escaped_text_not_code() -> None:
    assert report.markdown_name("uml/go-2012") == "`uml/go-2012`"
    assert report.markdown_name("a`b|c/go-2012") == "a\\`b\\|c/go-2012"


def test_model_and_runtime_agreement_is_on_both_records_and_a_disagreement_is_its_own_status() -> None:
    from harness.model import Probe, Target
    from harness.results import judge_agreement, record

    t = Target("t", "local", None, probes=(Probe("go-modern", "model"), Probe("go", "go")))
    crash = "out of memory allocating heap arena metadata"
    m = record(t, "go-modern", Status.OBSERVED, None, outcome="crash", crash=crash)
    g = record(t, "go", Status.OBSERVED, None, outcome="crash", crash=crash)
    judge_agreement([m, g])
    assert m.agreement == {"with": "go", "outcome": "crash", "crash": crash, "agree": True}
    assert g.agreement == {"with": "go-modern", "outcome": "crash", "crash": crash, "agree": True}
    assert m.status is Status.OBSERVED
    g = record(t, "go", Status.OBSERVED, None, outcome="crash", crash="out of memory")  # another message
    judge_agreement([m, g])
    assert m.status is Status.DISAGREE and g.agreement["agree"] is False
    assert m.detail == "the model says crash: %s, real go says crash: out of memory" % crash
    failed = record(t, "go-modern", Status.FAIL, "expected x", outcome="os-chosen")
    judge_agreement([failed, record(t, "go", Status.PASS, None, outcome="high-arena")])
    assert failed.status is Status.FAIL  # a fail stays a fail: it is the worse news
    lone = record(t, "go-modern", Status.PASS, None, outcome="high-arena")
    judge_agreement([lone, record(t, "go", Status.ERROR, "no result")])
    assert lone.agreement is None and lone.status is Status.PASS  # nothing to compare with


def test_a_schema_1_results_file_still_reads(tmp_path: Path) -> None:
    """Files written before records named their probe's kind (schema 1) load, for diff, merge and report."""
    from harness.results import RunDocument

    doc = RunDocument("r", "2026-01-01T00:00:00+00:00", None, True, [])
    data = doc.to_json()
    data["schema"] = 1
    f = tmp_path / "old.json"
    f.write_text(json.dumps(data))
    assert RunDocument.load(f).records == []
    data["schema"] = 3
    f.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="not an arena-harness result file of schema 1 or 2"):
        RunDocument.load(f)


def test_merge_keeps_where_every_shards_logs_are() -> None:
    from harness.results import RunDocument, merge

    def doc(art: Optional[str]) -> RunDocument:
        return RunDocument("r", "2026-01-01T00:00:00+00:00", None, True, [], artifacts=art)

    assert merge([doc("/ci/out/shard-1/run-a"), doc("/ci/out/shard-2/run-b")]).artifacts == "/ci/out"
    assert merge([doc("/ci/out/run-a"), doc("/ci/out/run-a")]).artifacts == "/ci/out/run-a"
    assert merge([doc("/a/x"), doc("/b/y")]).artifacts is None and merge([doc(None)]).artifacts is None


def test_the_terminal_table_escapes_what_a_guest_said() -> None:
    from harness.model import Probe, Target
    from harness.results import RunDocument, record

    t = Target("t", "local", None, probes=(Probe("mine", "program", "x"),))
    r = record(t, "mine", Status.OBSERVED, "x\x1b]0;owned\x07", outcome="crash", crash="\x1b[2Jgone")
    text = report.table(RunDocument("r", "2026-01-01T00:00:00+00:00", None, True, [r]))
    assert "\x1b" not in text and "\x07" not in text and "\\x1b[2Jgone" in text
