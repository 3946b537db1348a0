"""The jvm probe's command line and its reading of what OpenJDK 17 printed.

The fixtures in tests/data/jvm are real: ``harness.probes.jvm.argv`` run on Debian 12's OpenJDK
17.0.15 (amd64) under ``prlimit --as`` where a case names a limit, and Debian 12's arm64 OpenJDK
17.0.19 under ``qemu-aarch64-static -R``, stdout and stderr kept apart (tests/data/jvm/cases.json
has each command, where it ran and its exit status). Only the cases no JVM here can
produce (an old java, a shell that cannot find java, hostile text) are written by hand, and say so.
"""

from __future__ import annotations

import json
import random
from typing import Any, Dict, Optional

import pytest

from allocator.probe import OUTCOMES
from allocator.runtime import PlanError
from harness.document import check_document
from harness.probes import jvm
from tests.conftest import ROOT

DATA = ROOT / "tests" / "data" / "jvm"
CASES: Dict[str, Any] = json.loads((DATA / "cases.json").read_text())["cases"]


def captured(name: str) -> Dict[str, Any]:
    """The document of one captured run (checked against the schema every time)."""
    d = jvm.document((DATA / (name + ".stdout")).read_text(), (DATA / (name + ".stderr")).read_text(),
                     CASES[name]["returncode"])
    assert check_document(d) is None, check_document(d)
    assert d["schema"] == 1 and d["policy"] == "jvm"
    assert d["outcome"] is None or d["outcome"] in OUTCOMES
    return d


# --- the command line ---------------------------------------------------------------------------

def test_argv_asks_java_for_its_reservations_without_any_class() -> None:
    a = jvm.argv("/usr/lib/jvm/java-17-openjdk-arm64/bin/java", "1280m")
    assert a[0] == "/usr/lib/jvm/java-17-openjdk-arm64/bin/java" and a[1] == "-Xmx1280m"
    assert a[-1] == "-version"  # the VM is created in full before the version is printed; no class runs
    assert "-Xlog:gc+heap+coops=trace,gc+metaspace=info,gc+init=info,pagesize=info:stdout:uptime,level,tags" in a
    assert "-XX:ErrorFile=/dev/null" in a and "-XX:-CreateCoredumpOnCrash" in a  # no files left in the guest
    assert not any(x.endswith((".class", ".jar", ".java")) or x in ("-cp", "-jar") for x in a)
    assert CASES["started-1g"]["argv"] == jvm.argv("java", "1g")  # the fixtures were captured with this argv


def test_argv_without_a_size_leaves_the_heap_to_the_jvm() -> None:
    assert not any(x.startswith("-Xmx") for x in jvm.argv("java", None))


@pytest.mark.parametrize("bad", ["", "1x", "0", "1g -XX:+Foo", "-1g", "1.5g", "12345678901234567890g"])
def test_a_bad_heap_size_is_named_and_refused(bad: str) -> None:
    assert jvm.check_xmx(bad) == "expected a heap size like 1g, 512m or 1073741824, got %r" % bad[:40]
    with pytest.raises(ValueError, match="jvm probe: -Xmx expected a heap size"):
        jvm.argv("java", bad)


@pytest.mark.parametrize("good", ["1g", "512M", "1073741824", "3T", "64k"])
def test_good_heap_sizes_pass(good: str) -> None:
    assert jvm.check_xmx(good) is None


@pytest.mark.parametrize("plan, xmx", [
    ("64M*20", "1280m"), ("1G", "1g"), ("64M*16", "1g"), ("64M*8,sysalloc:64M", "512m"),
    ("grow:4K*3", "12k"), ("1.5K", "1536"), ("1024G*2", "2t"), ("512M, 512M", "1g"),
])
def test_the_heap_a_growth_plan_implies_is_the_sum_of_its_grow_steps(plan: str, xmx: str) -> None:
    assert jvm.heap_from_grow(plan) == xmx
    assert jvm.check_xmx(xmx) is None  # what heap_from_grow gives, argv takes


def test_a_plan_without_grow_steps_or_malformed_gives_no_heap() -> None:
    with pytest.raises(PlanError, match="has no grow step"):
        jvm.heap_from_grow("sysalloc:64M*2")
    with pytest.raises(PlanError, match="bad growth step"):
        jvm.heap_from_grow("64Q")


# --- real outputs: the JVM started ---------------------------------------------------------------

def test_a_started_jvm_whose_heap_sits_where_it_asked_is_high_arena() -> None:
    d = captured("started-1g")
    assert d["outcome"] == "high-arena" and d["crash"] is None and d["error"] is None
    assert d["heap"] == {"arena_start": "0xc0000000", "arena_end": "0x100000000",
                         "arenas": [["0xc0000000", "0x100000000"]]}
    f = d["facts"]
    assert f["compressed_oops_mode"] == "32-bit" and f["heap_requested"] == ["0xc0000000"]
    assert f["class_space"] == ["0x7f9840000000", "0x7f9880000000"]
    assert f["kernel"] == "6.18.44-fc-v669" and f["jvm_arch"] == "amd64" and f["pointer_bits"] == 64
    assert f["jvm_version"] == "17.0.15+6-Debian-1deb12u1" and f["jvm_name"] == "OpenJDK 64-Bit Server VM"
    assert f["machine"] is None  # Java's os.arch is the JVM's build, not uname's machine
    assert "[gc,heap,coops] Heap address: 0x00000000c0000000, size: 1024 MB, Compressed Oops mode: 32-bit" \
        in d["messages"]
    assert any(m.startswith("[gc,metaspace] Compressed class space mapped at: 0x00007f9840000000")
               for m in d["messages"])
    assert not any("hugepage" in m or "user.home" in m for m in d["messages"])  # only the relevant lines


def test_the_default_heap_is_zero_based_and_high_arena() -> None:
    d = captured("started-default")
    assert d["outcome"] == "high-arena" and d["facts"]["compressed_oops_mode"] == "Zero based"
    assert d["heap"]["arena_end"] == "0x800000000"  # a quarter of 24 GiB, ending at 32 GiB


def test_a_disjoint_base_heap_counts_its_protected_page() -> None:
    d = captured("started-31g")
    assert d["outcome"] == "high-arena" and d["facts"]["compressed_oops_mode"] == "Non-zero disjoint base"
    # "Protected page at the reserved heap base: 0x0000001000000000 / 16777216 bytes", the heap at 0x1001000000
    assert d["heap"]["arenas"] == [["0x1000000000", "0x17c1000000"]]
    assert d["facts"]["heap_protected_prefix"] == 16 << 20 and d["facts"]["heap_requested"] == ["0x1000000000"]


def test_a_heap_the_jvm_asked_no_address_for_is_os_chosen() -> None:
    d = captured("started-40g")  # 40 GiB: no compressed oops, so no placement of the JVM's own
    assert d["outcome"] == "os-chosen" and d["facts"]["compressed_oops_mode"] == "disabled"
    assert d["facts"]["heap_requested"] is None
    start, end = (int(x, 16) for x in d["heap"]["arenas"][0])
    assert end - start == 40 << 30 and start > 1 << 40


# --- real outputs: the JVM did not start (prlimit --as) ------------------------------------------

@pytest.mark.parametrize("name, crash, heap", [
    ("heap-1g-rlimit-1g", "Could not reserve enough space for 1048576KB object heap", None),
    ("codecache-1g-rlimit-300m", "Could not reserve enough space for code cache (245760K)", None),
    ("internal-1g-rlimit-1500m",
     "guarantee(rs.is_reserved()) failed: Given reserved space must have been reserved already.", "0xc0000000"),
    ("gcthread-1g-rlimit-1520m", "Cannot create worker GC thread. Out of system resources.", "0xc0000000"),
    ("classspace-1g-rlimit-2g", "Could not allocate compressed class space: 1073741824 bytes", "0xc0000000"),
    ("metaspace-1g-rlimit-2950m", "Native memory allocation (mmap) failed to map 67108864 bytes. "
                                  "Error detail: Failed to reserve memory for metaspace", "0xc0000000"),
    ("servicethread-default-rlimit-1g", "Could not create G1ServiceThread", "0xe0000000"),
])
def test_a_jvm_that_cannot_reserve_is_a_crash_with_its_words(name: str, crash: str, heap: Optional[str]) -> None:
    d = captured(name)
    assert d["outcome"] == "crash" and d["crash"] == crash and d["error"] is None
    assert (d["heap"] or {}).get("arena_start") == heap  # reserved before the step that failed, or not at all
    assert crash in d["messages"]
    assert d["facts"]["exit_status"] == 1 and d["facts"]["signal"] is None


def test_a_heap_that_found_no_room_lists_every_address_tried() -> None:
    f = captured("heap-1g-rlimit-1g")["facts"]
    assert f["heap_requested"] == ["0xc0000000", "0xaaa00000", "0x95400000", "0x7c0000000", "0x56aa00000",
                                   "0x315400000", "0x1000000000", "0x1800000000", "0x2000000000", None]
    assert f["compressed_oops_mode"] is None and f["class_space"] is None and f["kernel"] is None


def test_a_class_space_failure_keeps_the_heap_it_had() -> None:
    d = captured("classspace-1g-rlimit-2g")
    assert d["heap"]["arenas"] == [["0xc0000000", "0x100000000"]] and d["facts"]["class_space"] is None
    assert "Error occurred during initialization of VM" in d["messages"]


def test_a_fatal_error_reports_its_vm_without_the_changing_pid() -> None:
    d = captured("internal-1g-rlimit-1500m")
    assert d["facts"]["pointer_bits"] == 64 and d["facts"]["jvm_version"] == "17.0.15+6-Debian-1deb12u1"
    assert not any("pid=" in m for m in [d["crash"]])


def test_a_jvm_killed_before_a_word_is_a_crash_without_a_message() -> None:
    d = captured("segv-1g-rlimit-128m")  # 128 MiB of address space: the launcher dies of SIGSEGV, silent
    assert d["outcome"] == "crash" and d["crash"] is None and d["facts"]["signal"] == 11
    assert d["messages"] == ["java was killed by SIGSEGV"]
    # The same death reported the shell's way (128 + 11).
    assert jvm.document("", "", 139)["facts"]["signal"] == 11


# --- real outputs: arm64 OpenJDK under qemu-user, its address space reserved with -R ------------

def test_under_qemu_user_with_room_the_arm64_jvm_starts_where_it_asked() -> None:
    d = captured("arm64-qemu-user-started-1g-r256g")
    assert d["outcome"] == "high-arena" and d["heap"]["arenas"] == [["0xc0000000", "0x100000000"]]
    f = d["facts"]
    assert f["jvm_arch"] == "aarch64" and f["jvm_version"] == "17.0.19+10-1-deb12u2-Debian"
    assert f["class_space"] == ["0x101000000", "0x141000000"]  # under -R the emulator hands out low addresses


def test_under_qemu_user_4g_the_heap_moves_down_then_the_class_space_finds_no_room() -> None:
    d = captured("arm64-qemu-user-classspace-1g-r4g")
    assert d["outcome"] == "crash" and d["crash"] == "Could not allocate compressed class space: 1073741824 bytes"
    assert d["facts"]["heap_requested"] == ["0xc0000000", "0xaaa00000", "0x95400000"]  # the third try held
    assert d["heap"]["arenas"] == [["0x95400000", "0xd5400000"]]


def test_under_qemu_user_4g_the_default_heap_cannot_be_reserved() -> None:
    d = captured("arm64-qemu-user-heap-default-r4g")  # a quarter of the host's 24 GiB does not fit in 4 GiB
    assert d["outcome"] == "crash" and d["crash"] == "Could not reserve enough space for 6172672KB object heap"
    assert d["heap"] is None and d["facts"]["heap_requested"][-1] is None


# --- what no JVM here prints (written by hand) ---------------------------------------------------

def test_a_32bit_jvm_that_started_is_native_32bit() -> None:
    # Shaped as a 32-bit OpenJDK 17 prints it: no compressed oops, so no coops lines; the heap from pagesize.
    out = "[0.004s][info][pagesize] Heap:  min=8M max=256M base=0x72c00000 page_size=4K size=256M\n"
    err = ("Property settings:\n    os.arch = i386\n    sun.arch.data.model = 32\n"
           'openjdk version "17.0.15" 2025-04-15\nOpenJDK Server VM (build 17.0.15+6-Debian-1deb12u1, mixed mode)\n')
    d = jvm.document(out, err, 0)
    assert check_document(d) is None and d["outcome"] == "native-32bit" and d["facts"]["pointer_bits"] == 32
    assert d["heap"]["arenas"] == [["0x72c00000", "0x82c00000"]]


@pytest.mark.parametrize("stdout, stderr, rc, timed_out, error", [
    ("", "", None, False, "java did not run"),
    ("[0.1s][info][pagesize] Heap:  min=8M max=1G base=0xc0000000 page_size=4K size=1G\n", "", None, True,
     "java did not exit before the deadline"),
    ("", "sh: 1: java: not found\n", 127, False,
     "java exited with status 127 without a JVM's words: sh: 1: java: not found"),
    ("Unrecognized option: -Xlog:gc+heap+coops=trace\nError: Could not create the Java Virtual Machine.\n"
     "Error: A fatal exception has occurred. Program will exit.\n", "", 1, False,
     "this java does not take the probe's options (OpenJDK 9 or later is needed): "
     "Unrecognized option: -Xlog:gc+heap+coops=trace"),
    ("", 'openjdk version "17.0.15" 2025-04-15\n', 0, False,
     'java started but logged no heap (OpenJDK 17\'s unified logging expected): openjdk version "17.0.15" 2025-04-15'),
])
def test_what_is_not_a_jvm_outcome_is_an_error(stdout: str, stderr: str, rc: Optional[int], timed_out: bool,
                                              error: str) -> None:
    d = jvm.document(stdout, stderr, rc, timed_out)
    assert check_document(d) is None and d["outcome"] is None and d["crash"] is None and d["error"] == error


def test_an_error_printed_with_exit_status_0_is_still_a_crash() -> None:
    d = jvm.document("Error occurred during initialization of VM\nToo small maximum heap\n", "", 0)
    assert d["outcome"] == "crash" and d["crash"] == "Too small maximum heap"


def test_a_launcher_error_is_the_line_before_its_boilerplate() -> None:
    # What java -Xmx1x -version prints (argv refuses that size; a user's own java wrapper may not).
    out = ("Invalid maximum heap size: -Xmx1x\nError: Could not create the Java Virtual Machine.\n"
           "Error: A fatal exception has occurred. Program will exit.\n")
    d = jvm.document("", out, 1)
    assert d["outcome"] == "crash" and d["crash"] == "Invalid maximum heap size: -Xmx1x"


def test_garbage_is_an_error_never_an_exception() -> None:
    for rc in (0, 1, 2, 255, None):
        d = jvm.document("random noise\n{not json\n\x00\xff\n", "\ud800 more", rc)
        assert check_document(d) is None and d["outcome"] is None and d["error"]
    # Killed by a signal, java died whatever it printed: a crash with no words of the JVM's.
    d = jvm.document("random noise\n", "", -9)
    assert d["outcome"] == "crash" and d["crash"] is None and d["messages"] == ["java was killed by SIGKILL"]


def test_hostile_output_is_capped_and_never_raises() -> None:
    real = [(DATA / (n + ext)).read_text() for n in CASES for ext in (".stdout", ".stderr")]
    lines = [ln for text in real for ln in text.splitlines()]
    rng = random.Random(14)
    for _ in range(300):
        picked = rng.sample(lines, rng.randint(0, 40))
        mangled = [ln[: rng.randint(0, len(ln))] if rng.random() < 0.3 else ln for ln in picked]
        text = "\n".join(mangled)
        d = jvm.document(text, text[::-1] if rng.random() < 0.2 else text, rng.choice([0, 1, -11, 134, None]),
                         rng.random() < 0.05)
        assert check_document(d) is None
    huge_hex = "0x" + "f" * 40
    flood = ("[0.1s][trace][gc,heap,coops] Trying to allocate at address 0x00000000c0000000 heap of size 0x1\n" * 50000
             + "[0.1s][debug][gc,heap,coops] Heap address: %s, size: 99999999999999 MB, Compressed Oops mode: x\n"
             % huge_hex + "Error occurred during initialization of VM\n" + "A" * (200 << 10) + "\n")
    d = jvm.document(flood, "#" * (3 << 20), 1)
    assert check_document(d) is None and d["outcome"] == "crash"
    assert len(d["messages"]) <= jvm.MAX_MESSAGES and all(len(m) <= jvm.MAX_TEXT for m in d["messages"])
    assert d["crash"] is not None and len(d["crash"]) <= jvm.MAX_TEXT
    assert len(d["facts"]["heap_requested"]) <= 64
    d = jvm.document("[0.1s][debug][gc,heap,coops] Heap address: 0x%s, size: 99999999999 MB, Compressed Oops mode: x\n"
                     % ("f" * 16), "", 0)
    assert check_document(d) is None and d["heap"]["arena_end"] == hex((1 << 64) - 1 + (99999999999 << 20))
    d = jvm.document("[0.1s][debug][gc,heap,coops] Heap address: 0x%s, size: 1 MB, Compressed Oops mode: x\n"
                     % ("f" * 17), "", 0)
    assert d["heap"] is None  # wider than 64 bits: not an address a JVM prints
    assert jvm.document(None, 5, 1)["error"]  # type: ignore[arg-type]  # not even text


def test_a_flood_of_messages_keeps_the_first_and_the_last() -> None:
    out = "".join("[0.1s][info][gc,metaspace] line %d\n" % i for i in range(1000))
    d = jvm.document(out + "Error occurred during initialization of VM\nCould not reserve enough space\n", "", 1)
    m = d["messages"]
    assert len(m) == jvm.MAX_MESSAGES and m[0] == "[gc,metaspace] line 0"
    assert "lines left out)" in m[jvm.MAX_MESSAGES - jvm.MAX_MESSAGES // 4 - 1]
    assert m[-2:] == ["Error occurred during initialization of VM", "Could not reserve enough space"]
