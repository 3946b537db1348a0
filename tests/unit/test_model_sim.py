"""The Go model on the simulated kernel: every machine kind and every Go message."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import pytest

from allocator.go2012 import HIGH_HINT, Go2012
from allocator.gomodern import GoModern
from allocator.probe import run_policy
from allocator.runtime import parse_grow
from allocator.simulated import SimKernel
from allocator.space import EINVAL, MAP_ANON, MAP_FIXED, MAP_PRIVATE, PROT_NONE

GiB = 1 << 30
MiB = 1 << 20


def run(policy: str, spec: str, grow: str = "64M*8,sysalloc:64M") -> Dict[str, Any]:
    return run_policy(policy, simulate=spec, grow=grow)


def calls(doc: Dict[str, Any], fn: str) -> List[Dict[str, Any]]:
    return [e for e in doc["trace"] if e["fn"] == fn]


# -- host-like 47-bit ------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["go-2012", "go-2012-pre", "go-modern"])
def test_host_honours_the_high_hint(policy: str) -> None:
    doc = run(policy, "host")
    assert doc["outcome"] == "high-arena"
    assert doc["crash"] is None
    assert doc["reservation"]["high_ok"] is True
    assert doc["fallback"]["engaged"] is False
    assert all(g["ok"] for g in doc["growth"])
    assert doc["facts"]["user_top"] == "0x7ffffffff000"


def test_fix_probes_64k_prot_none_at_the_hint_then_unmaps_it() -> None:
    doc = run("go-2012", "host")
    probe, unmap = calls(doc, "SysReserve")
    assert probe == {
        "fn": "SysReserve",
        "call": "mmap",
        "addr": "0xf800000000",
        "len": 64 << 10,
        "prot": "NONE",
        "flags": "ANON|PRIVATE",
        "result": "0xf800000000",
    }
    assert unmap["call"] == "munmap" and unmap["addr"] == "0xf800000000"
    assert doc["reservation"]["probe"] == "0xf800000000"
    # 16 GiB arena + 1 GiB bitmap, arena just past the bitmap.
    assert doc["reservation"]["size"] == 17 * GiB
    assert doc["heap"]["arena_start"] == "0x%x" % (HIGH_HINT + GiB)


def test_pre_fix_reserves_nothing_and_maps_without_map_fixed() -> None:
    doc = run("go-2012-pre", "host")
    assert calls(doc, "SysReserve") == []
    first = calls(doc, "SysMap")[0]
    assert first["flags"] == "ANON|PRIVATE" and first["prot"] == "READ|WRITE|EXEC"
    assert first["addr"] == first["result"] == "0x%x" % (HIGH_HINT + GiB)


def test_bitmap_grows_down_from_arena_start_in_8k_chunks() -> None:
    doc = run("go-2012", "host", grow="1M")
    arena = HIGH_HINT + GiB
    bits = calls(doc, "SysMap")[1]  # arena first, then MHeap_MapBits' bitmap
    # 1 MiB of arena needs 64 KiB of bitmap (4 bits per 8-byte word), below arena_start.
    assert bits["addr"] == "0x%x" % (arena - 64 * 1024) and bits["len"] == 64 * 1024
    assert doc["heap"]["bitmap_mapped"] == 64 * 1024


def test_grow_rounds_to_64k_and_at_least_1m() -> None:
    doc = run("go-2012", "host", grow="100K,1M,1000K*2")
    arena = HIGH_HINT + GiB
    addrs = [int(g["addr"], 16) - arena for g in doc["growth"]]
    assert addrs == [0, 1 * MiB, 2 * MiB, 3 * MiB]
    assert doc["heap"]["heap_sys"] == 4 * MiB


# -- UML-like task size ------------------------------------------------------------------


def test_uml_fix_falls_back_to_the_32bit_reservation() -> None:
    doc = run("go-2012", "uml")
    assert doc["reservation"]["high_ok"] is False
    probe = int(doc["reservation"]["probe"], 16)
    assert probe < 0x7FC0000000  # the kernel put the probe somewhere it could
    fb = doc["fallback"]
    assert fb["engaged"] is True
    end = int(doc["facts"]["end"], 16)
    want = (end + (1 << 18) + (1 << 20) - 1) & ~((1 << 20) - 1)
    assert fb["want"] == "0x%x" % want
    # 128 MiB of bitmap (2 GiB / 16), then 512 MiB of arena, hint honoured.
    assert fb["bitmap"] == ["0x%x" % want, "0x%x" % (want + 128 * MiB)]
    assert fb["arena"] == ["0x%x" % (want + 128 * MiB), "0x%x" % (want + 640 * MiB)]
    reserve = calls(doc, "SysReserve")[-1]
    assert reserve["prot"] == "NONE" and reserve["len"] == 640 * MiB and reserve["flags"] == "ANON|PRIVATE"
    assert doc["outcome"] == "fallback-32bit"


def test_uml_fix_growth_inside_the_reservation_uses_map_fixed() -> None:
    doc = run("go-2012", "uml")
    in_res = [g for g in doc["growth"] if g["kind"] == "grow"]
    assert len(in_res) == 8 and all(g["ok"] and g["path"] == "reservation" for g in in_res)
    maps = [e for e in calls(doc, "SysMap") if e["call"] == "mmap"]
    assert maps and all(e["flags"] == "ANON|FIXED|PRIVATE" for e in maps)


def test_uml_fix_past_the_reservation_the_os_memory_is_out_of_range() -> None:
    """The OS puts new memory near the top, more than 2 GiB above arena_start: MHeap_SysAlloc says nil."""
    doc = run("go-2012", "uml")
    last = doc["growth"][-1]
    assert last["kind"] == "sysalloc" and last["ok"] is False and last["path"] == "os"
    msg = [m for m in doc["messages"] if "not in usable range" in m]
    assert len(msg) == 1
    assert msg[0].startswith("runtime: memory allocated by OS (0x")
    arena_start = int(doc["fallback"]["arena"][0], 16)
    assert msg[0].endswith("[0x%x,0x%x)" % (arena_start, arena_start + 2 * GiB))
    assert calls(doc, "SysFree")  # it gave the memory back
    assert doc["outcome"] == "fallback-32bit"


def test_uml_fix_a_heap_past_512m_runs_out_of_memory() -> None:
    doc = run("go-2012", "uml", grow="64M*9")
    assert doc["outcome"] == "crash"
    assert doc["crash"] == "out of memory"
    assert "runtime: out of memory: cannot allocate 67108864-byte block (536870912 in use)" in doc["messages"]
    assert doc["growth"][-1]["ok"] is False


def test_uml_fix_past_the_reservation_in_range_when_the_os_gives_low_memory() -> None:
    # A kernel that allocates bottom-up (mmap_base low) hands out memory just above the arena.
    doc = run("go-2012", "uml,mmap-base=0x40000000", grow="64M*8,64M")
    ninth = doc["growth"][-1]
    assert ninth["ok"] is True and ninth["path"] == "os"
    arena_start = int(doc["fallback"]["arena"][0], 16)
    assert arena_start <= int(ninth["addr"], 16) < arena_start + 2 * GiB
    assert doc["outcome"] == "fallback-32bit"


def test_uml_pre_fix_dies_at_the_first_sysmap() -> None:
    doc = run("go-2012-pre", "uml")
    assert doc["outcome"] == "crash"
    assert doc["crash"] == "runtime: out of memory"
    assert doc["reservation"]["high_ok"] is True  # it believed the hint
    sysmap = calls(doc, "SysMap")
    # hinted map lands low, ...
    assert sysmap[0]["flags"] == "ANON|PRIVATE" and int(sysmap[0]["result"], 16) < 0x7FC0000000
    # ... mincore says every page is free (ENOMEM), so it unmaps and retries with MAP_FIXED: ENOMEM.
    free = calls(doc, "addrspace_free")
    assert free[0]["call"] == "mincore" and free[0]["result"] == "ENOMEM" and free[0]["count"] == 64 * MiB // 4096
    assert sysmap[1]["call"] == "munmap"
    assert sysmap[2]["flags"] == "ANON|FIXED|PRIVATE" and sysmap[2]["result"] == "ENOMEM"
    assert doc["growth"][0]["ok"] is False and doc["growth"][0]["error"] == "runtime: out of memory"


def test_uml_modern_tries_every_hint_then_takes_what_the_os_gives() -> None:
    doc = run("go-modern", "uml")
    assert doc["reservation"]["hint"] == "0xc000000000"
    assert doc["reservation"]["high_ok"] is False
    assert doc["reservation"]["hints_tried"] == 128
    assert doc["outcome"] == "os-chosen"
    assert all(g["ok"] for g in doc["growth"])
    assert all(int(a, 16) % (64 * MiB) == 0 for a, _ in doc["heap"]["arenas"])


# -- riscv Sv39 ---------------------------------------------------------------------------


def test_sv39_refuses_the_hint_like_uml() -> None:
    doc = run("go-2012", "sv39")
    assert doc["facts"]["user_top"] == "0x4000000000"
    assert doc["reservation"]["high_ok"] is False
    assert doc["outcome"] == "fallback-32bit"
    assert run("go-2012-pre", "sv39")["crash"] == "runtime: out of memory"
    assert run("go-modern", "sv39")["outcome"] == "os-chosen"


def test_modern_on_arm64_uses_the_0x40_hint() -> None:
    doc = run("go-modern", "host,machine=aarch64")
    assert doc["reservation"]["hint"] == "0x4000000000"
    assert doc["outcome"] == "high-arena"


# -- pointer size 4 -----------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["go-2012", "go-2012-pre"])
def test_32bit_goes_straight_to_the_32bit_reservation(policy: str) -> None:
    doc = run(policy, "i386")
    assert doc["reservation"] is None
    assert doc["fallback"]["engaged"] is False
    assert doc["fallback"]["bitmap"] is not None
    bitmap = [int(x, 16) for x in doc["fallback"]["bitmap"]]
    assert bitmap[1] - bitmap[0] == 256 * MiB  # 2 GiB / 8 on 32-bit
    assert doc["outcome"] == "native-32bit"
    assert doc["facts"]["pointer_bits"] == 32


def test_32bit_past_the_reservation_takes_os_memory_when_in_range() -> None:
    doc = run("go-2012", "i386", grow="64M*8,64M")
    ninth = doc["growth"][-1]
    arena_start = int(doc["fallback"]["arena"][0], 16)
    addr_ok = ninth["ok"] and arena_start <= int(ninth["addr"], 16) < arena_start + 2 * GiB
    rejected = any("not in usable range" in m for m in doc["messages"])
    assert addr_ok != rejected  # exactly one of the two MHeap_SysAlloc outcomes


def test_modern_32bit_reserves_a_linear_arena() -> None:
    doc = run("go-modern", "i386")
    assert doc["outcome"] == "native-32bit"
    a, b = [int(x, 16) for x in doc["fallback"]["arena"]]
    # sysReserveAligned keeps the extra 4 MiB when the kernel's answer happens to be aligned.
    assert b - a in (512 * MiB, 516 * MiB) and a % (4 * MiB) == 0


# -- RLIMIT_AS 1 GiB ----------------------------------------------------------------------


def test_rlimit_1g_probe_passes_and_a_later_sysmap_fails() -> None:
    doc = run("go-2012", "host,rlimit-as=1G", grow="64M*20")
    assert doc["reservation"]["high_ok"] is True  # the 64 KiB probe fits
    assert doc["crash"] == "runtime: out of memory"
    failed = doc["growth"][-1]
    assert failed["ok"] is False and failed["step"] > 1
    assert doc["facts"]["rlimit_as"] == GiB
    last_fixed = [e for e in calls(doc, "SysMap") if e["call"] == "mmap"][-1]
    assert last_fixed["flags"] == "ANON|FIXED|PRIVATE" and last_fixed["result"] == "ENOMEM"


# -- the remaining Go messages --------------------------------------------------------------


def test_cannot_reserve_arena_virtual_address_space() -> None:
    doc = run("go-2012", "i386,rlimit-as=100M")
    assert doc["outcome"] == "crash"
    assert doc["crash"] == "runtime: cannot reserve arena virtual address space"


def test_address_space_conflict() -> None:
    space = SimKernel(task_size=0x7FFFFFFFF000)
    busy = HIGH_HINT + GiB
    assert space.mmap(busy, 4096, PROT_NONE, MAP_ANON | MAP_PRIVATE | MAP_FIXED) == busy
    doc = Go2012(space, fixed=True).run(parse_grow("1M"))
    assert doc["crash"] == "runtime: address space conflict"
    assert any(m.startswith("runtime: address space conflict: map(0x%x) = 0x" % busy) for m in doc["messages"])


class _NoFixed(SimKernel):
    """A kernel that refuses MAP_FIXED with EINVAL (a fake for one message)."""

    def _raw_mmap(self, addr: int, length: int, prot: int, flags: int) -> int:
        if flags & MAP_FIXED:
            return EINVAL
        return super()._raw_mmap(addr, length, prot, flags)


def test_cannot_map_pages_in_arena_address_space() -> None:
    doc = Go2012(_NoFixed(task_size=0x7FC0000000), fixed=True).run(parse_grow("1M"))
    assert doc["outcome"] == "crash"
    assert doc["crash"] == "runtime: cannot map pages in arena address space"


def test_modern_memory_outside_the_usable_address_space() -> None:
    doc = run("go-modern", "la57,honour-hints=no,mmap-base=0xff000000000000", grow="64M")
    assert doc["crash"] == "memory reservation exceeds address space limit"
    assert any("not in usable address space: base outside usable address space" in m for m in doc["messages"])


def test_modern_out_of_memory_when_nothing_can_be_reserved() -> None:
    # Go 1.19 reserves 593 MiB for its page allocator first, and on UML its first arena anywhere
    # (128 MiB asked, to align it): 800 MiB leaves room for one block and not a third arena. (The
    # old 200M case is now test_modern_page_summaries_that_do_not_fit.)
    doc = run("go-modern", "uml,rlimit-as=800M", grow="64M*4")
    assert doc["crash"] == "out of memory"
    assert any(m.startswith("runtime: out of memory: cannot allocate 67108864-byte block") for m in doc["messages"])


def test_ignored_hints_are_retried_with_map_fixed_when_free() -> None:
    """'On some systems, mmap ignores v without MAP_FIXED': SysMap retries when mincore says free."""
    doc = run("go-2012", "host,honour-hints=no", grow="1M")
    # The probe is refused (hints ignored), so the fix falls back; but the 32-bit
    # reservation itself lands above 4 GiB, so SysMap takes the high path, its
    # hinted map lands elsewhere and mincore finds the reservation there: the
    # 2012 runtime dies of its own reservation.
    assert doc["reservation"]["high_ok"] is False and doc["fallback"]["engaged"] is True
    assert int(doc["fallback"]["arena"][0], 16) > 0xFFFFFFFF
    assert doc["crash"] == "runtime: address space conflict"
    pre = run("go-2012-pre", "host,honour-hints=no", grow="1M")
    assert pre["outcome"] == "high-arena"
    first = calls(pre, "SysMap")
    assert first[0]["result"] != first[0]["addr"] and first[2]["flags"] == "ANON|FIXED|PRIVATE"
    assert first[2]["result"] == first[2]["addr"]


def test_modern_direct_class_is_usable_without_the_cli() -> None:
    doc = GoModern(SimKernel(), machine="x86_64").run(parse_grow("4M"))
    assert doc["outcome"] == "high-arena" and doc["heap"]["arenas"] == [["0xc000000000", "0xc004000000"]]



# -- Go 1.19's reservations, one by one (go1.19.8: malloc.go, mheap.go, mpagealloc*.go) ---------------

RW, NONE = "READ|WRITE", "NONE"
ANY, FIXED = "ANON|PRIVATE", "ANON|FIXED|PRIVATE"
HEAP_ARENA_64 = 2 * MiB + 64 * 1024 + 3 * 1024 + 16  # bitmap, spans, three page bitmaps, two words
HEAP_ARENA_32 = 256 * 1024 + 2048 + 3 * 64 + 8
SUMMARY_64 = [128 * 1024, 1 * MiB, 8 * MiB, 64 * MiB, 512 * MiB]


def maps(doc: Dict[str, Any]) -> List[Tuple[str, str, int, str, str, str]]:
    """(fn, addr, len, prot, flags, result) of every mmap."""
    return [(e["fn"], e["addr"], e["len"], e["prot"], e["flags"], e["result"]) for e in doc["trace"]
            if e["call"] == "mmap"]


def page_up(n: int) -> int:
    return (n + 4095) & ~4095


def base_vm(spec: str) -> int:
    """What the simulated process has mapped before Go's runtime starts: its image and stack."""
    return int(run("go-modern", spec, grow="1M")["facts"]["vm_size"])


def test_modern_64bit_start_up_reserves_what_go_reserves_in_its_order() -> None:
    doc = run("go-modern", "host", grow="64M")
    m = maps(doc)
    assert m[0][:5] == ("persistentalloc", "0x0", 256 * 1024, RW, ANY)  # addrRanges.init's first chunk
    # sysInit: five summary levels, then the scavenge index, all PROT_NONE wherever the kernel likes.
    assert [(fn, a, n, p, f) for fn, a, n, p, f, _ in m[1:7]] == \
        [("pageAlloc.sysInit", "0x0", n, NONE, ANY) for n in SUMMARY_64 + [8 * MiB]]
    assert m[7][:5] == ("mheap.sysAlloc", "0xc000000000", 64 * MiB, NONE, ANY)  # the first hint
    assert m[8][:5] == ("mheap.sysAlloc", "0x0", 32 * MiB, RW, ANY)  # the arena index's L2 map
    assert m[9][:5] == ("persistentalloc", "0x0", HEAP_ARENA_64, RW, ANY)  # the arena's heapArena
    assert m[10][:5] == ("mheap.grow", "0xc000000000", 4 * MiB, RW, FIXED)  # the runtime's first chunk
    summary = [int(r, 16) for _, _, _, _, _, r in m[1:6]]
    scav = int(m[6][5], 16)
    # sysGrow maps the whole root level and one page of each other level ...
    grown = [(fn, int(a, 16), n) for fn, a, n, p, f, _ in m[11:16]]
    assert [fn for fn, _, _ in grown] == ["pageAlloc.sysGrow"] * 5 and grown[0][1:] == (summary[0], 128 * 1024)
    # ... at the index of 0xc000000000 less amd64's arenaBaseOffset (a 2^47 shift) in each level.
    for level, (_, addr, n) in enumerate(grown[1:], 1):
        shift = 48 - 14 - 3 * level + 0  # levelShift
        index = ((0xC000000000 + (1 << 47)) >> shift) & ~7  # block-aligned
        assert n == 4096 and addr == summary[level] + (index * 8 & ~4095)
    # The scavenge index from its start to the chunk's byte: 0x406000 bytes in, on amd64.
    assert m[16][:5] == ("scavengeIndex.grow", hex(scav), 0x407000, RW, FIXED)
    assert m[17][:5] == ("pageAlloc.grow", "0x0", 1 * MiB, RW, ANY)  # chunk bitmaps' L2 block
    # The plan's 64 MiB block: the next hint's arena and its metadata, then the pages.
    assert [x[:5] for x in m[18:]] == [("mheap.sysAlloc", "0xc004000000", 64 * MiB, NONE, ANY),
                                       ("persistentalloc", "0x0", HEAP_ARENA_64, RW, ANY),
                                       ("mheap.grow", "0xc000400000", 64 * MiB, RW, FIXED)]
    meta = doc["heap"]["metadata"]
    assert meta["summary_reserved"] == sum(SUMMARY_64) and meta["scavenge_index_reserved"] == 8 * MiB
    assert meta["heap_arenas"] == 2 and meta["heap_arena_bytes"] == HEAP_ARENA_64
    assert meta["arena_map_bytes"] == 32 * MiB and meta["chunk_bitmap_blocks"] == 1


def test_modern_first_block_lands_after_what_the_runtime_took_before_main() -> None:
    doc = run("go-modern", "host", grow="64M*2,1M")
    assert doc["heap"]["runtime_init"] == {"size": MiB, "addr": "0xc000000000", "path": "hint"}
    assert [g["addr"] for g in doc["growth"]] == ["0xc000100000", "0xc004100000", "0xc008100000"]
    # The 1 MiB allocation fits in the pages left free: no grow, no mapping.
    assert doc["growth"][2]["path"] == "free" and maps(doc)[-1][0] == "mheap.grow"
    assert doc["heap"]["heap_sys"] == 132 * MiB and doc["heap"]["pages_in_use"] == 130 * MiB


def test_modern_arm64_has_no_arena_base_offset() -> None:
    doc = run("go-modern", "host,machine=aarch64", grow="1M")
    scav = [x for x in maps(doc) if x[0] == "scavengeIndex.grow"]
    # chunkIndex(0x4000000000) = 0x10000: the index maps three pages, not amd64's 0x407000 bytes.
    assert [x[2] for x in scav] == [0x3000]


def test_rlimit_1g_dies_where_go_1_19_dies_allocating_heap_arena_metadata() -> None:
    """go1.19.8 linux/amd64, prlimit --as=1G, 64 MiB blocks: 4 grown, then this throw."""
    doc = run("go-modern", "host,rlimit-as=1G", grow="64M*20")
    assert [g["ok"] for g in doc["growth"]] == [True] * 4 + [False]
    assert doc["crash"] == "out of memory allocating heap arena metadata"
    # The fifth arena was reserved; its metadata was not.
    last = maps(doc)[-2:]
    assert last[0][:3] == ("mheap.sysAlloc", "0xc014000000", 64 * MiB) and last[0][5] == "0xc014000000"
    assert last[1][:3] == ("persistentalloc", "0x0", HEAP_ARENA_64) and last[1][5] == "ENOMEM"


def test_rlimit_600m_dies_before_main_like_go_1_19() -> None:
    """go1.19.8 linux/amd64 under prlimit --as=600M never reaches main."""
    doc = run("go-modern", "host,rlimit-as=600M", grow="64M*20")
    assert doc["growth"] == [] and doc["outcome"] == "crash" and doc["crash"] == "out of memory"
    assert doc["messages"][0] == "runtime: out of memory: cannot allocate 4194304-byte block (0 in use)"
    assert doc["heap"]["runtime_init"]["addr"] is None
    # Every hint was refused (ENOMEM), then the 128 MiB aligned reservation anywhere.
    assert doc["reservation"]["hints_tried"] == 128 and doc["reservation"]["probe_error"] == "ENOMEM"
    assert maps(doc)[-1][:3] == ("sysReserveAligned", "0x0", 128 * MiB) and maps(doc)[-1][5] == "ENOMEM"


def test_modern_page_summaries_that_do_not_fit() -> None:
    doc = run("go-modern", "host,rlimit-as=200M")
    assert doc["crash"] == "failed to reserve page summary memory"
    assert maps(doc)[-1][:3] == ("pageAlloc.sysInit", "0x0", 512 * MiB) and maps(doc)[-1][5] == "ENOMEM"


def test_modern_persistentalloc_chunk_that_does_not_fit() -> None:
    base = base_vm("host")
    doc = run("go-modern", "host,rlimit-as=%d" % (base + 128 * 1024))
    assert doc["crash"] == "runtime: cannot allocate memory" and len(maps(doc)) == 1


def _start_up_vm(base: int) -> int:
    """The simulated process's VM once sysInit is done and the first arena is reserved."""
    return base + 256 * 1024 + sum(SUMMARY_64) + 8 * MiB + 64 * MiB


def test_modern_heap_arena_map_that_does_not_fit() -> None:
    limit = _start_up_vm(base_vm("host")) + 16 * MiB
    doc = run("go-modern", "host,rlimit-as=%d" % limit)
    assert doc["crash"] == "out of memory allocating heap arena map"
    assert maps(doc)[-1][:3] == ("mheap.sysAlloc", "0x0", 32 * MiB)


def test_modern_first_heap_arena_metadata_that_does_not_fit() -> None:
    limit = _start_up_vm(base_vm("host")) + 32 * MiB + MiB
    doc = run("go-modern", "host,rlimit-as=%d" % limit)
    assert doc["crash"] == "out of memory allocating heap arena metadata" and doc["growth"] == []


def test_modern_chunk_bitmaps_that_do_not_fit() -> None:
    limit = _start_up_vm(base_vm("host")) + 32 * MiB + page_up(HEAP_ARENA_64) + 512 * 1024
    doc = run("go-modern", "host,rlimit-as=%d" % limit)
    assert doc["crash"] == "pageAlloc: out of memory"
    assert maps(doc)[-1][:3] == ("pageAlloc.grow", "0x0", MiB)


def test_modern_discontiguous_arena_maps_the_rest_of_the_old_one() -> None:
    """A hint the kernel will not honour (something lies there) moves the heap: Go maps what is
    left of the current arena for the page allocator, then starts over in the new one."""
    space = SimKernel(task_size=0x7FFFFFFFF000)
    assert space.mmap(0xC004000000, 4096, PROT_NONE, MAP_ANON | MAP_PRIVATE | MAP_FIXED) == 0xC004000000
    doc = GoModern(space, machine="x86_64").run(parse_grow("64M"))
    assert doc["heap"]["arenas"] == [["0xc000000000", "0xc004000000"], ["0x1c000000000", "0x1c004000000"]]
    grows = [x for x in maps(doc) if x[0] == "mheap.grow"]
    assert [(a, n) for _, a, n, _, _, _ in grows] == [("0xc000000000", 4 * MiB), ("0xc000400000", 60 * MiB),
                                                     ("0x1c000000000", 64 * MiB)]
    # 1 MiB used and 3 free in the first chunk, 60 MiB after it: no run of 64 MiB until the new arena.
    assert doc["growth"][0]["addr"] == "0x1c000000000" and doc["growth"][0]["path"] == "hint"
    # The new range needs its own summary pages: sysGrow maps them after the remainder's.
    assert len([x for x in maps(doc) if x[0] == "pageAlloc.sysGrow"]) == 5 + 4


def test_modern_32bit_reserves_all_arena_metadata_before_the_arena() -> None:
    doc = run("go-modern", "i386", grow="64M*9")
    m = maps(doc)
    assert m[0][:5] == ("persistentalloc", "0x0", 256 * 1024, RW, ANY)
    # sysInit: every summary level at once (2+16+128+1024 entries of 8 bytes), mapped at once.
    assert m[1][:5] == ("pageAlloc.sysInit", "0x0", 12288, NONE, ANY)
    assert m[2][:5] == ("pageAlloc.sysInit", m[1][5], 12288, RW, FIXED)
    # mallocinit: arenaMetaSize for all 1024 arenas of 4 MiB, then the arena near the end of the binary.
    assert m[3][:5] == ("mallocinit", "0x0", 1024 * HEAP_ARENA_32, NONE, ANY) and 1024 * HEAP_ARENA_32 == 270737408
    end = int(doc["facts"]["end"], 16)
    want = (end + 256 * 1024 + 4 * MiB - 1) & ~(4 * MiB - 1)
    assert doc["fallback"]["want"] == hex(want)
    assert m[4][:5] == ("sysReserveAligned", hex(want), 516 * MiB, NONE, ANY)
    assert doc["fallback"]["meta"] == [m[3][5], hex(int(m[3][5], 16) + 270737408)]
    # The first arena: the 4 KiB L2 map, then the heapArena mapped inside the metadata reservation.
    assert m[5][:5] == ("mheap.sysAlloc", "0x0", 4096, RW, ANY)
    assert m[6][:5] == ("linearAlloc.alloc", m[3][5], 266240, RW, FIXED)
    # A 64 MiB block is sixteen arenas, each mapping the pages its heapArena reaches into: the
    # lengths go1.19.8 linux/386 mapped (strace) for the first arena and two 64 MiB blocks.
    o, t = 266240, 262144
    measured = [o] + [o, t, o, t, o, t, o, t, o, o, t, o, t, o, t, o] + [t, o, t, o, o, t, o, t, o, t, o, t, o, o, t, o]
    assert [x[2] for x in m if x[0] == "linearAlloc.alloc"][:33] == measured
    # 4 MiB and eight blocks fill the 516 MiB reservation; the ninth comes from the hint at its end.
    assert [g["path"] for g in doc["growth"]] == ["linear"] * 8 + ["hint"]
    assert doc["outcome"] == "native-32bit"


@pytest.mark.parametrize("limit, arena, grown", [("1G", 516, 11), ("600M", 260, 5), ("450M", 132, 2)])
def test_modern_32bit_arena_retries_and_rlimit(limit: str, arena: int, grown: int) -> None:
    """go1.19.8 linux/386 under prlimit: 11 blocks at 1 GiB, 5 at 600 MiB (then 'cannot allocate')."""
    doc = run("go-modern", "i386,rlimit-as=%s" % limit, grow="64M*20")
    a, b = [int(x, 16) for x in doc["fallback"]["arena"]]
    assert b - a == arena * MiB  # 512, 256 or 128 MiB, and the 4 MiB of alignment slack kept
    tried = [x[2] >> 20 for x in maps(doc) if x[0] == "sysReserveAligned"][:3]
    assert tried[: [516, 260, 132].index(arena) + 1] == [516, 260, 132][: [516, 260, 132].index(arena) + 1]
    assert sum(g["ok"] for g in doc["growth"]) == grown and doc["crash"] == "out of memory"
    in_use = (4 + 64 * grown) * MiB
    assert "runtime: out of memory: cannot allocate 67108864-byte block (%d in use)" % in_use in doc["messages"]


def test_modern_32bit_without_the_metadata_reservation_allocates_metadata_one_by_one() -> None:
    doc = run("go-modern", "i386,rlimit-as=200M", grow="8M")
    assert doc["fallback"]["meta"] is None and doc["heap"]["metadata"]["arena_meta_reserved"] == 0
    a, b = [int(x, 16) for x in doc["fallback"]["arena"]]
    assert b - a == 132 * MiB
    per_arena = [x for x in maps(doc) if x[0] == "persistentalloc" and x[2] == HEAP_ARENA_32]
    assert len(per_arena) == 3 and all(x[3:5] == (RW, ANY) for x in per_arena)  # 4 MiB, then 8 MiB
    assert doc["outcome"] == "native-32bit"
