"""The HTML report: what failed comes first (with a tracking file, since when) and only failures are red;
the address-space pictures keep every label inside the picture and off the lines, and say what their marks
mean; the templates escape every value and ship in an install.

The allocator documents come from the allocator itself, run against its simulated kernels (the presets
a UML guest, a 32-bit container on x86_64, a Sv39 RISC-V guest and an x86_64 host look like)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from allocator.probe import run_policy
from harness import config, report
from harness.model import GuestRun, Status
from harness.results import RunDocument, classify

TARGETS = config.parse(
    """
targets:
  - name: uml
    backend: uml
    expect: {go-2012: fallback-32bit, go-2012-pre: "crash: runtime: out of memory"}
  - name: docker-i386
    backend: local
    expect: {go-2012: native-32bit}
  - name: riscv64-sv39
    backend: local
    expect: {go-2012: high-arena}
""",
    "t.yaml",
)
SIMULATE = {"uml": "uml", "docker-i386": "compat32", "riscv64-sv39": "sv39"}


def run(tmp_path: Path, names: Tuple[str, ...] = ("uml", "docker-i386", "riscv64-sv39")) -> RunDocument:
    recs = []
    for t in TARGETS.targets:
        if t.name not in names:
            continue
        log = tmp_path / ("%s.log" % t.name)
        log.write_text("Linux version 6.1\n")
        docs = {p: run_policy(p, simulate=SIMULATE[t.name]) for p in t.policies}
        recs += [classify(t, p, GuestRun(docs, log, 6.0)) for p in t.policies]
    return RunDocument("r1", "2026-11-25T00:00:00+00:00", "2026-11-25T00:00:09+00:00", True, recs)


class Cells(HTMLParser):
    """The grid's cells: (target, status badge, the cell's style) in page order; and the banner's text."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: List[Tuple[str, str, str]] = []
        self.row_target = ""
        self._in: Optional[str] = None
        self._style = ""
        self.banner = ""
        self._banner_depth = 0

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        a = dict(attrs)
        if self._banner_depth:
            self._banner_depth += tag != "br"
        elif tag == "div" and "banner" in (a.get("class") or ""):
            self._banner_depth = 1
        if tag == "a" and (a.get("href") or "").startswith("#t-") and not self._banner_depth:
            self.row_target = (a.get("href") or "")[3:]
        if tag == "td" and "cell" in (a.get("class") or ""):
            self._style = a.get("style") or ""
            self._in = "cell"
        elif tag == "span" and a.get("class") == "st" and self._in == "cell":
            self._in = "badge"

    def handle_endtag(self, tag: str) -> None:
        if self._banner_depth:
            self._banner_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._banner_depth:
            self.banner += data
        if self._in == "badge":
            self.cells.append((self.row_target, data, self._style))
            self._in = None


def cells(page: str) -> Cells:
    parser = Cells()
    parser.feed(page)
    return parser


def background(style: str) -> str:
    m = re.search(r"background:\s*(#[0-9a-fA-F]{6})", style)
    assert m, style
    return m.group(1).lower()


def test_an_expected_crash_is_a_pass_and_looks_like_one(tmp_path: Path) -> None:
    # Was: the cell was painted by its outcome, so the expected crash of uml/go-2012-pre was as red as a
    # failure (issue 16).
    doc = run(tmp_path, ("uml",))
    crash = next(r for r in doc.records if r.policy == "go-2012-pre")
    assert crash.outcome == "crash" and crash.status is Status.PASS
    found = cells(report.html(doc)).cells
    assert [s for _, s, _ in found] == ["pass", "pass", "observed"]
    crash_bg, fallback_bg = background(found[0][2]), background(found[1][2])
    assert crash_bg == fallback_bg  # two passes look alike, whatever their outcomes


def test_failures_come_first_and_stand_out(tmp_path: Path) -> None:
    doc = run(tmp_path)
    page = report.html(doc)
    parsed = cells(page)
    failed = [(t, bg) for t, s, bg in parsed.cells if s == "fail"]
    passed = {background(bg) for _, s, bg in parsed.cells if s == "pass"}
    assert [t for t, _ in failed] == ["riscv64-sv39"]  # a Sv39 guest refuses the hint: go-2012 falls back
    assert background(failed[0][1]) not in passed
    # The first thing on the page, before the grid: each failure, with its detail and a link to its target.
    assert page.index('class="banner bad"') < page.index('<table class="grid"')
    assert "1 of 9 results failed" in parsed.banner
    assert "riscv64-sv39 / go-2012: fail — expected high-arena, got fallback-32bit" in parsed.banner
    assert '<tr class="bad"><th><a href="#t-riscv64-sv39">' in page
    ok = report.html(run(tmp_path, ("uml", "docker-i386")))
    assert 'class="banner bad"' not in ok and "Nothing failed: 3 passed, 0 failed, 3 observed" in cells(ok).banner


def test_the_pictures_have_a_legend(tmp_path: Path) -> None:
    page = report.html(run(tmp_path, ("uml",)))
    legend = page[page.index("<h2>Address spaces</h2>"):page.index('<h2 id="t-uml"')]
    for words in ("user address space", "hint 0xf8&lt;&lt;32", "where the 64 KiB probe at the hint landed",
                  "arenas of go-2012-pre", "arenas of go-2012", "arenas of go-modern"):
        assert words in legend, words
    assert legend.count("<path") == 1 and legend.count('stroke-dasharray="4 3"') == 1  # the marks themselves


Box = Tuple[float, float, float, float]


def text_boxes(svg: ET.Element) -> List[Tuple[str, Box]]:
    """Each text's box (x0, y0, x1, y1), from its monospace advance; a middle-anchored text is centred."""
    out = []
    for t in svg.iter("{http://www.w3.org/2000/svg}text"):
        size = float(t.get("font-size") or 16)
        w = report.text_width(t.text or "", size)
        x, y = float(t.get("x") or 0), float(t.get("y") or 0)
        if t.get("text-anchor") == "middle":
            x -= w / 2
        out.append((t.text or "", (x, y - 0.8 * size, x + w, y + 0.2 * size)))
    return out


def vertical_lines(svg: ET.Element) -> List[Box]:
    lines = []
    for ln in svg.iter("{http://www.w3.org/2000/svg}line"):
        x1, x2 = float(ln.get("x1") or 0), float(ln.get("x2") or 0)
        y1, y2 = float(ln.get("y1") or 0), float(ln.get("y2") or 0)
        if x1 == x2 and abs(y2 - y1) > 6:  # a marker line, not a tick
            lines.append((x1, min(y1, y2), x1, max(y1, y2)))
    return lines


def overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_labels_stay_inside_the_picture_and_off_the_lines(tmp_path: Path) -> None:
    # Was: the "user top 0xffffe000" of a 32-bit container was centred on the picture's right edge and
    # cut in half, and the hint's dashed line ran through the 2^40 tick's label (issue 16).
    doc = run(tmp_path)
    by_target: Dict[str, list] = {}
    for r in doc.records:
        by_target.setdefault(r.target, []).append(r)
    for target, recs in by_target.items():
        svg = ET.fromstring(report.address_space_svg(recs))
        width = float(svg.get("width") or 0)
        boxes = text_boxes(svg)
        texts = [t for t, _ in boxes]
        assert any(t.startswith("user top 0x") for t in texts), target
        for text, box in boxes:
            assert 0 <= box[0] and box[2] <= width, (target, text, box, width)
            for line in vertical_lines(svg):
                assert not overlaps(box, line), (target, text, box, line)
        for (t1, b1), (t2, b2) in ((p, q) for i, p in enumerate(boxes) for q in boxes[i + 1:]):
            assert not overlaps(b1, b2), (target, t1, t2)


# -- the templates: autoescape is the one escaping, and they ship ------------------------------------

EVIL = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text, of a page as a browser parses it."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: List[Tuple[str, Dict[str, Optional[str]]]] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text += data


def test_every_value_on_the_run_page_is_escaped_by_the_templates(tmp_path: Path) -> None:
    """report.py escapes nothing itself: what guests and results files say reaches the templates raw, and
    their autoescape alone makes it text, in the text and in the attributes (a link to a target, a
    picture's labels), wherever it stands on the page."""
    docs = {p: run_policy(p, simulate="uml") for p in ("go-2012", "go-modern")}
    target = config.parse("targets: [{name: t, backend: uml, expect: {go-2012: high-arena}}]", "t.yaml").targets[0]
    recs = [classify(target, p, GuestRun(docs, tmp_path / EVIL, 6.0)) for p in ("go-2012", "go-modern")]
    for r in recs:
        r.target, r.backend, r.kernel, r.machine = EVIL, EVIL, EVIL, EVIL
    recs[0].policy = recs[0].detail = EVIL
    doc = RunDocument(EVIL, EVIL, EVIL, False, recs, interrupted=EVIL)
    page = report.html(doc)
    parsed = Tags()
    parsed.feed(page)
    assert not [t for t, _ in parsed.tags if t in ("script", "img")]
    assert all(not name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    links = {attrs["href"] for tag, attrs in parsed.tags if tag == "a"}
    assert links == {"#t-" + EVIL}  # the failures banner's and the grid's: one attribute each, whole
    assert parsed.text.count(EVIL) >= 10, parsed.text  # shown as written: title, banners, grid, picture, log
    assert "<text x=\"4\" y=\"40\" font-size=\"11\" fill=\"#555\">&lt;script&gt;" in page  # the picture's row


def test_a_template_escapes_a_value_given_to_it_raw_and_keeps_markup_it_made() -> None:
    from markupsafe import Markup

    env = report._templates()
    assert {"page.html.j2", "run.html.j2", "runtimes.html.j2", "parts.html.j2", "bisect.html.j2",
            "pictures.svg.j2"} <= set(env.list_templates())
    assert all(env.autoescape(name) for name in env.list_templates())  # type: ignore[operator]
    heading = env.get_template("parts.html.j2").module.heading  # type: ignore[attr-defined]
    assert heading("t-x", True, EVIL) == '<h2 id="t-x" class="bad">✗ %s</h2>' % (
        "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(2)&gt;")
    assert heading("t-x", False, Markup("<i>made here</i>")) == '<h2 id="t-x"><i>made here</i></h2>'


def test_an_install_ships_the_templates(tmp_path: Path) -> None:
    """What a wheel holds (tests.conftest.installed_tree); the page is made from there."""
    import sys

    from harness import proc
    from tests.conftest import ROOT, installed_tree

    site = installed_tree(tmp_path)
    shipped = {f.name for f in (site / "harness" / "templates").iterdir()}
    assert shipped == {f.name for f in (ROOT / "harness" / "templates").iterdir()}
    script = ("from harness import report; from harness.results import RunDocument; print(report.__file__); "
              "print(report.html(RunDocument('r1', 's', 'f', True, [])))")
    r = proc.run([sys.executable, "-c", script], timeout=60, cwd=tmp_path,
                 env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.output[-2000:]
    assert r.output.startswith(str(site / "harness" / "report.py")) and "<h1>arena-harness run r1</h1>" in r.output


# -- since when: report --html with diff --track's file ------------------------------------------------

NIGHTS = {  # per night: (run id, day, {target: (simulated kernel, what go-2012 is expected to do)})
    "n0": ("2026-11-19", {"a": ("uml", "fallback-32bit"), "b": ("compat32", "native-32bit")}),
    "n1": ("2026-11-20", {"a": ("uml", "high-arena"), "b": ("compat32", "native-32bit")}),
    "n2": ("2026-11-21", {"a": ("uml", "high-arena"), "b": ("compat32", "high-arena"), "c": ("sv39", "high-arena")}),
}


def night(tmp_path: Path, run_id: str) -> Path:
    """A night's results file: go-2012 on each target's simulated kernel, judged by that night's
    expectation (a: fails from n1 on, b: from n2 on, c: is new in n2 and fails there)."""
    day, targets = NIGHTS[run_id]
    recs = []
    for name, (sim, expect) in targets.items():
        t = config.parse("targets: [{name: %s, backend: local, policies: [go-2012], expect: {go-2012: %s}}]"
                         % (name, expect), "t.yaml").targets[0]
        recs.append(classify(t, "go-2012", GuestRun({"go-2012": run_policy("go-2012", simulate=sim)},
                                                    tmp_path / "x.log", 1.0)))
    out = tmp_path / ("%s.json" % run_id)
    RunDocument(run_id, day + "T02:17:00+00:00", day + "T02:40:00+00:00", True, recs).write(out)
    return out


def test_with_the_tracking_file_each_failure_says_since_when_it_fails(tmp_path: Path) -> None:
    from harness import cli

    n0, n1, n2 = (night(tmp_path, n) for n in ("n0", "n1", "n2"))
    state = tmp_path / "regressions.json"
    assert cli.main(["diff", str(n0), str(n1), "--track", str(state)]) == 1  # a regressed
    assert cli.main(["diff", str(n1), str(n2), "--track", str(state)]) == 1  # b regressed; c is new
    page = tmp_path / "n2.html"
    assert cli.main(["report", str(n2), "--html", str(page), "--track", str(state)]) == 1
    text = page.read_text()
    banner = cells(text).banner
    assert "3 of 3 results failed: 1 new in this run, 1 failing since an earlier run, 1 not tracked" in banner
    items = re.findall(r"<li>.*?</li>", text[text.index('id="failures"'):])
    assert [re.search(r"<b>(\w)</b>", i).group(1) for i in items] == ["b", "a", "c"]  # type: ignore[union-attr]
    assert '<span class="since new" title="first failed in this run; it passed in run n1, 2026-11-20">' \
        'new in this run</span>' in items[0]
    assert '<span class="since open" title="first failed in run n1 (2026-11-20T02:17:00+00:00), and in every ' \
        'run diffed since">failing since run n1, 2026-11-20</span>' in items[1]
    assert ">not tracked</span>" in items[2] and "lists no open regression for it" in items[2]
    assert "was last updated by run" not in text  # the file has seen this run
    # The page of an earlier night, from the same file: it says the file is ahead of that run.
    assert cli.main(["report", str(n1), "--html", str(tmp_path / "n1.html"), "--track", str(state)]) == 1
    earlier = (tmp_path / "n1.html").read_text()
    assert "failing since run n1, 2026-11-20" not in earlier and ">new in this run</span>" in earlier
    assert "which was last updated by run n2, 2026-11-21, not by\nthis run" in earlier
    # Without the file: the banner as before, nothing about since when.
    plain = report.html(RunDocument.load(n2))
    assert 'class="since' not in plain and "3 of 3 results failed</h2>" in plain


def test_report_track_needs_the_file_and_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness import cli

    n0 = night(tmp_path, "n0")
    missing = tmp_path / "nowhere.json"
    assert cli.main(["report", str(n0), "--html", str(tmp_path / "p.html"), "--track", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere.json" in err and "--track STATE writes it" in err
    assert not (tmp_path / "p.html").exists()
    assert cli.main(["report", str(n0), "--track", str(missing)]) == 2
    assert "give --html F too" in capsys.readouterr().err
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"open": {}, "updated_by": "n1"}')
    assert cli.main(["report", str(n0), "--html", str(tmp_path / "p.html"), "--track", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "damaged.json" in err and "updated_by" in err
