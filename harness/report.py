"""Reports from a run document: the terminal table, JUnit XML and Markdown. They read records only."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional

from harness.results import PRECEDENCE, Record, RunDocument, Status

_BOOL = {True: "yes", False: "no", None: "-"}


def _outcome(r: Record) -> str:
    if r.outcome == "crash" and r.crash:
        return "crash: %s" % r.crash
    return r.outcome or "-"


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
    colors = {"pass": "32", "fail": "31", "error": "31", "timeout": "33", "panic": "35", "skip": "2"}

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


def summary_line(doc: RunDocument) -> str:
    c = counts(doc)
    words = {Status.PASS: "passed", Status.FAIL: "failed", Status.ERROR: "errors", Status.TIMEOUT: "timed out",
             Status.PANIC: "panicked", Status.SKIP: "skipped"}
    parts = ["%d %s" % (c[s.value], words[s]) for s in PRECEDENCE[::-1][1:] + (Status.SKIP,)
             if c[s.value] or s in (Status.PASS, Status.FAIL)]
    text = ", ".join(parts)
    if not doc.complete:
        text += " (incomplete run: %s)" % (doc.interrupted or "stopped early")
    return text


def junit(doc: RunDocument) -> str:
    """JUnit XML: a testsuite per target, a testcase per policy."""
    root = ET.Element("testsuites", name="arena-harness", tests=str(len(doc.records)))
    by_target: Dict[str, List[Record]] = {}
    for r in doc.records:
        by_target.setdefault(r.target, []).append(r)
    for target, recs in by_target.items():
        c = {s: sum(1 for r in recs if r.status == s) for s in Status}
        suite = ET.SubElement(
            root,
            "testsuite",
            name=target,
            tests=str(len(recs)),
            failures=str(c[Status.FAIL]),
            errors=str(c[Status.ERROR] + c[Status.TIMEOUT] + c[Status.PANIC]),
            skipped=str(c[Status.SKIP]),
            time="%.3f" % max((r.duration_s for r in recs), default=0.0),
        )
        for r in recs:
            case = ET.SubElement(suite, "testcase", classname="arena-harness.%s" % target, name=r.policy,
                                 time="%.3f" % r.duration_s)
            msg = r.detail or ""
            if r.status == Status.FAIL:
                ET.SubElement(case, "failure", message=msg, type="outcome").text = msg
            elif r.status in (Status.ERROR, Status.TIMEOUT, Status.PANIC):
                ET.SubElement(case, "error", message=msg, type=r.status.value).text = msg
            elif r.status == Status.SKIP:
                ET.SubElement(case, "skipped", message=msg)
            props = ET.SubElement(case, "properties")
            for key in ("outcome", "expected", "high_ok", "fallback_engaged", "kernel", "machine"):
                ET.SubElement(props, "property", name=key, value=str(getattr(r, key)))
            if r.log:
                ET.SubElement(case, "system-out").text = "console log: %s" % r.log
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def markdown(doc: RunDocument) -> str:
    """A targets x policies grid and the notes, for a CI job summary."""
    policies: List[str] = []
    for r in doc.records:
        if r.policy not in policies:
            policies.append(r.policy)
    cells: Dict[str, Dict[str, Record]] = {}
    for r in doc.records:
        cells.setdefault(r.target, {})[r.policy] = r
    icon = {"pass": "✅", "fail": "❌", "error": "⚠️", "timeout": "⏱️", "panic": "💥", "skip": "⏭️"}
    lines = ["# arena-harness run %s" % doc.run_id, "", summary_line(doc), ""]
    lines.append("| target | kernel | " + " | ".join(policies) + " |")
    lines.append("|---|---|" + "---|" * len(policies))
    for target, by_policy in cells.items():
        kernel = next((r.kernel for r in by_policy.values() if r.kernel), None) or "-"
        row = []
        for p in policies:
            cell = by_policy.get(p)
            row.append("%s %s" % (icon[cell.status.value], _outcome(cell).replace("|", "\\|")) if cell else "")
        lines.append("| %s | %s | %s |" % (target, kernel, " | ".join(row)))
    notes = [r for r in doc.records if r.status != Status.PASS and r.detail]
    if notes:
        lines += ["", "## Notes", ""]
        lines += ["- **%s / %s** (%s): %s" % (r.target, r.policy, r.status.value, r.detail) for r in notes]
    return "\n".join(lines) + "\n"


def write(text: str, path: Optional[Path]) -> None:
    if path is None:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(".%s.tmp" % p.name)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(p)
