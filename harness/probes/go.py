"""The ``go`` probe: a real Go 1.19 runtime (``probes/go/``) grows its heap by the model's plan; this turns
what it printed into a result document of the allocator's shape (schema 1, policy ``go``).

The program (built per architecture by ``images.recipes.GoProbe``) prints on stdout one JSON line per block
grown, ``{"grew": i, "addr": "0x...", "kind": K, "size": N, "arena": ["0x...", "0x..."]}``, then its
document as the last line. When the runtime dies it prints no document: Go's ``throw`` writes ``fatal
error: MESSAGE`` to stderr (after ``runtime: ...`` lines such as ``runtime: out of memory: cannot allocate
N-byte block (M in use)``) and exits 2. :func:`document` then builds the crash document the model would
give: outcome ``crash``, ``crash`` the message word for word, ``messages`` those lines and ``throw: MESSAGE``
as the model spells them, heap and growth from the block lines seen, and the step that died (its kind and
size read from the traceback's ``main.growStep``/``main.sysallocStep`` frame; none when Go died before
main). A crash document has no ``facts``: the program prints them only in its final document. Anything
else (a signal, a Go panic, a bad flag, a timeout, no output) is outcome null with an ``error`` saying what
happened.

Everything here reads a guest's output, so nothing it prints can make :func:`document` raise, grow without
bound, or pass a document of the wrong shape to the harness.
"""

from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from allocator.probe import OUTCOMES
from allocator.runtime import GROW_KINDS, MAX_GROW_BYTES, MAX_GROW_STEPS
from harness.document import check_document

POLICY = "go"
BINARY = "goprobe"
"""The program's file name in its image-cache entry (``images.recipes.GoProbe``)."""

MAX_TEXT = 16 << 20  # of each stream read: a guest may print anything, the real program prints < 2 MiB
MAX_LINE = 4 << 20  # a line parsed as JSON: the document of a 10000-step plan is about 1 MiB
MAX_MESSAGES = 20
MAX_MESSAGE = 500  # characters kept of one message line
_ADDR = re.compile(r"0x[0-9a-fA-F]{1,32}")
_FATAL = "fatal error: "
# A frame of the program's growth step in Go's traceback: "main.growStep(0x4000000, 0x100000)" (its size in
# hex; Go marks an argument it may have wrong with "?"). sysallocStep calls growStep: its frame comes after.
_STEP_FRAME = re.compile(r"main\.(grow|sysalloc)Step\((?:(0x[0-9a-f]{1,16})(?=[,)]))?")


def _source() -> Path:
    """``probes/go``: shipped inside the package as ``harness/probes/go_source`` by a wheel (pyproject's
    package-dir), or, from a checkout or an editable install, at the top of the repository."""
    shipped = resources.files("harness.probes").joinpath("go_source")
    if isinstance(shipped, Path) and (shipped / "main.go").is_file():
        return shipped
    return Path(__file__).resolve().parent.parent.parent / "probes" / "go"


SOURCE: Path = _source()
"""The Go program's source directory (``main.go``, ``go.mod``)."""


def argv(exe: str, grow: str, touch_every: int) -> List[str]:
    """The command line for the program at ``exe`` (a path in the target): the model's growth plan and
    touch stride. A stride of zero or less touches nothing, as in the model."""
    return [exe, "-grow=" + grow, "-touch-every=%d" % max(touch_every, 0)]


def _lines(text: str) -> List[str]:
    return text[:MAX_TEXT].splitlines()


def _json(line: str) -> Any:
    if not line.startswith("{") or len(line) > MAX_LINE:
        return None
    try:
        return json.loads(line)
    except (ValueError, RecursionError):  # not JSON, too deep, or an integer of too many digits
        return None


def _int(v: Any, lo: int, hi: int) -> Optional[int]:
    return v if isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi else None


def _addr(v: Any) -> Optional[str]:
    return v if isinstance(v, str) and _ADDR.fullmatch(v) else None


def _progress(obj: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """A block line, checked field by field (None if it is not one the program could have printed)."""
    step, addr = _int(obj.get("grew"), 1, MAX_GROW_STEPS), _addr(obj.get("addr"))
    if step is None or addr is None:
        return None
    kind = obj.get("kind") if obj.get("kind") in GROW_KINDS else None
    arena = obj.get("arena")
    pair = None
    if isinstance(arena, list) and len(arena) == 2 and _addr(arena[0]) and _addr(arena[1]):
        pair = (int(arena[0], 16), int(arena[1], 16))
    return {"step": step, "kind": kind, "size": _int(obj.get("size"), 1, MAX_GROW_BYTES), "addr": addr,
            "ok": True, "arena": pair}


def _heap(progress: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The arenas the grown blocks lie in, joined where they touch; the heap starts at the first block's
    arena (where the runtime's first arena is, unless the heap was not contiguous from the start)."""
    spans: List[Tuple[int, int]] = []
    for lo, hi in sorted(p["arena"] for p in progress if p["arena"] and p["arena"][0] < p["arena"][1]):
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], hi))
        else:
            spans.append((lo, hi))
    start = end = None
    first = next((p["arena"] for p in progress if p["arena"]), None)
    if first is not None:
        start = first[0]
        end = next((hi for lo, hi in spans if lo <= start < hi), None)
    return {"arena_start": None if start is None else hex(start), "arena_end": None if end is None else hex(end),
            "arenas": [[hex(lo), hex(hi)] for lo, hi in spans]}


def _died(returncode: Optional[int], timed_out: bool) -> str:
    if timed_out:
        return "timed out"
    if returncode is None:
        return "ended with no exit status"
    if returncode < 0:
        try:
            return "was killed by %s" % signal.Signals(-returncode).name
        except ValueError:
            return "was killed by signal %d" % -returncode
    return "exited %d" % returncode


def _last_words(lines: List[str]) -> str:
    said = [ln.strip()[:200] for ln in lines if ln.strip() and _json(ln.strip()) is None][-3:]
    return ": " + " | ".join(said) if said else ""


@dataclass
class _Fatal:
    """Go's ``fatal error: MESSAGE``, the ``runtime: ...`` lines printed before it, and the growth step the
    traceback after it shows the crash in (``in_step`` False: it died elsewhere, before main say)."""

    crash: str
    said: List[str]
    in_step: bool = False
    kind: Optional[str] = None
    size: Optional[int] = None


def _fatal(lines: List[str]) -> Optional[_Fatal]:
    at = next((i for i, ln in enumerate(lines) if ln.startswith(_FATAL)), None)
    if at is None:
        return None
    f = _Fatal(lines[at][len(_FATAL):].strip()[:MAX_MESSAGE],
               [ln.strip()[:MAX_MESSAGE] for ln in lines[:at] if ln.startswith("runtime: ")][-MAX_MESSAGES:])
    for ln in lines[at + 1:]:
        m = _STEP_FRAME.match(ln)
        if m is None:
            continue
        if not f.in_step:  # the innermost frame: growStep, whose size argument is the block's
            f.in_step = True
            f.size = _int(int(m.group(2), 16), 1, MAX_GROW_BYTES) if m.group(2) else None
        f.kind = "sysalloc" if m.group(1) == "sysalloc" or f.kind == "sysalloc" else "grow"
    return f


def _base(outcome: Optional[str], crash: Optional[str], error: Optional[str], messages: List[str],
          progress: List[Dict[str, Any]]) -> Dict[str, Any]:
    growth = [{k: v for k, v in p.items() if k != "arena"} for p in progress]
    return {"schema": 1, "policy": POLICY, "outcome": outcome, "crash": crash, "error": error,
            "messages": messages, "reservation": None, "facts": None, "heap": _heap(progress),
            "growth": growth, "grows": len(progress)}


def document(stdout: str, stderr: str, returncode: Optional[int], timed_out: bool = False) -> Dict[str, Any]:
    """The result document of one run of the program, from its stdout, stderr and exit status.

    - Its final document, when it printed one and that has the right shape; outcome ``crash`` if the
      runtime then threw for want of memory (exit 2, ``fatal error: ...memory...``: it died of it after
      its plan), an error if the program otherwise exited non-zero (another throw is a bug of the
      probe's, like ``all goroutines are asleep``) or timed out: it should not have.
    - Else, when the Go runtime threw (``fatal error: ...`` on stderr, or on stdout when the two were
      merged): outcome ``crash``, the message word for word, growth from the block lines, and a
      failed step after them when the traceback shows the crash inside a growth step (a crash
      before ``main``, like Go's under a tight RLIMIT_AS, has none, as in the model).
    - Else outcome null and an ``error``: how it ended and its last lines on stderr.
    """
    out, err = _lines(stdout), _lines(stderr)
    progress: List[Dict[str, Any]] = []
    final: Any = None
    for ln in out:
        obj = _json(ln.strip())
        if not isinstance(obj, dict):
            continue
        if "grew" in obj:
            p = _progress(obj)
            if p is not None and len(progress) < MAX_GROW_STEPS:
                progress.append(p)
        elif "schema" in obj:
            final = obj
    if final is not None:
        problem = check_document(final)
        if problem is None and final.get("policy") != POLICY:
            problem = "policy: expected %r" % POLICY
        if problem is None and final.get("outcome") not in OUTCOMES:
            problem = "outcome: expected one of %s" % ", ".join(OUTCOMES)
        if problem is not None:
            return _base(None, None, "the go probe printed a malformed document (%s)" % problem, [], progress)
        thrown = (_fatal(err) or _fatal(out)) if returncode == 2 and not timed_out else None
        if thrown is not None and "memory" in thrown.crash:
            # The runtime threw after the plan completed (near an RLIMIT_AS boundary, the background GC's
            # persistentalloc: "runtime: cannot allocate memory"): the process died of it all the same.
            final.update(outcome="crash", crash=thrown.crash, messages=list(final.get("messages") or []) +
                         thrown.said + ["throw: %s (after the plan completed)" % thrown.crash])
        elif timed_out or (returncode is not None and returncode != 0):
            final["error"] = "the go probe printed its document, then %s%s" % (_died(returncode, timed_out),
                                                                             _last_words(err))
        doc: Dict[str, Any] = final
        return doc
    fatal = _fatal(err) or _fatal(out)
    if fatal is not None:
        doc = _base("crash", fatal.crash, None, fatal.said + ["throw: " + fatal.crash], progress)
        if fatal.in_step:
            last = max((p["step"] for p in progress), default=0)
            doc["growth"].append({"step": last + 1, "kind": fatal.kind, "size": fatal.size, "addr": None,
                                  "ok": False, "error": fatal.crash})
        return doc
    what = "the go probe %s after %d blocks without a document%s" % (
        _died(returncode, timed_out), len(progress), _last_words(err or out))
    return _base(None, None, what, [], progress)
