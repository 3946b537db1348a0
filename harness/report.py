"""Reports from a run document: the terminal table, JUnit XML, Markdown and the HTML page (and a boundary
search's page). They read records only."""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from harness.files import write_atomically
from harness.model import MODELS, Record, Status, outcome_text, quote
from harness.results import RunDocument

# Imported where they are used: jinja2 when a page is made (the table, JUnit and Markdown do without it),
# the bisect module for its page (importing it loads the runner).
if TYPE_CHECKING:
    import jinja2
    from markupsafe import Markup

    from harness.bisect import BisectDocument
    from harness.diff import History

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


def _shown(text: str) -> str:
    """Guest text for a terminal: control characters escaped (a crash message of ESC [2J must not clear
    the screen of whoever reads the table)."""
    return quote(text, 1 << 30)


def table(doc: RunDocument, color: bool = False) -> str:
    """One row per (target, policy), then a summary line."""
    headers = ["TARGET", "POLICY", "STATUS", "OUTCOME", "HIGH", "FALLBACK", "EXPECTED", "TIME"]
    rows: List[List[str]] = []
    for r in doc.records:
        rows.append([_shown(c) for c in (
            r.target,
            r.policy,
            r.status.value,
            _outcome(r),
            _BOOL[r.high_ok],
            _BOOL[r.fallback_engaged],
            r.expected or "-",
            "%.1fs" % r.duration_s,
        )])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    colors = {"pass": "32", "observed": "36", "fail": "31", "disagree": "95", "error": "31", "timeout": "33",
              "panic": "35", "skip": "2"}

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
            out.append(_shown("%s/%s: %s: %s" % (r.target, r.policy, r.status.value, r.detail)))
    out += [_shown(line) for line in agreement_lines(doc)]
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
_SUMMARY = ((Status.PASS, "passed"), (Status.FAIL, "failed"), (Status.OBSERVED, "observed"),
            (Status.DISAGREE, "model and runtime disagree"), (Status.ERROR, "errors"), (Status.TIMEOUT, "timed out"),
            (Status.PANIC, "panicked"), (Status.SKIP, "skipped"))


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
            failures=str(c[Status.FAIL] + c[Status.DISAGREE]),
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
            if r.status in (Status.FAIL, Status.DISAGREE, Status.ERROR, Status.TIMEOUT, Status.PANIC):
                body = [r.detail or r.status.value]
                if r.status not in (Status.FAIL, Status.DISAGREE):  # a failure's detail says both already
                    body.append("outcome: %s, expected: %s" % (_outcome(r), r.expected or "-"))
                if r.log:
                    body += ["console log: %s" % r.log, "", "last lines of the console log:", console_tail(r.log)]
                kind = "failure" if r.status in (Status.FAIL, Status.DISAGREE) else "error"
                ET.SubElement(case, kind, message=msg, type={Status.FAIL: "outcome"}.get(r.status, r.status.value)
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


# A status as the Markdown reports show it (every status has one: a missing one was a KeyError).
_MD_ICON = {"pass": "✅", "observed": "🔍", "fail": "❌", "disagree": "⚖️", "error": "⚠️", "timeout": "⏱️",
            "panic": "💥", "skip": "⏭️"}


def markdown(doc: RunDocument) -> str:
    """A targets x policies grid and the notes, for a CI job summary."""
    policies, cells = grid(doc)
    icon = _MD_ICON
    md = markdown_text  # every cell holds text from the results file, much of it from guests
    lines = ["# arena-harness run %s" % md(doc.run_id), "", md(summary_line(doc)), ""]
    lines.append("| target | kernel | " + " | ".join(md(p) for p in policies) + " |")
    lines.append("|---|---|" + "---|" * len(policies))
    for target, by_policy in cells.items():
        kernel = next((r.kernel for r in by_policy.values() if r.kernel), None) or "-"
        accel = next((r.accel for r in by_policy.values() if r.accel), None)
        if accel:
            kernel += " (%s)" % accel
        row = []
        for p in policies:
            cell = by_policy.get(p)
            row.append("%s %s" % (icon[cell.status.value], md(_outcome(cell))) if cell else "")
        lines.append("| %s | %s | %s |" % (md(target), md(kernel), " | ".join(row)))
    lines += markdown_runtimes(doc)
    notes = [r for r in doc.records if r.status != Status.PASS and r.detail]
    if notes:
        lines += ["", "## Notes", ""]
        lines += ["- **%s / %s** (%s): %s" % (md(r.target), md(r.policy), r.status.value, md(r.detail))
                  for r in notes]
    return "\n".join(lines) + "\n"


# -- the model beside the runtime it models, and the JVM --------------------------------------------

_RUNTIME_NAMES = {"go": "Go", "jvm": "JVM"}


def runtime_name(probe: str) -> str:
    """A runtime probe's name as people write it (``go`` -> ``Go``)."""
    return _RUNTIME_NAMES.get(probe, probe)


@dataclass(frozen=True)
class Comparison:
    """One target's model result beside the real runtime's: either record may be missing. ``agree`` is
    the run's own judgement (``results.judge_agreement`` puts it on both records): True, False, or None
    when the two were not compared (one did not run or gave no outcome)."""

    target: str
    model: str  # the model policy's name (go-modern)
    runtime: str  # the runtime probe's name (go)
    model_record: Optional[Record]
    runtime_record: Optional[Record]
    agree: Optional[bool]

    @property
    def failed(self) -> bool:
        """A disagreement, or either record failed: its row comes first and is marked."""
        return self.agree is False or any(r is not None and r.status in _FAILED
                                          for r in (self.model_record, self.runtime_record))

    def reason(self) -> str:
        """Why the two were not compared (for ``agree`` None)."""
        for name, r in ((self.model, self.model_record), (self.runtime, self.runtime_record)):
            if r is None:
                return "%s did not run" % name
            if r.outcome is None:
                return "%s: %s" % (name, said(r))
        return "no agreement recorded"  # both have outcomes: a results file written before agreement existed


def _agree(r: Optional[Record], other: str) -> Optional[bool]:
    """What ``r``'s agreement says of it and ``other`` (read with care: a results file may hold anything)."""
    a = r.agreement if r is not None else None
    if isinstance(a, dict) and a.get("with") == other and isinstance(a.get("agree"), bool):
        return bool(a["agree"])
    return None


def comparisons(doc: RunDocument) -> List[Tuple[str, str, List[Comparison]]]:
    """Per model policy and the runtime it models (``model.MODELS``) that ran in this document: one
    comparison per target where the runtime ran (a skip or an error included: it was asked to run), or
    where an agreement was recorded. A target that never asked for the runtime is left out: nothing
    was missed there."""
    out: List[Tuple[str, str, List[Comparison]]] = []
    for model, runtime in MODELS.items():
        by_target: Dict[str, Dict[str, Record]] = {}
        for r in doc.records:
            if r.policy in (model, runtime):
                by_target.setdefault(r.target, {})[r.policy] = r
        comps = []
        for target, recs in by_target.items():
            m, rt = recs.get(model), recs.get(runtime)
            agree = _agree(m, runtime)
            if agree is None:
                agree = _agree(rt, model)
            if rt is not None or agree is not None:
                comps.append(Comparison(target, model, runtime, m, rt, agree))
        if comps:
            out.append((model, runtime, comps))
    return out


def said(r: Optional[Record]) -> str:
    """What a result says, for a comparison: its outcome (a crash with its message), else its status
    and why (``error: no result for this policy``), else that it did not run."""
    if r is None:
        return "did not run"
    if r.outcome is not None:
        return _outcome(r)
    return r.status.value + (": %s" % r.detail if r.detail else "")


def agreement_summary(comps: Sequence[Comparison]) -> str:
    """``N targets agree, M disagree`` (``1 target agrees, 1 disagrees``), and ``, K not compared`` when
    there are any."""
    agree = sum(1 for c in comps if c.agree is True)
    disagree = sum(1 for c in comps if c.agree is False)
    text = "%d target%s %s, %d %s" % (agree, "" if agree == 1 else "s", "agrees" if agree == 1 else "agree",
                                      disagree, "disagrees" if disagree == 1 else "disagree")
    unknown = len(comps) - agree - disagree
    return text + (", %d not compared" % unknown if unknown else "")


def _failures_first(comps: Sequence[Comparison]) -> List[Comparison]:
    """Disagreements first, then the other failures, then the rest, each in the run's order."""
    return sorted(comps, key=lambda c: 0 if c.agree is False else 1 if c.failed else 2)


def agreement_lines(doc: RunDocument) -> List[str]:
    """The block under the terminal table: per model and runtime, how many targets agree, then each
    disagreement (the model's outcome and the runtime's, crash messages word for word) and each target
    where they could not be compared. Empty when no runtime ran."""
    out: List[str] = []
    for _model, runtime, comps in comparisons(doc):
        name = runtime_name(runtime)
        out.append("model and real %s: %s" % (name, agreement_summary(comps)))
        out += ["  %s: model says %s, %s says %s" % (c.target, said(c.model_record), name, said(c.runtime_record))
                for c in comps if c.agree is False]
        out += ["  %s: not compared: %s" % (c.target, c.reason()) for c in comps if c.agree is None]
    return [""] + out if out else []


def blocks_grown(r: Optional[Record]) -> Optional[int]:
    """How many steps of the growth plan succeeded (``ok: true`` in the probe document's ``growth``): the
    blocks the heap grew by. None when the document has no growth list."""
    growth = (r.probe or {}).get("growth") if r is not None else None
    if not isinstance(growth, list):
        return None
    return sum(1 for step in growth if isinstance(step, dict) and step.get("ok") is True)


def first_arena(r: Optional[Record]) -> Optional[str]:
    """Where the runtime's heap began (``heap.arena_start`` of its probe document), or None."""
    heap = (r.probe or {}).get("heap") if r is not None else None
    start = heap.get("arena_start") if isinstance(heap, dict) else None
    return start if isinstance(start, str) else None


def _grown_pair(c: Comparison) -> str:
    return " / ".join("-" if n is None else str(n) for n in (blocks_grown(c.model_record),
                                                             blocks_grown(c.runtime_record)))


def size_text(n: int) -> str:
    """A byte count as people read it: ``1 GiB``, ``5.9 GiB``, ``118 MiB``, ``4 KiB``."""
    for unit, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= unit:
            return "%d %s" % (n // unit, name) if n % unit == 0 or unit < 1 << 30 else "%.1f %s" % (n / unit, name)
    return "%d B" % n


def heap_range(r: Record) -> Optional[Tuple[str, str, str]]:
    """The JVM's reserved heap (start, end, size) from its probe document, or None (it did not start)."""
    heap = (r.probe or {}).get("heap")
    if not isinstance(heap, dict):
        return None
    start, end = _addr(heap.get("arena_start")), _addr(heap.get("arena_end"))
    if start is None or end is None or end < start:
        return None
    return hex(start), hex(end), size_text(end - start)


def jvm_said(r: Record) -> str:
    """The JVM's outcome: its message word for word for a crash, or the signal that killed it when it
    said nothing (a very small address space), or why there is no outcome."""
    facts = (r.probe or {}).get("facts") or {}
    sig = facts.get("signal") if isinstance(facts, dict) else None
    if r.outcome == "crash" and not r.crash and isinstance(sig, int) and not isinstance(sig, bool):
        return "crash (killed by signal %d, no message)" % sig
    return said(r)


def oops_mode(r: Record) -> Optional[str]:
    """``facts.compressed_oops_mode`` of a jvm document (``32-bit``, ``Zero based``, ``disabled`` ...)."""
    facts = (r.probe or {}).get("facts") or {}
    mode = facts.get("compressed_oops_mode") if isinstance(facts, dict) else None
    return mode if isinstance(mode, str) and mode else None


def jvm_summary(records: Sequence[Record]) -> str:
    """``N started, M did not start`` (a crash: the JVM's words are in its row), and those with no outcome."""
    crashed = sum(1 for r in records if r.outcome == "crash")
    started = sum(1 for r in records if r.outcome is not None) - crashed
    text = "%d started, %d did not start" % (started, crashed)
    unknown = len(records) - started - crashed
    return text + (", %d gave no outcome" % unknown if unknown else "")


def jvm_records(doc: RunDocument) -> List[Record]:
    """The ``jvm`` probe's results, failures first."""
    return sorted((r for r in doc.records if r.kind == "jvm"), key=lambda r: r.status not in _FAILED)


def markdown_runtimes(doc: RunDocument) -> List[str]:
    """The Markdown sections on real runtimes: the model beside real Go (both outcomes, whether they
    agree, where Go's heap began, the blocks each grew) and the JVM (its outcome with its message word
    for word, its heap, its compressed-oops mode). Failures first; every cell escaped."""
    md = markdown_text
    lines: List[str] = []
    for model, runtime, comps in comparisons(doc):
        name = md(runtime_name(runtime))
        lines += ["", "## Model and real %s" % name, "", md(agreement_summary(comps)) + ".", "",
                  "| target | %s | real %s | agree | %s's first arena | blocks grown (model / %s) |"
                  % (md(model), name, name, name),
                  "|---|---|---|---|---|---|"]
        agree_cell = {True: "✅ yes", False: "⚖️ **no**", None: "not compared"}
        for c in _failures_first(comps):
            cells = ["%s %s" % (_MD_ICON[r.status.value], md(said(r))) if r is not None else "did not run"
                     for r in (c.model_record, c.runtime_record)]
            lines.append("| %s | %s | %s | %s | %s | %s |" % (md(c.target), cells[0], cells[1], agree_cell[c.agree],
                                                              markdown_name(first_arena(c.runtime_record) or "-"),
                                                              _grown_pair(c)))
    jvm = jvm_records(doc)
    if jvm:
        lines += ["", "## JVM", "", md(jvm_summary(jvm)) + ".", "",
                  "| target | JVM outcome | heap range | compressed oops mode |", "|---|---|---|---|"]
        for r in jvm:
            heap = heap_range(r)
            where = "%s–%s (%s)" % (markdown_name(heap[0]), markdown_name(heap[1]), heap[2]) if heap else "-"
            lines.append("| %s | %s %s | %s | %s |" % (md(r.target), _MD_ICON[r.status.value], md(jvm_said(r)),
                                                      where, md(oops_mode(r) or "-")))
    return lines


def write(text: str, path: Optional[Path]) -> None:
    """A report at ``path`` (nothing when None): atomically, mode 0644, parent directories created."""
    if path is not None:
        write_atomically(path, text)


# -- HTML ------------------------------------------------------------------------------------
#
# The pages are Jinja2 templates (harness/templates/): run.html.j2 and the sections it includes, bisect.html.j2,
# the marks they share (parts.html.j2) and the pictures' (pictures.svg.j2). Autoescape is on for all of them
# and is the HTML reports' one escaping: every value from a results file or a search (much of it printed by
# guests) is escaped there, once. What is computed (the pictures' geometry, which sections, rows and texts
# there are) is here.

# A cell is coloured by its status, never by its outcome: an expected crash is a pass and looks like one;
# red is for what failed. The outcome is a small chip in the cell (a crash's chip is not red either).
_STATUS_COLOR = {"pass": "#2e7d32", "observed": "#1565c0", "fail": "#c62828",
                 "disagree": "#ad1457", "error": "#ef6c00", "timeout": "#f9a825",
                 "panic": "#6a1b9a", "skip": "#9e9e9e"}
_STATUS_BG = {"pass": "#e8f5e9", "observed": "#e3f2fd", "fail": "#ffcdd2",
              "disagree": "#f8bbd0", "error": "#ffe0b2", "timeout": "#fff3c4",
              "panic": "#e1bee7", "skip": "#f5f5f5"}
_OUTCOME_COLOR = {"high-arena": "#a5d6a7", "fallback-32bit": "#fff176", "native-32bit": "#90caf9",
                  "os-chosen": "#ffcc80", "crash": "#bcaaa4"}
_POLICY_COLOR = {"go-2012-pre": "#8e24aa", "go-2012": "#1565c0", "go-modern": "#00897b", "go": "#37474f",
                 "jvm": "#6d4c41"}
_FAILED = (Status.FAIL, Status.DISAGREE, Status.ERROR, Status.TIMEOUT, Status.PANIC)


def _failed(x: object) -> bool:
    """The templates' test ``is failed``: a record that failed, or a comparison with a disagreement or a
    failure on either side."""
    if isinstance(x, Comparison):
        return x.failed
    return isinstance(x, Record) and x.status in _FAILED


def trace_text(r: Record, limit: int = 60) -> str:
    """The first ``limit`` calls of a record's trace (its probe document's ``trace``), one a line."""
    trace = (r.probe or {}).get("trace") or []
    text = "\n".join("%-16s %-8s %s len=%s %s %s -> %s%s" % (
        e.get("fn"), e.get("call"), e.get("addr"), e.get("len"), e.get("prot", ""), e.get("flags", ""),
        e.get("result"), " x%d" % e["count"] if e.get("count") else "") for e in trace[:limit])
    if len(trace) > limit:
        text += "\n… %d more calls" % (len(trace) - limit)
    return text


@functools.cache
def _templates() -> "jinja2.Environment":
    """The templates' environment, made once: autoescape on (also for a template of a kind not listed),
    StrictUndefined (a name the code forgot to pass is an error, not an empty cell), None shown as nothing
    (a run not finished, a record with no kernel); and what the templates may use: the colours, the texts
    of a record (filters) and the ``failed`` test."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("harness", "templates"),
                             autoescape=jinja2.select_autoescape(("html.j2", "svg.j2"), default=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, finalize=lambda v: "" if v is None else v)
    env.globals.update(STATUSES=[s.value for s in Status], STATUS_COLOR=_STATUS_COLOR, STATUS_BG=_STATUS_BG,
                       OUTCOME_COLOR=_OUTCOME_COLOR, POLICY_COLOR=_POLICY_COLOR, SVG_FONT=SVG_FONT)
    env.filters.update(px=lambda v: "%.1f" % v, outcome=_outcome, probe_lines=probe_lines, trace=trace_text,
                       said=said, runtime_name=runtime_name, agreement_summary=agreement_summary,
                       first_arena=first_arena, grown_pair=_grown_pair, heap_range=heap_range, jvm_said=jvm_said,
                       oops_mode=oops_mode, jvm_summary=jvm_summary)
    env.tests["failed"] = _failed
    return env


def _render(template: str, **context: Any) -> str:
    return _templates().get_template(template).render(**context)


def _picture(macro: str, picture: Dict[str, Any]) -> "Markup":
    """A picture of pictures.svg.j2, as markup (escaped there) a page puts in as it is."""
    return getattr(_templates().get_template("pictures.svg.j2").module, macro)(picture)  # type: ignore[no-any-return]


def _addr(v: object) -> Optional[int]:
    if isinstance(v, str) and v.startswith("0x"):
        return int(v, 16)
    return None


# The pictures' text is monospace, so its width is known here (0.6 em a character, DejaVu Sans Mono's and
# Liberation Mono's advance) and no label is placed where it would be clipped or cross a line.
SVG_FONT = "DejaVu Sans Mono,Liberation Mono,monospace"
CHAR_EM = 0.6


def text_width(text: str, size: float) -> float:
    """The width of ``text`` in the pictures' monospace font at ``size`` px."""
    return len(text) * size * CHAR_EM


@dataclass(frozen=True)
class Label:
    """A text of a picture: its left end ``x``, its baseline ``y``, its size in px."""

    x: float
    y: int
    size: int
    text: str
    fill: str = "#000"
    bold: bool = False


def _label(x: float, y: int, text: str, size: int, width: int, fill: str = "#000", bold: bool = False) -> Label:
    """A label centred on ``x``, moved left or right as little as needed to lie wholly inside the picture
    (a "user top" at the right edge of a 32-bit space was cut in half)."""
    w = text_width(text, size)
    return Label(min(max(x - w / 2, 2.0), width - 2 - w), y, size, text, fill, bold)


def address_space_svg(records: List[Record], width: int = 960) -> str:
    """A target's address space on a log2 axis, one row per policy: user space (the band, ending at the
    user top's line), Go 2012's hint (the dashed line), where each policy's 64 KiB probe landed (the
    triangle) and its arenas (the bars, in the policy's colour), and at the right its outcome.

    Layout, top to bottom: the user-top label, the rows, the axis with its ticks, the hint's label. The
    vertical lines end at the axis, so they never cross the tick labels under it."""
    import math

    rows = [r for r in records if r.probe and not r.probe.get("error")]
    if not rows:
        return ""
    facts = (rows[0].probe or {}).get("facts") or {}
    bits = 64 if facts.get("pointer_bits", 64) == 64 else 32
    lo_bit, hi_bit = 12, (57 if bits == 64 else 32)
    left, right = 100, width - 240  # policy names left of the axis, outcomes right of it
    row_h = 22
    top_pad = 28
    axis_y = top_pad + row_h * len(rows) + 4

    def x(addr: int) -> float:
        b = math.log2(max(addr, 1 << lo_bit))
        b = min(max(b, lo_bit), hi_bit)
        return left + (right - left) * (b - lo_bit) / (hi_bit - lo_bit)

    user_top = _addr(facts.get("user_top"))
    top = {"x": x(user_top), "label": _label(x(user_top), 13, "user top %s" % facts.get("user_top"), 11, width)
           } if user_top else None
    ticks = [{"x": x(1 << b), "label": _label(x(1 << b), axis_y + 14, "2^%d" % b, 9, width, fill="#757575")}
             for b in range(lo_bit, hi_bit + 1, 4 if bits == 64 else 2)]
    hint = None
    if bits == 64:
        hint = {"x": x(0xF8 << 32), "label": _label(x(0xF8 << 32), axis_y + 28, "hint 0xf8<<32", 10, width,
                                                    fill="#c62828")}
    limit = int((width - right - 16) / text_width("x", 11))  # the outcome's characters that fit at the right
    policies = []
    for i, r in enumerate(rows):
        p = r.probe or {}
        heap = p.get("heap") or {}
        spans: List[Tuple[int, int]] = []
        if _addr(heap.get("arena_start")) and _addr(heap.get("arena_end")):
            spans.append((_addr(heap["arena_start"]) or 0, _addr(heap["arena_end"]) or 0))
        for a, b2 in heap.get("arenas") or []:
            if _addr(a) and _addr(b2):
                spans.append((_addr(a) or 0, _addr(b2) or 0))
        probe = _addr((p.get("reservation") or {}).get("probe"))
        failed = r.status in _FAILED
        mark = "✗ " if failed else ("✓ " if r.status == Status.PASS else "")
        text = mark + (_outcome(r) if not failed or r.status in (Status.FAIL, Status.DISAGREE) else r.status.value)
        policies.append({
            "record": r, "y": top_pad + i * row_h, "color": _POLICY_COLOR.get(r.policy, "#555"), "failed": failed,
            "arenas": [{"x": x(a), "width": max(x(b2) - x(a), 3), "start": hex(a), "end": hex(b2)}
                       for a, b2 in spans[:8]],
            "probe": {"x": x(probe), "at": hex(probe)} if probe else None,
            "text": text if len(text) <= limit else text[: limit - 1] + "…"})
    return _picture("address_space", {"width": width, "height": axis_y + 36, "left": left, "right": right,
                                      "top_pad": top_pad, "axis_y": axis_y, "top": top, "ticks": ticks,
                                      "hint": hint, "rows": policies})


def runtime_sections(doc: RunDocument) -> Dict[str, Any]:
    """What runtimes.html.j2 shows: per model and runtime the comparisons (failures first), and the
    ``jvm`` probe's records (failures first)."""
    return {"comparisons": [(m, rt, _failures_first(cs)) for m, rt, cs in comparisons(doc)],
            "jvm": jvm_records(doc)}


def runtimes_html(doc: RunDocument) -> List[str]:
    """The HTML sections on real runtimes (the page puts them after the grid): the model beside real Go
    and the JVM, the same tables as :func:`markdown_runtimes` in the page's style (failures first, their
    rows marked, cells coloured by status), as lines; none when no runtime ran."""
    return _render("runtimes.html.j2", **runtime_sections(doc)).splitlines()


def html(doc: RunDocument, history: Optional["History"] = None) -> str:
    """One self-contained page (no network): what failed first, then the targets x policies grid (a
    cell coloured by its status, a chip for its outcome, its details), the sections on real runtimes,
    then per target a picture of its address space with a legend, and its console log's last lines.

    With a tracking file's ``history`` (``report --track``), each failure at the top says since when it
    fails (new in this run, or since which run and day), the new ones first."""
    from markupsafe import Markup

    policies, by_target = grid(doc)
    targets = []
    for target, cells in by_target.items():
        recs = [cells[p] for p in policies if p in cells]
        log = next((r.log for r in recs if r.log), None)
        targets.append({"name": target, "first": next(iter(cells.values())), "cells": [cells.get(p) for p in policies],
                        "bad": any(r.status in _FAILED for r in recs), "svg": Markup(address_space_svg(recs)),
                        "log": log, "tail": console_tail(log)})
    failures = [(r, history.since(r) if history else None) for r in doc.records if r.status in _FAILED]
    if history:
        failures.sort(key=lambda f: not (f[1] and f[1].new))  # the news first, each kind in the run's order
    return _render("run.html.j2", doc=doc, summary=summary_line(doc), policies=policies, targets=targets,
                   failures=failures, history=history, **runtime_sections(doc))


# -- bisect: a strip per probe over the searched range ----------------------------------------------

# Crash messages each get a colour of their own, in the order met (a window of one crash beside another
# must not look like one run); the other outcomes keep the run report's chip colours.
_CRASH_COLORS = ("#bcaaa4", "#ef9a9a", "#ce93d8", "#f48fb1", "#a1887f", "#b0bec5", "#ffab91")


def bisect_colors(doc: "BisectDocument") -> Dict[str, str]:
    """A colour per outcome label of the search (``crash: <message>`` labels one each)."""
    colors: Dict[str, str] = {}
    crashes = 0
    for points in doc.points.values():
        for p in points:
            if p.label in colors:
                continue
            if p.label in _OUTCOME_COLOR:
                colors[p.label] = _OUTCOME_COLOR[p.label]
            elif p.label in _STATUS_COLOR:  # no outcome: error, timeout, panic
                colors[p.label] = _STATUS_COLOR[p.label]
            elif p.outcome == "crash":
                colors[p.label] = _CRASH_COLORS[crashes % len(_CRASH_COLORS)]
                crashes += 1
            else:
                colors[p.label] = "#e0e0e0"
    return colors


def bisect_strip_svg(doc: "BisectDocument", probe: str, colors: Dict[str, str], width: int = 960,
                     window: Optional[Tuple[int, int]] = None) -> str:
    """One probe's search as a strip over the range, or over ``window`` (a part of it: the zoom), linear;
    for kernels a cell each, in the order given. Each run of one outcome is drawn in its colour, reaching
    to where the next begins when the boundary between them was narrowed to the resolution (a gap it
    was not narrowed over, in a stopped search, is left grey); each boundary is a numbered line (dashed
    when not narrowed), each measured point a tick under the strip, and the ends (or the kernels' names)
    are written under it. A run narrower than 3 px is drawn 3 px wide, so that a window a thousandth of
    the range wide still shows."""
    runs = doc.runs(probe)
    if not runs:
        return ""
    left, right = 12, width - 12
    top, strip_h = 34, 28
    axis_y = top + strip_h
    kernels = doc.knob == "kernel"
    lo, hi = window or (doc.lo, doc.hi)
    span = max(1, len(doc.kernels)) if kernels else max(1, hi - lo)

    def x(v: int) -> float:
        return left + (right - left) * ((v if kernels else v - lo) / span)

    cells = []
    for i, r in enumerate(runs):
        nxt = runs[i + 1] if i + 1 < len(runs) else None
        x0 = x(r.first.value)
        if kernels:
            x1 = x(r.last.value + 1)
        elif nxt is not None and nxt.first.value - r.last.value <= doc.resolution:
            x1 = x(nxt.first.value)
        else:
            x1 = x(r.last.value)
        if x1 < left or x0 > right:  # outside the window
            continue
        x0, x1 = max(x0, float(left)), min(x1, float(right))
        w = max(x1 - x0, 3.0)
        cells.append({"x": min(x0, right - w), "width": w, "color": colors.get(r.label, "#e0e0e0"), "label": r.label,
                      "first": doc.fmt(r.first.value), "last": doc.fmt(r.last.value), "count": r.count})
    ticks = [px for px in (x(p.value) + ((x(p.value + 1) - x(p.value)) / 2 if kernels else 0)
                           for p in doc.points.get(probe, [])) if left <= px <= right]
    bounds = []
    last_label = -100.0
    row = 0
    for n, b in enumerate(doc.boundaries(probe), 1):
        bx = x(b.first.value)
        if not left <= bx <= right:
            continue
        row = 1 - row if bx - last_label < 16 else 0  # two rows of numbers where boundaries crowd
        last_label = bx
        bounds.append({"n": n, "x": bx, "resolved": b.resolved, "last": doc.fmt(b.last.value),
                       "last_label": b.last.label, "first": doc.fmt(b.first.value), "first_label": b.first.label,
                       "label": _label(bx, 12 + 12 * row, str(n), 11, width, bold=True)})
    if kernels:
        labels = [_label((x(i) + x(i + 1)) / 2, axis_y + 20, name, 11, width, fill="#424242")
                  for i, name in enumerate(doc.kernels)]
    else:
        end = doc.fmt(hi)
        labels = [Label(left, axis_y + 20, 11, doc.fmt(lo), "#424242"),
                  Label(right - text_width(end, 11), axis_y + 20, 11, end, "#424242"),
                  _label((left + right) / 2, axis_y + 20, "%s (linear%s)" % (doc.knob, ", zoomed" if window else ""),
                         11, width, fill="#757575")]
    return _picture("strip", {"width": width, "height": axis_y + 40, "probe": probe, "knob": doc.knob, "left": left,
                              "right": right, "top": top, "strip_h": strip_h, "axis_y": axis_y, "runs": cells,
                              "ticks": ticks, "bounds": bounds, "labels": labels})


def bisect_zoom(doc: "BisectDocument", probe: str) -> Optional[Tuple[int, int]]:
    """Where a probe's boundaries crowd into under a tenth of the range: that part, with a margin of
    half its width on each side (the strip to draw zoomed), else None."""
    bounds = doc.boundaries(probe)
    if doc.knob == "kernel" or len(bounds) < 2:
        return None
    lo, hi = bounds[0].last.value, bounds[-1].first.value
    if (hi - lo) * 10 >= doc.hi - doc.lo:
        return None
    margin = max((hi - lo) // 2 // doc.resolution * doc.resolution, doc.resolution)  # on the values' grid
    return max(doc.lo, lo - margin), min(doc.hi, hi + margin)


def bisect_html(doc: "BisectDocument") -> str:
    """A boundary search as one self-contained page (no network): what was searched and how long it took,
    a banner when the search stopped early, the outcomes' colours, then per probe its strip
    (:func:`bisect_strip_svg`, and zoomed in where its boundaries crowd: :func:`bisect_zoom`), a table of
    its boundaries (the last value with one outcome, the first with the next) and every point measured."""
    from markupsafe import Markup

    colors = bisect_colors(doc)
    probes = []
    for probe, points in doc.points.items():
        zoom = bisect_zoom(doc, probe)
        probes.append({"name": probe, "points": points, "bounds": doc.boundaries(probe), "zoom": zoom,
                       "strip": Markup(bisect_strip_svg(doc, probe, colors)),
                       "zoom_strip": Markup(bisect_strip_svg(doc, probe, colors, window=zoom)) if zoom else None})
    return _render("bisect.html.j2", doc=doc, colors=colors, probes=probes)
