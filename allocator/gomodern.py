"""Go 1.19's heap reservation, call by call, as in Go 1.19.8 (Debian's golang-1.19-src).

Files followed, under src/runtime/: malloc.go (mallocinit, (*mheap).sysAlloc, sysReserveAligned,
persistentalloc1, linearAlloc), mheap.go ((*mheap).grow, allocSpan, heapArena), mcache.go
(allocLarge), mpagealloc.go ((*pageAlloc).init, grow), mpagealloc_64bit.go and mpagealloc_32bit.go
(sysInit, sysGrow, (*scavengeIndex).grow), mranges.go (addrRanges), mem.go and mem_linux.go
(sysAlloc, sysReserve, sysMap, sysFreeOS).

What Go 1.19 maps, in this order, with these sizes and flags (measured with strace against
go1.19.8 static binaries; the model makes the same calls):

64-bit (heapAddrBits is 48 on every 64-bit Linux port; amd64 offsets addresses by arenaBaseOffset):
 1. pageAlloc.init: addrRanges.init's persistentalloc opens the first 256 KiB chunk (RW).
 2. sysInit: the five summary levels, PROT_NONE anywhere: 128 KiB, 1, 8, 64 and 512 MiB (585 MiB);
    then the scavenge index, 8 MiB PROT_NONE.
 3. mallocinit: 128 arena hints i<<40 | 0x00c0<<32 (0x0040<<32 on arm64); no mapping.
 4. The runtime's first heap allocation, before main: mheap.grow asks for one 4 MiB chunk; sysAlloc
    reserves a 64 MiB arena (PROT_NONE) at the first hint the kernel honours, else anywhere; then
    the arena index's L2 map (32 MiB RW, sysAllocOS) and the arena's heapArena metadata (2165776
    bytes RW, persistentalloc, which hands sizes of 64 KiB and more to sysAlloc); grow maps the
    chunk (MAP_FIXED RW), sysGrow maps the summaries and the scavenge index that cover it, and
    pageAlloc.grow the chunk bitmaps' L2 block (1 MiB RW).
 5. Each allocation of the growth plan: free pages first (first fit), else the same grow: about
    66 MiB of address space per 64 MiB arena.
32-bit (heapAddrBits 32, 4 MiB arenas):
 1. The persistentalloc chunk; sysInit reserves and maps all summaries at once (12 KiB).
 2. mallocinit reserves arenaMetaSize (258 MiB on 386) for every arena's metadata, then the arena
    at alignUp(end + 256K, heapArenaBytes): 512, 256 or 128 MiB (sysReserveAligned).
 3. sysAlloc takes arenas from that reservation, then from a hint at its end; each 4 MiB arena's
    metadata is mapped (MAP_FIXED) inside the metadata reservation.

"M in use" in "cannot allocate N-byte block (M in use)" is the heap the model grew; Go's figure is
smaller by its goroutine stacks (7 or 8 spans of 32 KiB in the measured runs; it varies from run to
run), which are not modelled. Also not modelled: the runtime's small allocations (fixalloc, spans,
stacks, the per-P page cache), GC and scavenging (sysUnused and sysHugePage make no mappings), and
sysAllocOS's exits on EACCES and EAGAIN. A process's own image, stack and the runtime's later small
chunks are ``space.GO_IMAGE``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

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
    MiB,
    hexa,
)

pageSize = 8192
pallocChunkPages = 512
logPallocChunkBytes = 22  # 512 pages of 8 KiB
pallocChunkBytes = 1 << logPallocChunkBytes
summaryLevelBits = 3
pallocSumBytes = 8
pallocDataBytes = 128  # pallocData: pallocBits and scavenged, 512 bits each
persistentChunkSize = 256 << 10
maxBlock = 64 << 10  # persistentalloc hands sizes from here up to sysAlloc
_FixAllocChunk = 16 << 10
arenaHintSize = 24  # {addr uintptr; down bool; next *arenaHint} on 64-bit
MASK64 = (1 << 64) - 1

# What Go's runtime takes from the heap before main. Only its first chunk matters to the model (it
# makes the first grow ask for 4 MiB); the figure puts the measured program's first 64 MiB block
# where Go put it: 1 MiB into the heap, at 0xc000100000 on amd64.
RUNTIME_INIT_BYTES = 1 * MiB


def align_up(n: int, a: int) -> int:
    return (n + a - 1) & ~(a - 1)


def align_down(n: int, a: int) -> int:
    return n & ~(a - 1)


class Hint:
    def __init__(self, addr: int, down: bool = False) -> None:
        self.addr = addr
        self.down = down


class LinearAlloc:
    """malloc.go's linearAlloc: a bump allocator over a reservation, mapping as it goes if asked."""

    def __init__(self, base: int, size: int, map_memory: bool, mask: int, page: int,
                 sys_map: Callable[[int, int], None]) -> None:
        if base + size > mask:
            # Chop off the last byte. The runtime isn't prepared to deal with situations where the
            # bounds could overflow.
            size -= 1
        self.next = self.mapped = base
        self.end = base + size
        self.map_memory = map_memory
        self.page = page
        self.sys_map = sys_map

    def alloc(self, size: int, align: int) -> Optional[int]:
        p = align_up(self.next, align)
        if p + size > self.end:
            return None
        self.next = p + size
        p_end = align_up(self.next - 1, self.page)
        if p_end > self.mapped:
            if self.map_memory:
                # Transition from Reserved to Prepared to Ready.
                self.sys_map(self.mapped, p_end - self.mapped)
            self.mapped = p_end
        return p


class GoModern(Runtime):
    policy = "go-modern"

    def __init__(self, space: AddressSpace, machine: str = "") -> None:
        super().__init__(space)
        self.machine = machine
        self.physPageSize = space.page_size
        amd64 = machine in ("x86_64", "amd64")
        if self.ptrsize == 8:
            self.heapAddrBits, logHeapArenaBytes, self.summaryLevels, self.pallocChunksL1Bits = 48, 26, 5, 13
            self.arenaBaseOffset = 0xFFFF800000000000 if amd64 else 0
        else:
            self.heapAddrBits, logHeapArenaBytes, self.summaryLevels, self.pallocChunksL1Bits = 32, 22, 4, 0
            self.arenaBaseOffset = 0
        self.logHeapArenaBytes = logHeapArenaBytes
        self.heapArenaBytes = 1 << logHeapArenaBytes
        # arenaL1Bits is 0 on Linux: one L2 map indexes every arena.
        self.arenaL2Bits = self.heapAddrBits - logHeapArenaBytes
        self.arenaBits = self.arenaL2Bits
        summaryL0Bits = self.heapAddrBits - logPallocChunkBytes - (self.summaryLevels - 1) * summaryLevelBits
        self.levelBits = [summaryL0Bits] + [summaryLevelBits] * (self.summaryLevels - 1)
        self.levelShift = [self.heapAddrBits - summaryL0Bits - i * summaryLevelBits
                           for i in range(self.summaryLevels)]
        self.pallocChunksL2Bits = self.heapAddrBits - logPallocChunkBytes - self.pallocChunksL1Bits
        pagesPerArena = self.heapArenaBytes // pageSize
        # type heapArena struct: bitmap, spans, pageInUse, pageMarks, pageSpecials, checkmarks, zeroedBase
        self.heapArenaSize = (self.heapArenaBytes // (self.ptrsize * 8 // 2) + pagesPerArena * self.ptrsize
                              + 3 * (pagesPerArena // 8) + 2 * self.ptrsize)
        self.hints: List[Hint] = []
        self.arena: Optional[LinearAlloc] = None  # the 32-bit arena reservation (mheap_.arena)
        self.heapArenaAlloc: Optional[LinearAlloc] = None  # the 32-bit metadata reservation
        self.cur_base = 0
        self.cur_end = 0
        self.arenas: List[List[int]] = []
        self.first_arena: Optional[str] = None  # "hint", "os" or "linear"
        # The page allocator.
        self.summary: List[int] = []  # base of each level's reservation
        self.scav_chunks: Optional[int] = None  # base of the scavenge index (0 if its reservation failed)
        self.scav_min = 0
        self.scav_max = 0
        self.in_use: List[List[int]] = []  # addrRanges, sorted and coalesced
        self.in_use_cap = 16
        self.chunks: Dict[int, int] = {}  # L1 index -> the L2 block of chunk bitmaps
        self.free: List[List[int]] = []  # free pages, [start, end) sorted: what pageAlloc.alloc searches
        self.pages_in_use = 0
        # The arena index and the per-arena metadata.
        self.arena_l2: Dict[int, int] = {}
        self.heap_arenas: Dict[int, int] = {}  # arena index -> its heapArena
        self.all_arenas_cap = 0
        # persistentalloc's global chunk.
        self.persistent_base: Optional[int] = None
        self.persistent_off = 0
        self.persistent_chunks = 0
        self.reserved = {"summary": 0, "scavenge_index": 0, "arena_meta": 0}
        self.runtime_init: Optional[Dict[str, Any]] = None

    # -- addresses -------------------------------------------------------------------------------
    def off(self, p: int) -> int:
        """offAddr: the address less arenaBaseOffset, so that amd64's signed heap sorts as unsigned."""
        return (p - self.arenaBaseOffset) & MASK64

    def arenaIndex(self, p: int) -> int:
        return self.off(p) >> self.logHeapArenaBytes

    def chunkIndex(self, p: int) -> int:
        return self.off(p) >> logPallocChunkBytes

    # -- mem.go, mem_linux.go --------------------------------------------------------------------
    def sysReserve(self, v: int, n: int) -> Optional[int]:
        p = self.space.mmap(v, n, PROT_NONE, MAP_ANON | MAP_PRIVATE)
        return None if p < 4096 else p

    def sysAlloc(self, n: int) -> Optional[int]:
        """sysAlloc/sysAllocOS: n bytes of RW memory wherever the kernel puts them."""
        p = self.space.mmap(0, n, PROT_READ | PROT_WRITE, MAP_ANON | MAP_PRIVATE)
        return None if p < 4096 else p

    def sysFreeOS(self, v: int, n: int) -> None:
        self.space.munmap(v, n)

    def sysMap(self, v: int, n: int) -> None:
        p = self.space.mmap(v, n, PROT_READ | PROT_WRITE, MAP_ANON | MAP_FIXED | MAP_PRIVATE)
        if p == ENOMEM:
            self.throw("runtime: out of memory")
        if p != v:
            err = 0 if p >= 4096 else p
            self.printf("runtime: mmap(%s, %d) returned %s, %d" % (hexa(v), n, hexa(0 if err else p), err))
            self.throw("runtime: cannot map pages in arena address space")

    def sysReserveAligned(self, v: int, size: int, align: int) -> Tuple[Optional[int], int]:
        with self.trace.enter("sysReserveAligned"):
            # Since the alignment is rather large in uses of this function, we're not likely to get
            # it by chance, so we ask for a larger region and remove the parts we don't need.
            p = self.sysReserve(v, size + align)
            if p is None:
                return None, 0
            if p & (align - 1) == 0:
                # We got lucky and got an aligned region, so we can use the whole thing.
                return p, size + align
            # Trim off the unaligned parts.
            p_aligned = align_up(p, align)
            self.sysFreeOS(p, p_aligned - p)
            end = p_aligned + size
            end_len = (p + size + align) - end
            if end_len > 0:
                self.sysFreeOS(end, end_len)
            return p_aligned, size

    # -- malloc.go: persistentalloc1 ---------------------------------------------------------------
    def persistentalloc(self, size: int, align: int) -> Optional[int]:
        with self.trace.enter("persistentalloc"):
            if size >= maxBlock:
                return self.sysAlloc(size)
            self.persistent_off = align_up(self.persistent_off, align)
            if self.persistent_off + size > persistentChunkSize or self.persistent_base is None:
                self.persistent_base = self.sysAlloc(persistentChunkSize)
                if self.persistent_base is None:
                    self.throw("runtime: cannot allocate memory")
                self.persistent_chunks += 1
                self.persistent_off = align_up(self.ptrsize, align)
            p = self.persistent_base + self.persistent_off
            self.persistent_off += size
            return p

    # -- mpagealloc.go, mpagealloc_64bit.go, mpagealloc_32bit.go, mranges.go --------------------------
    def pageAlloc_init(self) -> None:
        with self.trace.enter("pageAlloc.init"):
            # p.inUse.init: room for 16 addrRanges of two offAddrs each.
            self.persistentalloc(16 * 2 * self.ptrsize, self.ptrsize)
            self.sysInit()

    def sysInit(self) -> None:
        with self.trace.enter("pageAlloc.sysInit"):
            if self.ptrsize == 8:
                # Reserve memory for each level. This will get mapped in as R/W by setArenas.
                for shift in self.levelShift:
                    entries = 1 << (self.heapAddrBits - shift)
                    b = align_up(entries * pallocSumBytes, self.physPageSize)
                    r = self.sysReserve(0, b)
                    if r is None:
                        self.throw("failed to reserve page summary memory")
                    self.summary.append(r)
                    self.reserved["summary"] += b
                # Set up the scavenge index. (Go 1.19 does not check this reservation.)
                nbytes = (1 << self.heapAddrBits) // pallocChunkBytes // 8
                self.scav_chunks = self.sysReserve(0, nbytes) or 0
                self.reserved["scavenge_index"] = nbytes if self.scav_chunks else 0
                return
            # Reserve memory for all levels in one go. There shouldn't be much for 32-bit.
            total = sum((1 << (self.heapAddrBits - shift)) * pallocSumBytes for shift in self.levelShift)
            total = align_up(total, self.physPageSize)
            r = self.sysReserve(0, total)
            if r is None:
                self.throw("failed to reserve page summary memory")
            # There isn't much. Just map it and mark it as used immediately.
            self.sysMap(r, total)
            self.reserved["summary"] = total
            for shift in self.levelShift:
                self.summary.append(r)
                r += (1 << (self.heapAddrBits - shift)) * pallocSumBytes
            # The scavenge index is a global array (scavengeIndexArray): nothing to map.

    def addrsToSummaryRange(self, level: int, base: int, limit: int) -> Tuple[int, int]:
        lo = self.off(base) >> self.levelShift[level]
        hi = (self.off(limit - 1) >> self.levelShift[level]) + 1
        return lo, hi

    def blockAlignSummaryRange(self, level: int, lo: int, hi: int) -> Tuple[int, int]:
        e = 1 << self.levelBits[level]
        return align_down(lo, e), align_up(hi, e)

    def summaryRangeToSumAddrRange(self, level: int, lo: int, hi: int) -> Tuple[int, int]:
        base = self.summary[level]
        return (base + align_down(lo * pallocSumBytes, self.physPageSize),
                base + align_up(hi * pallocSumBytes, self.physPageSize))

    def addrRangeToSumAddrRange(self, level: int, r: List[int]) -> Tuple[int, int]:
        lo, hi = self.blockAlignSummaryRange(level, *self.addrsToSummaryRange(level, r[0], r[1]))
        return self.summaryRangeToSumAddrRange(level, lo, hi)

    def subtract(self, a: Tuple[int, int], b: Tuple[int, int]) -> Tuple[int, int]:
        """addrRange.subtract: a less b, where b may cover a, or one end of it, but not its middle."""
        if b[0] <= a[0] and a[1] <= b[1]:
            return 0, 0
        if a[0] < b[0] and b[1] < a[1]:
            self.throw("bad prune")
        if b[1] < a[1] and a[0] < b[1]:
            return b[1], a[1]
        if a[0] < b[0] and b[0] < a[1]:
            return a[0], b[0]
        return a

    def findSucc(self, addr: int) -> int:
        """addrRanges.findSucc: the first index whose range starts above addr."""
        for i, (lo, hi) in enumerate(self.in_use):
            if lo <= addr < hi:
                return i + 1
            if self.off(addr) < self.off(lo):
                return i
        return len(self.in_use)

    def sysGrow(self, base: int, limit: int) -> None:
        with self.trace.enter("pageAlloc.sysGrow"):
            if self.ptrsize == 4:
                return  # every summary was mapped by sysInit; the scavenge index is a global
            in_use_index = self.findSucc(base)
            # Walk up the radix tree and map summaries in as needed.
            for level in range(self.summaryLevels):
                need = self.addrRangeToSumAddrRange(level, [base, limit])
                # Prune need down to what needs to be newly mapped: some of it may already be mapped
                # for the ranges next to it.
                if in_use_index > 0:
                    need = self.subtract(need, self.addrRangeToSumAddrRange(level, self.in_use[in_use_index - 1]))
                if in_use_index < len(self.in_use):
                    need = self.subtract(need, self.addrRangeToSumAddrRange(level, self.in_use[in_use_index]))
                if need[1] - need[0] == 0:
                    continue
                self.sysMap(need[0], need[1] - need[0])
            self.scavengeIndex_grow(base, limit)

    def scavengeIndex_grow(self, base: int, limit: int) -> None:
        with self.trace.enter("scavengeIndex.grow"):
            assert self.scav_chunks is not None
            have_min, have_max = self.scav_min, self.scav_max
            need_min = align_down(self.chunkIndex(base) // 8, self.physPageSize)
            need_max = align_up((self.chunkIndex(limit) + 7) // 8, self.physPageSize)
            # Extend the range down to what we have, if there's no overlap.
            if need_max < have_min:
                need_max = have_min
            if need_min > have_max:
                need_min = have_max
            have = (self.scav_chunks + have_min, self.scav_chunks + have_max)
            need = self.subtract((self.scav_chunks + need_min, self.scav_chunks + need_max), have)
            if need[1] - need[0] != 0:
                self.sysMap(need[0], need[1] - need[0])
                if have_min == 0 or need_min < have_min:
                    self.scav_min = need_min
                if have_max == 0 or need_max > have_max:
                    self.scav_max = need_max

    def inUse_add(self, base: int, limit: int) -> None:
        i = self.findSucc(base)
        down = i > 0 and self.in_use[i - 1][1] == base
        up = i < len(self.in_use) and self.in_use[i][0] == limit
        if down and up:
            self.in_use[i - 1][1] = self.in_use[i][1]
            del self.in_use[i]
        elif down:
            self.in_use[i - 1][1] = limit
        elif up:
            self.in_use[i][0] = base
        else:
            if len(self.in_use) + 1 > self.in_use_cap:
                self.in_use_cap *= 2
                self.persistentalloc(self.in_use_cap * 2 * self.ptrsize, self.ptrsize)
            self.in_use.insert(i, [base, limit])

    def pages_grow(self, base: int, size: int) -> None:
        """(*pageAlloc).grow: the metadata for [base, base+size), which then counts as free pages."""
        with self.trace.enter("pageAlloc.grow"):
            limit = align_up(base + size, pallocChunkBytes)
            cbase = align_down(base, pallocChunkBytes)
            self.sysGrow(cbase, limit)
            self.inUse_add(cbase, limit)
            # Add entries into chunks, which is sparse, if needed.
            first = self.chunkIndex(cbase) >> self.pallocChunksL2Bits
            last = self.chunkIndex(limit - 1) >> self.pallocChunksL2Bits
            for l1 in range(first, last + 1):
                if l1 not in self.chunks:
                    r = self.sysAlloc((1 << self.pallocChunksL2Bits) * pallocDataBytes)
                    if r is None:
                        self.throw("pageAlloc: out of memory")
                    self.chunks[l1] = r
            self._free_add(base, base + size)

    def _free_add(self, start: int, end: int) -> None:
        merged: List[List[int]] = []
        for r in sorted(self.free + [[start, end]]):
            if merged and merged[-1][1] == r[0]:
                merged[-1][1] = r[1]
            else:
                merged.append(list(r))
        self.free = merged

    def pages_alloc(self, npages: int) -> Optional[int]:
        """(*pageAlloc).alloc: the lowest run of npages free pages."""
        n = npages * pageSize
        for r in self.free:
            if r[1] - r[0] >= n:
                p = r[0]
                r[0] += n
                self.free = [f for f in self.free if f[1] > f[0]]
                self.pages_in_use += n
                return p
        return None

    # -- malloc.go ---------------------------------------------------------------------------------
    def mallocinit(self) -> None:
        with self.trace.enter("mheap.init"):
            self.pageAlloc_init()
        if self.ptrsize == 8:
            base = (0x0040 << 32) if self.machine in ("aarch64", "arm64") else (0x00C0 << 32)
            # The hints come from arenaHintAlloc, a fixalloc: one chunk holds all 128.
            self.persistentalloc(_FixAllocChunk // arenaHintSize * arenaHintSize, self.ptrsize)
            # Go pushes i = 0x7f first, so the list is tried from i = 0 up.
            self.hints = [Hint((i << 40) | base) for i in range(0x80)]
            self.reservation = {"hint": hexa(self.hints[0].addr), "size": self.heapArenaBytes,
                                "probe": None, "probe_error": None, "high_ok": False, "hints_tried": 0}
        else:
            self.mallocinit32()
        # schedinit's first allocation (the signal goroutine of m0, mcommoninit): the heap's first grow.
        with self.trace.enter("schedinit"):
            npages = RUNTIME_INIT_BYTES // pageSize
            addr, path = self.allocSpan(npages)
            self.runtime_init = {"size": RUNTIME_INIT_BYTES, "addr": hexa(addr), "path": path}
            if addr is None:
                self.throw("out of memory")

    def mallocinit32(self) -> None:
        # On a 32-bit machine, we're much more concerned about keeping the usable heap contiguous.
        # 1. We reserve space for all heapArenas up front so they don't get interleaved with the heap.
        arenaMetaSize = (1 << self.arenaBits) * self.heapArenaSize
        meta = self.sysReserve(0, arenaMetaSize)
        if meta is not None:
            self.heapArenaAlloc = LinearAlloc(meta, arenaMetaSize, True, self.mask, self.physPageSize, self.sysMap)
            self.reserved["arena_meta"] = arenaMetaSize
            self.fallback["meta"] = [hexa(meta), hexa(meta + arenaMetaSize)]
        else:
            self.fallback["meta"] = None
        # 2. We hint the heap to start right above the end of the binary (or the brk, which C code
        # may have moved), 1/4 MB away from the running binary image.
        p = self.space.data_end()
        if self.heapArenaAlloc is not None and self.heapArenaAlloc.next <= p < self.heapArenaAlloc.end:
            p = self.heapArenaAlloc.end
        p = align_up(p + (256 << 10), self.heapArenaBytes)
        self.fallback["want"] = hexa(p)
        # 3. We try to stake out a reasonably large initial heap reservation.
        for arena_size in (512 << 20, 256 << 20, 128 << 20):
            a, size = self.sysReserveAligned(p, arena_size, self.heapArenaBytes)
            if a is not None:
                self.arena = LinearAlloc(a, size, False, self.mask, self.physPageSize, self.sysMap)
                self.fallback["arena"] = [hexa(a), hexa(a + size)]
                p = self.arena.end  # for the hint below
                break
        self.hints = [Hint(p)]

    def mheap_sysAlloc(self, n: int) -> Tuple[Optional[int], int, str]:
        """(*mheap).sysAlloc: at least n bytes of arena, reserved, with its metadata made."""
        with self.trace.enter("mheap.sysAlloc"):
            n = align_up(n, self.heapArenaBytes)
            v = self.arena.alloc(n, self.heapArenaBytes) if self.arena is not None else None
            if v is not None:
                size, path = n, "linear"
            else:
                v, size, path = self._reserve_arena(n)
                if v is None:
                    return None, 0, path
            if self.first_arena is None:
                self.first_arena = path
            self.arenas.append([v, v + size])
            self._create_arena_metadata(v, size)
            return v, size, path

    def _reserve_arena(self, n: int) -> Tuple[Optional[int], int, str]:
        v: Optional[int] = None
        size = 0
        path = "hint"
        while self.hints:
            hint = self.hints[0]
            p = hint.addr
            if hint.down:
                p = (p - n) & self.mask
            if p + n > self.mask:
                v = None  # we can't use this, so don't ask
            elif self.arenaIndex(p + n - 1) >= 1 << self.arenaBits:
                v = None  # outside addressable heap: can't use
            else:
                v = self.sysReserve(p, n)
                res = self.reservation
                if res is not None and self.first_arena is None and res["probe"] is None \
                        and res["probe_error"] is None:
                    landed = self.trace.entries[-1]["result"]
                    res["probe"] = landed if landed.startswith("0x") else None
                    res["probe_error"] = None if landed.startswith("0x") else landed
                    res["high_ok"] = v == p
            if self.reservation is not None and self.first_arena is None:
                self.reservation["hints_tried"] += 1
            if v is not None and v == p:
                # Success. Update the hint.
                hint.addr = p if hint.down else p + n
                size = n
                break
            # Failed. Discard this hint and try the next.
            if v is not None:
                self.sysFreeOS(v, n)
            v = None
            self.hints.pop(0)
        if size == 0:
            # All of the hints failed, so we'll take any (sufficiently aligned) address the kernel will give us.
            path = "os"
            v, size = self.sysReserveAligned(0, n, self.heapArenaBytes)
            if v is None:
                return None, 0, path
            # Create new hints for extending this region.
            self.hints[:0] = [Hint(v + size), Hint(v, down=True)]
        assert v is not None
        # Check for bad pointers or pointers we can't use.
        bad = ""
        if v + size > self.mask:
            bad = "region exceeds uintptr range"
        elif self.arenaIndex(v) >= 1 << self.arenaBits:
            bad = "base outside usable address space"
        elif self.arenaIndex(v + size - 1) >= 1 << self.arenaBits:
            bad = "end outside usable address space"
        if bad:
            self.printf("runtime: memory allocated by OS [%s, %s) not in usable address space: %s"
                        % (hexa(v), hexa(v + size), bad))
            self.throw("memory reservation exceeds address space limit")
        if v & (self.heapArenaBytes - 1):
            self.throw("misrounded allocation in sysAlloc")
        return v, size, path

    def _create_arena_metadata(self, v: int, size: int) -> None:
        for ri in range(self.arenaIndex(v), self.arenaIndex(v + size - 1) + 1):
            l1 = 0  # arenaL1Bits is 0 on Linux
            if l1 not in self.arena_l2:
                # Allocate an L2 arena map (sysAllocOS: demand paging keeps it cheap).
                l2 = self.sysAlloc((1 << self.arenaL2Bits) * self.ptrsize)
                if l2 is None:
                    self.throw("out of memory allocating heap arena map")
                self.arena_l2[l1] = l2
            if ri in self.heap_arenas:
                self.throw("arena already initialized")
            r: Optional[int] = None
            if self.heapArenaAlloc is not None:
                with self.trace.enter("linearAlloc.alloc"):
                    r = self.heapArenaAlloc.alloc(self.heapArenaSize, self.ptrsize)
            if r is None:
                r = self.persistentalloc(self.heapArenaSize, self.ptrsize)
                if r is None:
                    self.throw("out of memory allocating heap arena metadata")
            # Add the arena to the arenas list.
            if len(self.heap_arenas) == self.all_arenas_cap:
                grown = 2 * self.all_arenas_cap * self.ptrsize or self.physPageSize
                if self.persistentalloc(grown, self.ptrsize) is None:
                    self.throw("out of memory allocating allArenas")
                self.all_arenas_cap = grown // self.ptrsize
            self.heap_arenas[ri] = r

    # -- mheap.go -------------------------------------------------------------------------------------
    def mheap_grow(self, npage: int) -> Tuple[bool, str]:
        """(*mheap).grow: npage more pages for the page allocator, in whole 4 MiB chunks."""
        with self.trace.enter("mheap.grow"):
            ask = align_up(npage, pallocChunkPages) * pageSize
            path = "arena"
            end = self.cur_base + ask
            n_base = align_up(end, self.physPageSize)
            if n_base > self.cur_end or end < self.cur_base:
                # Not enough room in the current arena. Allocate more arena space.
                av, asize, path = self.mheap_sysAlloc(ask)
                if av is None:
                    self.printf("runtime: out of memory: cannot allocate %d-byte block (%d in use)"
                                % (ask, self.heap_sys))
                    return False, path
                if av == self.cur_end:
                    # The new space is contiguous with the old space, so just extend the current space.
                    self.cur_end = av + asize
                else:
                    # The new space is discontiguous. Track what remains of the current space and
                    # switch to the new space.
                    rest = self.cur_end - self.cur_base
                    if rest != 0:
                        self.sysMap(self.cur_base, rest)
                        self.heap_sys += rest
                        self.pages_grow(self.cur_base, rest)
                    self.cur_base, self.cur_end = av, av + asize
                n_base = align_up(self.cur_base + ask, self.physPageSize)
            # Grow into the current arena.
            v = self.cur_base
            self.cur_base = n_base
            # Transition the space we need from Reserved to Prepared.
            self.sysMap(v, n_base - v)
            self.heap_sys += n_base - v
            self.pages_grow(v, n_base - v)
            return True, path

    def allocSpan(self, npages: int) -> Tuple[Optional[int], str]:
        """(*mheap).allocSpan: npages from the page allocator, growing the heap when none fit."""
        base = self.pages_alloc(npages)
        if base is not None:
            return base, "free"
        ok, path = self.mheap_grow(npages)
        if not ok:
            return None, path
        base = self.pages_alloc(npages)
        if base is None:
            self.throw("grew heap, but no adequate free space found")
        return base, path

    def grow(self, size: int) -> Tuple[Optional[int], str, Optional[str]]:
        """A large object (mcache.allocLarge): whole pages, from free pages or a grown heap."""
        with self.trace.enter("mheap.alloc"):
            npages = (size + pageSize - 1) // pageSize
            before = len(self.messages)
            addr, path = self.allocSpan(npages)
            if addr is None:
                return None, path, self.messages[-1] if len(self.messages) > before else "mheap.alloc returned nil"
            return addr, path, None

    def sysalloc(self, size: int) -> Tuple[Optional[int], str, Optional[str]]:
        v, n, path = self.mheap_sysAlloc(size)
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
            "pages_in_use": self.pages_in_use,
            "runtime_init": self.runtime_init,
            "metadata": {
                "summary_reserved": self.reserved["summary"],
                "scavenge_index_reserved": self.reserved["scavenge_index"],
                "arena_meta_reserved": self.reserved["arena_meta"],
                "arena_map_bytes": len(self.arena_l2) * (1 << self.arenaL2Bits) * self.ptrsize,
                "heap_arenas": len(self.heap_arenas),
                "heap_arena_bytes": self.heapArenaSize,
                "chunk_bitmap_blocks": len(self.chunks),
                "persistent_chunks": self.persistent_chunks,
            },
        }

