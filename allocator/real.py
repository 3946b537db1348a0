"""The real address space of this process: mmap, munmap and mincore through ctypes.

Also reads the facts a result reports: kernel, machine, pointer size, page size,
the observed top of user space (highest mapping, then a bisection with
MAP_FIXED_NOREPLACE probes), RLIMIT_AS, vm.overcommit_memory, mmap_min_addr,
and Go's ``end`` (the program break: the end of the data segment as the kernel
sees it, brk heap included, so the 32-bit hint does not land on Python's heap).

RLIMIT_AS for the modelled process: the model's mappings share this process
with the Python interpreter, whose own mappings (about 18 MiB) are much larger
than a small Go binary's (``space.GO_IMAGE`` and ``GO_STACK``, about 2 MiB). Go
1.19 reserves some 660 MiB at start-up and then about 66 MiB per 64 MiB heap
arena, so those 16 MiB would decide which reservation fails first, and with it
Go's message. Given ``rlimit_as``, the space therefore sets the soft limit
before each of the model's mmaps to ``rlimit_as`` plus what the interpreter
maps beyond a Go binary's own mappings, measured then (VmSize less the model's
live mappings). The kernel still decides every call; it sees the room a Go
process would have. ``close`` unmaps the model's mappings and restores the limit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import resource
from typing import Any, Dict, List, Optional, Tuple

from allocator.space import (
    EEXIST,
    ENOMEM,
    GO_IMAGE,
    GO_STACK,
    MAP_ANON,
    MAP_FIXED_NOREPLACE,
    MAP_PRIVATE,
    PROT_NONE,
    AddressSpace,
    MappingSet,
    hexa,
)


def _load_libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return ctypes.CDLL(None, use_errno=True)


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def read_maps(path: str = "/proc/self/maps") -> List[Tuple[int, int, str]]:
    """(start, end, name) of every mapping, [vsyscall] excluded (it lies above user space)."""
    out: List[Tuple[int, int, str]] = []
    text = _read(path) or ""
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        name = parts[5].strip() if len(parts) == 6 else ""
        if name == "[vsyscall]":
            continue
        lo, hi = parts[0].split("-")
        out.append((int(lo, 16), int(hi, 16), name))
    return out


def vm_size() -> Optional[int]:
    """This process's VmSize in bytes (what the kernel holds against RLIMIT_AS), or None without /proc."""
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith("VmSize:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) * 1024
    return None


class RealSpace(AddressSpace):
    """This process's own address space. Mappings it makes are unmapped by ``close`` (or at exit).

    ``rlimit_as``: the RLIMIT_AS the modelled Go process runs under (see the module's docstring).
    """

    def __init__(self, rlimit_as: Optional[int] = None) -> None:
        super().__init__()
        self.rlimit_as = rlimit_as
        self.mappings = MappingSet()  # the model's live mappings, for the interpreter's share and close()
        self.shift_first: Optional[int] = None
        self.shift_max: Optional[int] = None
        self.shift_capped = False
        self.libc = _load_libc()
        self.pointer_bits = ctypes.sizeof(ctypes.c_void_p) * 8
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self._mmap = self.libc.mmap
        self._mmap.restype = ctypes.c_void_p
        self._mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        self._munmap = self.libc.munmap
        self._munmap.restype = ctypes.c_int
        self._munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self._mincore = self.libc.mincore
        self._mincore.restype = ctypes.c_int
        self._mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        self._sbrk = self.libc.sbrk
        self._sbrk.restype = ctypes.c_void_p
        self._sbrk.argtypes = [ctypes.c_long]
        self._mask = (1 << self.pointer_bits) - 1
        self._vec = ctypes.create_string_buffer(64)
        self._user_top: Optional[Dict[str, Any]] = None

    def _page_up(self, n: int) -> int:
        return (n + self.page_size - 1) & ~(self.page_size - 1)

    def _fit_rlimit(self) -> None:
        """Set the soft RLIMIT_AS so that this call has the room it would have in a Go process."""
        if self.rlimit_as is None:
            return
        vm = vm_size()
        if vm is None:
            return
        shift = vm - self.mappings.total() - (GO_IMAGE + GO_STACK)
        if self.shift_first is None:
            self.shift_first = shift
        self.shift_max = shift if self.shift_max is None else max(self.shift_max, shift)
        soft = max(0, self.rlimit_as + shift)
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY and soft > hard:
            soft, self.shift_capped = hard, True
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

    def _raw_mmap(self, addr: int, length: int, prot: int, flags: int) -> int:
        self._fit_rlimit()
        ctypes.set_errno(0)
        p = self._mmap(addr or None, length, prot, flags, -1, 0)
        if p is None:  # NULL is a valid mapping only with MAP_FIXED at 0, which we never ask
            return ctypes.get_errno() or ENOMEM
        got = int(p) & self._mask
        if got == self._mask:  # MAP_FAILED
            return ctypes.get_errno() or ENOMEM
        self.mappings.insert(got, got + self._page_up(length), prot)
        return got

    def _raw_munmap(self, addr: int, length: int) -> int:
        ctypes.set_errno(0)
        if self._munmap(addr, length) != 0:
            return ctypes.get_errno()
        self.mappings.remove(addr, addr + self._page_up(length))
        return 0

    def _raw_mincore(self, addr: int, length: int) -> int:
        pages = (length + self.page_size - 1) // self.page_size
        vec = self._vec if pages <= len(self._vec) else ctypes.create_string_buffer(pages)
        ctypes.set_errno(0)
        return ctypes.get_errno() if self._mincore(addr, length, vec) != 0 else 0

    def _raw_touch(self, addr: int) -> None:
        ctypes.c_char.from_address(addr).value = b"\x01"

    def data_end(self) -> int:
        brk = self._sbrk(0)
        if brk:
            return int(brk)
        return max((hi for lo, hi, name in read_maps() if name in ("", "[heap]")), default=0)

    # -- facts -----------------------------------------------------------------------
    def user_top(self) -> Dict[str, Any]:
        """The top of user space: the highest mapping, refined by MAP_FIXED_NOREPLACE bisection.

        A one-page NOREPLACE map beyond the task size fails with ENOMEM; below it,
        it succeeds (and is unmapped at once) or meets a mapping (EEXIST). Kernels
        older than 4.17 ignore the flag and treat the address as a hint: then only
        the highest mapping is reported.
        """
        if self._user_top is not None:
            return self._user_top
        maps = read_maps()
        highest = max((hi for _, hi, _ in maps), default=0)
        page = self.page_size
        top_limit = 1 << (57 if self.pointer_bits == 64 else 32)
        result: Dict[str, Any] = {
            "highest_mapping": hexa(highest),
            "user_top": hexa(highest),
            "method": "highest-mapping",
            "probes": 0,
        }

        def below_top(addr: int) -> Optional[bool]:
            result["probes"] += 1
            p = self._raw_mmap(addr, page, PROT_NONE, MAP_ANON | MAP_PRIVATE | MAP_FIXED_NOREPLACE)
            if p == addr:
                self._raw_munmap(p, page)
                return True
            if p == EEXIST:
                return True
            if p == ENOMEM:
                return False
            if p >= 4096:  # flag ignored: the kernel treated addr as a hint
                self._raw_munmap(p, page)
            return None

        lo = highest - page  # known to be below the top (the page is mapped)
        hi = top_limit - page
        if lo < 0:
            return result
        verdict = below_top(hi)
        if verdict is None:
            return result
        if verdict:  # everything up to the architecture's limit is user space
            lo = hi
        else:
            while hi - lo > page:
                mid = ((lo + hi) // 2) & ~(page - 1)
                if mid <= lo:
                    break
                v = below_top(mid)
                if v is None:
                    return result
                if v:
                    lo = mid
                else:
                    hi = mid
        result["user_top"] = hexa(lo + page)
        result["method"] = "bisection"
        self._user_top = result
        return result

    def facts(self) -> Dict[str, Any]:
        uname = os.uname()
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        overcommit = _read("/proc/sys/vm/overcommit_memory")
        min_addr = _read("/proc/sys/vm/mmap_min_addr")
        top = self.user_top()
        maps = read_maps()
        exe = os.path.realpath("/proc/self/exe")
        image_end = max((hi for _, hi, name in maps if name == exe), default=None)
        return {
            "kernel": uname.release,
            "kernel_version": uname.version,
            "machine": uname.machine or platform.machine(),
            "pointer_bits": self.pointer_bits,
            "page_size": self.page_size,
            "user_top": top["user_top"],
            "user_top_method": top["method"],
            "highest_mapping": top["highest_mapping"],
            "rlimit_as": None if soft == resource.RLIM_INFINITY else soft,
            "overcommit_memory": int(overcommit) if overcommit and overcommit.isdigit() else None,
            "mmap_min_addr": int(min_addr) if min_addr and min_addr.isdigit() else None,
            "end": hexa(self.data_end()),
            "end_source": "program break (sbrk(0))",
            "image_end": hexa(image_end),
            "python": platform.python_version(),
            "simulated": False,
            "vm_size": vm_size(),
            "rlimit_as_shift": None,
        }

    def rlimit_shift(self) -> Optional[Dict[str, Any]]:
        """How far the soft RLIMIT_AS was moved for the interpreter (bytes), or None without ``rlimit_as``."""
        if self.rlimit_as is None:
            return None
        return {"go_image": GO_IMAGE + GO_STACK, "first": self.shift_first, "max": self.shift_max,
                "capped_at_hard_limit": self.shift_capped}

    def close(self) -> None:
        """Unmap what the model mapped and put back the soft RLIMIT_AS, so the report has room to be written."""
        for start, end, _ in list(self.mappings.maps):
            self._munmap(start, end - start)
        self.mappings = MappingSet()
        if self.rlimit_as is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            soft = self.rlimit_as if hard == resource.RLIM_INFINITY else min(self.rlimit_as, hard)
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
