"""Run policies against an address space and build the result documents (schema 1).

Several policies run each in a forked child, so one policy's mappings never
disturb the next; a child that dies (a signal, an internal error) becomes a
document with ``outcome: null`` and an ``error``, never a lost result.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import traceback
from typing import Any, Callable, Dict, List, Optional

from allocator import SCHEMA, __version__
from allocator.go2012 import Go2012
from allocator.gomodern import GoModern
from allocator.runtime import DEFAULT_GROW, DEFAULT_TOUCH_EVERY, Runtime, parse_grow
from allocator.space import AddressSpace

POLICIES: Dict[str, Callable[[AddressSpace, str], Runtime]] = {
    "go-2012-pre": lambda space, machine: Go2012(space, fixed=False),
    "go-2012": lambda space, machine: Go2012(space, fixed=True),
    "go-modern": lambda space, machine: GoModern(space, machine=machine),
}
OUTCOMES = ("high-arena", "fallback-32bit", "native-32bit", "os-chosen", "crash")

FRAME_BEGIN = "@@ARENA-HARNESS-RESULT-BEGIN@@"
FRAME_END = "@@ARENA-HARNESS-RESULT-END@@"


def expand_policies(names: List[str]) -> List[str]:
    out: List[str] = []
    for item in names:
        for name in item.split(","):
            name = name.strip()
            if not name:
                continue
            if name == "all":
                out.extend(p for p in POLICIES if p not in out)
            elif name not in POLICIES:
                raise ValueError("unknown policy %r; known: %s, all" % (name, ", ".join(POLICIES)))
            elif name not in out:
                out.append(name)
    return out


def make_space(simulate: Optional[str], rlimit_as: Optional[int] = None) -> AddressSpace:
    """The simulated kernel for a spec, else this process's space (``rlimit_as``: see ``real.RealSpace``)."""
    if simulate is not None:
        from allocator.simulated import SimKernel

        return SimKernel.from_spec(simulate)
    from allocator.real import RealSpace

    return RealSpace(rlimit_as=rlimit_as)


def run_policy(
    policy: str,
    simulate: Optional[str] = None,
    grow: str = DEFAULT_GROW,
    touch_every: int = DEFAULT_TOUCH_EVERY,
    trace: bool = True,
    rlimit_as: Optional[int] = None,
) -> Dict[str, Any]:
    """One policy, in this process: the full result document.

    ``rlimit_as`` (real runs, already set on this process by the caller): the limit the modelled Go
    process runs under; the space moves the soft limit by the interpreter's own share before each
    mmap and reports the shift in ``facts.rlimit_as_shift``.
    """
    plan = parse_grow(grow)
    space = make_space(simulate, rlimit_as)
    facts = space.facts()
    runtime = POLICIES[policy](space, str(facts.get("machine", "")))
    try:
        result = runtime.run(plan, touch_every)
    finally:
        space.close()
    facts["rlimit_as_shift"] = space.rlimit_shift()
    doc: Dict[str, Any] = {
        "schema": SCHEMA,
        "allocator_version": __version__,
        "policy": policy,
        "facts": facts,
        "params": {"grow": grow, "touch_every": touch_every, "simulate": simulate},
    }
    result.pop("policy")
    doc.update(result)
    if not trace:
        doc["trace"] = None
    doc["error"] = None
    return doc


def error_document(policy: str, message: str) -> Dict[str, Any]:
    return {
        "schema": SCHEMA,
        "allocator_version": __version__,
        "policy": policy,
        "facts": None,
        "outcome": None,
        "crash": None,
        "error": message,
    }


def run_isolated(policy: str, **kw: Any) -> Dict[str, Any]:
    """Run one policy in a forked child and bring its document back through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            try:
                data = json.dumps(run_policy(policy, **kw))
            except BaseException as e:  # noqa: BLE001 - everything must become a document
                code = 70
                data = json.dumps(error_document(policy, internal_error(e)))
            with os.fdopen(w, "w") as f:
                f.write(data)
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return error_document(policy, "policy process killed by %s" % name)
    try:
        doc: Dict[str, Any] = json.loads(data)
        return doc
    except ValueError:
        return error_document(policy, "policy process exited %d without a document" % os.WEXITSTATUS(status))


def internal_error(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = "%s:%s" % (os.path.basename(tb[-1].filename), tb[-1].lineno) if tb else "?"
    return "internal error: %s: %s (at %s)" % (type(e).__name__, e, where)


def set_rlimit_as(limit: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY and limit > hard:
        limit = hard
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _size(n: int) -> str:
    return "%.1f MiB" % (n / (1 << 20)) if n >= 1 << 20 else "%d KiB" % (n >> 10)


def summary(doc: Dict[str, Any]) -> str:
    """A short human summary of one document."""
    if doc.get("error"):
        return "%s: error: %s" % (doc["policy"], doc["error"])
    f = doc["facts"]
    lines = [
        "%s on %s %s (%d-bit, page %d, user top %s%s)"
        % (
            doc["policy"],
            f["kernel"],
            f["machine"],
            f["pointer_bits"],
            f["page_size"],
            f["user_top"],
            ", RLIMIT_AS %d" % f["rlimit_as"] if f.get("rlimit_as") else "",
        )
    ]
    res = doc.get("reservation")
    if res:
        if doc["policy"] == "go-2012-pre":
            lines.append("  reservation: hint %s taken unchecked (no probe before the fix)" % res["hint"])
        else:
            landed = res.get("probe") or res.get("probe_error") or "-"
            verdict = "high ok" if res["high_ok"] else "refused"
            lines.append("  reservation: hint %s, probe %s -> %s" % (res["hint"], landed, verdict))
    else:
        lines.append("  reservation: not attempted (%d-bit)" % f["pointer_bits"])
    meta = (doc.get("heap") or {}).get("metadata")
    if meta:
        lines.append("  runtime: reserved %s of page summaries, %s of scavenge index, %s of arena metadata; "
                     "%d heap arenas of %d bytes of metadata"
                     % (_size(meta["summary_reserved"]), _size(meta["scavenge_index_reserved"]),
                        _size(meta["arena_meta_reserved"]), meta["heap_arenas"], meta["heap_arena_bytes"]))
    fb = doc.get("fallback") or {}
    if fb.get("engaged"):
        lines.append("  fallback: engaged, want %s, arena %s" % (fb["want"], "-".join(fb["arena"] or ["?"])))
    growth = doc.get("growth") or []
    ok = sum(1 for g in growth if g.get("ok"))
    lines.append("  growth: %d/%d steps ok" % (ok, len(growth)))
    for g in growth:
        if not g.get("ok"):
            lines.append("    step %d %s %d: %s" % (g["step"], g["kind"], g["size"], g.get("error")))
    for m in doc.get("messages") or []:
        lines.append("  go: %s" % m)
    out = doc["outcome"]
    lines.append("  outcome: %s%s" % (out, ": " + doc["crash"] if doc.get("crash") else ""))
    return "\n".join(lines)
