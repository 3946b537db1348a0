"""The jvm probe on this host's real OpenJDK 17 under ``prlimit --as``: where it starts, where it cannot reserve.

The JVM reserves its whole maximum heap, 1 GiB of compressed class space and 240 MiB of code cache
before ``-version`` prints anything. With ``-Xmx1g`` (the heap ``64M*16`` implies) on an x86_64 host
it starts at 4 GiB of address space, and at 1 GiB it cannot reserve the heap; between the two it
dies at the class space (measured here: the heap fails up to 1480 MiB, the class space from 1560 to
2900 MiB, the JVM starts from 3000 MiB). proc.run merges stdout and stderr, as a serial console does;
``document`` reads both streams the same way, so the merged text goes in as stdout.
"""

from __future__ import annotations

import os
from typing import Any, Dict

import pytest

from harness import proc
from harness.document import check_document
from harness.plugin import skip_or_fail
from harness.probes import jvm
from tests.conftest import require_tool

pytestmark = [pytest.mark.integration]

MiB = 1 << 20
PLAN = "64M*16"  # 1 GiB of heap


@pytest.fixture(scope="module")
def java() -> str:
    path = require_tool("jvm", "java", "sudo apt-get install -y openjdk-17-jre-headless (OpenJDK 17 on Debian 12)")
    version = proc.run([path, "-version"], timeout=60).output
    if 'version "17.' not in version:
        skip_or_fail("jvm", "the jvm probe reads OpenJDK 17's logs; this java is %s" % version.strip()[:200])
    return path


def run(java: str, limit: int) -> Dict[str, Any]:
    prlimit = require_tool("jvm", "prlimit", "sudo apt-get install -y util-linux")
    r = proc.run([prlimit, "--as=%d" % limit] + jvm.argv(java, jvm.heap_from_grow(PLAN)), timeout=120)
    assert not r.timed_out, r.output[-2000:]
    doc = jvm.document(r.output, "", r.returncode, r.timed_out)
    assert check_document(doc) is None, check_document(doc)
    assert doc["error"] is None, (doc["error"], r.output[-2000:])
    return doc


def test_with_4g_of_address_space_the_jvm_starts_and_says_where_it_reserved(java: str) -> None:
    doc = run(java, 4 << 30)
    assert doc["outcome"] == "high-arena" and doc["crash"] is None, doc["messages"]
    f = doc["facts"]
    # A 1 GiB heap fits below 4 GiB: unscaled ("32-bit") compressed oops, at the first address that fits.
    assert f["compressed_oops_mode"] == "32-bit" and int(doc["heap"]["arena_end"], 16) <= 1 << 32
    assert int(doc["heap"]["arena_end"], 16) - int(doc["heap"]["arena_start"], 16) == 1 << 30
    start, end = (int(x, 16) for x in f["class_space"])
    assert end - start == 1 << 30
    assert f["kernel"] == os.uname().release and f["pointer_bits"] == 64
    assert f["jvm_version"].startswith("17.") and f["exit_status"] == 0


def test_with_1g_of_address_space_the_jvm_cannot_reserve_its_heap(java: str) -> None:
    doc = run(java, 1 << 30)
    assert doc["outcome"] == "crash" and doc["crash"] == "Could not reserve enough space for 1048576KB object heap"
    assert doc["heap"] is None and doc["facts"]["exit_status"] == 1
    asked = doc["facts"]["heap_requested"]
    assert asked[0] == "0xc0000000" and asked[-1] is None  # below 4 GiB first, anywhere last


def test_with_2g_of_address_space_the_heap_fits_but_the_class_space_does_not(java: str) -> None:
    doc = run(java, 2 << 30)
    assert doc["outcome"] == "crash" and doc["crash"] == "Could not allocate compressed class space: 1073741824 bytes"
    assert doc["heap"] is not None and doc["facts"]["class_space"] is None
