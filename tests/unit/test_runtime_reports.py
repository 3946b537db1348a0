"""The reports on real runtimes: the model beside real Go (the terminal table's block, the Markdown and
HTML sections) and the JVM's results, from records built here the way a run builds them
(``results.record``, then ``results.judge_agreement`` per target).

The targets: ``ok`` (both say high-arena), ``rl`` (an RLIMIT_AS where the model and Go crash with
different messages, the numbers of issue 14's table), ``nogo`` (the go probe gave no result), ``goonly``
(go ran, the model was not asked) and ``modelonly`` (go was not asked: left out of the comparison)."""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from harness import report
from harness.model import Probe, Record, Status, Target
from harness.results import RunDocument, judge_agreement, record
from tests.conftest import require_tool
from tests.unit.test_results_reports import HOSTILE, github_html, shown

GO_OOM = "out of memory allocating heap arena metadata"
JVM_OOM = "Could not reserve enough space for 1310720KB object heap"
PROBES = (Probe("go-modern", "model"), Probe("go", "go"), Probe("jvm", "jvm"))


def target(name: str) -> Target:
    return Target(name, "local", None, probes=PROBES)


def go_doc(policy: str, outcome: Optional[str], crash: Optional[str] = None, grown: int = 9,
           arena: Optional[str] = "0xc000000000") -> Dict[str, Any]:
    """A document of the go probe or of go-modern: ``grown`` growth steps that succeeded, then, for a
    crash, the one that failed."""
    growth: List[Dict[str, Any]] = [{"step": i + 1, "kind": "grow", "size": 64 << 20, "ok": True}
                                    for i in range(grown)]
    if outcome == "crash":
        growth.append({"step": grown + 1, "kind": "grow", "size": 64 << 20, "ok": False, "error": crash})
    return {"schema": 1, "policy": policy, "outcome": outcome, "crash": crash, "growth": growth,
            "heap": {"arena_start": arena, "arena_end": None, "arenas": []}}


def result(t: Target, policy: str, outcome: Optional[str], crash: Optional[str] = None,
           status: Status = Status.PASS, detail: Optional[str] = None, **doc: Any) -> Record:
    kind = "model" if policy == "go-modern" else policy
    probe = go_doc(policy, outcome, crash, **doc) if outcome is not None else None
    return record(t, policy, status, detail, outcome=outcome, crash=crash, probe=probe, kind=kind)


def jvm(t: Target, outcome: str, crash: Optional[str] = None, heap: Optional[Tuple[str, str]] = None,
        mode: Optional[str] = None, signal: Optional[int] = None, status: Status = Status.PASS) -> Record:
    doc = {"schema": 1, "policy": "jvm", "outcome": outcome, "crash": crash, "error": None, "messages": [],
           "heap": {"arena_start": heap[0], "arena_end": heap[1], "arenas": [list(heap)]} if heap else None,
           "facts": {"compressed_oops_mode": mode, "signal": signal, "pointer_bits": 64}}
    return record(t, "jvm", status, None, outcome=outcome, crash=crash, probe=doc, kind="jvm")


def matrix(jvm_crash: str = JVM_OOM) -> RunDocument:
    ok, rl, nogo, goonly, modelonly = (target(n) for n in ("ok", "rl", "nogo", "goonly", "modelonly"))
    boots = [
        [result(ok, "go-modern", "high-arena"), result(ok, "go", "high-arena"),
         jvm(ok, "high-arena", heap=("0xf8a00000", "0x100000000"), mode="32-bit")],
        [result(rl, "go-modern", "crash", "out of memory", grown=15), result(rl, "go", "crash", GO_OOM, grown=2),
         jvm(rl, "crash", jvm_crash)],
        [result(nogo, "go-modern", "os-chosen"),
         result(nogo, "go", None, status=Status.ERROR, detail="no result for this policy")],
        [result(goonly, "go", "native-32bit", arena="0x9400000"), jvm(goonly, "crash", signal=11)],
        [result(modelonly, "go-modern", "high-arena")],
    ]
    for boot in boots:
        judge_agreement(boot)
    return RunDocument("r1", "2026-11-27T00:00:00+00:00", "2026-11-27T00:00:09+00:00", True,
                       [r for boot in boots for r in boot])


def test_the_records_are_what_a_run_makes() -> None:
    doc = matrix()
    by = {(r.target, r.policy): r for r in doc.records}
    assert by["rl", "go-modern"].status is Status.DISAGREE and (by["rl", "go"].agreement or {})["agree"] is False
    assert by["ok", "go"].agreement == {"with": "go-modern", "outcome": "high-arena", "crash": None, "agree": True}
    assert by["nogo", "go-modern"].agreement is None and by["goonly", "go"].agreement is None


# -- the terminal table ----------------------------------------------------------------------------

def test_the_table_is_followed_by_the_agreement_and_each_disagreement() -> None:
    doc = matrix()
    text = report.table(doc)
    block = text[text.index("model and real Go"):].splitlines()
    assert block == [
        "model and real Go: 1 target agrees, 1 disagrees, 2 not compared",
        "  rl: model says crash: out of memory, Go says crash: %s" % GO_OOM,
        "  nogo: not compared: go: error: no result for this policy",
        "  goonly: not compared: go-modern did not run",
        "",
        report.summary_line(doc),  # still the last line: CI log parsers read it
    ]
    assert "modelonly" not in "\n".join(block)  # go was not asked there: nothing was missed


def test_no_block_where_no_runtime_ran() -> None:
    t = target("m")
    doc = RunDocument("r", "s", "f", True, [result(t, "go-modern", "high-arena")])
    assert "model and real" not in report.table(doc)
    assert report.markdown_runtimes(doc) == [] and report.runtimes_html(doc) == []


def test_a_disagreement_has_a_markdown_icon_and_a_terminal_colour() -> None:
    # Was: markdown() had no icon for "disagree" (a KeyError on any run with a disagreement) and the table
    # printed it uncoloured.
    r = Record("rl", "local", "go-modern", Status.DISAGREE, None, "crash", "out of memory", None, None, 1.0, None,
               detail="the model says crash: out of memory, real go says crash: " + GO_OOM)
    doc = RunDocument("r", "s", "f", True, [r])
    assert all(s.value in report._MD_ICON for s in Status)
    assert "| rl | - | ⚖️ crash: out of memory |" in report.markdown(doc)
    assert "\033[95mdisagree" in report.table(doc, color=True)


# -- Markdown ----------------------------------------------------------------------------------------

class Tables(HTMLParser):
    """Each table of a page after a heading: heading -> rows -> cells' text (header row included)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: Dict[str, List[List[str]]] = {}
        self.heading = ""
        self._in: Optional[str] = None

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        if tag in ("h1", "h2"):
            self._in, self.heading = "h", ""
        elif tag == "table":
            self.tables[self.heading] = []
        elif tag == "tr":
            self.tables[self.heading].append([])
        elif tag in ("td", "th"):
            self.tables[self.heading][-1].append("")
            self._in = "cell"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "h2", "td", "th"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "h":
            self.heading += data
        elif self._in == "cell":
            rows = self.tables[self.heading]
            rows[-1][-1] += data


def tables(page: str) -> Dict[str, List[List[str]]]:
    parser = Tables()
    parser.feed(page)
    return {k.replace("✗ ", "").strip(): v for k, v in parser.tables.items()}


def test_markdown_has_the_model_beside_real_go_failures_first() -> None:
    page = github_html(report.markdown(matrix()))
    rows = tables(page)["Model and real Go"]
    assert rows == [
        ["target", "go-modern", "real Go", "agree", "Go's first arena", "blocks grown (model / Go)"],
        ["rl", "⚖️ crash: out of memory", "✅ crash: " + GO_OOM, "⚖️ no", "0xc000000000", "15 / 2"],
        ["nogo", "✅ os-chosen", "⚠️ error: no result for this policy", "not compared", "-", "9 / -"],
        ["ok", "✅ high-arena", "✅ high-arena", "✅ yes", "0xc000000000", "9 / 9"],
        ["goonly", "did not run", "✅ native-32bit", "not compared", "0x9400000", "- / 9"],
    ]
    assert "<p>1 target agrees, 1 disagrees, 2 not compared.</p>" in page
    assert "<td><code>0xc000000000</code></td>" in page and "<td>⚖️ <strong>no</strong></td>" in page


def test_markdown_has_the_jvm_with_its_words_heap_and_oops_mode() -> None:
    page = github_html(report.markdown(matrix()))
    assert tables(page)["JVM"] == [
        ["target", "JVM outcome", "heap range", "compressed oops mode"],
        ["ok", "✅ high-arena", "0xf8a00000–0x100000000 (118 MiB)", "32-bit"],
        ["rl", "✅ crash: " + JVM_OOM, "-", "-"],
        ["goonly", "✅ crash (killed by signal 11, no message)", "-", "-"],
    ]
    assert "<p>1 started, 2 did not start.</p>" in page


def test_guest_text_in_the_runtime_sections_is_shown_not_rendered() -> None:
    doc = matrix(jvm_crash=HOSTILE)
    for r in doc.records:
        if r.target == "rl" and r.policy == "go":
            r.crash = HOSTILE  # the agreement's other side too
    judge_agreement([r for r in doc.records if r.target == "rl"])
    page = github_html(report.markdown(doc))
    section = page[page.index("<h2>Model and real Go</h2>"):page.index("<h2>Notes</h2>")]
    for made in ("<img", "<a ", "<em>", "<del>", "<b>"):
        assert made not in section, made
    assert section.count("<strong>") == 1  # the disagreement's own "no"
    assert "<td>✅ crash: %s</td>" % shown(HOSTILE) in section  # real Go's cell, one cell: "|" made none
    assert "<td>✅ crash: %s</td>" % shown(HOSTILE) in section[section.index("<h2>JVM</h2>"):]
    assert all(len(row) == 4 for row in tables(page)["JVM"])


def test_blocks_grown_and_first_arena_read_a_results_file_with_care() -> None:
    t = target("x")
    r = result(t, "go", "high-arena")
    r.probe = {"schema": 1, "policy": "go", "growth": [{"ok": True}, "junk", {"ok": "true"}, 7], "heap": None}
    assert report.blocks_grown(r) == 1 and report.first_arena(r) is None
    r.probe = {"schema": 1, "policy": "go", "growth": "nine"}
    assert report.blocks_grown(r) is None and report.blocks_grown(None) is None
    assert [report.size_text(n) for n in (1 << 30, 0x178C00000, 118 << 20, 4096, 100)] == [
        "1 GiB", "5.9 GiB", "118 MiB", "4 KiB", "100 B"]


# -- HTML -----------------------------------------------------------------------------------------------

class Rows(HTMLParser):
    """The runtime tables' rows: (heading, the row's class, its cells' backgrounds, its cells' text)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: List[Tuple[str, str, List[str], List[str]]] = []
        self.heading = ""
        self._h = self._table = False
        self._cell = False

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        a = dict(attrs)
        if tag == "h2":
            self._h, self.heading = True, ""
        elif tag == "table":
            self._table = "runtimes" in (a.get("class") or "")
        elif tag == "tr" and self._table:
            self.rows.append((self.heading.replace("✗ ", ""), a.get("class") or "", [], []))
        elif tag in ("td", "th") and self._table:
            m = re.search(r"background:(#[0-9a-f]{6})", a.get("style") or "")
            self.rows[-1][2].append(m.group(1) if m else "")
            self.rows[-1][3].append("")
            self._cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._h = False
        elif tag in ("td", "th"):
            self._cell = False
        elif tag == "table":
            self._table = False

    def handle_data(self, data: str) -> None:
        if self._h:
            self.heading += data
        elif self._cell and self._table:
            self.rows[-1][3][-1] += data


def html_rows(page: str) -> List[Tuple[str, str, List[str], List[str]]]:
    parser = Rows()
    parser.feed(page)
    return parser.rows


def test_html_has_both_tables_failures_first_coloured_by_status() -> None:
    page = report.html(matrix())
    rows = html_rows(page)
    go = [r for r in rows if r[0] == "Model and real Go"]
    assert [r[3][0] for r in go] == ["target", "rl", "nogo", "ok", "goonly"]
    assert [r[1] for r in go[1:]] == ["bad", "bad", "", ""]  # the disagreement, the go error
    rl = go[1]
    assert rl[3][1:] == ["disagree crash: out of memory", "pass crash: " + GO_OOM, "✗ no", "0xc000000000", "15 / 2"]
    assert rl[2][1] == rl[2][3] == report._STATUS_BG["disagree"]  # the model's cell and the agree cell
    assert rl[2][2] == report._STATUS_BG["pass"]
    assert go[2][3][3] == "not comparedgo: error: no result for this policy"
    assert go[2][2][2] == report._STATUS_BG["error"]
    assert [r[3] for r in rows if r[0] == "JVM"][1:] == [
        ["ok", "pass high-arena", "0xf8a00000–0x100000000 (118 MiB)", "32-bit"],
        ["rl", "pass crash: " + JVM_OOM, "-", "-"],
        ["goonly", "pass crash (killed by signal 11, no message)", "-", "-"],
    ]
    # Where they stand: after the grid, before the pictures.
    assert page.index('<table class="grid">') < page.index('id="agreement-go"') < page.index('id="jvm"') \
        < page.index("<h2>Address spaces</h2>")


def test_html_badges_the_results_of_real_runtimes() -> None:
    doc = matrix()
    page = report.html(doc)
    grid = page[page.index('<table class="grid">'):page.index('id="agreement-go"')]
    real = sum(1 for r in doc.records if r.kind in ("go", "jvm"))
    assert grid.count('<span class="kind"') == grid.count(">real</span>") == real == 7
    cells = re.findall(r'<td class="cell st-[^"]*".*?</td>', grid)
    assert all('class="kind"' not in c for c in cells if ">go-modern" in c)  # no badge for the model


def test_guest_text_in_the_html_runtime_tables_is_escaped() -> None:
    doc = matrix(jvm_crash=HOSTILE)
    page = report.html(doc)
    jvm_section = page[page.index('id="jvm"'):page.index("<h2>Address spaces</h2>")]
    assert "<img" not in jvm_section and "&lt;img src=x&gt;" in jvm_section
    assert 'href="https' not in jvm_section and "[fix CI here](https://example.invalid)" in jvm_section
    assert html_rows(page)[-2][3][1] == "pass crash: " + HOSTILE  # word for word


# -- in a browser --------------------------------------------------------------------------------------

DOM = """<script>
const out = {imgs: document.images.length, links: [...document.links].filter(a => !a.href.includes("#")).length,
  width: document.documentElement.clientWidth, tables: []};
for (const t of document.querySelectorAll("table.runtimes")) {
  const b = t.getBoundingClientRect();
  out.tables.push({right: b.right, rows: [...t.rows].map(r => r.cells[0].innerText)});
}
document.body.setAttribute("data-dom", JSON.stringify(out));
</script>"""


def chromium(tmp_path: Path, page: Path, *args: str) -> str:
    from tests.integration.test_reports_diff import chromium_args

    browser = require_tool("browser", "chromium", "sudo apt-get install -y chromium")
    return subprocess.run(chromium_args(browser, tmp_path) + list(args) + [page.as_uri()], capture_output=True,
                          text=True, timeout=120, check=True).stdout


def test_the_runtime_tables_render_in_headless_chromium(tmp_path: Path) -> None:
    """Chromium lays the page out: both tables there, failures first, inside the window, the guest's
    ``<img>`` and link text only text; and the screenshot has the disagreement's colour."""
    import html
    import json

    from tests.integration.test_reports_diff import pixels, read_png

    page = tmp_path / "runtimes.html"
    page.write_text(report.html(matrix(jvm_crash=HOSTILE)).replace("</body>", DOM + "</body>"))
    dom = chromium(tmp_path, page, "--dump-dom")
    m = re.search(r'data-dom="([^"]*)"', dom)
    assert m, "the page's script did not run"
    seen = json.loads(html.unescape(m.group(1)))
    assert seen["imgs"] == 0 and seen["links"] == 0  # the guest's <img> and link stayed text
    assert [t["rows"] for t in seen["tables"]] == [["target", "rl", "nogo", "ok", "goonly"],
                                                   ["target", "ok", "rl", "goonly"]]
    assert all(t["right"] <= seen["width"] for t in seen["tables"]), seen  # nothing runs off the window
    # The screenshot: the runtime sections only (the grid's cells would count too), to look at as well.
    plain = report.html(matrix())
    cut = plain[:plain.index('<table class="grid">')] + plain[plain.index('<h2 id="agreement-go"'):
                                                               plain.index("<h2>Address spaces</h2>")]
    shot_page = tmp_path / "sections.html"
    shot_page.write_text(cut + "</body></html>")
    chromium(tmp_path, shot_page, "--screenshot=%s" % shot_page.with_suffix(".png"))
    width, height, _ = read_png(shot_page.with_suffix(".png"))
    assert (width, height) == (1200, 900)
    colours = pixels(shot_page.with_suffix(".png"))
    assert colours.get(rgb(report._STATUS_BG["disagree"]), 0) > 5000  # the disagreeing model cell and its "no"
    assert colours.get(rgb(report._STATUS_BG["pass"]), 0) > 20000  # the passed results


def rgb(colour: str) -> Tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
