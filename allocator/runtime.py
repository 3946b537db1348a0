"""What every modelled Go runtime shares: throw, printf, growth steps and the result document."""

from __future__ import annotations

import re
import time
from typing import Any, Dict, List, NoReturn, Optional, Tuple

from allocator.space import AddressSpace, hexa

MiB = 1 << 20
DEFAULT_GROW = "64M*8,sysalloc:64M"
DEFAULT_TOUCH_EVERY = MiB

GROW_KINDS = ("grow", "sysalloc")
_STEP = re.compile(r"(?:(?P<kind>[a-z]+):)?(?P<size>[0-9.]{1,20}[kKmMgG]?(?:i?[bB])?)(?:\*(?P<count>[0-9]{1,12}))?")
# A plan is a list of steps held in memory and traced one by one: bounded before it is expanded,
# so "64M*300000000" is an error, not gigabytes of tuples.
MAX_GROW_STEPS = 10000
MAX_GROW_BYTES = 1 << 50  # 1 PiB: far beyond any guest's memory; a bigger heap shows nothing new


class Throw(Exception):
    """Go's runtime·throw: the model stops here, with Go's exact message."""


class PlanError(ValueError):
    pass


def parse_grow(plan: str) -> List[Tuple[str, int]]:
    """``64M*8,sysalloc:64M`` -> [("grow", 64 MiB) x 8, ("sysalloc", 64 MiB)].

    ``grow:SIZE`` is a heap allocation of SIZE bytes (MHeap_Grow; failure is
    Go's "out of memory" throw). ``sysalloc:SIZE`` calls MHeap_SysAlloc (or
    Go 1.11+'s sysAlloc) directly and records what it returns, nil included:
    it shows whether memory past the reservation is usable without dying.
    """
    from allocator.simulated import parse_size

    steps: List[Tuple[str, int]] = []
    total = 0
    for item in (s.strip() for s in plan.split(",")):
        if not item:
            continue
        shown = item if len(item) <= 40 else item[:37] + "..."
        m = _STEP.fullmatch(item)
        if not m:
            raise PlanError("bad growth step %r: expected [grow:|sysalloc:]SIZE[*COUNT], e.g. 64M*8" % shown)
        kind = m.group("kind") or "grow"
        if kind not in GROW_KINDS:
            raise PlanError("bad growth step %r: kind must be one of %s" % (shown, ", ".join(GROW_KINDS)))
        size = parse_size(m.group("size"))
        if size <= 0:
            raise PlanError("bad growth step %r: size must be positive" % shown)
        count = int(m.group("count") or 1)
        if count < 1:
            raise PlanError("bad growth step %r: count must be at least 1" % shown)
        total += size * count
        if len(steps) + count > MAX_GROW_STEPS or total > MAX_GROW_BYTES:
            raise PlanError("growth plan too large at %r: at most %d steps and %d PiB in all"
                            % (shown, MAX_GROW_STEPS, MAX_GROW_BYTES >> 50))
        steps.extend([(kind, size)] * count)
    return steps


class Runtime:
    """Base of a modelled runtime: subclasses implement mallocinit, grow and sysalloc."""

    policy = ""
    PageShift = 12

    def __init__(self, space: AddressSpace) -> None:
        self.space = space
        self.trace = space.trace
        self.ptrsize = space.pointer_bits // 8
        self.mask = (1 << space.pointer_bits) - 1
        self.messages: List[str] = []
        self.growth: List[Dict[str, Any]] = []
        self.reservation: Optional[Dict[str, Any]] = None
        self.fallback: Dict[str, Any] = {"engaged": False, "want": None, "bitmap": None, "arena": None}
        self.heap_sys = 0

    # -- Go's runtime·printf / runtime·throw ----------------------------------------
    def printf(self, msg: str) -> None:
        self.messages.append(msg)

    def throw(self, msg: str) -> NoReturn:
        self.messages.append("throw: " + msg)
        raise Throw(msg)

    # -- to implement ---------------------------------------------------------------
    def mallocinit(self) -> None:
        raise NotImplementedError

    def grow(self, size: int) -> Tuple[Optional[int], str, Optional[str]]:
        """A heap allocation of ``size`` bytes: (address or None, path, printed error)."""
        raise NotImplementedError

    def sysalloc(self, size: int) -> Tuple[Optional[int], str, Optional[str]]:
        raise NotImplementedError

    def outcome(self) -> str:
        raise NotImplementedError

    def heap_state(self) -> Dict[str, Any]:
        raise NotImplementedError

    # -- the run ------------------------------------------------------------------------
    def _touch(self, addr: int, size: int, every: int) -> int:
        if every <= 0:
            return 0
        page = self.space.page_size
        n = 0
        for off in range(0, size, every):
            self.space.touch((addr + off) & ~(page - 1))
            n += 1
        return n

    def run(self, plan: List[Tuple[str, int]], touch_every: int = DEFAULT_TOUCH_EVERY) -> Dict[str, Any]:
        start = time.monotonic()
        crash: Optional[str] = None
        try:
            with self.trace.enter("mallocinit"):
                self.mallocinit()
            for i, (kind, size) in enumerate(plan, 1):
                step: Dict[str, Any] = {"step": i, "kind": kind, "size": size}
                self.growth.append(step)
                before = len(self.messages)
                if kind == "grow":
                    addr, path, err = self.grow(size)
                else:
                    addr, path, err = self.sysalloc(size)
                step.update(addr=hexa(addr), ok=addr is not None, path=path, error=err)
                if addr is not None:
                    step["touched"] = self._touch(addr, size, touch_every)
                elif len(self.messages) > before and not err:
                    step["error"] = self.messages[-1]
                if addr is None and kind == "grow":
                    # mallocgc: MHeap_Alloc returned nil.
                    self.throw("out of memory")
        except Throw as t:
            crash = str(t)
            if self.growth and self.growth[-1].get("ok") is None:
                self.growth[-1].update(ok=False, error=crash)
        return {
            "policy": self.policy,
            "reservation": self.reservation,
            "fallback": self.fallback,
            "heap": self.heap_state(),
            "growth": self.growth,
            "messages": self.messages,
            "outcome": "crash" if crash is not None else self.outcome(),
            "crash": crash,
            "trace": self.trace.entries,
            "duration_s": round(time.monotonic() - start, 6),
        }
