"""The ``jvm`` probe: the guest's own OpenJDK started with ``-version``, and what it printed as a document.

No Java class is compiled or shipped: ``java -version`` creates the whole VM (heap,
compressed class space, code cache, GC threads) before it prints the version, and
OpenJDK 17's unified logging says where each reservation landed:

- ``gc+heap+coops`` at trace: each address the JVM asks for its heap
  (``Trying to allocate at address 0x00000000c0000000 heap of size 0x40000000``,
  ``NULL`` for "anywhere"), then ``Heap address: ..., size: 1024 MB, Compressed
  Oops mode: 32-bit`` (only with compressed oops, that is a heap under 32 GiB);
- ``pagesize`` at info: ``Heap:  min=8M max=1G base=0x... size=1G`` for every
  heap, compressed oops or not, and the code cache's three ``CodeHeap`` ranges;
- ``gc+metaspace`` at info: ``Compressed class space mapped at: A-B, reserved
  size: N`` and the CDS archive's range;
- ``-XshowSettings:properties``: the kernel release (``os.version``, from uname),
  ``sun.arch.data.model``, ``java.runtime.version`` (printed only once the VM is up).

The JVM writes its logs and its fatal-error summary to stdout, the properties and
the version to stderr; both are read. ``-XX:ErrorFile=/dev/null`` keeps the hs_err
report out of the guest's working directory (the summary on stdout says enough) and
``-XX:-CreateCoredumpOnCrash`` keeps core files out (the JVM then exits 1 instead
of aborting).

Outcomes, in the vocabulary of ``allocator.probe.OUTCOMES`` (no new word is needed):

- ``crash``: the JVM did not start. ``crash`` is its message word for word, e.g.
  ``Could not reserve enough space for 1048576KB object heap`` (the line after
  ``Error occurred during initialization of VM``), ``Native memory allocation
  (mmap) failed to map 67108864 bytes. Error detail: Failed to reserve memory for
  metaspace`` (after ``There is insufficient memory for the Java Runtime
  Environment to continue.``), or an internal error's own line
  (``guarantee(rs.is_reserved()) failed: ...``); only ``, pid=N, tid=N``, which
  changes every run, is cut from a fatal error's first line. A JVM killed by a
  signal before it said anything (it happens under a very small RLIMIT_AS) is a
  crash with ``crash: null`` and ``facts.signal``.
- ``native-32bit``: a 32-bit JVM started (``sun.arch.data.model`` 32, or a VM name
  without ``64-Bit``): no compressed oops, no class space, the heap where it fits.
- ``high-arena``: a 64-bit JVM started and its heap's reservation begins at one of
  the addresses the JVM asked for (its compressed-oops placements: below 4 GiB for
  unscaled oops, below 32 GiB for zero-based, then disjoint bases). That is what
  the word means for ``go-modern`` too: the runtime's own hint was honoured; for
  the JVM the hint is low, and ``facts.compressed_oops_mode`` says which kind.
- ``os-chosen``: a 64-bit JVM started and its heap lies where the kernel put it:
  every address it asked for failed and it took the ``NULL`` attempt, or it asked
  for none (compressed oops off, a heap of 32 GiB or more).

Not a JVM outcome but an ``error`` (``outcome: null``): the deadline passed; java
never ran (no exit status); it exited non-zero without a word a JVM says (``java:
not found``); it refused the logging options (a JVM older than 9); or it exited 0
without logging a heap. A guest is untrusted: any text becomes a document, never an
exception, and every string and list in it is capped.
"""

from __future__ import annotations

import re
import signal
from typing import Any, Dict, List, Optional, Tuple

from allocator.runtime import PlanError, parse_grow

SCHEMA = 1
POLICY = "jvm"
# What the JVM logs about its reservations (see the module docstring). The decorators are spelled out
# so that the parser never depends on a default.
LOG_SELECTION = "gc+heap+coops=trace,gc+metaspace=info,gc+init=info,pagesize=info"
LOG_OUTPUT = "stdout:uptime,level,tags"

MAX_STREAM = 1 << 20  # characters of each stream read: head and tail, where the logs and the errors are
MAX_LINE = 4096  # longer lines are cut before they are matched
MAX_TEXT = 400  # any string in the document
MAX_MESSAGES = 200  # lines kept in ``messages``

_XMX = re.compile(r"[1-9][0-9]{0,18}[kKmMgGtT]?")
_UNITS = (("t", 1 << 40), ("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10))
_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

_HEX = r"0x[0-9a-fA-F]{1,16}(?![0-9a-fA-FxX])"  # a 64-bit address, as the JVM prints it
_LOG = re.compile(r"\[[^\]]{0,40}\]\[(?P<level>[a-z]+) *\]\[(?P<tags>[a-z0-9,]+) *\] ?(?P<msg>.*)")
_ATTEMPT = re.compile(r"Trying to allocate at address (?P<addr>%s|NULL) heap of size (?P<size>%s)" % (_HEX, _HEX))
_PROTECTED = re.compile(r"Protected page at the reserved heap base: (?P<addr>%s) / (?P<size>[0-9]{1,20}) bytes" % _HEX)
_COOPS = re.compile(r"Heap address: (?P<addr>%s), size: (?P<mb>[0-9]{1,12}) MB, "
                    r"Compressed Oops mode: (?P<mode>[^,:]{1,60})" % _HEX)
_PAGESIZE_HEAP = re.compile(r"Heap: +min=\S{1,30} max=\S{1,30} base=(?P<addr>%s) page_size=\S{1,30} "
                            r"size=(?P<size>[0-9]{1,20})(?P<unit>[BKMGT]?)$" % _HEX)
_CLASS_SPACE = re.compile(r"Compressed class space mapped at: (?P<start>%s)-(?P<end>%s), reserved size: [0-9]{1,20}"
                          % (_HEX, _HEX))
_GC_INIT_COOPS = re.compile(r"Compressed Oops: (?P<state>Enabled|Disabled)")
_PROPERTY = re.compile(r" {4}(?P<key>[a-z][a-zA-Z.]{1,60}) = (?P<value>.*)")
_VERSION = re.compile(r'(?:openjdk|java) version "(?P<v>[^"]{1,60})"')
_RUNTIME_BUILD = re.compile(r"Runtime Environment \(build (?P<v>[^)]{1,80})\)")
_VM_NAME = re.compile(r"(?P<name>OpenJDK (?:64-Bit )?(?:Server|Client|Zero) VM) \(build ")
_HS_VM = re.compile(r"# Java VM: (?P<name>[^(]{1,60}) \((?P<v>[^,)]{1,80})")
_PID_TID = re.compile(r", pid=[0-9]+, tid=[0-9]+$")

_INIT_ERROR = re.compile(r"Error occurred during initialization of (?:VM|boot layer)$")
_FATAL = "# A fatal error has been detected by the Java Runtime Environment:"
_NO_MEMORY = "# There is insufficient memory for the Java Runtime Environment to continue."
_LAUNCHER_FAILED = "Error: Could not create the Java Virtual Machine."
_LAUNCHER_NOISE = ("Error: A fatal exception has occurred. Program will exit.", _LAUNCHER_FAILED)
_OUR_OPTIONS = ("-Xlog", "-XshowSettings", "ErrorFile", "CreateCoredumpOnCrash")
_SHORT_ERROR = re.compile(r"(Error: |Unrecognized |Invalid |Could not |Too small )")
_WARNING = re.compile(r"(?:OpenJDK|Java HotSpot\(TM\)) [\w -]{0,40}VM warning: .*")


def check_xmx(text: str) -> Optional[str]:
    """What is wrong with a maximum heap size for ``-Xmx`` (``"1g"``, ``"1536m"``, ``"1073741824"``), or None."""
    if not _XMX.fullmatch(text):
        return "expected a heap size like 1g, 512m or 1073741824, got %r" % text[:40]
    return None


def argv(java: str, xmx: Optional[str]) -> List[str]:
    """The command line that starts ``java`` (a path or a name on the guest's PATH) and reports its reservations.

    ``xmx`` is the maximum heap (``"1g"``); None leaves the JVM's own choice: a quarter of
    physical memory, or half of RLIMIT_AS when that is lower (OpenJDK 17 ergonomics).
    A bad size is a ValueError: the targets file is checked first (``check_xmx``), so it is a bug here.
    """
    out = [java]
    if xmx is not None:
        wrong = check_xmx(xmx)
        if wrong:
            raise ValueError("jvm probe: -Xmx %s" % wrong)
        out.append("-Xmx" + xmx)
    out += ["-Xlog:%s:%s" % (LOG_SELECTION, LOG_OUTPUT), "-XX:ErrorFile=/dev/null", "-XX:-CreateCoredumpOnCrash",
            "-XshowSettings:properties", "-version"]
    return out


def heap_from_grow(grow: str) -> str:
    """The ``-Xmx`` value a growth plan implies: the sum of its ``grow`` steps (``"64M*20"`` -> ``"1280m"``).

    ``sysalloc`` steps are left out: they model memory taken beside the heap, not heap. The value is in
    the largest unit that divides it exactly. A plan with no ``grow`` step raises ``PlanError``, as a
    malformed plan does.
    """
    total = sum(size for kind, size in parse_grow(grow) if kind == "grow")
    if total <= 0:
        raise PlanError("growth plan %r has no grow step: a JVM's heap size comes from grow steps" % grow[:40])
    for suffix, unit in _UNITS:
        if total % unit == 0:
            return "%d%s" % (total // unit, suffix)
    return str(total)


def _lines(text: Any) -> List[str]:
    if not isinstance(text, str):
        return []
    if len(text) > MAX_STREAM:
        text = text[: MAX_STREAM // 2] + "\n" + text[-MAX_STREAM // 2:]
    return [ln[:MAX_LINE].rstrip("\r") for ln in text.splitlines()]


def _cap(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def _trim(messages: List[str]) -> List[str]:
    """At most MAX_MESSAGES lines: the first ones and the last ones (where the JVM's last words are)."""
    if len(messages) <= MAX_MESSAGES:
        return messages
    tail = MAX_MESSAGES // 4
    head = MAX_MESSAGES - tail - 1
    return messages[:head] + ["(%d lines left out)" % (len(messages) - head - tail)] + messages[-tail:]


def _hexa(value: int) -> str:
    return "0x%x" % value


def _after(lines: List[str], i: int, prefix: str = "") -> Optional[str]:
    """The first non-empty line after ``lines[i]`` (with ``prefix`` removed), or None."""
    for ln in lines[i + 1:]:
        body = ln[len(prefix):] if prefix and ln.startswith(prefix) else ln
        if body.strip():
            return body.strip()
    return None


def _crash_text(stdout: List[str], stderr: List[str]) -> Tuple[bool, Optional[str]]:
    """(did the JVM say it failed, its message word for word): the patterns OpenJDK 17 prints, most specific first."""
    for lines in (stdout, stderr):
        for i, ln in enumerate(lines):
            if _INIT_ERROR.fullmatch(ln.strip()):
                return True, _after(lines, i) or ln.strip()
            if ln.strip() == _NO_MEMORY:
                nxt = _after(lines, i, "# ")
                return True, nxt.lstrip("# ") if nxt else _NO_MEMORY[2:]
            if ln.strip() == _FATAL:
                block: List[str] = []
                for later in lines[i + 1:]:
                    if not later.startswith("#"):
                        break
                    body = later[1:].strip()
                    if not body:
                        if block:
                            break
                        continue
                    block.append(body)
                if not block:
                    return True, _FATAL[2:]
                # "Internal Error (file:line), pid=, tid=" is followed by the guarantee's own words; a signal's
                # line ("SIGSEGV (0xb) at pc=...") stands alone.
                return True, block[1] if len(block) > 1 and block[0].startswith("Internal Error") \
                    else _PID_TID.sub("", block[0])
    for lines in (stdout, stderr):
        for i, ln in enumerate(lines):
            if ln.strip() == _LAUNCHER_FAILED:
                before = [b.strip() for b in lines[:i] if b.strip() and not _LOG.match(b)
                          and b.strip() not in _LAUNCHER_NOISE]
                return True, before[-1] if before else _LAUNCHER_FAILED
    return False, None


def _signal_of(returncode: Optional[int]) -> Optional[int]:
    """The signal that killed java: a negative status (Python's), or 128+N (a shell's) — java itself exits 0 or 1."""
    if returncode is None:
        return None
    if returncode < 0:
        return -returncode
    if 128 < returncode < 128 + 65:
        return returncode - 128
    return None


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return "signal %d" % sig


def document(stdout: str, stderr: str, returncode: Optional[int], timed_out: bool = False) -> Dict[str, Any]:
    """The result document (schema 1, ``policy: jvm``) of one run of :func:`argv`'s command.

    ``stdout``/``stderr``: what java printed (anything: the guest is untrusted); ``returncode``: its exit
    status (negative for a signal), None if it never ran; ``timed_out``: the deadline passed first.
    The outcome rules are in the module docstring.
    """
    out, err = _lines(stdout), _lines(stderr)
    attempts: List[Optional[int]] = []
    protected: Optional[Tuple[int, int]] = None
    coops: Optional[Tuple[int, int, str]] = None  # heap base, size, mode
    heap: Optional[Tuple[int, int]] = None  # base, size (pagesize's exact line)
    class_space: Optional[List[str]] = None
    oops_state: Optional[str] = None
    logged = False
    messages: List[str] = []
    props: Dict[str, str] = {}
    version: Optional[str] = None
    vm_name: Optional[str] = None

    for ln in out + err:
        m = _LOG.match(ln)
        if m:
            logged = True
            msg, tags = m.group("msg"), m.group("tags")
            keep = m.group("level") in ("warning", "error")
            if tags == "gc,heap,coops":
                keep = True
                a = _ATTEMPT.search(msg)
                if a and len(attempts) < 64:
                    attempts.append(None if a.group("addr") == "NULL" else int(a.group("addr"), 16))
                p = _PROTECTED.search(msg)
                if p:
                    protected = (int(p.group("addr"), 16), int(p.group("size")))
                c = _COOPS.search(msg)
                if c:
                    coops = (int(c.group("addr"), 16), int(c.group("mb")) << 20, c.group("mode").strip())
            elif tags == "pagesize":
                h = _PAGESIZE_HEAP.search(msg)
                if h:
                    heap = (int(h.group("addr"), 16), int(h.group("size")) * _SIZE_UNITS[h.group("unit")])
                keep = keep or h is not None or msg.startswith("CodeHeap")
            elif tags == "gc,metaspace":
                keep = True
                s = _CLASS_SPACE.search(msg)
                if s:
                    class_space = [_hexa(int(s.group("start"), 16)), _hexa(int(s.group("end"), 16))]
            elif tags == "gc,init":
                g = _GC_INIT_COOPS.search(msg)
                if g:
                    keep = True
                    oops_state = g.group("state")
                keep = keep or msg.startswith(("Version:", "Heap Max Capacity:"))
            if keep:
                messages.append(_cap("[%s] %s" % (tags, msg)))
            continue
        pm = _PROPERTY.fullmatch(ln)
        if pm and len(props) < 200:
            props.setdefault(pm.group("key"), _cap(pm.group("value")))
            continue
        build = _RUNTIME_BUILD.search(ln)
        short = _VERSION.search(ln)
        if build:  # the build ("17.0.15+6-Debian-1deb12u1") over the short version ("17.0.15")
            version = _cap(build.group("v"))
        elif short and version is None:
            version = _cap(short.group("v"))
        n = _VM_NAME.search(ln)
        if n:
            vm_name = n.group("name")
        hs = _HS_VM.match(ln)
        if hs:
            vm_name = vm_name or _cap(hs.group("name"))
            version = version or _cap(hs.group("v"))
        stripped = ln.strip()
        if (stripped.startswith("#") and stripped != "#") or _INIT_ERROR.fullmatch(stripped) \
                or _WARNING.fullmatch(stripped) or _SHORT_ERROR.match(stripped):
            messages.append(_cap(stripped))

    said_failed, crash = _crash_text(out, err)
    if crash is not None:
        crash = _cap(crash)
        if crash not in messages:  # a message the line filters above do not know
            messages.append(crash)

    # The heap's reservation: pagesize's line has the exact size; the coops line (MB) is the fallback. A
    # protected page below the heap (disjoint-base mode) belongs to the same reservation.
    base_size = heap or (coops[:2] if coops else None)
    heap_doc: Optional[Dict[str, Any]] = None
    reserved_start: Optional[int] = None
    if base_size:
        base, size = base_size
        reserved_start = base
        if protected and protected[0] + protected[1] == base:
            reserved_start = protected[0]
        end = base + size
        heap_doc = {"arena_start": _hexa(reserved_start), "arena_end": _hexa(end),
                    "arenas": [[_hexa(reserved_start), _hexa(end)]]}

    if coops:
        mode: Optional[str] = coops[2]
    elif oops_state == "Disabled":
        mode = "disabled"
    else:
        mode = props.get("java.vm.compressedOopsMode")
    bits: Optional[int] = None
    model = props.get("sun.arch.data.model")
    if model in ("32", "64"):
        bits = int(model)
    elif vm_name:
        bits = 64 if "64-Bit" in vm_name else 32
    vm_name = props.get("java.vm.name", vm_name)
    version = props.get("java.runtime.version", version)
    sig = _signal_of(returncode) if not said_failed else None

    facts: Dict[str, Any] = {
        "kernel": props.get("os.version"),
        # Java's os.arch is the JVM's build ("amd64" for x86_64, "i386" on a 64-bit kernel too), not
        # uname's machine: it is kept apart, and machine is left to what the guest says of itself.
        "machine": None,
        "jvm_arch": props.get("os.arch"),
        "pointer_bits": bits,
        "jvm_version": version,
        "jvm_name": vm_name,
        "compressed_oops_mode": _cap(mode) if mode else None,
        "class_space": class_space,
        "heap_requested": [None if a is None else _hexa(a) for a in attempts] or None,
        "heap_protected_prefix": protected[1] if protected and heap_doc and reserved_start == protected[0] else None,
        "exit_status": returncode,
        "signal": sig,
    }
    doc: Dict[str, Any] = {"schema": SCHEMA, "policy": POLICY, "outcome": None, "crash": None, "heap": heap_doc,
                           "facts": facts, "messages": _trim(messages), "error": None}

    def error(text: str) -> Dict[str, Any]:
        doc["error"] = _cap(text)
        return doc

    first = next((ln.strip() for ln in err + out if ln.strip()), "")
    if timed_out:
        return error("java did not exit before the deadline")
    if returncode is None:
        return error("java did not run%s" % (": " + first if first else ""))
    if crash is not None and crash.startswith(("Unrecognized option: -X", "Unrecognized VM option")) \
            and any(o in crash for o in _OUR_OPTIONS):
        return error("this java does not take the probe's options (OpenJDK 9 or later is needed): %s" % crash)
    if returncode != 0:
        if said_failed or logged or sig is not None:
            doc["outcome"], doc["crash"] = "crash", crash
            if sig is not None and crash is None:
                messages.append("java was killed by %s" % _signal_name(sig))
                doc["messages"] = _trim(messages)
            return doc
        return error("java exited with status %d without a JVM's words%s" % (returncode, ": " + first if first else ""))
    if said_failed:  # exit status 0 with an error printed: believe the error
        doc["outcome"], doc["crash"] = "crash", crash
        return doc
    if heap_doc is None:
        return error("java started but logged no heap (OpenJDK 17's unified logging expected)%s"
                     % (": " + first if first else ""))
    if bits == 32:
        doc["outcome"] = "native-32bit"
    elif reserved_start is not None and reserved_start in attempts:
        doc["outcome"] = "high-arena"
    else:
        doc["outcome"] = "os-chosen"
    return doc
