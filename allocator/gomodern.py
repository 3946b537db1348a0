"""Go 1.11+ arena hints, as in Go 1.19 (malloc.go mallocinit/sysAlloc, mheap.go grow, mem_linux.go).

64-bit: no up-front reservation; mallocinit lays out hints ``i<<40 | 0x00c0<<32``
(``0x0040<<32`` on arm64) for i = 0..0x7f. sysAlloc reserves 64 MiB-aligned
chunks at the first hint the kernel honours, drops each hint it refuses, and
when none is left takes any (aligned) address the kernel picks. 32-bit: one
linear reservation of 512, 256 or 128 MiB just past the data segment. grow
maps what it needs with MAP_FIXED. Heap-arena metadata and sysUsed/sysHugePage
(which make no new mappings) are not modelled.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from allocator.runtime import Runtime
from allocator.space import (
    ENOMEM,
    MAP_ANON,
    MAP_FIXED,
    MAP_PRIVATE,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    AddressSpace,
    hexa,
)

pageSize = 8192
pallocChunkPages = 512


def align_up(n: int, a: int) -> int:
    return (n + a - 1) & ~(a - 1)


class Hint:
    def __init__(self, addr: int, down: bool = False) -> None:
        self.addr = addr
        self.down = down


class GoModern(Runtime):
    policy = "go-modern"

    def __init__(self, space: AddressSpace, machine: str = "") -> None:
        super().__init__(space)
        self.machine = machine
        self.heapArenaBytes = (64 << 20) if self.ptrsize == 8 else (4 << 20)
        # heapAddrBits is 48 on every 64-bit Linux port; amd64 addresses are
        # signed (arenaBaseOffset), so user pointers must stay below 1<<47.
        self.addr_limit = (1 << 47 if machine in ("x86_64", "amd64") else 1 << 48) if self.ptrsize == 8 else 1 << 32
        self.hints: List[Hint] = []
        self.linear: Optional[List[int]] = None  # [next, end] of the 32-bit arena reservation
        self.cur_base = 0
        self.cur_end = 0
        self.arenas: List[List[int]] = []
        self.first_arena: Optional[str] = None  # "hint" or "os"

    # -- mem_linux.go ------------------------------------------------------------------
    def sysReserve(self, v: int, n: int) -> Optional[int]:
        with self.trace.enter("sysReserve"):
            p = self.space.mmap(v, n, PROT_NONE, MAP_ANON | MAP_PRIVATE)
            return None if p < 4096 else p

    def sysFreeOS(self, v: int, n: int) -> None:
        with self.trace.enter("sysFreeOS"):
            self.space.munmap(v, n)

    def sysMap(self, v: int, n: int) -> None:
        with self.trace.enter("sysMap"):
            p = self.space.mmap(v, n, PROT_READ | PROT_WRITE, MAP_ANON | MAP_FIXED | MAP_PRIVATE)
            if p == ENOMEM:
                self.throw("runtime: out of memory")
            if p != v:
                err = 0 if p >= 4096 else p
                self.printf("runtime: mmap(%s, %d) returned %s, %d" % (hexa(v), n, hexa(p), err))
                self.throw("runtime: cannot map pages in arena address space")

    def sysReserveAligned(self, v: int, size: int, align: int) -> Tuple[Optional[int], int]:
        with self.trace.enter("sysReserveAligned"):
            p = self.sysReserve(v, size + align)
            if p is None:
                return None, 0
            if p & (align - 1) == 0:
                return p, size + align
            # Trim off the unaligned parts.
            p_aligned = align_up(p, align)
            self.sysFreeOS(p, p_aligned - p)
            end = p_aligned + size
            end_len = (p + size + align) - end
            if end_len > 0:
                self.sysFreeOS(end, end_len)
            return p_aligned, size

    # -- malloc.go ---------------------------------------------------------------------------
    def mallocinit(self) -> None:
        if self.ptrsize == 8:
            base = (0x0040 << 32) if self.machine in ("aarch64", "arm64") else (0x00C0 << 32)
            # Go pushes i = 0x7f first, so the list is tried from i = 0 up.
            self.hints = [Hint((i << 40) | base) for i in range(0x80)]
            self.reservation = {"hint": hexa(self.hints[0].addr), "size": self.heapArenaBytes,
                                "probe": None, "probe_error": None, "high_ok": False, "hints_tried": 0}
            return
        end = self.space.data_end()
        p = align_up(end + (256 << 10), self.heapArenaBytes)
        self.fallback["want"] = hexa(p)
        for arena_size in (512 << 20, 256 << 20, 128 << 20):
            a, size = self.sysReserveAligned(p, arena_size, self.heapArenaBytes)
            if a is not None:
                self.linear = [a, a + size]
                self.fallback["arena"] = [hexa(a), hexa(a + size)]
                p = a + size
                break
        self.hints = [Hint(p)]

    def sysAlloc(self, n: int) -> Tuple[Optional[int], int, str]:
        with self.trace.enter("sysAlloc"):
            n = align_up(n, self.heapArenaBytes)
            if self.linear is not None:
                at = align_up(self.linear[0], self.heapArenaBytes)
                if at + n <= self.linear[1]:
                    self.linear[0] = at + n
                    self.arenas.append([at, at + n])
                    return at, n, "linear"
            v_found: Optional[int] = None
            v: Optional[int] = None
            while self.hints:
                hint = self.hints[0]
                p = hint.addr - n if hint.down else hint.addr
                if p + n < p or p + n - 1 >= self.addr_limit or p <= 0:
                    v = None  # outside the addressable heap: don't ask
                else:
                    v = self.sysReserve(p, n)
                    if self.reservation is not None and self.first_arena is None and self.reservation["probe"] is None \
                            and self.reservation["probe_error"] is None:
                        landed = self.trace.entries[-1]["result"]
                        self.reservation["probe"] = landed if landed.startswith("0x") else None
                        self.reservation["probe_error"] = None if landed.startswith("0x") else landed
                        self.reservation["high_ok"] = v == p
                if self.reservation is not None and self.first_arena is None:
                    self.reservation["hints_tried"] += 1
                if v is not None and v == p:
                    hint.addr = p if hint.down else p + n
                    v_found = v
                    path = "hint"
                    break
                if v is not None:
                    self.sysFreeOS(v, n)
                self.hints.pop(0)
            size = n
            if v_found is None:
                # All of the hints failed: take any sufficiently aligned address.
                got, size = self.sysReserveAligned(0, n, self.heapArenaBytes)
                if got is None:
                    return None, 0, "os"
                v_found = got
                self.hints[:0] = [Hint(v_found + size), Hint(v_found, down=True)]
                path = "os"
            bad = ""
            if v_found + size - 1 >= self.addr_limit:
                bad = "end outside usable address space"
            if v_found >= self.addr_limit:
                bad = "base outside usable address space"
            if bad:
                self.printf("runtime: memory allocated by OS [%s, %s) not in usable address space: %s"
                            % (hexa(v_found), hexa(v_found + size), bad))
                self.throw("memory reservation exceeds address space limit")
            if self.first_arena is None:
                self.first_arena = path
            self.arenas.append([v_found, v_found + size])
            return v_found, size, path

    # -- mheap.go ---------------------------------------------------------------------------
    def grow(self, size: int) -> Tuple[Optional[int], str, Optional[str]]:
        with self.trace.enter("mheap.grow"):
            npage = (size + pageSize - 1) // pageSize
            ask = align_up(npage, pallocChunkPages) * pageSize
            path = "arena"
            end = self.cur_base + ask
            n_base = align_up(end, self.space.page_size)
            if n_base > self.cur_end or end < self.cur_base:
                av, asize, path = self.sysAlloc(ask)
                if av is None:
                    msg = "runtime: out of memory: cannot allocate %d-byte block (%d in use)" % (ask, self.heap_sys)
                    self.printf(msg)
                    return None, path, msg
                if av == self.cur_end:
                    self.cur_end = av + asize
                else:
                    self.cur_base, self.cur_end = av, av + asize
                n_base = align_up(self.cur_base + ask, self.space.page_size)
            v = self.cur_base
            self.cur_base = n_base
            # Transition the space we need from Reserved to Prepared.
            self.sysMap(v, n_base - v)
            self.heap_sys += n_base - v
            return v, path, None

    def sysalloc(self, size: int) -> Tuple[Optional[int], str, Optional[str]]:
        v, n, path = self.sysAlloc(size)
        if v is None:
            return None, path, "sysAlloc returned nil"
        self.sysMap(v, n)  # so the step's pages can be touched like grow's
        return v, path, None

    def outcome(self) -> str:
        if self.ptrsize == 4:
            return "native-32bit"
        if self.first_arena is None:
            return "high-arena" if self.reservation and self.reservation["high_ok"] else "os-chosen"
        return "high-arena" if self.first_arena == "hint" else "os-chosen"

    def heap_state(self) -> Dict[str, Any]:
        return {
            "arenas": [[hexa(a), hexa(b)] for a, b in self.arenas],
            "hints_left": len(self.hints),
            "next_hint": hexa(self.hints[0].addr) if self.hints else None,
            "heap_sys": self.heap_sys,
        }
