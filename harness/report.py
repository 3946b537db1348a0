"""Reports from a run document: the terminal table, JUnit XML and Markdown. They read records only."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from harness.files import write_atomically
from harness.model import Record, Status, outcome_text
from harness.results import RunDocument

_BOOL = {True: "yes", False: "no", None: "-"}
_JSON_BOOL = {True: "true", False: "false"}


def _outcome(r: Record) -> str:
    return outcome_text(r.outcome, r.crash) or "-"


# Markdown (GitHub's) that guest text must not make: emphasis and code (\ ` * ~, and _ at a word's edge),
# links and images ([ ]), table cells (|), math ($); "://" and "www." would be autolinks.
_MD_SPECIAL = re.compile(r"[\\`*\[\]|~$]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])|:(?=//)|(?<=www)\.", re.IGNORECASE)
_HTML_SPECIAL = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_PLAIN = re.compile(r"[0-9A-Za-z][0-9A-Za-z._/+-]*")


def markdown_text(value: object) -> str:
    """``value`` as literal text in Markdown, in a paragraph or a table cell.

    Guests are untrusted, and what they print (a crash message, a kernel release, an allocator error)
    lands in CI job summaries, as do the names and run ids of a results file: a guest printing
    ``<img src=x> [fix CI here](https://example.invalid)`` must show those characters, not an image and a
    link. So characters that make HTML become entities, those that make emphasis, code, links, images,
    math or table cells, and the ``:`` of ``://`` and the ``.`` of ``www.``, are backslash-escaped, and a
    control character (a newline would end the table row) becomes a space. An e-mail address still
    becomes a mailto link on GitHub (no escape stops that one), whose text is the address itself."""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    text = _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)
    return "".join(_HTML_SPECIAL.get(c, c) for c in text)


def markdown_name(value: object) -> str:
    """A name (a target, ``target/policy``) in Markdown: as code when it is a plain name, as every
    valid targets file has, else as escaped text (a results file may hold anything)."""
    text = str(value)
    return "`%s`" % text if _PLAIN.fullmatch(text) else markdown_text(text)


def table(doc: RunDocument, color: bool = False) -> str:
    """One row per (target, policy), then a summary line."""
    headers = ["TARGET", "POLICY", "STATUS", "OUTCOME", "HIGH", "FALLBACK", "EXPECTED", "TIME"]
    rows: List[List[str]] = []
    for r in doc.records:
        rows.append([
            r.target,
            r.policy,
            r.status.value,
            _outcome(r),
            _BOOL[r.high_ok],
            _BOOL[r.fallback_engaged],
            r.expected or "-",
            "%.1fs" % r.duration_s,
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    colors = {"pass": "32", "observed": "36", "fail": "31", "error": "31", "timeout": "33", "panic": "35",
              "skip": "2"}

    def fmt(row: List[str], is_header: bool = False) -> str:
        cells = []
        for i, cell in enumerate(row):
            text = cell.ljust(widths[i])
            if color and not is_header and i == 2:
                text = "\033[%sm%s\033[0m" % (colors.get(cell, "0"), text)
            cells.append(text)
        return "  ".join(cells).rstrip()

    out = [fmt(headers, True)] + [fmt(r) for r in rows]
    notes = [r for r in doc.records if r.status not in (Status.PASS,) and r.detail]
    if notes:
        out.append("")
        for r in notes:
            out.append("%s/%s: %s: %s" % (r.target, r.policy, r.status.value, r.detail))
    out.append("")
    out.append(summary_line(doc))
    return "\n".join(out)


def counts(doc: RunDocument) -> Dict[str, int]:
    c = {s.value: 0 for s in Status}
    for r in doc.records:
        c[r.status.value] += 1
    return c


# The summary's order: it always begins "N passed, N failed" (CI log parsers read that); the rest only when
# there are any.
_SUMMARY = ((Status.PASS, "passed"), (Status.FAIL, "failed"), (Status.OBSERVED, "observed"), (Status.ERROR, "errors"),
            (Status.TIMEOUT, "timed out"), (Status.PANIC, "panicked"), (Status.SKIP, "skipped"))


def summary_line(doc: RunDocument) -> str:
    """``N passed, N failed``, then the other statuses there are (observed results counted apart from
    passed ones: nothing was expected of them), and whether the run was incomplete."""
    c = counts(doc)
    parts = ["%d %s" % (c[s.value], word) for s, word in _SUMMARY
             if c[s.value] or s in (Status.PASS, Status.FAIL)]
    text = ", ".join(parts)
    if not doc.complete:
        text += " (incomplete run: %s)" % (doc.interrupted or "stopped early")
    return text


# Characters XML 1.0 cannot carry at all, even escaped: guests print them (a console log holds terminal
# escapes, a crash message may hold anything), and one of them makes the whole file unreadable.
_XML_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(value: object) -> str:
    """``value`` as text XML 1.0 can hold: characters it cannot are shown as ``\\x1b`` escapes."""
    return _XML_BAD.sub(lambda m: m.group(0).encode("unicode_escape", "backslashreplace").decode("ascii"),
                        "" if value is None else str(value))


def console_tail(path: Optional[str], lines: int = 40, max_bytes: int = 64 << 10) -> str:
    """The last ``lines`` lines of a console log (of at most its last ``max_bytes``), each cut at 300
    characters; a log that is not there says so (a report may be rendered where the run's logs are not)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return "(console log not found: %s)" % path
    text = data.decode("utf-8", errors="backslashreplace").splitlines()
    if size > max_bytes:
        text = text[1:]  # the first line read is cut short
    return "\n".join(ln if len(ln) <= 300 else ln[:300] + " …(%d chars)" % len(ln) for ln in text[-lines:])


def probe_lines(r: Record, detail: bool = True) -> List[str]:
    """What the allocator said for one record, as short lines: the outcome against the expectation, the
    top of user space, the reservation and the fallback (those the document has), the detail (unless
    ``detail`` is False: a JUnit failure says it already) and Go's own messages. Read with care (``.get``):
    a results file may come from anywhere and only its shape is checked."""
    probe = r.probe or {}
    lines = ["outcome: %s" % _outcome(r), "expected: %s" % (r.expected or "nothing (observed)")]
    facts = probe.get("facts") or {}
    if facts.get("user_top"):
        lines.append("user top: %s" % facts["user_top"])
    res = probe.get("reservation")
    if res:
        lines.append("hint: %s  probe: %s  high ok: %s" % (res.get("hint"), res.get("probe") or "-",
                                                            _BOOL.get(res.get("high_ok"), "?")))
    fb = probe.get("fallback")
    if fb:
        lines.append("fallback: %s  want: %s  arena: %s" % (_BOOL.get(fb.get("engaged"), "?"), fb.get("want") or "-",
                                                             "-".join(fb.get("arena") or []) or "-"))
    if detail and r.detail:
        lines.append("detail: %s" % r.detail)
    lines.extend("go: %s" % m for m in probe.get("messages") or [])
    return lines


def boot_shares(records: Sequence[Record]) -> Dict[int, float]:
    """Each record's share of the boot that produced it, by ``id(record)``.

    A target boots once and runs all its policies in that boot, and a record's ``duration_s`` is that
    whole boot's (the allocator does not time each policy, and most of a boot is the guest's start
    anyway). Counting it once per policy would add a 30 s boot up to 90 s; so the records of one boot
    (the same target, console log and duration) share it evenly, and their shares add up to the boot's
    time. Records of other boots (a merged file's re-run) are apart."""
    boots: Dict[Tuple[str, Optional[str], float], List[Record]] = {}
    for r in records:
        boots.setdefault((r.target, r.log, r.duration_s), []).append(r)
    return {id(r): r.duration_s / len(group) for group in boots.values() for r in group}


def _seconds(started: str, finished: Optional[str]) -> Optional[float]:
    """The wall time between two ISO timestamps of a run document, or None when either is unreadable."""
    import datetime

    try:
        span = (datetime.datetime.fromisoformat(finished or "") - datetime.datetime.fromisoformat(started))
    except (TypeError, ValueError):
        return None
    seconds = span.total_seconds()
    return seconds if seconds >= 0 else None


def junit(doc: RunDocument) -> str:
    """JUnit XML that validates against junit-10.xsd (Jenkins xUnit's schema, which pytest tests its own
    output with): a testsuite per target, a testcase per policy.

    Times: a testcase's ``time`` is its share of its target's boot (:func:`boot_shares`), a testsuite's
    the sum of its testcases' (its boots' whole time), and the root's the run's wall time, so a consumer
    adding up testcases gets the machine time spent, never a boot counted once per policy. The schema
    allows ``properties`` only on a testsuite: the target's facts (backend, kernel, machine, channel,
    console log, boot time) and each policy's (``<policy>.outcome``, ``.expected``, ``.high_ok``,
    ``.fallback_engaged``) are there. A failure or an error carries the detail as its message and, in its
    body, the detail, the outcome against the expectation, the console log's path and its last lines; each
    testcase's ``system-out`` says what the allocator found. Guest text that XML cannot hold is escaped."""
    shares = boot_shares(doc.records)
    c_all = counts(doc)
    root = ET.Element("testsuites", name="arena-harness", tests=str(len(doc.records)),
                      failures=str(c_all["fail"]), errors=str(c_all["error"] + c_all["timeout"] + c_all["panic"]))
    wall = _seconds(doc.started, doc.finished)
    if wall is not None:
        root.set("time", "%.3f" % wall)
    by_target: Dict[str, List[Record]] = {}
    for r in doc.records:
        by_target.setdefault(r.target, []).append(r)
    for target, recs in by_target.items():
        c = {s: sum(1 for r in recs if r.status == s) for s in Status}
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_xml(target),
            tests=str(len(recs)),
            failures=str(c[Status.FAIL]),
            errors=str(c[Status.ERROR] + c[Status.TIMEOUT] + c[Status.PANIC]),
            skipped=str(c[Status.SKIP]),
            time="%.3f" % sum(shares[id(r)] for r in recs),
        )
        props = ET.SubElement(suite, "properties")

        def prop(name: str, value: object, props: ET.Element = props) -> None:
            ET.SubElement(props, "property", name=_xml(name), value=_xml("-" if value is None else value))

        prop("backend", recs[0].backend)
        for name, key in (("kernel", "kernel"), ("machine", "machine"), ("channel", "channel"), ("console_log", "log")):
            prop(name, next((getattr(r, key) for r in recs if getattr(r, key)), None))
        prop("boot_s", "%.3f" % sum({(r.log, r.duration_s): r.duration_s for r in recs}.values()))
        for r in recs:
            for key in ("status", "outcome", "expected", "high_ok", "fallback_engaged"):
                value = getattr(r, key)
                prop("%s.%s" % (r.policy, key), _outcome(r) if key == "outcome" else _JSON_BOOL.get(value, value))
        for r in recs:
            case = ET.SubElement(suite, "testcase", classname="arena-harness.%s" % _xml(target), name=_xml(r.policy),
                                 time="%.3f" % shares[id(r)])
            msg = _xml(r.detail or r.status.value)
            if r.status in (Status.FAIL, Status.ERROR, Status.TIMEOUT, Status.PANIC):
                body = [r.detail or r.status.value]
                if r.status != Status.FAIL:  # a failure's detail says both already
                    body.append("outcome: %s, expected: %s" % (_outcome(r), r.expected or "-"))
                if r.log:
                    body += ["console log: %s" % r.log, "", "last lines of the console log:", console_tail(r.log)]
                kind = "failure" if r.status == Status.FAIL else "error"
                ET.SubElement(case, kind, message=msg, type="outcome" if kind == "failure" else r.status.value
                              ).text = _xml("\n".join(body))
            elif r.status == Status.SKIP:
                ET.SubElement(case, "skipped", message=msg)
            if r.status != Status.SKIP:
                out = probe_lines(r, detail=False) + (["console log: %s" % r.log] if r.log else [])
                ET.SubElement(case, "system-out").text = _xml("\n".join(out))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def grid(doc: RunDocument) -> Tuple[List[str], Dict[str, Dict[str, Record]]]:
    """The policies in order of appearance, and target -> policy -> record."""
    policies: List[str] = []
    cells: Dict[str, Dict[str, Record]] = {}
    for r in doc.records:
        if r.policy not in policies:
            policies.append(r.policy)
        cells.setdefault(r.target, {})[r.policy] = r
    return policies, cells


def markdown(doc: RunDocument) -> str:
    """A targets x policies grid and the notes, for a CI job summary."""
    policies, cells = grid(doc)
    icon = {"pass": "✅", "observed": "🔍", "fail": "❌", "error": "⚠️", "timeout": "⏱️", "panic": "💥",
            "skip": "⏭️"}
    md = markdown_text  # every cell holds text from the results file, much of it from guests
    lines = ["# arena-harness run %s" % md(doc.run_id), "", md(summary_line(doc)), ""]
    lines.append("| target | kernel | " + " | ".join(md(p) for p in policies) + " |")
    lines.append("|---|---|" + "---|" * len(policies))
    for target, by_policy in cells.items():
        kernel = next((r.kernel for r in by_policy.values() if r.kernel), None) or "-"
        row = []
        for p in policies:
            cell = by_policy.get(p)
            row.append("%s %s" % (icon[cell.status.value], md(_outcome(cell))) if cell else "")
        lines.append("| %s | %s | %s |" % (md(target), md(kernel), " | ".join(row)))
    notes = [r for r in doc.records if r.status != Status.PASS and r.detail]
    if notes:
        lines += ["", "## Notes", ""]
        lines += ["- **%s / %s** (%s): %s" % (md(r.target), md(r.policy), r.status.value, md(r.detail))
                  for r in notes]
    return "\n".join(lines) + "\n"


def write(text: str, path: Optional[Path]) -> None:
    """A report at ``path`` (nothing when None): atomically, mode 0644, parent directories created."""
    if path is not None:
        write_atomically(path, text)


# -- HTML ------------------------------------------------------------------------------------

_STATUS_COLOR = {"pass": "#2e7d32", "observed": "#1565c0", "fail": "#c62828", "error": "#ef6c00", "timeout": "#f9a825",
                 "panic": "#6a1b9a", "skip": "#9e9e9e"}
_OUTCOME_COLOR = {"high-arena": "#c8e6c9", "fallback-32bit": "#fff9c4", "native-32bit": "#bbdefb",
                  "os-chosen": "#ffe0b2", "crash": "#ffcdd2"}
_POLICY_COLOR = {"go-2012-pre": "#8e24aa", "go-2012": "#1565c0", "go-modern": "#00897b"}
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#212121}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table.grid{border-collapse:collapse}table.grid td,table.grid th{border:1px solid #ccc;padding:6px 10px;
vertical-align:top}table.grid th{background:#f5f5f5;text-align:left}
.cell{min-width:170px}.st{display:inline-block;color:#fff;border-radius:3px;padding:0 6px;font-size:12px;
font-weight:600}details{margin-top:4px}summary{cursor:pointer;color:#555;font-size:12px}
pre{font-size:11px;background:#fafafa;border:1px solid #eee;padding:6px;max-height:260px;overflow:auto;
white-space:pre-wrap}.legend span{display:inline-block;margin-right:14px;font-size:12px}
.small{color:#666;font-size:12px}
"""


def _esc(x: object) -> str:
    import html as _html

    return _html.escape("" if x is None else str(x))


def _addr(v: object) -> Optional[int]:
    if isinstance(v, str) and v.startswith("0x"):
        return int(v, 16)
    return None


def address_space_svg(records: List[Record], width: int = 760) -> str:
    """A target's address space on a log2 axis: user space, the hint, where probes and arenas landed."""
    import math

    probes = [r.probe for r in records if r.probe and not r.probe.get("error")]
    if not probes:
        return ""
    facts = probes[0].get("facts") or {}
    bits = 64 if facts.get("pointer_bits", 64) == 64 else 32
    lo_bit, hi_bit = 12, (57 if bits == 64 else 32)
    left, right = 90, width - 20
    row_h = 22
    top_pad = 34
    height = top_pad + row_h * len(probes) + 30

    def x(addr: int) -> float:
        b = math.log2(max(addr, 1 << lo_bit))
        b = min(max(b, lo_bit), hi_bit)
        return left + (right - left) * (b - lo_bit) / (hi_bit - lo_bit)

    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" role="img" '
             'aria-label="address space">' % (width, height)]
    user_top = _addr(facts.get("user_top"))
    if user_top:
        parts.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#e3f2fd"/>'
                     % (left, top_pad - 6, x(user_top) - left, row_h * len(probes) + 8))
        parts.append('<line x1="%.1f" y1="14" x2="%.1f" y2="%d" stroke="#000" stroke-width="2"/>'
                     % (x(user_top), x(user_top), height - 22))
        parts.append('<text x="%.1f" y="12" font-size="11" text-anchor="middle">user top %s</text>'
                     % (x(user_top), _esc(facts.get("user_top"))))
    hint = 0xF8 << 32
    if bits == 64:
        parts.append('<line x1="%.1f" y1="22" x2="%.1f" y2="%d" stroke="#c62828" stroke-dasharray="4 3"/>'
                     % (x(hint), x(hint), height - 22))
        parts.append('<text x="%.1f" y="%d" font-size="10" fill="#c62828" text-anchor="middle">hint 0xf8&lt;&lt;32'
                     '</text>' % (x(hint), height - 10))
    for b in range(lo_bit, hi_bit + 1, 4 if bits == 64 else 2):
        parts.append('<text x="%.1f" y="%d" font-size="9" fill="#888" text-anchor="middle">2^%d</text>'
                     % (x(1 << b), height - 24, b))
    for i, p in enumerate(probes):
        y = top_pad + i * row_h
        color = _POLICY_COLOR.get(p.get("policy", ""), "#555")
        parts.append('<text x="4" y="%d" font-size="11" fill="%s">%s</text>' % (y + 12, color, _esc(p["policy"])))
        heap = p.get("heap") or {}
        spans: List[Tuple[int, int]] = []
        if _addr(heap.get("arena_start")) and _addr(heap.get("arena_end")):
            spans.append((_addr(heap["arena_start"]) or 0, _addr(heap["arena_end"]) or 0))
        for a, b2 in heap.get("arenas") or []:
            if _addr(a) and _addr(b2):
                spans.append((_addr(a) or 0, _addr(b2) or 0))
        for a, b2 in spans[:8]:
            x0, x1 = x(a), x(b2)
            parts.append('<rect x="%.1f" y="%d" width="%.1f" height="12" fill="%s" opacity="0.75">'
                         '<title>arena %s-%s</title></rect>' % (x0, y + 2, max(x1 - x0, 3), color, hex(a), hex(b2)))
        probe = _addr((p.get("reservation") or {}).get("probe"))
        if probe:
            px = x(probe)
            parts.append('<path d="M%.1f %d l5 -8 h-10 z" fill="#212121"><title>probe landed at %s</title></path>'
                         % (px, y + 16, hex(probe)))
        if p.get("outcome") == "crash":
            parts.append('<text x="%d" y="%d" font-size="10" fill="#c62828">✗ %s</text>'
                         % (right - 230, y + 12, _esc(p.get("crash"))))
    parts.append("</svg>")
    return "".join(parts)


def html(doc: RunDocument) -> str:
    """One self-contained page (no network): the grid, per-cell details, an address-space picture per target."""
    policies, by_target = grid(doc)
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           "<title>arena-harness %s</title><style>%s</style></head><body>" % (_esc(doc.run_id), _CSS),
           "<h1>arena-harness run %s</h1>" % _esc(doc.run_id),
           '<p class="small">%s — %s · %s</p>' % (_esc(doc.started), _esc(doc.finished), _esc(summary_line(doc))),
           '<p class="legend">' + "".join('<span><b style="background:%s">&nbsp;&nbsp;&nbsp;</b> %s</span>'
                                          % (c, o) for o, c in _OUTCOME_COLOR.items()) + "</p>",
           '<table class="grid"><tr><th>target</th><th>kernel</th>'
           + "".join("<th>%s</th>" % _esc(p) for p in policies) + "</tr>"]
    for target, cells in by_target.items():
        any_r = next(iter(cells.values()))
        row = ['<tr><th><a href="#t-%s">%s</a><div class="small">%s</div></th><td class="small">%s<br>%s</td>'
               % (_esc(target), _esc(target), _esc(any_r.backend), _esc(any_r.kernel or "-"),
                  _esc(any_r.machine or ""))]
        for p in policies:
            cell = cells.get(p)
            if cell is None:
                row.append("<td></td>")
                continue
            bg = _OUTCOME_COLOR.get(cell.outcome or "", "#fff")
            probe = cell.probe or {}
            detail = probe_lines(cell)
            trace = probe.get("trace") or []
            trace_txt = "\n".join("%-16s %-8s %s len=%s %s %s -> %s%s" % (
                e.get("fn"), e.get("call"), e.get("addr"), e.get("len"), e.get("prot", ""), e.get("flags", ""),
                e.get("result"), " x%d" % e["count"] if e.get("count") else "") for e in trace[:60])
            if len(trace) > 60:
                trace_txt += "\n… %d more calls" % (len(trace) - 60)
            row.append('<td class="cell" style="background:%s"><span class="st" style="background:%s">%s</span> '
                       '%s<details><summary>details</summary><pre>%s</pre><pre>%s</pre></details></td>'
                       % (bg, _STATUS_COLOR[cell.status.value], cell.status.value, _esc(_outcome(cell)),
                          _esc("\n".join(detail)), _esc(trace_txt)))
        out.append("".join(row) + "</tr>")
    out.append("</table>")
    for target, cells in by_target.items():
        recs = [cells[p] for p in policies if p in cells]
        out.append('<h2 id="t-%s">%s</h2>' % (_esc(target), _esc(target)))
        svg = address_space_svg(recs)
        out.append(svg or '<p class="small">no result to draw</p>')
        log = next((r.log for r in recs if r.log), None)
        out.append("<details><summary>console log excerpt (%s)</summary><pre>%s</pre></details>"
                   % (_esc(log), _esc(console_tail(log))))
    out.append("</body></html>")
    return "\n".join(out) + "\n"
