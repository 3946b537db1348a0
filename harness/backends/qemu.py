"""QEMU system VMs (TCG by default): a Debian kernel, a busybox initramfs, the guest root over 9p.

The kernel is Debian's (``linux-image-*`` of ``suite``) unless the target asks for one built from
Debian's kernel source (``kernel: source``, or a ``kernel_config:`` fragment, which implies it):
``images.SourceKernelKit``, the architecture's minimal base config plus the fragment, with 9p and
virtio built in (the initramfs then loads no modules).

Per-architecture facts are data (:mod:`harness.arches`). A boot: the cached initramfs plus
a small per-boot cpio (the allocator zipapp and its arguments) as ``-initrd``;
the guest root shared read-only over 9p (the jail's view of the host for an
x86_64 guest on an x86_64 host, else a cached Debian root filesystem of the
guest's architecture); results come back through a second, writable 9p share,
or framed on the serial console. QEMU itself runs jailed (:mod:`harness.backends.jail`).

With ``boot: ssh`` the machine instead boots a disk image with sshd
(``images.SshDisk``, run with ``snapshot=on``), user-mode networking
(``restrict=on``) forwards a loopback port to its port 22, and the probe runs
through the SSH channel (:class:`harness.backends.ssh.SshChannel`, the same the
ssh backend uses) with the image's host key pinned: how users test cloud images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Optional, Sequence, Tuple

import images
from harness import arches, proc
from harness import probes as probing
from harness.backends import jail
from harness.backends.base import Backend, Need, RunContext, Tool
from harness.backends.console import find_panic
from harness.errors import ConfigError, HarnessError
from harness.model import DEBIAN, ITEM, Deadline, Seconds, Size, Target
from images import kconfig

MiB = 1 << 20


def _fragment_item_problem(item: object) -> Optional[str]:
    """What is wrong with one ``kernel_config`` item, or None."""
    try:
        kconfig.parse_option(str(item))
    except ValueError as e:
        return str(e)
    return None


@dataclass(frozen=True)
class QemuOptions:
    arch: str = "x86_64"
    suite: Optional[str] = field(default=None, metadata={DEBIAN: "a Debian release"})  # the kernel's
    kernel_package: Optional[str] = field(default=None, metadata={DEBIAN: "a Debian package name"})
    rootfs: str = "auto"  # host | debian | auto (host where the arch matches)
    rootfs_suite: Optional[str] = field(default=None, metadata={DEBIAN: "a Debian release"})
    # more Debian packages in the guest's root filesystem (openjdk-17-jre-headless for the jvm probe)
    packages: Tuple[str, ...] = field(default=(), metadata={DEBIAN: "a Debian package name"})
    cpu: Optional[str] = None
    memory: Size = Size(512 * MiB)
    smp: int = 1
    kernel_args: Tuple[str, ...] = ("quiet",)
    accel: str = "auto"  # auto (KVM when a short trial boot shows it works, its verdict cached) | tcg
    boot: str = "9p"  # 9p: the initramfs runs the probe; ssh: a disk image with sshd, probed over SSH
    # 9p boots under TCG: resume a guest saved right after its boot (cached), instead of booting it
    snapshot: bool = True
    kernel: Optional[str] = None  # debian (the default) | source: built from Debian's kernel source
    # NAME=value options over the architecture's base config (harness/arches.py); implies kernel: source
    kernel_config: Tuple[str, ...] = field(default=(), metadata={ITEM: _fragment_item_problem})

    def validate(self) -> Optional[Tuple[str, str]]:
        if self.arch not in arches.BY_NAME:
            return "arch", "%r is not a known arch, options are %s" % (self.arch, ", ".join(arches.BY_NAME))
        problem = self._kernel_problem()
        if problem is not None:
            return problem
        if self.rootfs not in ("host", "debian", "auto"):
            return "rootfs", "expected host, debian or auto, got %r" % self.rootfs
        if self.rootfs == "host" and arches.BY_NAME[self.arch].uname != os.uname().machine:
            return "rootfs", "the host's / cannot be a %s guest's root; use debian" % self.arch
        if self.boot not in ("9p", "ssh"):  # the modes of BOOTS, below
            return "boot", "expected 9p or ssh, got %r" % self.boot
        if self.accel not in ("tcg", "auto"):
            return "accel", "expected tcg or auto, got %r" % self.accel
        if self.memory < 128 * MiB:
            return "memory", 'expected at least "128M", got %d bytes' % self.memory
        if not 1 <= self.smp <= 8:
            return "smp", "expected 1 to 8 CPUs, got %d" % self.smp
        return None

    def _kernel_problem(self) -> Optional[Tuple[str, str]]:
        if self.kernel not in (None, "debian", "source"):
            return "kernel", "expected debian or source, got %r" % self.kernel
        if self.kernel == "debian" and self.kernel_config:
            return "kernel_config", "a config fragment needs a kernel built from source: drop kernel: debian " \
                "(kernel_config implies kernel: source)"
        if not self.source_kernel:
            return None
        key = "kernel" if self.kernel == "source" else "kernel_config"
        if self.spec.source_kernel is None:
            return key, "no kernel built from source for %s: harness/arches.py has a base config for %s" % (
                self.arch, ", ".join(a.name for a in arches.ARCHES if a.source_kernel))
        for name in ("suite", "kernel_package"):
            if getattr(self, name) is not None:
                return name, "picks Debian's kernel, and this target's kernel is built from %s (rootfs_suite " \
                    "picks the guest's root filesystem)" % arches.KERNEL_SOURCE
        if self.boot != "9p":
            return "boot", "the %s boot needs the kernel modules of a Debian kernel (ext4, virtio-blk, " \
                "virtio-net); a kernel built from source boots with 9p" % self.boot
        seen: Dict[str, str] = {}
        for item in self.kernel_config:
            name, value = kconfig.parse_option(item)
            if value == "m" or (name == "MODULES" and value != "n"):
                return "kernel_config", "%s: a kernel built from source has everything built in (no modules " \
                    "are built or loaded): use =y" % item
            if name in seen:
                return "kernel_config", "%s is given twice (%s and %s): give it once" % (name, seen[name], item)
            seen[name] = item
        return None

    @property
    def source_kernel(self) -> bool:
        """Whether the kernel is built from source (``kernel: source``, or a ``kernel_config`` fragment)."""
        return self.kernel == "source" or (self.kernel is None and bool(self.kernel_config))

    @property
    def spec(self) -> arches.Arch:
        return arches.BY_NAME[self.arch]

    @property
    def host_root(self) -> bool:
        """Whether the guest's root is the host's view (its /usr): only a guest of the host's own arch."""
        if self.rootfs == "auto":
            return self.spec.uname == os.uname().machine
        return self.rootfs == "host"


_kvm_verdict: Dict[str, bool] = {}  # per architecture, once per process
_kvm_reason: Dict[str, str] = {}  # why, for doctor
KVM_DEVICE = "/dev/kvm"
KVM_TRIAL_S = 15.0


class QemuBackend(Backend[QemuOptions]):
    name: ClassVar[str] = "qemu"
    Options: ClassVar[type] = QemuOptions
    description: ClassVar[str] = "QEMU system VMs (x86_64, i386, arm64, riscv64): a 9p root, or a disk reached over SSH"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self._kit: Optional[Path] = None
        self._initramfs: Optional[Path] = None
        self._cache: Optional[images.Cache] = None
        self.boot: Boot = BOOTS[self.options.boot](self)

    def guest_arch(self) -> str:
        return self.options.spec.debian

    # -- availability and images ------------------------------------------------------------
    def required_tools(self) -> Tuple[Tool, ...]:
        spec = self.options.spec
        tools = [Tool(spec.qemu_system, spec.qemu_package)]
        return tuple(tools)

    def needs(self, cache: images.Cache) -> List[Need]:
        """The QEMU binary, the firmware file where the architecture boots through one, and the image tools."""
        out = super().needs(cache)
        spec = self.options.spec
        if spec.firmware:
            out.insert(1, Need(spec.firmware[-1], Path(spec.firmware[-1]).exists(),
                               "install it with: sudo apt-get install -y %s" % spec.firmware_package))
        return out

    def kit(self) -> images.Recipe:
        """Debian's kernel with the modules a 9p root needs, or a kernel built from source (everything in)."""
        o = self.options
        spec = o.spec
        if o.source_kernel:
            return images.SourceKernelKit(spec.name, tuple(kconfig.normalize(i) for i in o.kernel_config))
        return images.KernelKit(spec.debian, o.suite or spec.suite, o.kernel_package or spec.kernel_package,
                                spec.kernel_image, spec.modules + self.boot.modules)

    def initramfs(self) -> images.Initramfs:
        return images.Initramfs(self.kit(), images.recipe_text("qemu", self.boot.init))

    def rootfs(self) -> Optional[images.Rootfs]:
        return self.boot.rootfs()

    def recipes(self) -> List[images.Recipe]:
        kvm = [self.kvm_verdict()] if self.options.accel == "auto" and self.kvm_possible() is None else []
        return [self.kit(), self.initramfs(), *kvm, *self.boot.recipes()]

    def provision(self, cache: images.Cache, log: images.Log) -> None:
        try:
            self._kit = cache.get(self.kit(), log)
        except images.KernelConfigError as e:
            if not self.options.kernel_config:
                raise  # the architecture's base config alone: harness/arches.py's to fix, not the target's
            # The fragment's: the target's error, named as one (file, the target's line, the key).
            raise ConfigError("%s (build log: %s)" % ("; ".join("%s did not survive olddefconfig: %s" % p
                                                                 for p in e.problems), e.log),
                              path=self.target.source, line=self.target.line or None, target=self.target.name,
                              key="kernel_config") from None
        self._initramfs = cache.get(self.initramfs(), log) / "initramfs.cpio.gz"
        self._cache = cache
        if self.options.accel == "auto":
            self._kvm_works()  # decided (a trial boot, once per host kernel and QEMU) before the snapshot's key
        self.boot.provision(cache, log)

    # -- the boot ------------------------------------------------------------------------------
    def prepare(self, ctx: RunContext) -> None:
        if self._kit is None:
            self.provision(images.Cache(), lambda msg: None)
        self.boot.prepare(ctx)

    def accel(self) -> List[str]:
        if self.options.accel == "auto" and self._kvm_works():
            return ["-accel", "kvm"]
        return ["-accel", "tcg"]

    def accelerator(self) -> Optional[str]:
        return self.accel()[1]

    def kvm_possible(self) -> Optional[str]:
        """Why KVM cannot run this guest here without trying (no device, another architecture), or None."""
        spec = self.options.spec
        if not arches.runs_natively(spec.debian):
            return "KVM runs only guests of the host's architecture (%s), not %s" % (arches.host_debian(), spec.name)
        if not os.path.exists(KVM_DEVICE):
            return "there is no %s" % KVM_DEVICE
        return None

    def kvm_verdict(self) -> images.KvmVerdict:
        """The cached trial's recipe: keyed by the architecture, the host kernel's release and the QEMU version."""
        spec = self.options.spec
        inputs = {"arch": spec.name, "host_kernel": os.uname().release, "qemu": qemu_version(spec.qemu_system),
                  "boot": _boot_id()}  # a verdict is this machine's, since its boot: never another's
        return images.KvmVerdict(spec.name, json.dumps(inputs, sort_keys=True), self._kvm_trial)

    def auto_accel(self, cache: images.Cache, trial: bool) -> Tuple[Optional[str], str]:
        """What ``accel: auto`` picks for this architecture here, and why: ("kvm" or "tcg", reason), or
        (None, reason) when only a trial boot could tell and ``trial`` is False.

        The same decision as :meth:`accel`: a verdict already cached is read; with ``trial`` a missing one
        is made (the short VM, from the cached kernel and initramfs, never building them) and cached.
        """
        self._cache = cache
        ok = self._kvm_decide()
        if ok is None and trial:
            absent = [r for r in (self.kit(), self.initramfs()) if not cache.ready(r)]
            if absent:
                return None, "the trial boot needs the cached %s %s: build it with arena-harness images build" % (
                    absent[0].kind, absent[0].name)
            self._kit = cache.get(self.kit())
            self._initramfs = cache.get(self.initramfs()) / "initramfs.cpio.gz"
            ok = self._kvm_decide()
        if ok is None:
            return None, "%s exists, but a device node alone proves nothing: accel: auto boots a short trial VM " \
                "first (up to %.0fs, once per host kernel and QEMU version)" % (KVM_DEVICE, KVM_TRIAL_S)
        return "kvm" if ok else "tcg", _kvm_reason[self.options.spec.name]

    def _kvm_works(self) -> bool:
        return self._kvm_decide() is True

    def _kvm_decide(self) -> Optional[bool]:
        """Whether KVM runs this guest here, or None while that is undecided: a device node alone proves
        nothing (here a KVM guest hangs), so a short trial boot must reach the init. Its verdict is cached
        (:meth:`kvm_verdict`) and kept once per process; before the kernel is provisioned, with no verdict
        cached yet, it stays undecided (no trial from a listing)."""
        spec = self.options.spec
        if spec.name in _kvm_verdict:
            return _kvm_verdict[spec.name]
        why = self.kvm_possible()
        ok = False
        if why is None:
            recipe = self.kvm_verdict()
            cache = self._cache or images.Cache()
            if not cache.ready(recipe) and (self._kit is None or self._initramfs is None):
                return None
            try:
                verdict = json.loads((cache.get(recipe) / "verdict.json").read_text())
                ok, why = bool(verdict["kvm"]), str(verdict["why"])
            except (images.BuildError, OSError, ValueError, KeyError, TypeError) as e:
                why = "the KVM trial failed: %s" % e
        _kvm_verdict[spec.name] = ok
        _kvm_reason[spec.name] = why
        return ok

    def _kvm_trial(self, out: Path, log: images.Log) -> None:
        """The trial boot (the :meth:`kvm_verdict` recipe's build): KVM's verdict into ``out/verdict.json``."""
        spec = self.options.spec
        assert self._kit is not None and self._initramfs is not None
        log("trying KVM for %s: a short boot (up to %.0fs)" % (spec.name, KVM_TRIAL_S))
        c = proc.run([spec.qemu_system, "-accel", "kvm", *spec.machine, "-cpu", "host", "-m", "256", "-nographic",
                      "-no-reboot", "-kernel", str(self._kit / "kernel"), "-initrd", str(self._initramfs),
                      "-append", "console=%s panic=-1 quiet" % spec.console],
                     timeout=KVM_TRIAL_S, watch=lambda ln: "booted" if "@@ARENA-HARNESS-BOOTED@@" in ln else None,
                     after_stop_request=0.0, grace=1.0, log_path=out / "build.log")
        ok = c.stopped == "booted"
        if c.stopped == "interrupt" or proc.stopping() or not c.started:
            # not a verdict on KVM: the run is stopping, or QEMU never started (nothing is cached)
            raise images.BuildError("the KVM trial for %s did not run: %s" % (spec.name, c.error or "interrupted"),
                                    out / "build.log")
        if ok:
            why = "a trial boot with KVM reached the init"
        elif c.timed_out:
            why = "a trial boot with KVM did not reach the init within %.0fs" % KVM_TRIAL_S
        else:
            said = next((ln.strip() for ln in c.lines if ln.strip()), c.error or "no output")
            why = "a trial boot with KVM ended before the init: %s" % said[:160]
        log("KVM for %s: %s (%s)" % (spec.name, "yes" if ok else "no", why))
        (out / "verdict.json").write_text(json.dumps({"kvm": ok, "why": why}) + "\n")

    def vm_argv(self, initrd: Path, append_more: Sequence[str] = ()) -> List[str]:
        """The machine both boot modes share: CPU, memory, console, firmware, kernel, initrd, command line."""
        o = self.options
        spec = o.spec
        pass  # the kit's paths in the jail are fixed
        append = ["console=%s" % spec.console, "panic=-1", "rdinit=/init", *o.kernel_args, *append_more]
        # (the kernel and the initramfs are named by their paths in the jail: the same before provisioning)
        return [
            spec.qemu_system,
            *self.accel(),
            *spec.machine,
            "-cpu", o.cpu or spec.cpu,
            "-m", "%d" % (o.memory // MiB),
            "-smp", str(o.smp),
            "-nographic",
            "-no-reboot",
            *spec.firmware,
            "-kernel", jail.guest_path("kit/kernel"),
            "-initrd", str(initrd),
            "-append", " ".join(append),
        ]

    def base_view(self, ctx: RunContext) -> jail.View:
        """What every jailed QEMU sees: the host's /usr and /etc (itself, its firmware), the kernel and the
        initramfs (the boot mode adds its shares)."""
        assert self._kit is not None
        assert self._initramfs is not None
        return jail.View(ro=((self._kit, jail.guest_path("kit")), (self._initramfs, jail.guest_path("initrd"))),
                         devices=jail.View.devices + (("kvm",) if self.accel() == ["-accel", "kvm"] else ()),
                         proc=True)  # QEMU's 9p server sets modes through /proc/self/fd (its own proc will do)

    def view(self, ctx: RunContext) -> jail.View:
        """What the jailed QEMU sees: the base view and the boot mode's shares."""
        return self.boot.view(ctx, self.base_view(ctx))

    def argv(self, ctx: RunContext) -> List[str]:
        """The jailed QEMU's whole command line for this boot (the 9p boot's; see :class:`Boot`)."""
        return self.jailed(ctx, self.view(ctx), self.boot.argv(ctx))

    def execute(self, ctx: RunContext) -> proc.Completed:
        return self.boot.execute(ctx)

    def result_file(self, ctx: RunContext) -> Optional[Path]:
        return self.boot.result_file(ctx)


ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": "/tmp", "HOME": "/tmp"}
SNAPSHOT_READY = "@@ARENA-HARNESS-SNAPSHOT-READY@@"  # images/qemu/init.sh: the save point
RESUMED = "@@ARENA-HARNESS-RESUMED@@"  # images/qemu/init.sh: resumed, and a timer fired since
RESUME_TICK_S = 5.0  # seconds a resumed guest gets to say RESUMED after its GO line (0.1-0.3 s is usual)
SAVE_ATTEMPTS = 3  # saved states checked by a resume before one enters the cache
POWEROFF_S = 3.0  # seconds a resumed guest gets after its DONE line to power off by itself
SAVE_TIMEOUT = 240.0  # seconds to boot a guest to its save point and save it (a cold TCG boot takes 5-10)
QMP_SOCKET = jail.guest_path("ctl/qmp.sock")
_versions: Dict[str, str] = {}


def _boot_id() -> str:
    """This boot of the host (the kernel's random boot id), or "" where it cannot be read."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def qemu_version(binary: str) -> str:
    """``qemu-system-x --version``'s first line (once per binary): a saved guest loads only into the QEMU
    that saved it."""
    if binary not in _versions:
        out = proc.run([binary, "--version"], timeout=30).output.strip().splitlines()
        _versions[binary] = out[0] if out else "unknown"
    return _versions[binary]


@contextlib.contextmanager
def qmp_session(ctl: Path, timeout: float) -> Iterator[Any]:
    """A QMP connection to the jailed QEMU's socket in ``ctl`` (qemu.qmp), once the socket is there. The
    socket is reached through /proc/self/fd: a run's directory can be longer than a socket path may be."""
    from qemu.qmp.legacy import QEMUMonitorProtocol

    end = time.monotonic() + timeout
    dirfd = os.open(ctl, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect("/proc/self/fd/%d/qmp.sock" % dirfd)
                break
            except OSError:
                sock.close()
                if time.monotonic() > end:
                    raise HarnessError("no QMP socket from QEMU within %.0fs" % timeout) from None
                time.sleep(0.02)
        qmp = QEMUMonitorProtocol(sock)
        qmp.connect()
        qmp.settimeout(max(1.0, end - time.monotonic()))
        try:
            yield qmp
        finally:
            try:
                qmp.close()
            except (EOFError, OSError):
                pass  # QEMU went first (it was told to quit): the connection is closed either way
    finally:
        os.close(dirfd)


class Boot:
    """What a QEMU machine's two boot modes do differently (labgrid's strategies): which guest it
    boots and how the work gets in and the results out. The machine (:class:`QemuBackend`) owns what
    they share: the architecture, the kernel, the initramfs, the accelerator, the jail."""

    name: ClassVar[str] = ""
    init: ClassVar[str] = ""  # the initramfs's /init, from images/qemu/
    modules: ClassVar[Tuple[str, ...]] = ()  # beyond the architecture's 9p modules

    def __init__(self, machine: QemuBackend) -> None:
        self.m = machine
        self.o = machine.options

    def rootfs(self) -> Optional[images.Rootfs]:
        raise NotImplementedError

    def recipes(self) -> List[images.Recipe]:
        raise NotImplementedError

    def provision(self, cache: images.Cache, log: images.Log) -> None:
        raise NotImplementedError

    def prepare(self, ctx: RunContext) -> None:
        raise NotImplementedError

    def view(self, ctx: RunContext, base: jail.View) -> jail.View:
        raise NotImplementedError

    def argv(self, ctx: RunContext) -> List[str]:
        raise NotImplementedError

    def execute(self, ctx: RunContext) -> proc.Completed:
        raise NotImplementedError

    def result_file(self, ctx: RunContext) -> Optional[Path]:
        return None


class NinePBoot(Boot):
    """``boot: 9p``: the initramfs runs the probe in a guest root shared read-only over 9p (the jail's
    view for a guest of the host's arch, else a cached root filesystem); results come back through a
    second, writable 9p share, or framed on the console."""

    name = "9p"
    init = "init.sh"
    modules = ("overlay",)  # a saved guest's warm files lie over the root's share (images/qemu/init.sh)

    def __init__(self, machine: QemuBackend) -> None:
        super().__init__(machine)
        self._root: Optional[Path] = None
        self._state: Optional[Path] = None  # the saved guest this boot resumes (a snapshot's state.bin)
        self._resume_failed: Optional[str] = None  # why it did not resume
        self._cold = False  # saving the guest failed in this run: boot cold
        self._resumed = threading.Event()  # the saved guest was loaded and let run

    def rootfs(self) -> Optional[images.Rootfs]:
        if self.o.host_root:
            return None
        return images.Rootfs(self.o.spec.debian, self.o.rootfs_suite or self.o.spec.suite,
                             ("python3",) + self.o.packages)

    def recipes(self) -> List[images.Recipe]:
        """Its root filesystem, and the saved guest when it resumes one (so images prune keeps it)."""
        root = self.rootfs()
        out: List[images.Recipe] = [root] if root is not None else []
        if self.snapshots():
            out.append(self.snapshot())
        return out

    def provision(self, cache: images.Cache, log: images.Log) -> None:
        root = self.rootfs()
        self._root = Path("/") if root is None else cache.get(root, log) / "root"
        if self.snapshots():
            try:
                self._state = cache.get(self.snapshot(), log) / "state.bin"
            except images.BuildError as e:  # a guest that never reaches its save point still boots, cold
                log("not resuming a saved guest: %s; booting cold" % e)
                self._cold = True

    # -- snapshots (issue: a cold TCG boot is most of a QEMU target's time) ----------------------
    def snapshots(self) -> bool:
        """Whether this boot resumes a saved guest: asked for, under TCG (a KVM guest's state is the host
        CPU's), with the harness's own init (only it stops at the save point: an ``rdinit=`` of the
        target's never does), and saving it did not fail in this run."""
        own_init = not any(a.split("=", 1)[0] in ("rdinit", "init") for a in self.o.kernel_args)
        return self.o.snapshot and own_init and not self._cold and self.m.accel() == ["-accel", "tcg"]

    def snapshot(self) -> images.Snapshot:
        """The saved guest's recipe: keyed by what shapes it (the QEMU version, the machine's whole command
        line, the kernel and the initramfs); built by :meth:`save`."""
        argv = self.machine_argv()
        at = argv.index("-append")
        # the kernel's command line apart: it is what tells two targets of one machine apart in images list
        inputs = {"qemu": qemu_version(self.o.spec.qemu_system), "machine": argv[:at] + argv[at + 2:],
                  "append": argv[at + 1], "kit": self.m.kit().key(), "initramfs": self.m.initramfs().key(),
                  "root": self.root_identity()}
        return images.Snapshot("%s-%s" % (self.o.spec.name, self.m.kit().name), json.dumps(inputs, sort_keys=True),
                               self.save)

    def root_identity(self) -> str:
        """What the saved guest's warm files (copies of the root's Python) were taken from: the cached
        root's key, or, for the host's own root, its package database and its python3 as they are now
        (an upgrade makes a new saved guest, never old copies over new files)."""
        root = self.rootfs()
        if root is not None:
            return root.key()
        marks = []
        for p in ("/var/lib/dpkg/status", os.path.realpath("/usr/bin/python3")):
            try:
                st = os.stat(p)
                marks.append("%s:%d:%d" % (p, st.st_size, st.st_mtime_ns))
            except OSError:
                marks.append("%s:-" % p)
        return ";".join(marks)

    def save(self, out: Path, log: images.Log) -> None:
        """Boot the guest to its save point (the init's READY, before any share is mounted), save it over
        QMP into ``out/state.bin``, end it, and resume it once to check it: a saved state whose guest
        does not say RESUMED (its timer dead: riscv64 under QEMU 7.2, from some states) is saved again,
        up to SAVE_ATTEMPTS times. Runs as the image pipeline's build of :meth:`snapshot`."""
        (out / "build.log").touch()
        problems = []
        for attempt in range(1, SAVE_ATTEMPTS + 1):
            work = out / "work"
            work.mkdir()
            # a job of no files: the guest mounts none of its shares before the save point
            ctx = RunContext("snapshot", self.m.target, [], work, out, out / "build.log", Deadline(SAVE_TIMEOUT),
                             job=probing.Job(files={probing.PLAN: out / "build.log"}))
            self.prepare(ctx)
            self._save_once(ctx)
            os.replace(work / "ctl" / "state.bin", out / "state.bin")
            os.chown(out / "state.bin", 0, 0)  # the cache's, not the save's guest uid (which a later guest gets)
            problem = self._check_resume(ctx, out / "state.bin")
            shutil.rmtree(work, ignore_errors=True)
            if problem is None:
                log("saved %s after its boot: %d MB%s" % (self.o.spec.name, (out / "state.bin").stat().st_size >> 20,
                                                          "" if attempt == 1 else " (attempt %d)" % attempt))
                return
            problems.append(problem)
            (out / "state.bin").unlink()
            with open(out / "build.log", "a", encoding="utf-8") as f:
                f.write("[harness] saved state %d does not resume well: %s; saving again\n" % (attempt, problem))
        raise images.BuildError("saving %s: %d saved states in a row did not resume well: %s"
                                % (self.o.spec.name, SAVE_ATTEMPTS, "; ".join(problems)), out / "build.log")

    def _save_once(self, ctx: RunContext) -> None:
        """One boot to the save point, saved into ``ctx.workdir/ctl/state.bin``."""
        work = ctx.workdir
        argv = self.m.jailed(ctx, self.view(ctx, self.m.base_view(ctx), control=True),
                             self.argv(ctx) + ["-qmp", "unix:%s,server=on,wait=off" % QMP_SOCKET])
        running = proc.start(argv, log_path=ctx.log_path, env=ENV, cwd=work)
        if isinstance(running, proc.Completed):
            raise images.BuildError("saving %s: %s" % (self.o.spec.name, running.error), ctx.log_path)
        try:
            seen = running.wait_for(lambda ln: SNAPSHOT_READY in ln or find_panic(ln) is not None, SAVE_TIMEOUT)
            if seen is None or SNAPSHOT_READY not in seen:
                raise images.BuildError("saving %s: the guest did not reach its save point (%s)"
                                        % (self.o.spec.name, seen or "no READY within %.0fs" % SAVE_TIMEOUT),
                                        ctx.log_path)
            try:
                self._migrate(work / "ctl")
            except (OSError, EOFError, HarnessError) as e:  # QMP's socket, or QEMU ending mid-way
                raise images.BuildError("saving %s: %s: %s" % (self.o.spec.name, type(e).__name__, e),
                                        ctx.log_path) from None
        finally:
            running.finish(grace=2.0)
            self.m.shutdown()  # the save's guest uid: a boot takes its own

    def _check_resume(self, ctx: RunContext, state: Path) -> Optional[str]:
        """Resume ``state`` once, as a run would, up to the guest's RESUMED line: None, or why not."""
        (ctx.workdir / "ctl" / "qmp.sock").unlink(missing_ok=True)
        self._state = state
        try:
            argv = self.m.jailed(ctx, self.view(ctx, self.m.base_view(ctx), control=True), self.argv(ctx) + [
                "-qmp", "unix:%s,server=on,wait=off" % QMP_SOCKET,
                "-incoming", "exec:cat %s" % jail.guest_path("snap/state.bin")])
        finally:
            self._state = None
        running = proc.start(argv, log_path=ctx.log_path, env=ENV, cwd=ctx.workdir, stdin=True)
        if isinstance(running, proc.Completed):
            return "QEMU did not start: %s" % running.error
        try:
            with qmp_session(ctx.workdir / "ctl", SAVE_TIMEOUT) as qmp:
                end = time.monotonic() + SAVE_TIMEOUT
                while dict(qmp.cmd("query-status")).get("status") != "paused":
                    if time.monotonic() > end or not running.alive():
                        return "the saved guest was not loaded"
                    time.sleep(0.02)
                qmp.cmd("cont")
            self.go(ctx, running)
            said = running.wait_for(lambda ln: RESUMED in ln or find_panic(ln) is not None, RESUME_TICK_S)
            if said is None or RESUMED not in said:
                return "its timer never fired after the resume (%s)" % (
                    said or "no %s line within %.0fs" % (RESUMED, RESUME_TICK_S))
            return None
        except (OSError, EOFError, HarnessError) as e:
            return "%s: %s" % (type(e).__name__, e)
        finally:
            running.finish(grace=1.0)
            self.m.shutdown()

    def _migrate(self, ctl: Path) -> None:
        """Over QMP: stop the guest, write its state to ``ctl/state.bin`` (the jailed QEMU's own ``cat``),
        wait for it to complete, and end QEMU."""
        with qmp_session(ctl, SAVE_TIMEOUT) as qmp:
            qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 8 << 30})  # 32 MiB/s by default
            qmp.cmd("stop")
            qmp.cmd("migrate", uri="exec:cat > %s" % jail.guest_path("ctl/state.bin"))
            end = time.monotonic() + SAVE_TIMEOUT
            while True:
                status = dict(qmp.cmd("query-migrate")).get("status")
                if status == "completed":
                    break
                if status in ("failed", "cancelled") or time.monotonic() > end:
                    raise HarnessError("the migration ended %s" % (status or "without a status"))
                time.sleep(0.05)
            try:
                qmp.cmd("quit")
            except (OSError, EOFError):
                pass  # QEMU may close the socket before it answers: it is ending, as asked

    def resume(self, ctx: RunContext, running: proc.Running) -> None:
        """On a thread of its own, once QEMU started with ``-incoming``: wait until the state is loaded,
        let the guest run, and hand it its GO line (the clock, some entropy). A failure ends the VM with a
        line in the console log: the boot then reports it, rather than waiting for its deadline."""
        try:
            with qmp_session(ctx.workdir / "ctl", ctx.deadline.left(at_least=1.0)) as qmp:
                end = time.monotonic() + ctx.deadline.left(at_least=1.0)
                while dict(qmp.cmd("query-status")).get("status") != "paused":
                    if time.monotonic() > end or not running.alive():
                        raise HarnessError("the saved guest was not loaded")
                    time.sleep(0.02)
                qmp.cmd("cont")
                self._resumed.set()
        except Exception as e:  # noqa: BLE001 - QMP errors, EOF, OSError: the boot falls back to a cold one
            self._resume_failed = "%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__
            proc.stop(running.popen, 1.0)
            return
        # Only now: bytes written before "cont" are lost under the loaded UART state.
        try:
            self.go(ctx, running)
        except OSError as e:  # QEMU ended right after the load (its stdin is gone): execute() says so
            self._resume_failed = "QEMU ended as the saved guest was let run: %s" % e
            return
        # The guest says RESUMED once a timer fired after the resume; from a saved state whose timer QEMU
        # does not re-arm (riscv64, QEMU 7.2) it never does, and would hang at its first sleep. Only a
        # whole RESUME_TICK_S without it condemns the state: a shorter deadline is the run's own end.
        wait = ctx.deadline.left(at_least=0.0)
        said = running.wait_for(lambda ln: RESUMED in ln or find_panic(ln) is not None, min(RESUME_TICK_S, wait))
        if said is None and wait >= RESUME_TICK_S and running.alive() and not proc.stopping():
            self._resume_failed = "its timer never fired after the resume (no %s line within %.0fs)" % (
                RESUMED, RESUME_TICK_S)
            proc.stop(running.popen, 1.0)

    def prepare(self, ctx: RunContext) -> None:
        """The job's share (read-only to the guest): its files (the agent's zipapp, its plan, the programs
        it runs), the size of the guest's /tmp that holds them, and the agent's extra arguments. It rides
        in a share, not in the initrd: a resumed guest (a snapshot) booted from an initrd long ago."""
        job = ctx.workdir / "job"
        job.mkdir()
        job.chmod(0o755)  # whatever the umask: the jailed QEMU runs as the boot's own uid
        probing.stage(ctx.files, job / "files")
        total = sum(p.stat().st_size for p in ctx.files.values())
        # a session's agent also keeps the files it is sent in /tmp
        (job / "tmp_mib").write_text("%d\n" % ((256 if ctx.on_stdin else 16) + total // MiB))
        (job / "agent_args").write_text(" ".join(self.m.serve_args(ctx)) + "\n")
        for f in (job / "tmp_mib", job / "agent_args"):
            f.chmod(0o444)

    def view(self, ctx: RunContext, base: jail.View, control: bool = False) -> jail.View:
        """The job's share and the guest root read-only, the results share writable; with ``control``
        (a save, or a resume) also a directory for the QMP socket, owned by the boot's uid, and the saved
        state read-only."""
        ro = base.ro + ((ctx.workdir / "job", jail.guest_path("job")),)
        if not self.o.host_root:
            assert self._root is not None
            ro += ((self._root, jail.guest_path("root")),)
        rw: Tuple[Tuple[Path, str], ...] = ((self.m.results_dir(ctx), jail.guest_path("out")),)
        if control:
            ctl = ctx.workdir / "ctl"
            ctl.mkdir(exist_ok=True)
            ctl.chmod(0o700)
            jail.own(ctl, self.m.slot())
            rw += ((ctl, jail.guest_path("ctl")),)
            if self._state is not None:
                ro += ((self._state.parent, jail.guest_path("snap")),)
        return dataclasses.replace(base, ro=ro, rw=rw)

    def argv(self, ctx: RunContext) -> List[str]:
        return self.machine_argv()

    def machine_argv(self) -> List[str]:
        """The cached initramfs, the job's share and the guest root read-only, the results share writable.
        Paths are the jailed QEMU's, the same in every boot (a saved guest resumes only on the command line
        it was saved from): for a guest of the host's arch the root is the view itself, never the host's /."""
        root = "/" if self.o.host_root else jail.guest_path("root")
        root_share = "local,path=%s,mount_tag=hostroot,security_model=none,readonly=on" % root
        root_share += ",multidevs=remap"  # the view spans several filesystems
        job_share = "local,path=%s,mount_tag=job,security_model=none,readonly=on" % jail.guest_path("job")
        out_share = "local,path=%s,mount_tag=out,security_model=none" % jail.guest_path("out")
        # -nic none: no default network card (QEMU gives a PC one with user-mode networking otherwise).
        more = ["arena.snapshot=1"] if self.snapshots() else []
        return self.m.vm_argv(Path(jail.guest_path("initrd")), more) + [
            "-nic", "none", "-virtfs", root_share, "-virtfs", job_share, "-virtfs", out_share]

    def execute(self, ctx: RunContext) -> proc.Completed:
        if not (ctx.workdir / "job").exists():
            raise HarnessError("qemu: prepare() did not run")
        if self._state is not None:
            done = self.execute_resumed(ctx)
            if not self._resume_failed:
                return done
            # A saved guest that does not load (corrupt, truncated, from another QEMU): say so once, drop
            # it (the next run saves a new one) and boot cold within the same deadline.
            broken = self._state.parent
            with open(ctx.log_path, "a", encoding="utf-8") as log:
                log.write("[harness] the saved guest %s did not resume (%s): booting cold; the next run saves "
                          "it again\n" % (broken.name, self._resume_failed))
            self._drop_state()
            self.m.shutdown()  # a fresh guest uid for the cold boot
            self.m.results_dir(ctx)
        if not self.snapshots():
            return self.m.spawn(ctx, self.m.argv(ctx), watch=self.m.watcher(ctx), after_stop_request=5.0, env=ENV)
        # Snapshots on but none to resume: a cold boot of the same machine, which stops at the save point
        # too and is handed its GO line there.

        def go_at_save_point(running: proc.Running) -> None:
            threading.Thread(target=self.go_when_ready, args=(ctx, running), name="go", daemon=True).start()

        return self.m.spawn(ctx, self.m.argv(ctx), watch=self.m.watcher(ctx), after_stop_request=5.0, env=ENV,
                            on_start=go_at_save_point)

    def execute_resumed(self, ctx: RunContext) -> proc.Completed:
        self._resume_failed = None
        self._resumed.clear()
        argv = self.m.jailed(ctx, self.view(ctx, self.m.base_view(ctx), control=True), self.argv(ctx) + [
            "-qmp", "unix:%s,server=on,wait=off" % QMP_SOCKET,
            "-incoming", "exec:cat %s" % jail.guest_path("snap/state.bin")])

        def started(running: proc.Running) -> None:
            threading.Thread(target=self.resume, args=(ctx, running), name="resume", daemon=True).start()

        # After its DONE line a guest's results are on the host (the share's writes are synchronous) and a
        # power-off takes it 0.1-0.3 s: a resumed guest gets POWEROFF_S, not the cold boot's 5 s (seen on
        # riscv64: from a saved state with a dead timer, the guest never powered off).
        done = self.m.spawn(ctx, argv, watch=self.m.watcher(ctx), after_stop_request=POWEROFF_S, env=ENV,
                            on_start=started)
        if not self._resumed.is_set() and not self._resume_failed and not done.timed_out and not proc.stopping():
            # QEMU ended before the state was loaded (a corrupt stream: "load of migration failed"), while
            # the resume thread was still waiting for its socket
            self._resume_failed = "QEMU ended before the saved guest was loaded: %s" % (
                next((ln for ln in reversed(done.lines) if "qemu-system" in ln), "no word from it")[:200])
        elif self._resumed.is_set() and done.stopped == "done" and done.forced:
            # Its results are in: the run goes on. Not dropped for this alone (a loaded host can be that
            # slow); a dead timer, the known cause, is caught at the save and by the RESUMED line.
            with open(ctx.log_path, "a", encoding="utf-8") as log:
                log.write("[harness] the resumed guest did not power off within %.0fs of its DONE line: "
                          "stopped\n" % POWEROFF_S)
        return done

    def _drop_state(self) -> None:
        """Drop the saved guest this boot resumed (it is no cache entry from here on, whatever happens)."""
        assert self._state is not None
        broken = self._state.parent
        (broken / "manifest.json").unlink(missing_ok=True)
        shutil.rmtree(broken, ignore_errors=True)
        self._state = None

    def go_when_ready(self, ctx: RunContext, running: proc.Running) -> None:
        """A cold boot of a snapshot machine: at the save point, hand the guest its GO line."""
        if running.wait_for(lambda ln: SNAPSHOT_READY in ln, ctx.deadline.left(at_least=1.0)) is not None:
            self.go(ctx, running)

    def go(self, ctx: RunContext, running: proc.Running) -> None:
        running.write(b"GO %d %s\n" % (int(time.time()), secrets.token_hex(32).encode()))
        if ctx.on_stdin is not None:
            ctx.on_stdin(running.write, lambda: proc.stop(running.popen, 1.0))

    def result_file(self, ctx: RunContext) -> Optional[Path]:
        return ctx.workdir / "out" / "result.json"


class DiskBoot(Boot):
    """``boot: ssh``: a Debian disk image with sshd (``images.SshDisk``, run with ``snapshot=on``), reached
    over a user-mode network forward and probed through the SSH channel (:class:`SshChannel`, the ssh
    backend's own) with the image's host key pinned: how users test cloud images."""

    name = "ssh"
    init = "init-ssh.sh"
    # ext4 needs crc32c through the crypto API: a soft dependency that depends= does not list.
    modules = ("virtio_blk", "crc32c_generic", "ext4", "virtio_net")

    def __init__(self, machine: QemuBackend) -> None:
        super().__init__(machine)
        self._disk: Optional[Path] = None

    def rootfs(self) -> Optional[images.Rootfs]:
        return images.Rootfs(self.o.spec.debian, self.o.rootfs_suite or self.o.spec.suite,
                             ("python3", "openssh-server"))

    def disk(self) -> images.SshDisk:
        root = self.rootfs()
        assert root is not None
        return images.SshDisk(root)

    def recipes(self) -> List[images.Recipe]:
        return [self.disk()]

    def provision(self, cache: images.Cache, log: images.Log) -> None:
        self._disk = cache.get(self.disk(), log)

    def prepare(self, ctx: RunContext) -> None:
        """Nothing per boot: the image is the guest, and the allocator goes over SSH."""

    def view(self, ctx: RunContext, base: jail.View) -> jail.View:
        assert self._disk is not None
        # snapshot=on keeps the disk's writes in a file under TMPDIR: the view's private /tmp (lazily filled).
        # The host's network: user-mode networking forwards a port on the host's loopback.
        return dataclasses.replace(base, ro=base.ro + ((self._disk / "disk.img", jail.guest_path("disk.img")),),
                                   tmp_size=1 << 30, host_net=True)

    def argv(self, ctx: RunContext, port: int = 0) -> List[str]:
        """The disk image (writes discarded) and user-mode networking forwarding ``port`` to :22;
        ``restrict=on``: the guest reaches neither the host nor any network, only the forward comes in."""
        return self.m.vm_argv(Path(jail.guest_path("initrd"))) + [
            "-drive", "file=%s,if=virtio,format=raw,snapshot=on" % jail.guest_path("disk.img"),
            "-netdev", "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22" % port,
            "-device", "virtio-net-pci,netdev=n0",
        ]

    def execute(self, ctx: RunContext) -> proc.Completed:
        """Boot the disk image, wait for its sshd, run the probe through the SSH channel, end the VM."""
        from harness.backends.ssh import SshChannel, SshOptions

        assert self._disk is not None and self.m._initramfs is not None
        begin = time.monotonic()
        with socket.socket() as s:  # a free loopback port for hostfwd
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        argv = self.m.jailed(ctx, self.m.view(ctx), self.argv(ctx, port))
        vm = proc.start(argv, log_path=ctx.log_path, cwd=ctx.workdir, env=ENV)
        if isinstance(vm, proc.Completed):
            return vm
        try:
            seen = vm.wait_for(lambda ln: "@@ARENA-HARNESS-SSHD-READY@@" in ln or find_panic(ln) is not None,
                               ctx.deadline.left())
            if seen is None or "@@ARENA-HARNESS-SSHD-READY@@" not in seen:
                timed_out = seen is None and vm.alive()
                return proc.Completed(vm.argv, vm.popen.poll(), time.monotonic() - begin, "\n".join(vm.lines),
                                      timed_out=timed_out, stopped="timeout" if timed_out else None,
                                      lines=list(vm.lines))
            known = ctx.workdir / "known_hosts"
            kind, key = (self._disk / "host_ed25519.pub").read_text().split()[:2]
            known.write_text("[127.0.0.1]:%d %s %s\n" % (port, kind, key))
            # The machine is up: from here it is the SSH channel's, as for any machine reached over SSH.
            channel = SshChannel(SshOptions(
                host="127.0.0.1", port=port, user="root", key_file=str(self._disk / "id_ed25519"), use_agent=False,
                known_hosts=str(known), connect_timeout=Seconds(min(30.0, ctx.deadline.left(at_least=1.0)))))
            try:
                agent = ["python3"] + self.m.agent_args("{dir}") + self.m.serve_args(ctx)
                done = channel.run(agent, ctx.deadline, ctx.log_path, ctx.files, on_line=ctx.on_line,
                                   on_stdin=ctx.on_stdin)
            finally:
                channel.close()
            lines = list(vm.lines) + done.lines
            return proc.Completed(done.argv, done.returncode, time.monotonic() - begin, "\n".join(lines),
                                  timed_out=done.timed_out, stopped=done.stopped, lines=lines)
        finally:
            vm.finish(grace=1.0)


BOOTS: Dict[str, Callable[[QemuBackend], Boot]] = {b.name: b for b in (NinePBoot, DiskBoot)}
