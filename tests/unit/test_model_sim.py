"""The Go model on the simulated kernel: every machine kind and every Go message."""

from __future__ import annotations

from typing import Any, Dict, List

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
    doc = run("go-modern", "uml,rlimit-as=200M", grow="64M*4")
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
