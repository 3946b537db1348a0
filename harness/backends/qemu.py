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

import dataclasses
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Dict, List, Optional, Tuple

import images
from harness import arches, proc
from harness import probes as probing
from harness.backends import jail
from harness.backends.base import Backend, Need, RunContext, Tool
from harness.backends.console import find_panic
from harness.errors import ConfigError, HarnessError
from harness.model import DEBIAN, ITEM, Seconds, Size, Target
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
    accel: str = "tcg"  # tcg | auto (KVM when a short trial boot shows it works)
    boot: str = "9p"  # 9p: the initramfs runs the probe; ssh: a disk image with sshd, probed over SSH
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
        return [self.kit(), self.initramfs(), *self.boot.recipes()]

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

    def auto_accel(self, cache: images.Cache, trial: bool) -> Tuple[Optional[str], str]:
        """What ``accel: auto`` would pick for this architecture here, and why: ("kvm" or "tcg", reason),
        or (None, reason) when only the trial boot could tell and ``trial`` is False.

        The same decision as :meth:`accel` (``_kvm_works``); with ``trial`` it boots that short VM,
        from the cached kernel and initramfs (never building them).
        """
        spec = self.options.spec
        if spec.name in _kvm_verdict:
            return "kvm" if _kvm_verdict[spec.name] else "tcg", _kvm_reason[spec.name]
        if not os.path.exists(KVM_DEVICE):
            return "tcg", "there is no %s" % KVM_DEVICE
        if not trial:
            return None, "%s exists, but a device node alone proves nothing: accel: auto boots a short trial VM " \
                "first (up to %.0fs)" % (KVM_DEVICE, KVM_TRIAL_S)
        absent = [r for r in (self.kit(), self.initramfs()) if not cache.ready(r)]
        if absent:
            return None, "the trial boot needs the cached %s %s: build it with arena-harness images build" % (
                absent[0].kind, absent[0].name)
        self._kit = cache.get(self.kit())
        self._initramfs = cache.get(self.initramfs()) / "initramfs.cpio.gz"
        self._kvm_works()  # records its verdict, which the first branch above reads
        return self.auto_accel(cache, trial=False)

    def _kvm_works(self) -> bool:
        """Try KVM for real (a device node alone proves nothing): a short boot must reach the init."""
        spec = self.options.spec
        if spec.name in _kvm_verdict:
            return _kvm_verdict[spec.name]
        ok = False
        why = "there is no %s" % KVM_DEVICE
        if os.path.exists(KVM_DEVICE) and self._kit is not None and self._initramfs is not None:
            c = proc.run([spec.qemu_system, "-accel", "kvm", *spec.machine, "-cpu", "host", "-m", "256", "-nographic",
                          "-no-reboot", "-kernel", str(self._kit / "kernel"), "-initrd", str(self._initramfs),
                          "-append", "console=%s panic=-1 quiet" % spec.console],
                         timeout=KVM_TRIAL_S, watch=lambda ln: "booted" if "@@ARENA-HARNESS-BOOTED@@" in ln else None,
                         after_stop_request=0.0, grace=1.0)
            ok = c.stopped == "booted"
            if ok:
                why = "a trial boot with KVM reached the init"
            elif c.timed_out:
                why = "a trial boot with KVM did not reach the init within %.0fs" % KVM_TRIAL_S
            else:
                said = next((ln.strip() for ln in c.lines if ln.strip()), c.error or "no output")
                why = "a trial boot with KVM ended before the init: %s" % said[:160]
        elif os.path.exists(KVM_DEVICE):
            why = "no kernel to try KVM with"
        _kvm_verdict[spec.name] = ok
        _kvm_reason[spec.name] = why
        return ok

    def vm_argv(self, initrd: Path) -> List[str]:
        """The machine both boot modes share: CPU, memory, console, firmware, kernel, initrd, command line."""
        o = self.options
        spec = o.spec
        assert self._kit is not None
        append = ["console=%s" % spec.console, "panic=-1", "rdinit=/init", *o.kernel_args]
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

    def view(self, ctx: RunContext) -> jail.View:
        """What the jailed QEMU sees: the host's /usr and /etc (itself, its firmware), the kernel, this
        boot's initrd, the guest's root filesystem (when it is not the view itself) and the results share."""
        assert self._kit is not None
        base = jail.View(ro=((self._kit, jail.guest_path("kit")), (ctx.workdir / "initrd", jail.guest_path("initrd"))),
                         devices=jail.View.devices + (("kvm",) if self.accel() == ["-accel", "kvm"] else ()),
                         proc=True)  # QEMU's 9p server sets modes through /proc/self/fd (its own proc will do)
        return self.boot.view(ctx, base)

    def argv(self, ctx: RunContext) -> List[str]:
        """The jailed QEMU's whole command line for this boot (the 9p boot's; see :class:`Boot`)."""
        return self.jailed(ctx, self.view(ctx), self.boot.argv(ctx))

    def execute(self, ctx: RunContext) -> proc.Completed:
        return self.boot.execute(ctx)

    def result_file(self, ctx: RunContext) -> Optional[Path]:
        return self.boot.result_file(ctx)


ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": "/tmp", "HOME": "/tmp"}


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

    def __init__(self, machine: QemuBackend) -> None:
        super().__init__(machine)
        self._root: Optional[Path] = None

    def rootfs(self) -> Optional[images.Rootfs]:
        if self.o.host_root:
            return None
        return images.Rootfs(self.o.spec.debian, self.o.rootfs_suite or self.o.spec.suite,
                             ("python3",) + self.o.packages)

    def recipes(self) -> List[images.Recipe]:
        root = self.rootfs()
        return [root] if root is not None else []

    def provision(self, cache: images.Cache, log: images.Log) -> None:
        root = self.rootfs()
        self._root = Path("/") if root is None else cache.get(root, log) / "root"

    def prepare(self, ctx: RunContext) -> None:
        """The per-boot initrd: the cached initramfs, then a small cpio with the job's files (the agent's
        zipapp, its plan, the programs it runs) and the size of the guest's /tmp that holds them
        (concatenated cpio archives: the second must start 4-byte aligned; the padding is skipped)."""
        assert self.m._initramfs is not None
        per_boot = images.Cpio()
        total = 0
        for name, path in ctx.files.items():
            data = path.read_bytes()
            total += len(data)
            per_boot.file("payload/files/" + name, data, mode=probing.file_mode(name, path))
        # a session's agent also keeps the files it is sent in /tmp
        per_boot.file("payload/tmp_mib", b"%d\n" % ((256 if ctx.on_stdin else 16) + total // MiB))
        per_boot.file("payload/agent_args", (" ".join(self.m.serve_args(ctx)) + "\n").encode())
        with open(ctx.workdir / "initrd", "wb") as f:
            with open(self.m._initramfs, "rb") as base:
                shutil.copyfileobj(base, f)
            f.write(b"\0" * (-f.tell() % 4))
            f.write(per_boot.bytes())

    def view(self, ctx: RunContext, base: jail.View) -> jail.View:
        ro = base.ro
        if not self.o.host_root:
            assert self._root is not None
            ro += ((self._root, jail.guest_path("root")),)
        return dataclasses.replace(base, ro=ro, rw=((self.m.results_dir(ctx), jail.guest_path("out")),))

    def argv(self, ctx: RunContext) -> List[str]:
        """The per-boot initrd, the guest root read-only and the results share writable. Paths are the
        jailed QEMU's: for a guest of the host's arch the root is the view itself, never the host's /."""
        root = "/" if self.o.host_root else jail.guest_path("root")
        root_share = "local,path=%s,mount_tag=hostroot,security_model=none,readonly=on" % root
        root_share += ",multidevs=remap"  # the view spans several filesystems
        out_share = "local,path=%s,mount_tag=out,security_model=none" % jail.guest_path("out")
        # -nic none: no default network card (QEMU gives a PC one with user-mode networking otherwise).
        return self.m.vm_argv(Path(jail.guest_path("initrd"))) + ["-nic", "none", "-virtfs", root_share,
                                                                  "-virtfs", out_share]

    def execute(self, ctx: RunContext) -> proc.Completed:
        if not (ctx.workdir / "initrd").exists():
            raise HarnessError("qemu: prepare() did not run")
        return self.m.spawn(ctx, self.m.argv(ctx), watch=self.m.watcher(ctx), after_stop_request=5.0, env=ENV)

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
        shutil.copyfile(self.m._initramfs, ctx.workdir / "initrd")
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
