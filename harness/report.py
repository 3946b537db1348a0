"""Reports from a run document: the terminal table, JUnit XML and Markdown. They read records only."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from harness.files import write_atomically
from harness.model import MODELS, Record, Status, outcome_text, quote
from harness.results import RunDocument

if TYPE_CHECKING:  # the bisect page reads a search's document; importing it would load the runner
    from harness.bisect import BisectDocument

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


# The HTML sections' own marks: a badge for a result of a real runtime or a user's program (the grid's
# columns of the model and of the runtimes look alike otherwise), the agree column's colours.
_KIND_BADGE = {"go": ("real", "a real runtime, not the model"), "jvm": ("real", "a real runtime, not the model"),
               "program": ("program", "a user's program")}
_BADGE_STYLE = ("display:inline-block;border:1px solid #546e7a;color:#37474f;background:#fff;border-radius:3px;"
                "padding:0 4px;font-size:11px;line-height:14px")
_AGREE_CELL = {True: ("#e8f5e9", "#2e7d32", "✓ yes"), False: ("#f8bbd0", "#ad1457", "✗ no"),
               None: ("#f5f5f5", "#616161", "not compared")}


def kind_badge(r: Record) -> str:
    """A small badge naming what kind of probe gave ``r`` (``real`` for go and jvm) and a space, or "" for
    the model."""
    badge = _KIND_BADGE.get(r.kind or "")
    if badge is None:
        return ""
    return '<span class="kind" style="%s" title="%s">%s</span> ' % (_BADGE_STYLE, _esc(badge[1]), badge[0])


def _result_td(r: Optional[Record], text: Optional[str] = None) -> str:
    """A result in a runtime table: coloured by its status like the grid's cells, its outcome's chip and text."""
    if r is None:
        return '<td class="small">did not run</td>'
    chip = ('<i class="oc" style="background:%s"></i>' % _OUTCOME_COLOR[r.outcome]
            if r.outcome in _OUTCOME_COLOR else "")
    return ('<td class="rcell%s" style="background:%s"><span class="st" style="background:%s">%s</span> %s%s</td>'
            % (" failed" if r.status in _FAILED else "", _STATUS_BG[r.status.value], _STATUS_COLOR[r.status.value],
               r.status.value, chip, _esc(said(r) if text is None else text)))


def _target_th(target: str) -> str:
    return '<th><a href="#t-%s">%s</a></th>' % (_esc(target), _esc(target))


def runtimes_html(doc: RunDocument) -> List[str]:
    """The HTML sections on real runtimes, after the grid: the model beside real Go and the JVM, the
    same tables as :func:`markdown_runtimes` in the page's style (failures first, their rows marked,
    cells coloured by status). Every text from the results file is escaped."""
    out: List[str] = []
    for model, runtime, comps in comparisons(doc):
        name = _esc(runtime_name(runtime))
        bad = any(c.failed for c in comps)
        out.append('<h2 id="agreement-%s"%s>%sModel and real %s</h2>' % (_esc(runtime), ' class="bad"' if bad else "",
                                                                         "✗ " if bad else "", name))
        out.append('<p class="small">%s</p>' % _esc(agreement_summary(comps)))
        out.append('<table class="grid runtimes"><tr><th>target</th><th>%s</th><th>real %s</th><th>agree</th>'
                   "<th>%s's first arena</th><th>blocks grown<div class=\"small\">model / %s</div></th></tr>"
                   % (_esc(model), name, name, name))
        for c in _failures_first(comps):
            bg, fg, word = _AGREE_CELL[c.agree]
            why = '<div class="small">%s</div>' % _esc(c.reason()) if c.agree is None else ""
            arena = first_arena(c.runtime_record)
            out.append('<tr%s>%s%s%s<td style="background:%s;color:%s;font-weight:600">%s%s</td><td>%s</td>'
                       "<td>%s</td></tr>"
                       % (' class="bad"' if c.failed else "", _target_th(c.target), _result_td(c.model_record),
                          _result_td(c.runtime_record), bg, fg, word, why,
                          "<code>%s</code>" % _esc(arena) if arena else "-", _esc(_grown_pair(c))))
        out.append("</table>")
    jvm = jvm_records(doc)
    if jvm:
        bad = any(r.status in _FAILED for r in jvm)
        out.append('<h2 id="jvm"%s>%sJVM</h2>' % (' class="bad"' if bad else "", "✗ " if bad else ""))
        out.append('<p class="small">%s</p>' % _esc(jvm_summary(jvm)))
        out.append('<table class="grid runtimes"><tr><th>target</th><th>JVM outcome</th><th>heap range</th>'
                   "<th>compressed oops mode</th></tr>")
        for r in jvm:
            heap = heap_range(r)
            where = '<code>%s–%s</code> <span class="small">(%s)</span>' % tuple(map(_esc, heap)) if heap else "-"
            out.append('<tr%s>%s%s<td>%s</td><td>%s</td></tr>'
                       % (' class="bad"' if r.status in _FAILED else "", _target_th(r.target),
                          _result_td(r, jvm_said(r)), where, _esc(oops_mode(r) or "-")))
        out.append("</table>")
    return out


def write(text: str, path: Optional[Path]) -> None:
    """A report at ``path`` (nothing when None): atomically, mode 0644, parent directories created."""
    if path is not None:
        write_atomically(path, text)


# -- HTML ------------------------------------------------------------------------------------

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
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#212121}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}h2.bad{color:#b71c1c}
table.grid{border-collapse:collapse}table.grid td,table.grid th{border:1px solid #ccc;padding:6px 10px;
vertical-align:top}table.grid th{background:#f5f5f5;text-align:left}
table.grid tr.bad th{background:#ffcdd2;border-left:6px solid #c62828}
.cell{min-width:170px}.st{display:inline-block;color:#fff;border-radius:3px;padding:0 6px;font-size:12px;
font-weight:600}.cell.failed{outline:3px solid #c62828;outline-offset:-3px;font-weight:600}
.oc{display:inline-block;width:10px;height:10px;border:1px solid #0003;margin:0 4px 0 2px;vertical-align:baseline}
details{margin-top:4px}summary{cursor:pointer;color:#555;font-size:12px}
pre{font-size:11px;background:#fafafa;border:1px solid #eee;padding:6px;max-height:260px;overflow:auto;
white-space:pre-wrap}.legend{margin:6px 0}.legend span{display:inline-block;margin-right:14px;font-size:12px;
white-space:nowrap}
.small{color:#666;font-size:12px}
.banner{padding:10px 14px;border-radius:4px;margin:12px 0;max-width:1100px}
.banner.bad{background:#c62828;color:#fff}.banner.bad a{color:#fff}.banner.ok{background:#e8f5e9;color:#1b5e20;
border:1px solid #a5d6a7}.banner.warn{background:#fff3e0;color:#e65100;border:1px solid #ffcc80}
.banner h2{margin:0 0 6px 0;font-size:16px}.banner ul{margin:0;padding-left:20px}.banner li{margin:2px 0}
"""


def _esc(x: object) -> str:
    import html as _html

    return _html.escape("" if x is None else str(x))


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


def _label(x: float, y: float, text: str, size: int, width: int, fill: str = "#000", bold: bool = False) -> str:
    """A label centred on ``x``, moved left or right as little as needed to lie wholly inside the picture
    (a "user top" at the right edge of a 32-bit space was cut in half)."""
    w = text_width(text, size)
    x0 = min(max(x - w / 2, 2.0), width - 2 - w)
    return ('<text x="%.1f" y="%d" font-size="%d" fill="%s"%s>%s</text>'
            % (x0, y, size, fill, ' font-weight="bold"' if bold else "", _esc(text)))


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
    height = axis_y + 36

    def x(addr: int) -> float:
        b = math.log2(max(addr, 1 << lo_bit))
        b = min(max(b, lo_bit), hi_bit)
        return left + (right - left) * (b - lo_bit) / (hi_bit - lo_bit)

    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="%s" role="img" '
             'aria-label="address space">' % (width, height, SVG_FONT)]
    user_top = _addr(facts.get("user_top"))
    if user_top:
        ux = x(user_top)
        parts.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#e3f2fd"/>'
                     % (left, top_pad - 6, ux - left, axis_y - top_pad + 6))
        parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#000" stroke-width="2"/>'
                     % (ux, top_pad - 10, ux, axis_y))
        parts.append(_label(ux, 13, "user top %s" % facts.get("user_top"), 11, width))
    parts.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#9e9e9e"/>' % (left, axis_y, right, axis_y))
    for b in range(lo_bit, hi_bit + 1, 4 if bits == 64 else 2):
        tx = x(1 << b)
        parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#9e9e9e"/>' % (tx, axis_y, tx, axis_y + 4))
        parts.append(_label(tx, axis_y + 14, "2^%d" % b, 9, width, fill="#757575"))
    if bits == 64:
        hx = x(0xF8 << 32)
        parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#c62828" stroke-dasharray="4 3"/>'
                     % (hx, top_pad - 6, hx, axis_y))
        parts.append(_label(hx, axis_y + 28, "hint 0xf8<<32", 10, width, fill="#c62828"))
    for i, r in enumerate(rows):
        p = r.probe or {}
        y = top_pad + i * row_h
        color = _POLICY_COLOR.get(r.policy, "#555")
        parts.append('<text x="4" y="%d" font-size="11" fill="%s">%s</text>' % (y + 12, color, _esc(r.policy)))
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
        failed = r.status in _FAILED
        mark = "✗ " if failed else ("✓ " if r.status == Status.PASS else "")
        text = mark + (_outcome(r) if not failed or r.status in (Status.FAIL, Status.DISAGREE) else r.status.value)
        limit = int((width - right - 16) / text_width("x", 11))
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        parts.append('<text x="%d" y="%d" font-size="11" fill="%s"%s>%s<title>%s</title></text>'
                     % (right + 12, y + 12, "#c62828" if failed else "#424242", ' font-weight="bold"' if failed else "",
                        _esc(text), _esc("%s: %s" % (r.status.value, r.detail or _outcome(r)))))
    parts.append("</svg>")
    return "".join(parts)


def svg_legend() -> str:
    """What the pictures' marks mean, drawn with the same marks."""
    items = [
        '<rect x="0" y="3" width="22" height="12" fill="#e3f2fd"/><line x1="22" y1="0" x2="22" y2="18" '
        'stroke="#000" stroke-width="2"/>', "user address space, up to its top",
        '<line x1="11" y1="0" x2="11" y2="18" stroke="#c62828" stroke-dasharray="4 3"/>',
        "Go 2012's hint 0xf8<<32",
        '<path d="M11 15 l5 -8 h-10 z" fill="#212121"/>', "where the 64 KiB probe at the hint landed",
    ]
    items += ['<rect x="0" y="3" width="22" height="12" fill="%s" opacity="0.75"/>' % c for c in _POLICY_COLOR.values()]
    labels = items[:6] + [item for pair in zip(items[6:], ("arenas of %s" % p for p in _POLICY_COLOR)) for item in pair]
    out = []
    for mark, text in zip(labels[::2], labels[1::2]):
        out.append('<span><svg width="24" height="18" style="vertical-align:middle">%s</svg> %s</span>'
                   % (mark, _esc(text)))
    return '<p class="legend">%s<span>(log2 axis; ✓ / ✗ at the right: the outcome passed / failed)</span></p>' \
        % "".join(out)


def _banner(doc: RunDocument) -> str:
    """The first thing on the page: what failed (each result a link to its target), or that nothing did."""
    bad = [r for r in doc.records if r.status in _FAILED]
    if bad:
        items = "".join('<li><a href="#t-%s"><b>%s</b> / %s</a>: %s%s</li>'
                        % (_esc(r.target), _esc(r.target), _esc(r.policy), r.status.value,
                           " — %s" % _esc(r.detail) if r.detail else "") for r in bad)
        head = "%d of %d results failed" % (len(bad), len(doc.records))
        return '<div class="banner bad" id="failures"><h2>%s</h2><ul>%s</ul></div>' % (head, items)
    if not doc.records:
        return '<div class="banner warn"><h2>No results</h2></div>'
    return '<div class="banner ok"><h2>Nothing failed: %s</h2></div>' % _esc(summary_line(doc))


def html(doc: RunDocument) -> str:
    """One self-contained page (no network): what failed first, then the targets x policies grid (a
    cell coloured by its status, a chip for its outcome, its details), then per target a picture of its
    address space with a legend, and its console log's last lines."""
    policies, by_target = grid(doc)
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           "<title>arena-harness %s</title><style>%s</style></head><body>" % (_esc(doc.run_id), _CSS),
           "<h1>arena-harness run %s</h1>" % _esc(doc.run_id),
           '<p class="small">%s — %s · %s</p>' % (_esc(doc.started), _esc(doc.finished), _esc(summary_line(doc)))]
    if not doc.complete:
        out.append('<div class="banner warn"><h2>Incomplete run: %s</h2></div>'
                   % _esc(doc.interrupted or "stopped early"))
    out.append(_banner(doc))
    out.append('<p class="legend">status: ' + "".join(
        '<span><b class="st" style="background:%s">%s</b></span>' % (_STATUS_COLOR[s.value], s.value)
        for s in Status) + " &nbsp; outcome: " + "".join(
        '<span><i class="oc" style="background:%s"></i>%s</span>' % (c, o) for o, c in _OUTCOME_COLOR.items())
        + "</p>")
    out.append('<table class="grid"><tr><th>target</th><th>kernel</th>'
               + "".join("<th>%s</th>" % _esc(p) for p in policies) + "</tr>")
    for target, cells in by_target.items():
        any_r = next(iter(cells.values()))
        bad = any(r.status in _FAILED for r in cells.values())
        row = ['<tr%s><th><a href="#t-%s">%s</a><div class="small">%s</div></th><td class="small">%s<br>%s</td>'
               % (' class="bad"' if bad else "", _esc(target), _esc(target), _esc(any_r.backend),
                  _esc(any_r.kernel or "-"), _esc(any_r.machine or ""))]
        for p in policies:
            cell = cells.get(p)
            if cell is None:
                row.append("<td></td>")
                continue
            probe = cell.probe or {}
            detail = probe_lines(cell)
            trace = probe.get("trace") or []
            trace_txt = "\n".join("%-16s %-8s %s len=%s %s %s -> %s%s" % (
                e.get("fn"), e.get("call"), e.get("addr"), e.get("len"), e.get("prot", ""), e.get("flags", ""),
                e.get("result"), " x%d" % e["count"] if e.get("count") else "") for e in trace[:60])
            if len(trace) > 60:
                trace_txt += "\n… %d more calls" % (len(trace) - 60)
            chip = ('<i class="oc" style="background:%s"></i>' % _OUTCOME_COLOR[cell.outcome]
                    if cell.outcome in _OUTCOME_COLOR else "")
            chip = kind_badge(cell) + chip
            row.append('<td class="cell st-%s%s" style="background:%s"><span class="st" style="background:%s">%s</span>'
                       ' %s%s<details><summary>details</summary><pre>%s</pre><pre>%s</pre></details></td>'
                       % (cell.status.value, " failed" if cell.status in _FAILED else "",
                          _STATUS_BG[cell.status.value], _STATUS_COLOR[cell.status.value], cell.status.value, chip,
                          _esc(_outcome(cell)), _esc("\n".join(detail)), _esc(trace_txt)))
        out.append("".join(row) + "</tr>")
    out.append("</table>")
    out += runtimes_html(doc)
    out.append("<h2>Address spaces</h2>")
    out.append(svg_legend())
    for target, cells in by_target.items():
        recs = [cells[p] for p in policies if p in cells]
        bad = any(r.status in _FAILED for r in recs)
        out.append('<h2 id="t-%s"%s>%s%s</h2>' % (_esc(target), ' class="bad"' if bad else "",
                                                  "✗ " if bad else "", _esc(target)))
        svg = address_space_svg(recs)
        out.append(svg or '<p class="small">no result to draw</p>')
        log = next((r.log for r in recs if r.log), None)
        out.append("<details%s><summary>console log excerpt (%s)</summary><pre>%s</pre></details>"
                   % (" open" if bad else "", _esc(log), _esc(console_tail(log))))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# -- bisect: a strip per probe over the searched range ----------------------------------------------

# Crash messages each get a colour of their own, in the order met (a window of one crash beside another
# must not look like one run); the other outcomes keep the run report's chip colours.
_CRASH_COLORS = ("#bcaaa4", "#ef9a9a", "#ce93d8", "#f48fb1", "#a1887f", "#b0bec5", "#ffab91")
_BISECT_CSS = """
table.bounds{border-collapse:collapse;margin:6px 0 4px 0}table.bounds td,table.bounds th{border:1px solid #ddd;
padding:3px 8px;font-size:13px;text-align:left}table.bounds th{background:#f5f5f5}
td.v{font-family:DejaVu Sans Mono,Liberation Mono,monospace}
"""


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
    height = axis_y + 40
    kernels = doc.knob == "kernel"
    lo, hi = window or (doc.lo, doc.hi)
    span = max(1, len(doc.kernels)) if kernels else max(1, hi - lo)

    def x(v: int) -> float:
        return left + (right - left) * ((v if kernels else v - lo) / span)

    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="%s" role="img" '
             'aria-label="outcomes of %s over %s">' % (width, height, SVG_FONT, _esc(probe), _esc(doc.knob)),
             '<rect x="%d" y="%d" width="%d" height="%d" fill="#f5f5f5" stroke="#bdbdbd"/>'
             % (left, top, right - left, strip_h)]
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
        x0 = min(x0, right - w)
        parts.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s: %s .. %s (%d points)'
                     '</title></rect>' % (x0, top, w, strip_h, colors.get(r.label, "#e0e0e0"), _esc(r.label),
                                          _esc(doc.fmt(r.first.value)), _esc(doc.fmt(r.last.value)), r.count))
    for p in doc.points.get(probe, []):
        px = x(p.value) + ((x(p.value + 1) - x(p.value)) / 2 if kernels else 0)
        if left <= px <= right:
            parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#616161" opacity="0.6"/>'
                         % (px, axis_y + 1, px, axis_y + 5))
    last_label = -100.0
    row = 0
    for n, b in enumerate(doc.boundaries(probe), 1):
        bx = x(b.first.value)
        if not left <= bx <= right:
            continue
        parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#212121" stroke-width="2"%s>'
                     '<title>boundary %d: last %s %s, first %s %s</title></line>'
                     % (bx, top - 4, bx, axis_y + 6, "" if b.resolved else ' stroke-dasharray="3 2"', n,
                        _esc(doc.fmt(b.last.value)), _esc(b.last.label), _esc(doc.fmt(b.first.value)),
                        _esc(b.first.label)))
        row = 1 - row if bx - last_label < 16 else 0  # two rows of numbers where boundaries crowd
        last_label = bx
        parts.append(_label(bx, 12 + 12 * row, str(n), 11, width, bold=True))
    if kernels:
        for i, name in enumerate(doc.kernels):
            parts.append(_label((x(i) + x(i + 1)) / 2, axis_y + 20, name, 11, width, fill="#424242"))
    else:
        parts.append('<text x="%d" y="%d" font-size="11" fill="#424242">%s</text>' % (left, axis_y + 20,
                                                                                    _esc(doc.fmt(lo))))
        end = doc.fmt(hi)
        parts.append('<text x="%.1f" y="%d" font-size="11" fill="#424242">%s</text>'
                     % (right - text_width(end, 11), axis_y + 20, _esc(end)))
        mid = "%s (linear%s)" % (doc.knob, ", zoomed" if window else "")
        parts.append(_label((left + right) / 2, axis_y + 20, mid, 11, width, fill="#757575"))
    parts.append("</svg>")
    return "".join(parts)


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
    (:func:`bisect_strip_svg`), a table of its boundaries (the last value with one outcome, the first
    with the next) and every point measured. Guests' text (crash messages, details) is escaped."""
    colors = bisect_colors(doc)
    what = ("kernels %s" % ", ".join(doc.kernels) if doc.knob == "kernel" else
            "%s from %s to %s, resolution %s" % (doc.knob, doc.fmt(doc.lo), doc.fmt(doc.hi), doc.fmt_resolution()))
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           "<title>arena-harness bisect %s</title><style>%s%s</style></head><body>"
           % (_esc(doc.target), _CSS, _BISECT_CSS),
           "<h1>Boundary search: %s (%s)</h1>" % (_esc(doc.target), _esc(doc.backend)),
           '<p class="small">%s · %s — %s · %d points measured in %d runs, %d from the cache, %.1fs</p>'
           % (_esc(what), _esc(doc.started), _esc(doc.finished), doc.measured, doc.measurements, doc.cached,
              doc.seconds)]
    if not doc.complete:
        out.append('<div class="banner warn"><h2>Incomplete search: %s</h2>What was found before it stopped is '
                   'shown; a dashed boundary was not narrowed to the resolution.</div>' % _esc(doc.stopped))
    for note in doc.notes:
        out.append('<p class="small">note: %s</p>' % _esc(note))
    out.append('<p class="legend">outcome: ' + "".join(
        '<span><i class="oc" style="background:%s"></i>%s</span>' % (c, _esc(label)) for label, c in colors.items())
        + "<span>(a numbered line: a boundary; a tick under the strip: a value measured)</span></p>")
    for probe, points in doc.points.items():
        bounds = doc.boundaries(probe)
        out.append("<h2>%s: %s</h2>" % (_esc(probe), "no change of outcome" if not bounds else "%d boundar%s" % (
            len(bounds), "y" if len(bounds) == 1 else "ies")))
        out.append(bisect_strip_svg(doc, probe, colors) or '<p class="small">nothing measured</p>')
        zoom = bisect_zoom(doc, probe)
        if zoom is not None:
            out.append('<p class="small">its boundaries, zoomed: %s to %s</p>' % (_esc(doc.fmt(zoom[0])),
                                                                                  _esc(doc.fmt(zoom[1]))))
            out.append(bisect_strip_svg(doc, probe, colors, window=zoom))

        def chip(label: str) -> str:
            return '<i class="oc" style="background:%s"></i>%s' % (colors.get(label, "#e0e0e0"), _esc(label))

        if bounds:
            out.append('<table class="bounds"><tr><th>#</th><th>last value</th><th>with</th><th>first value</th>'
                       "<th>with</th></tr>")
            for n, b in enumerate(bounds, 1):
                out.append('<tr><td>%d</td><td class="v">%s</td><td>%s</td><td class="v">%s</td><td>%s</td></tr>'
                           % (n, _esc(doc.fmt(b.last.value)), chip(b.last.label), _esc(doc.fmt(b.first.value)),
                              chip(b.first.label)))
            out.append("</table>")
        rows = "".join('<tr><td class="v">%s</td><td>%s</td><td>%s</td><td>%s</td></tr>'
                       % (_esc(doc.fmt(p.value)), chip(p.label), "cached" if p.cached else "%.1fs" % p.seconds,
                          _esc(p.detail or "")) for p in points)
        out.append('<details><summary>%d points measured</summary><table class="bounds"><tr><th>value</th>'
                   "<th>outcome</th><th>time</th><th>detail</th></tr>%s</table></details>" % (len(points), rows))
    out.append("</body></html>")
    return "\n".join(out) + "\n"
