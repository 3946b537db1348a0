"""The allocator's JSON document (schema 1): the shape of the parts the harness reads, checked.

A document comes from a guest, or from a results file a user hands us: either
may be anything. ``check_document`` says what is wrong with one, so that
classify, the reports and diff only ever read values of the types they expect.
Pure: imports nothing of the harness.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional

# The parts of an allocator document the harness reads (classify, reports, diff), and their JSON types.
# A document comes from a guest, or from a results file a user hands us: either may be anything, and
# what is read must have the shape the readers expect (other keys are free, for newer allocators).
_ADDR = "address"  # "0x..." or null
_OPT_STR, _OPT_BOOL, _OPT_INT, _OPT_LIST = "string", "boolean", "integer", "list"
_SHAPE: Dict[str, Any] = {
    "policy": "policy",
    "error": _OPT_STR,
    "outcome": _OPT_STR,
    "crash": _OPT_STR,
    "messages": _OPT_LIST,
    "trace": "trace",
    "facts": {"user_top": _ADDR, "pointer_bits": _OPT_INT, "kernel": _OPT_STR, "machine": _OPT_STR},
    "reservation": {"hint": _ADDR, "probe": _ADDR, "high_ok": _OPT_BOOL},
    "fallback": {"engaged": _OPT_BOOL, "want": _ADDR, "arena": "addresses", "bitmap": "addresses"},
    "heap": {"arena_start": _ADDR, "arena_end": _ADDR, "arenas": "address pairs"},
}
_ADDR_RE = re.compile(r"0x[0-9a-fA-F]{1,32}")  # up to 128 bits


def _fits(value: Any, kind: str) -> bool:
    if value is None:
        return kind != "policy"
    if kind == "policy" or kind == _OPT_STR:
        return isinstance(value, str)
    if kind == _OPT_BOOL:
        return isinstance(value, bool)
    if kind == _OPT_INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _OPT_LIST:
        return isinstance(value, list)
    if kind == "trace":
        return isinstance(value, list) and all(isinstance(e, dict) for e in value)
    if kind == _ADDR:
        return isinstance(value, str) and _ADDR_RE.fullmatch(value) is not None
    if kind == "addresses":
        return isinstance(value, list) and all(_fits(v, _ADDR) and v is not None for v in value)
    if kind == "address pairs":
        return isinstance(value, list) and all(isinstance(v, list) and len(v) == 2 and _fits(v, "addresses")
                                               for v in value)
    raise ValueError("no check for %r" % kind)  # a new _SHAPE entry needs one: a bug, not input


def check_document(d: Any) -> Optional[str]:
    """What is wrong with an allocator document's shape (``"reservation.probe: expected an address"``),
    or None if the harness can read it."""
    if not isinstance(d, dict) or d.get("schema") != 1:
        return "not an allocator document of schema 1"
    for key, kind in _SHAPE.items():
        value = d.get(key)
        if isinstance(kind, dict):
            if value is None:
                continue
            if not isinstance(value, dict):
                return "%s: expected a mapping" % key
            for sub, subkind in kind.items():
                if not _fits(value.get(sub), subkind):
                    return "%s.%s: expected %s" % (key, sub, _ARTICLE.get(subkind, "a " + subkind))
        elif not _fits(value, kind):
            return "%s: expected %s" % (key, _ARTICLE.get(kind, "a " + kind))
    return None


_ARTICLE = {_ADDR: "an address (0x...) or null", "policy": "a string", "addresses": "a list of addresses",
            "address pairs": "a list of address pairs", "trace": "a list of mappings", _OPT_INT: "an integer",
            _OPT_STR: "a string or null", _OPT_BOOL: "true, false or null", _OPT_LIST: "a list or null"}


