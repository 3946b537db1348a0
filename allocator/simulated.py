"""A small model of Linux's mmap rules, for unit tests and ``--simulate`` what-if runs.

What it models (mm/mmap.c, simplified): a task size; mmap_min_addr; a hint is
honoured when it is page-aligned (rounded up), at or above mmap_min_addr, below
the task size and free, otherwise the kernel picks the highest free gap below
mmap_base (then the lowest one above mmap_min_addr); MAP_FIXED beyond the task
size is ENOMEM and replaces what it overlaps; MAP_FIXED_NOREPLACE over a
mapping is EEXIST; RLIMIT_AS counts every mapped page, PROT_NONE included;
mincore of an unmapped page, or beyond the task size, is ENOMEM.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Set

from allocator.space import (
    EEXIST,
    EINVAL,
    ENOMEM,
    EPERM,
    GO_IMAGE,
    GO_STACK,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    PROT_WRITE,
    AddressSpace,
    KiB,
    MappingSet,
    MiB,
    hexa,
)

GiB = 1 << 30


class SimFault(Exception):
    """A write to a page that is not mapped writable: a real process would get SIGSEGV."""


# Named machines for --simulate, with the top of user space measured on real kernels: x86_64 with
# 4-level paging and with la57; Debian's User-Mode Linux 6.1 (its stack sits just below 0x7fc0000000);
# riscv64 under Sv39 and Sv48; arm64 with a 39-bit VA kernel; an i386 kernel (3G/1G split); a 32-bit
# process on an x86_64 kernel. For the 32-bit ones, ``end`` (where Go's data segment ends, from which the
# 32-bit reservation is placed) is a typical value for a program linked at 0x08048000.
PRESETS: Dict[str, Dict[str, Any]] = {
    "host": {"task-size": 0x7FFFFFFFF000, "machine": "x86_64"},
    "la57": {"task-size": 0xFFFFFFFFFFF000, "machine": "x86_64"},
    "uml": {"task-size": 0x7FC0000000, "machine": "x86_64"},
    "sv39": {"task-size": 0x4000000000, "machine": "riscv64"},
    "sv48": {"task-size": 0x800000000000, "machine": "riscv64"},
    "arm64-39": {"task-size": 0x8000000000, "machine": "aarch64"},
    "i386": {"task-size": 0xC0000000, "pointer-bits": 32, "machine": "i686", "end": 0x08200000},
    "compat32": {"task-size": 0xFFFFE000, "pointer-bits": 32, "machine": "x86_64", "end": 0x08200000},
}


def parse_size(text: str) -> int:
    """"1G", "512M", "64K", "0x7fc0000000" or a plain number of bytes."""
    t = text.strip()
    if t.lower().startswith("0x"):
        return int(t, 16)
    units = {"k": KiB, "m": MiB, "g": GiB, "t": 1 << 40}
    suffix = t[-1:].lower()
    if t.lower().endswith(("kib", "mib", "gib", "tib")):
        suffix, t = t[-3].lower(), t[:-3]
    elif suffix == "b" and len(t) > 1 and t[-2].lower() in units:
        suffix, t = t[-2].lower(), t[:-2]
    elif suffix in units:
        t = t[:-1]
    else:
        suffix = ""
    value = float(t) if "." in t else int(t)
    return int(value * units.get(suffix, 1))


_BOOL = {"1": True, "yes": True, "true": True, "on": True, "0": False, "no": False, "false": False, "off": False}
SIM_KEYS: Dict[str, Callable[[str], Any]] = {
    "task-size": parse_size,
    "rlimit-as": parse_size,
    "pointer-bits": int,
    "page-size": parse_size,
    "mmap-min-addr": parse_size,
    "mmap-base": parse_size,
    "end": parse_size,
    "honour-hints": lambda v: _BOOL[v.lower()],
    "machine": str,
}


class SimSpecError(ValueError):
    pass


def parse_spec(spec: str) -> Dict[str, Any]:
    """``uml,rlimit-as=1G`` -> keyword arguments for :class:`SimKernel`."""
    out: Dict[str, Any] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if "=" not in item:
            if item not in PRESETS:
                raise SimSpecError(
                    "unknown preset %r; presets: %s; keys: %s"
                    % (item, ", ".join(sorted(PRESETS)), ", ".join(sorted(SIM_KEYS)))
                )
            out.update(PRESETS[item])
            continue
        key, _, value = item.partition("=")
        key = key.strip().replace("_", "-")
        if key == "ptr-bits":
            key = "pointer-bits"
        if key not in SIM_KEYS:
            raise SimSpecError("unknown key %r; keys: %s" % (key, ", ".join(sorted(SIM_KEYS))))
        try:
            out[key] = SIM_KEYS[key](value.strip())
        except (ValueError, KeyError):
            raise SimSpecError("bad value for %s: %r" % (key, value)) from None
    if out.get("pointer-bits", 64) not in (32, 64):
        raise SimSpecError("pointer-bits must be 32 or 64")
    return out


class SimKernel(AddressSpace):
    """A process's address space under a modelled Linux kernel."""

    def __init__(
        self,
        task_size: Optional[int] = None,
        pointer_bits: int = 64,
        page_size: int = 4096,
        mmap_min_addr: int = 0x10000,
        rlimit_as: Optional[int] = None,
        end: Optional[int] = None,
        mmap_base: Optional[int] = None,
        honour_hints: bool = True,
        machine: Optional[str] = None,
    ) -> None:
        super().__init__()
        if task_size is None:
            task_size = 0x7FFFFFFFF000 if pointer_bits == 64 else 0xC0000000
        self.task_size = task_size
        self.pointer_bits = pointer_bits
        self.page_size = page_size
        self.mmap_min_addr = mmap_min_addr
        self.rlimit_as = rlimit_as
        self.honour_hints = honour_hints
        self.machine = machine or ("x86_64" if pointer_bits == 64 else "i686")
        image = 0x400000 if pointer_bits == 64 else 0x08048000
        # A small static Go binary (space.GO_IMAGE), so that RLIMIT_AS leaves the room it leaves Go.
        self.end = end if end is not None else image + GO_IMAGE
        stack_top = task_size
        # Linux puts mmap_base a stack-rlimit gap (at least 128 MiB) below the stack.
        self.mmap_base = mmap_base if mmap_base is not None else stack_top - 128 * MiB - 8 * MiB
        self.mappings = MappingSet()
        self.touched: Set[int] = set()
        self.mappings.insert(image, self._page_up(self.end), 0x7)  # text, data, bss, brk heap
        self.mappings.insert(stack_top - GO_STACK, stack_top, 0x3)  # [stack]

    @classmethod
    def from_spec(cls, spec: str) -> "SimKernel":
        kw = {k.replace("-", "_"): v for k, v in parse_spec(spec).items()}
        return cls(**kw)

    # -- bookkeeping -------------------------------------------------------------------
    def _page_up(self, x: int) -> int:
        return (x + self.page_size - 1) & ~(self.page_size - 1)

    def _remove(self, start: int, end: int) -> None:
        self.mappings.remove(start, end)
        self.touched = {a for a in self.touched if not (start <= a < end)}

    def mapped_bytes(self) -> int:
        return self.mappings.total()

    def _free(self, start: int, end: int) -> bool:
        return self.mappings.overlap(start, end) == 0

    def _find_gap(self, length: int) -> Optional[int]:
        """Top-down from mmap_base, then bottom-up from mmap_min_addr."""
        gaps = []
        prev_end = self.mmap_min_addr
        for s, e, _ in self.mappings.maps:
            if s > prev_end:
                gaps.append((prev_end, s))
            prev_end = max(prev_end, e)
        if self.task_size > prev_end:
            gaps.append((prev_end, self.task_size))
        ceiling = self.mmap_base
        for lo, hi in reversed(gaps):
            top = min(hi, ceiling)
            if top - lo >= length:
                return (top - length) & ~(self.page_size - 1)
        for lo, hi in gaps:
            if hi - lo >= length:
                return lo
        return None

    # -- system calls -----------------------------------------------------------------
    def _raw_mmap(self, addr: int, length: int, prot: int, flags: int) -> int:
        if length <= 0:
            return EINVAL
        length = self._page_up(length)
        if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
            if addr & (self.page_size - 1):
                return EINVAL
            if addr + length > self.task_size or addr + length < addr:
                return ENOMEM
            if addr < self.mmap_min_addr:
                return EPERM
            if flags & MAP_FIXED_NOREPLACE and not flags & MAP_FIXED and not self._free(addr, addr + length):
                return EEXIST
            start = addr
        else:
            start = -1
            hint = self._page_up(addr) if addr else 0
            if (
                hint
                and self.honour_hints
                and hint >= self.mmap_min_addr
                and hint + length <= self.task_size
                and self._free(hint, hint + length)
            ):
                start = hint
            if start < 0:
                gap = self._find_gap(length)
                if gap is None:
                    return ENOMEM
                start = gap
        if self.rlimit_as is not None:
            grow = length - self.mappings.overlap(start, start + length)
            if self.mapped_bytes() + grow > self.rlimit_as:
                return ENOMEM
        self._remove(start, start + length)
        self.mappings.insert(start, start + length, prot)
        return start

    def _raw_munmap(self, addr: int, length: int) -> int:
        if addr & (self.page_size - 1) or length <= 0 or addr + length > self.task_size:
            return EINVAL
        self._remove(addr, addr + self._page_up(length))
        return 0

    def _raw_mincore(self, addr: int, length: int) -> int:
        if addr & (self.page_size - 1):
            return EINVAL
        end = addr + self._page_up(length)
        if end > self.task_size:
            return ENOMEM
        covered = self.mappings.overlap(addr, end)
        return 0 if covered == end - addr else ENOMEM

    def _raw_touch(self, addr: int) -> None:
        m = self.mappings.find(addr)
        if m is None or not m[2] & PROT_WRITE:
            raise SimFault("SIGSEGV: write to 0x%x, which is not mapped writable" % addr)
        self.touched.add(addr & ~(self.page_size - 1))

    def data_end(self) -> int:
        return self.end

    def facts(self) -> Dict[str, Any]:
        return {
            "kernel": "simulated",
            "kernel_version": "task-size=%s" % hexa(self.task_size),
            "machine": self.machine,
            "pointer_bits": self.pointer_bits,
            "page_size": self.page_size,
            "user_top": hexa(self.task_size),
            "user_top_method": "simulated",
            "highest_mapping": hexa(self.mappings.maps[-1][1] if self.mappings.maps else 0),
            "rlimit_as": self.rlimit_as,
            "overcommit_memory": None,
            "mmap_min_addr": self.mmap_min_addr,
            "end": hexa(self.end),
            "end_source": "simulated",
            "image_end": hexa(self._page_up(self.end)),
            "python": None,
            "simulated": True,
            "vm_size": self.mapped_bytes(),
            "rlimit_as_shift": None,
        }
