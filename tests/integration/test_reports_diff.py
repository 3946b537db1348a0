"""diff, merge, shard and the HTML report on real runs of the local target."""

from __future__ import annotations

import re
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from harness import cli, config, diff, report, runner
from harness.model import Status
from harness.results import RunDocument
from tests.conftest import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.local]

TARGETS = """
targets:
  - name: here
    backend: local
    expect: {go-2012: %s, go-2012-pre: high-arena}
  - name: here-too
    backend: local
    policies: [go-modern]
    expect: {go-modern: high-arena}
"""


def real_run(tmp_path: Path, name: str, expect: str = "high-arena") -> Path:
    f = tmp_path / ("%s.yaml" % name)
    f.write_text(TARGETS % expect)
    out = tmp_path / ("%s.json" % name)
    cli.main(["run", "--targets", str(f), "--json", str(out), "--artifacts", str(tmp_path / "logs"), "-q"])
    return out


def test_diff_reports_a_changed_outcome_as_a_regression_and_exits_1(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    good = real_run(tmp_path, "night1")
    bad = real_run(tmp_path, "night2", expect="fallback-32bit")  # the same machine, a changed expectation
    capsys.readouterr()
    md = tmp_path / "diff.md"
    state = tmp_path / "regressions.json"
    assert cli.main(["diff", str(good), str(bad), "--markdown", str(md), "--track", str(state)]) == 1
    out = capsys.readouterr().out
    assert "Regressions (1):" in out
    assert "here/go-2012: pass (high-arena) -> fail (high-arena)" in out
    run2 = RunDocument.load(bad).run_id
    assert "[first failed in run %s]" % run2 in out
    assert out.strip().endswith("1 regressions, 0 fixes")
    assert "| `here/go-2012` | pass (high-arena) | fail (high-arena) |" in md.read_text()
    # Still failing the next night: the regression keeps its first failing run.
    bad2 = real_run(tmp_path, "night3", expect="fallback-32bit")
    assert cli.main(["diff", str(bad), str(bad2), "--track", str(state)]) == 0  # no *new* regression
    assert '"first_failed"' in state.read_text() and run2 in state.read_text()
    # Fixed: the span is reported and the entry closed.
    good2 = real_run(tmp_path, "night4")
    capsys.readouterr()
    assert cli.main(["diff", str(bad2), str(good2), "--track", str(state)]) == 0
    out = capsys.readouterr().out
    assert "Fixes (1):" in out and "(open since run %s)" % run2 in out


def test_diff_sees_targets_added_and_gone_and_moved_addresses(tmp_path: Path) -> None:
    a = RunDocument.load(real_run(tmp_path, "a"))
    b = RunDocument.load(real_run(tmp_path, "b"))
    b.records = [r for r in b.records if r.target != "here-too"]
    rec = b.records[0]
    assert rec.probe is not None
    rec.probe["facts"]["user_top"] = "0x7fc0000000"
    d = diff.compare(a, b)
    assert [c.key for c in d.of("gone")] == ["here-too/go-modern"]
    top = a.records[0].probe["facts"]["user_top"]  # type: ignore[index]
    assert any("user top %s -> 0x7fc0000000" % top in c.note for c in d.of("facts"))
    assert not d.regressed
    d2 = diff.compare(b, a)
    assert [c.key for c in d2.of("added")] == ["here-too/go-modern"]


def test_shard_is_even_deterministic_and_merge_joins(tmp_path: Path) -> None:
    names = ["t%d" % i for i in range(10)]
    shards = [runner.shard(names, "%d/3" % k) for k in (1, 2, 3)]
    assert sorted(sum(shards, [])) == sorted(names) and [len(s) for s in shards] == [4, 3, 3]
    assert runner.shard(names, "2/3") == shards[1]
    with pytest.raises(ValueError, match="1 <= K <= N"):
        runner.shard(names, "4/3")
    ts = config.parse(TARGETS % "high-arena", "t.yaml").targets
    parts = []
    for k in (1, 2):
        out = tmp_path / ("s%d.json" % k)
        doc = runner.run(runner.shard(list(ts), "%d/2" % k), artifacts=tmp_path)
        doc.write(out)
        parts.append(out)
    assert cli.main(["merge", str(tmp_path / "all.json"), *map(str, parts)]) == 0
    merged = RunDocument.load(tmp_path / "all.json")
    assert sorted((r.target, r.policy) for r in merged.records) == sorted(
        [("here", p) for p in ("go-2012-pre", "go-2012", "go-modern")] + [("here-too", "go-modern")])
    assert merged.complete and "+" in merged.run_id


def read_png(path: Path) -> Tuple[int, int, List[bytes]]:
    """A minimal PNG reader (8-bit RGB/RGBA, no interlace): width, height, unfiltered rows."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = bpp = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color in (2, 6)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: List[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def chromium_args(chromium: str, tmp_path: Path) -> List[str]:
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--user-data-dir=%s" % (tmp_path / "profile"), "--window-size=1200,900"]


def screenshot(chromium: str, page: Path, tmp_path: Path) -> Path:
    shot = page.with_suffix(".png")
    subprocess.run(chromium_args(chromium, tmp_path) + ["--screenshot=%s" % shot, page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    return shot


def pixels(path: Path) -> Dict[Tuple[int, int, int], int]:
    """How many pixels of each colour a screenshot has (every pixel counted)."""
    width, height, rows = read_png(path)
    bpp = len(rows[0]) // width
    found: Dict[Tuple[int, int, int], int] = {}
    for row in rows:
        for i in range(0, len(row), bpp):
            key = (row[i], row[i + 1], row[i + 2])
            found[key] = found.get(key, 0) + 1
    return found


RED_BANNER = (0xC6, 0x28, 0x28)  # the failures banner (and the fail badges)
FAILED_CELL = (0xFF, 0xCD, 0xD2)
PASSED_CELL = (0xE8, 0xF5, 0xE9)


def test_the_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = require_tool("browser", "chromium", "sudo apt-get install -y chromium")
    results = real_run(tmp_path, "r")
    page = tmp_path / "report.html"
    assert cli.main(["report", str(results), "--html", str(page)]) == 0
    text = page.read_text()
    assert "<svg" in text and "hint 0xf8&lt;&lt;32" in text and "user top 0x" in text
    assert not re.search(r"(src|href)=\"https?://", text)  # self-contained: nothing to fetch
    shot = screenshot(chromium, page, tmp_path)
    width, height, _ = read_png(shot)
    assert (width, height) == (1200, 900)
    seen = pixels(shot)
    assert seen.get((0x2E, 0x7D, 0x32), 0) > 200  # the "pass" badges of the grid
    assert seen.get(PASSED_CELL, 0) > 20000  # four passed cells
    assert (0xE3, 0xF2, 0xFD) in seen  # the user-space band of an address-space picture
    assert seen.get(RED_BANNER, 0) < 1000 and FAILED_CELL not in seen  # no red but the legend's badge and the hint

    # The same machine judged against a wrong expectation: go-2012 fails, and the first screen says so.
    bad = real_run(tmp_path, "bad", expect="fallback-32bit")
    bad_page = tmp_path / "bad.html"
    assert cli.main(["report", str(bad), "--html", str(bad_page)]) == 1
    seen = pixels(screenshot(chromium, bad_page, tmp_path))
    assert seen.get(RED_BANNER, 0) > 40000  # the banner across the top: a big red block, not a small badge
    assert seen.get(FAILED_CELL, 0) > 5000  # the failed cell


SINCE = """<script>
const banner = document.getElementById("failures").getBoundingClientRect();
const marks = [...document.querySelectorAll("#failures .since")].map(s => {
  const b = s.getBoundingClientRect(), st = getComputedStyle(s);
  return {text: s.innerText, inside: b.left >= banner.left && b.right <= banner.right && b.top >= banner.top
          && b.bottom <= banner.bottom, height: b.height, color: st.color, background: st.backgroundColor};
});
document.body.setAttribute("data-since", JSON.stringify({width: document.documentElement.clientWidth,
  right: banner.right, marks: marks}));
</script>"""


def test_the_first_screen_says_since_when_each_failure_fails_in_chromium(tmp_path: Path) -> None:
    """Two real nights, diffed with --track, then report --html --track: the banner's mark says the
    regression is new in this run, Chromium lays it out inside the banner (one line, in its own colours);
    the night after, the same failure is failing since the first night."""
    import html
    import json

    chromium = require_tool("browser", "chromium", "sudo apt-get install -y chromium")
    good = real_run(tmp_path, "night1")
    bad = real_run(tmp_path, "night2", expect="fallback-32bit")
    state = tmp_path / "regressions.json"
    assert cli.main(["diff", str(good), str(bad), "--track", str(state)]) == 1
    page = tmp_path / "night2.html"
    assert cli.main(["report", str(bad), "--html", str(page), "--track", str(state)]) == 1
    page.write_text(page.read_text().replace("</body>", SINCE + "</body>"))
    dom = subprocess.run(chromium_args(chromium, tmp_path) + ["--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    m = re.search(r'data-since="([^"]*)"', dom)
    assert m, "the page's script did not run"
    seen = json.loads(html.unescape(m.group(1)))
    assert [s["text"] for s in seen["marks"]] == ["new in this run"]
    mark = seen["marks"][0]
    assert mark["inside"] and mark["height"] < 25 and seen["right"] <= seen["width"], seen
    assert mark["background"] == "rgb(255, 255, 255)" and mark["color"] == "rgb(183, 28, 28)"  # white on the red
    bad2 = real_run(tmp_path, "night3", expect="fallback-32bit")
    assert cli.main(["diff", str(bad), str(bad2), "--track", str(state)]) == 0
    later = tmp_path / "night3.html"
    assert cli.main(["report", str(bad2), "--html", str(later), "--track", str(state)]) == 1
    day = RunDocument.load(bad).started[:10]
    assert ">failing since run %s, %s</span>" % (RunDocument.load(bad).run_id, day) in later.read_text()


GEOMETRY = """<script>
const out = [];
for (const svg of document.querySelectorAll('svg[aria-label="address space"]')) {
  const texts = [...svg.querySelectorAll("text")].map(t => {
    const b = t.getBBox(); return [t.firstChild.nodeValue, b.x, b.y, b.x + b.width, b.y + b.height]; });
  const lines = [...svg.querySelectorAll("line")].map(l => [l.x1.baseVal.value, l.y1.baseVal.value,
    l.x2.baseVal.value, l.y2.baseVal.value]);
  out.push({width: svg.width.baseVal.value, texts: texts, lines: lines});
}
document.body.setAttribute("data-geometry", JSON.stringify(out));
</script>"""


def test_no_label_of_the_pictures_is_clipped_or_crossed_in_chromium(tmp_path: Path) -> None:
    """Chromium itself measures every label (its real font): each lies inside its picture, off the marker
    lines and off the other labels; also for a 32-bit space, whose user top is the picture's right edge."""
    import html
    import json

    from allocator.probe import run_policy
    from harness.model import GuestRun
    from harness.results import classify

    chromium = require_tool("browser", "chromium", "sudo apt-get install -y chromium")
    doc = RunDocument.load(real_run(tmp_path, "r"))
    for name, sim in (("i386", "compat32"), ("uml", "uml"), ("sv39", "sv39")):
        target = config.parse("targets: [{name: %s, backend: local}]" % name, "t.yaml").targets[0]
        docs = {p: run_policy(p, simulate=sim) for p in target.policies}
        doc.records += [classify(target, p, GuestRun(docs, tmp_path / "x.log", 1.0)) for p in target.policies]
    page = tmp_path / "g.html"
    page.write_text(report.html(doc).replace("</body>", GEOMETRY + "</body>"))
    dom = subprocess.run(chromium_args(chromium, tmp_path) + ["--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    m = re.search(r'data-geometry="([^"]*)"', dom)
    assert m, "the page's script did not run"
    pictures = json.loads(html.unescape(m.group(1)))
    assert len(pictures) == 5  # here, here-too and the three simulated targets
    for pic in pictures:
        boxes = [(t[0], tuple(t[1:])) for t in pic["texts"]]
        lines = [(x1, min(y1, y2), x2, max(y1, y2)) for x1, y1, x2, y2 in pic["lines"]
                 if x1 == x2 and abs(y2 - y1) > 6]  # the user top's and the hint's lines, not the ticks
        assert any(t.startswith("user top 0x") for t, _ in boxes)
        for i, (text, (x0, y0, x1, y1)) in enumerate(boxes):
            assert 0 <= x0 and x1 <= pic["width"], (text, x0, x1, pic["width"])
            for lx, ly0, _, ly1 in lines:
                assert not (x0 < lx < x1 and y0 < ly1 and ly0 < y1), (text, lx)
            for other, (u0, v0, u1, v1) in boxes[i + 1:]:
                assert not (x0 < u1 and u0 < x1 and y0 < v1 and v0 < y1), (text, other)


def test_the_ci_matrix_names_real_targets() -> None:
    groups = config.load_groups(config.load())
    covered = {t for g in groups for t in g.targets}
    assert covered == set(config.load().names())  # every shipped target runs in some CI job
    assert all(g.kernels for g in groups)


def test_html_of_errors_and_skips_is_still_a_page() -> None:
    doc = RunDocument("x", "s", "f", False, [])
    assert "<table" in report.html(doc)
    assert Status.PASS.value == "pass"
