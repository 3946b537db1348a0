"""Reading a guest's console: result frames, the harness's markers, and kernel panics."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, Iterable, List, Optional, Tuple

from allocator.probe import FRAME_BEGIN, FRAME_END
from harness.document import check_document

BOOTED = "@@ARENA-HARNESS-BOOTED@@"
DONE = "@@ARENA-HARNESS-DONE@@"

# Oops patterns in the spirit of syzkaller's: what a console says when the kernel died.
PANIC_RE = re.compile(
    r"Kernel panic - not syncing|kernel BUG at|BUG: (?:unable|kernel|soft lockup|scheduling)|"
    r"Unable to handle kernel|general protection fault|Oops(?::| -)"
)


AGENT_LINE = '{"agent":'  # a frame's JSON line: the guest agent's, carrying programs' output
STREAM = "@@ARENA-HARNESS-STREAM@@"  # guest.agent.STREAM: a program's output, base64
STEP = "@@ARENA-HARNESS-STEP@@"  # guest.agent.STEP: a step begins


def is_agent_line(line: str) -> bool:
    """Whether ``line`` is one of the guest agent's that carry a program's output (a frame's JSON line, a
    stream line): nothing in it is a marker or the kernel's, whatever the program printed."""
    text = line.lstrip()
    return text.startswith(AGENT_LINE) or text.startswith(STREAM)


def find_panic(line: str) -> Optional[str]:
    """The kernel's words if ``line`` says the kernel died, else None. Lines of the guest agent's (a
    frame, a stream line) carry programs' output, not the kernel's: a JVM printing
    "UseCompressedOops: Enabled" is no oops."""
    if is_agent_line(line):
        return None
    m = PANIC_RE.search(line)
    if not m:
        return None
    return line[m.start():].strip()


def extract_frames(lines: Iterable[str]) -> Tuple[List[str], Optional[str]]:
    """The texts between frame markers, and a complaint if a frame was left open (truncated)."""
    frames: List[str] = []
    current: Optional[List[str]] = None
    for line in lines:
        if is_agent_line(line):  # a frame's body: its text may hold anything, markers too
            if current is not None:
                current.append(line.strip())
            continue
        if FRAME_BEGIN in line:
            current = []
            tail = line.split(FRAME_BEGIN, 1)[1].strip()
            if tail:
                current.append(tail)
            continue
        if FRAME_END in line and current is not None:
            head = line.split(FRAME_END, 1)[0].strip()
            if head:
                current.append(head)
            frames.append("".join(current))
            current = None
            continue
        if current is not None:
            current.append(line.strip())
    problem = "result frame began but never ended (output truncated)" if current is not None else None
    return frames, problem


def parse_documents(text: str) -> Tuple[Dict[str, Dict[str, Any]], Optional[str]]:
    """Allocator output (one document or an array) -> {policy: document}, or a complaint."""
    try:
        payload = json.loads(text)
    except ValueError as e:
        return {}, "result is not valid JSON (%s; %d bytes)" % (e, len(text))
    except RecursionError:
        return {}, "result is not valid JSON (nested too deeply; %d bytes)" % len(text)
    docs = payload if isinstance(payload, list) else [payload]
    out: Dict[str, Dict[str, Any]] = {}
    for d in docs:
        if not isinstance(d, dict) or "policy" not in d or d.get("schema") != 1:
            return {}, "result is not an allocator document of schema 1"
        problem = check_document(d)
        if problem:
            return {}, "result is not a usable allocator document: %s" % problem
        out[d["policy"]] = d
    return out, None
