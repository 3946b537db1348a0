"""Go's 2012 arena reservation (malloc.goc, mheap.c, mem_linux.c), before and after d37a8b73.

Step by step as the C code did it, with Go's sizes, hints, flags and messages.
``fixed=False`` is the runtime before "runtime: drop to 32 bit malloc if 64 bit
will not work" (Feb 2012): SysReserve returns the 0xf8<<32 hint unchecked on
64-bit, and a failing SysMap there throws. ``fixed=True`` probes the hint with
a 64 KiB PROT_NONE mmap and falls back to the 32-bit reservation near ``end``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from allocator.runtime import Runtime
from allocator.space import (
    ENOMEM,
    MAP_ANON,
    MAP_FIXED,
    MAP_PRIVATE,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    AddressSpace,
    hexa,
)

MaxArena32 = 2 << 30
HeapAllocChunk = 1 << 20
bitmapChunk = 8192
HIGH_HINT = 0x00F8 << 32
RWX = PROT_READ | PROT_WRITE | PROT_EXEC


class Go2012(Runtime):
    def __init__(self, space: AddressSpace, fixed: bool = True) -> None:
        super().__init__(space)
        self.fixed = fixed
        self.policy = "go-2012" if fixed else "go-2012-pre"
        self.PageSize = 1 << self.PageShift
        self.wordsPerBitmapWord = self.ptrsize * 8 // 4
        self.bitmap = 0
        self.bitmap_mapped = 0
        self.arena_start = 0
        self.arena_used = 0
        self.arena_end = 0
        self.high = False

    # -- mem_linux.c ---------------------------------------------------------------------
    def _high(self, v: int) -> bool:
        """The fix's test for "we don't actually have v reserved": 64-bit and v above 4 GiB."""
        if self.fixed:
            return self.ptrsize == 8 and v >= 0xFFFFFFFF
        return self.ptrsize == 8

    def addrspace_free(self, v: int, n: int) -> bool:
        page_size = 4096  # Go hard-coded it
        with self.trace.enter("addrspace_free"):
            for off in range(0, n, page_size):
                errval = self.space.mincore(v + off, page_size)
                if errval == 0 or errval != ENOMEM:
                    return False
        return True

    def SysReserve(self, v: int, n: int) -> Optional[int]:
        with self.trace.enter("SysReserve"):
            # On 64-bit, people with ulimit -v set complain if we reserve too much
            # address space: assume the reservation is fine and check in SysMap.
            if self._high(v):
                if self.fixed:
                    p = self.space.mmap(v, 64 << 10, PROT_NONE, MAP_ANON | MAP_PRIVATE)
                    if self.reservation is not None:
                        self.reservation["probe"] = hexa(p) if p >= 4096 else None
                        self.reservation["probe_error"] = None if p >= 4096 else p
                    if p != v:
                        return None  # Go leaves a misplaced probe mapped
                    self.space.munmap(p, 64 << 10)
                return v
            p = self.space.mmap(v, n, PROT_NONE, MAP_ANON | MAP_PRIVATE)
            if p < 4096 or (-p & self.mask) < 4096:
                return None
            return p

    def SysMap(self, v: int, n: int) -> None:
        with self.trace.enter("SysMap"):
            if self._high(v):
                p = self.space.mmap(v, n, RWX, MAP_ANON | MAP_PRIVATE)
                if p != v and self.addrspace_free(v, n):
                    # On some systems, mmap ignores v without MAP_FIXED,
                    # so retry if the address space is free.
                    if p > 4096:
                        self.space.munmap(p, n)
                    p = self.space.mmap(v, n, RWX, MAP_ANON | MAP_FIXED | MAP_PRIVATE)
                if p == ENOMEM:
                    self.throw("runtime: out of memory")
                if p != v:
                    self.printf("runtime: address space conflict: map(%s) = %s" % (hexa(v), hexa(p)))
                    self.throw("runtime: address space conflict")
                return
            p = self.space.mmap(v, n, RWX, MAP_ANON | MAP_FIXED | MAP_PRIVATE)
            if p == ENOMEM:
                self.throw("runtime: out of memory")
            if p != v:
                self.throw("runtime: cannot map pages in arena address space")

    def SysAlloc(self, n: int) -> Optional[int]:
        with self.trace.enter("SysAlloc"):
            p = self.space.mmap(0, n, RWX, MAP_ANON | MAP_PRIVATE)
            return None if p < 4096 else p

    def SysFree(self, v: int, n: int) -> None:
        with self.trace.enter("SysFree"):
            self.space.munmap(v, n)

    # -- malloc.goc ---------------------------------------------------------------------------
    def mallocinit(self) -> None:
        p: Optional[int] = None
        if self.ptrsize == 8:
            # Reserve 16 GB of arena (and a 1 GB bitmap) at 0x00f8<<32.
            arena_size = 16 << 30
            bitmap_size = arena_size // (self.ptrsize * 8 // 4)
            self.reservation = {
                "hint": hexa(HIGH_HINT),
                "size": bitmap_size + arena_size,
                "probe": None,
                "probe_error": None,
                "high_ok": False,
            }
            p = self.SysReserve(HIGH_HINT, bitmap_size + arena_size)
            self.reservation["high_ok"] = p is not None
            if p is None and not self.fixed:
                self.throw("runtime: cannot reserve arena virtual address space")
            self.high = p is not None
        if p is None:
            # The 32-bit mechanism: bitmap and 512 MB of arena just past the
            # data segment, 1/4 MB away from it and rounded up to a MB.
            bitmap_size = MaxArena32 // (self.ptrsize * 8 // 4)
            arena_size = 512 << 20
            end = self.space.data_end()
            want = (end + (1 << 18) + (1 << 20) - 1) & ~((1 << 20) - 1)
            self.fallback["engaged"] = self.ptrsize == 8
            self.fallback["want"] = hexa(want)
            p = self.SysReserve(want, bitmap_size + arena_size)
            if p is None:
                self.throw("runtime: cannot reserve arena virtual address space")
            self.fallback["bitmap"] = [hexa(p), hexa(p + bitmap_size)]
            self.fallback["arena"] = [hexa(p + bitmap_size), hexa(p + bitmap_size + arena_size)]
        assert p is not None
        if p & (self.PageSize - 1):
            self.throw("runtime: SysReserve returned unaligned address")
        self.bitmap = p
        self.arena_start = p + bitmap_size
        self.arena_used = self.arena_start
        self.arena_end = self.arena_start + arena_size

    def MHeap_MapBits(self) -> None:
        with self.trace.enter("MHeap_MapBits"):
            n = (self.arena_used - self.arena_start) // self.wordsPerBitmapWord
            n = (n + bitmapChunk - 1) & ~(bitmapChunk - 1)
            if self.bitmap_mapped >= n:
                return
            self.SysMap(self.arena_start - n, n - self.bitmap_mapped)
            self.bitmap_mapped = n

    def MHeap_SysAlloc(self, n: int) -> Tuple[Optional[int], str]:
        with self.trace.enter("MHeap_SysAlloc"):
            if n <= self.arena_end - self.arena_used:
                # Keep taking from our reservation.
                p = self.arena_used
                self.SysMap(p, n)
                self.arena_used += n
                self.MHeap_MapBits()
                return p, "reservation"
            # On 64-bit with the bitmap up high, our reservation is all we have
            # (before the fix: on any 64-bit system).
            if self.ptrsize == 8 and (not self.fixed or self.bitmap >= 0xFFFFFFFF):
                return None, "reservation-exhausted"
            # Past the reservation: take memory where the OS puts it, and hope
            # it lies in the range we have bitmap for.
            got = self.SysAlloc(n)
            if got is None:
                return None, "os"
            p = got
            if p < self.arena_start or p + n - self.arena_start >= MaxArena32:
                self.printf(
                    "runtime: memory allocated by OS (%s) not in usable range [%s,%s)"
                    % (hexa(p), hexa(self.arena_start), hexa(self.arena_start + MaxArena32))
                )
                self.SysFree(p, n)
                return None, "os"
            if p + n > self.arena_used:
                self.arena_used = p + n
                if self.arena_used > self.arena_end:
                    self.arena_end = self.arena_used
                self.MHeap_MapBits()
            return p, "os"

    # -- mheap.c --------------------------------------------------------------------------
    def MHeap_Grow(self, npage: int) -> Tuple[Optional[int], str, Optional[str]]:
        with self.trace.enter("MHeap_Grow"):
            # Ask for a big chunk, a multiple of 64 kB (16 pages), at least 1 MB.
            npage = (npage + 15) & ~15
            ask = npage << self.PageShift
            if ask < HeapAllocChunk:
                ask = HeapAllocChunk
            v, path = self.MHeap_SysAlloc(ask)
            if v is None:
                if ask > (npage << self.PageShift):
                    ask = npage << self.PageShift
                    v, path = self.MHeap_SysAlloc(ask)
                if v is None:
                    msg = "runtime: out of memory: cannot allocate %d-byte block (%d in use)" % (ask, self.heap_sys)
                    self.printf(msg)
                    return None, path, msg
            self.heap_sys += ask
            return v, path, None

    def grow(self, size: int) -> Tuple[Optional[int], str, Optional[str]]:
        npage = (size + self.PageSize - 1) >> self.PageShift
        return self.MHeap_Grow(npage)

    def sysalloc(self, size: int) -> Tuple[Optional[int], str, Optional[str]]:
        v, path = self.MHeap_SysAlloc(size)
        return v, path, None if v is not None else "MHeap_SysAlloc returned nil"

    def outcome(self) -> str:
        if self.ptrsize == 4:
            return "native-32bit"
        return "high-arena" if self.high else "fallback-32bit"

    def heap_state(self) -> Dict[str, Any]:
        return {
            "bitmap": hexa(self.bitmap) if self.bitmap else None,
            "bitmap_mapped": self.bitmap_mapped,
            "arena_start": hexa(self.arena_start) if self.arena_start else None,
            "arena_used": hexa(self.arena_used) if self.arena_used else None,
            "arena_end": hexa(self.arena_end) if self.arena_end else None,
            "heap_sys": self.heap_sys,
        }
