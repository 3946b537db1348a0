"""The address-space interface the Go model calls, its constants, and the call trace.

Two implementations sit behind :class:`AddressSpace`: ``real.RealSpace`` (ctypes
mmap/munmap/mincore in this process) and ``simulated.SimKernel`` (a small model
of Linux's mmap rules). Both return results the way Go's 2012 Linux runtime saw
them: ``mmap`` gives an address, or a small positive errno on failure (Go's
``runtime·mmap`` negated the kernel's ``-errno``), ``munmap``/``mincore`` give
0 or a positive errno.
"""

from __future__ import annotations

import bisect
import errno as _errno
from typing import Any, Dict, List, Optional, Tuple

PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4

# Generic Linux values (x86, arm, arm64, riscv, s390; the arches we boot).
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10
MAP_ANON = 0x20
MAP_FIXED_NOREPLACE = 0x100000

ENOMEM = _errno.ENOMEM
EINVAL = _errno.EINVAL
EEXIST = _errno.EEXIST
EPERM = _errno.EPERM

_PROT_NAMES = ((PROT_READ, "READ"), (PROT_WRITE, "WRITE"), (PROT_EXEC, "EXEC"))
_FLAG_NAMES = (
    (MAP_ANON, "ANON"),
    (MAP_FIXED, "FIXED"),
    (MAP_FIXED_NOREPLACE, "FIXED_NOREPLACE"),
    (MAP_PRIVATE, "PRIVATE"),
)


KiB = 1 << 10
MiB = 1 << 20

# The mappings of a small static Go binary that no modelled runtime function makes: its text, data and
# bss (1.5 MiB for a program that grows its heap in blocks, 0x400000-0x57b000 under go1.19.8
# linux/amd64), its vDSO, and the runtime's own small persistentalloc and gcBits chunks (256 and
# 64 KiB each) after the first. With GO_STACK, the main thread's stack as the kernel first maps it,
# this is what the simulated kernel maps before a run and what a real run adds in place of the
# interpreter's own mappings under RLIMIT_AS (see ``RealSpace``). Measured against Go 1.19.8: VmSize
# 982116 kB after four 64 MiB blocks on amd64, of which go-modern maps 979668 kB (2448 kB left);
# 795084 kB at main on 386, of which it maps 793176 kB (1908 kB). Under a 1 GiB RLIMIT_AS the amd64
# process dies reserving its fifth block's metadata when its own mappings lie between 1524 and
# 3640 kB, so one figure serves both.
GO_IMAGE = 2 * MiB
GO_STACK = 132 * KiB


def hexa(value: Optional[int]) -> Optional[str]:
    """Addresses travel as "0x..." strings (JSON numbers lose precision past 2**53)."""
    return None if value is None else "0x%x" % value


def prot_name(prot: int) -> str:
    names = [n for bit, n in _PROT_NAMES if prot & bit]
    return "|".join(names) if names else "NONE"


def flag_name(flags: int) -> str:
    names = [n for bit, n in _FLAG_NAMES if flags & bit]
    rest = flags & ~sum(bit for bit, _ in _FLAG_NAMES)
    if rest:
        names.append("0x%x" % rest)
    return "|".join(names)


def errno_name(err: int) -> str:
    return _errno.errorcode.get(err, "E%d" % err)


def is_mmap_error(p: int) -> bool:
    """Go's test for a failed mmap: a result below 4096 is an errno, not an address."""
    return p < 4096


class Trace:
    """Every address-space call, tagged with the Go function that made it.

    Runs of identical calls that differ only in address (``addrspace_free``
    walks mincore page by page) are folded into one entry with a ``count``.
    """

    def __init__(self) -> None:
        self.entries: List[Dict[str, Any]] = []
        self._fn: List[str] = []

    def enter(self, fn: str) -> "_FnScope":
        return _FnScope(self, fn)

    @property
    def fn(self) -> str:
        return self._fn[-1] if self._fn else "-"

    def add(self, call: str, result: str, **args: Any) -> None:
        entry: Dict[str, Any] = {"fn": self.fn, "call": call}
        entry.update(args)
        entry["result"] = result
        last = self.entries[-1] if self.entries else None
        if (
            last is not None
            and call == "mincore"
            and last["call"] == "mincore"
            and last["fn"] == entry["fn"]
            and last["result"] == result
            and last["len"] == entry["len"]
        ):
            last["count"] = last.get("count", 1) + 1
            return
        self.entries.append(entry)


class _FnScope:
    def __init__(self, trace: Trace, fn: str) -> None:
        self.trace = trace
        self.name = fn

    def __enter__(self) -> None:
        self.trace._fn.append(self.name)

    def __exit__(self, *exc: object) -> None:
        self.trace._fn.pop()


class AddressSpace:
    """The system calls the Go runtime model needs, plus the facts a result reports.

    Subclasses implement the ``_raw_*`` methods; the public ones add the trace.
    """

    pointer_bits: int = 64
    page_size: int = 4096

    def __init__(self) -> None:
        self.trace = Trace()

    # -- implemented by subclasses -------------------------------------------------
    def _raw_mmap(self, addr: int, length: int, prot: int, flags: int) -> int:
        raise NotImplementedError

    def _raw_munmap(self, addr: int, length: int) -> int:
        raise NotImplementedError

    def _raw_mincore(self, addr: int, length: int) -> int:
        raise NotImplementedError

    def _raw_touch(self, addr: int) -> None:
        raise NotImplementedError

    def data_end(self) -> int:
        """Go's ``end``: where the program's data segment ends."""
        raise NotImplementedError

    def facts(self) -> Dict[str, Any]:
        raise NotImplementedError

    # -- traced calls ------------------------------------------------------------
    def mmap(self, addr: int, length: int, prot: int, flags: int) -> int:
        p = self._raw_mmap(addr, length, prot, flags)
        self.trace.add(
            "mmap",
            errno_name(p) if is_mmap_error(p) else hexa(p) or "0x0",
            addr=hexa(addr),
            len=length,
            prot=prot_name(prot),
            flags=flag_name(flags),
        )
        return p

    def munmap(self, addr: int, length: int) -> int:
        err = self._raw_munmap(addr, length)
        self.trace.add("munmap", errno_name(err) if err else "0", addr=hexa(addr), len=length)
        return err

    def mincore(self, addr: int, length: int) -> int:
        err = self._raw_mincore(addr, length)
        self.trace.add("mincore", errno_name(err) if err else "0", addr=hexa(addr), len=length)
        return err

    def touch(self, addr: int) -> None:
        """Write one byte, to prove a mapped page is usable (not traced: it is not a syscall)."""
        self._raw_touch(addr)

    def rlimit_shift(self) -> Optional[Dict[str, Any]]:
        """How the space moved RLIMIT_AS for the modelled process (only the real one does), or None."""
        return None

    def close(self) -> None:
        """Release whatever the space holds (the real one: the model's mappings and its RLIMIT_AS shift)."""


class MappingSet:
    """Disjoint [start, end) ranges with a protection each, kept sorted: what a process has mapped."""

    def __init__(self) -> None:
        self.starts: List[int] = []
        self.maps: List[Tuple[int, int, int]] = []  # (start, end, prot)

    def insert(self, start: int, end: int, prot: int) -> None:
        """Add [start, end), replacing whatever it overlaps (as MAP_FIXED does)."""
        self.remove(start, end)
        i = bisect.bisect_left(self.starts, start)
        self.starts.insert(i, start)
        self.maps.insert(i, (start, end, prot))

    def remove(self, start: int, end: int) -> None:
        """Unmap [start, end), splitting mappings that straddle the edges."""
        keep: List[Tuple[int, int, int]] = []
        for s, e, p in self.maps:
            if e <= start or s >= end:
                keep.append((s, e, p))
                continue
            if s < start:
                keep.append((s, start, p))
            if e > end:
                keep.append((end, e, p))
        self.maps = keep
        self.starts = [s for s, _, _ in keep]

    def overlap(self, start: int, end: int) -> int:
        return sum(max(0, min(e, end) - max(s, start)) for s, e, _ in self.maps)

    def total(self) -> int:
        return sum(e - s for s, e, _ in self.maps)

    def find(self, addr: int) -> Optional[Tuple[int, int, int]]:
        """The mapping that holds addr, if any."""
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and self.maps[i][0] <= addr < self.maps[i][1]:
            return self.maps[i]
        return None
