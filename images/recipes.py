"""The recipes: how each kind of guest artefact is built (kernels, initramfs, root filesystems, disks).

``KernelKit`` (a Debian kernel, busybox and the modules a 9p root needs,
fetched with ``mmdebstrap --variant=extract``, no change to the host's apt),
``Rootfs`` (``mmdebstrap --variant=essential --include=python3``; ``minbase``
for the pristine-machine test), ``RootfsTarball`` (for ``docker import``),
``Initramfs`` (busybox, modules and an init script from ``images/qemu/``,
written as newc cpio), ``SshDisk`` (a root with sshd in an ext4 image) and
``GoProbe`` (the go probe, ``probes/go``, built for one architecture with the
host's Go).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from harness import arches, proc
from harness.probes import go as go_probe
from images.cache import (
    BUILD_TIMEOUT,
    MMDEBSTRAP,
    UNSHARE_TOOL,
    BuildError,
    Cache,
    Log,
    Recipe,
    Tool,
)

# -- cpio (newc), for initramfs ------------------------------------------------------------


class Cpio:
    """A newc cpio archive written in Python: no cpio binary, no root needed for device nodes."""

    def __init__(self) -> None:
        self.parts: List[bytes] = []
        self.ino = 1
        self.names: Set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: Tuple[int, int] = (0, 0)) -> None:
        name = name.lstrip("/")
        if name in self.names:
            return
        self.names.add(name)
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(
            "%08X" % v
            for v in (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0)
        )
        self.ino += 1
        out = hdr.encode() + nb
        out += b"\0" * (-len(out) % 4)
        out += data + b"\0" * (-len(data) % 4)
        self.parts.append(out)

    def dir(self, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        if "/" in name.strip("/"):
            self.dir(name.strip("/").rsplit("/", 1)[0])
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def bytes(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self.parts)


# -- recipes ------------------------------------------------------------------------------------


def build_step(argv: Sequence[str], log_path: Path, what: str, env: Optional[Mapping[str, str]] = None,
               cwd: Optional[Path] = None) -> None:
    """One command of a recipe, logged to the entry's build.log; failure is one BuildError with the log's tail."""
    c = proc.run(list(argv), timeout=BUILD_TIMEOUT, log_path=log_path, env=env, cwd=cwd)
    if c.returncode != 0 or c.timed_out:
        tail = " | ".join(ln for ln in c.lines[-4:] if ln.strip())
        raise BuildError("%s failed: %s" % (what, tail or c.error or c.returncode), log=log_path)


UNSHARE = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc", "--"]
"""How mmdebstrap runs as root. In root mode it mounts proc, sys, dev/shm and dev/pts into the new
root; in a mount namespace of its own those mounts are never in the host's table and vanish with the
namespace. In a PID namespace of its own, with --kill-child, the whole build (apt, dpkg, gpg-agent)
dies with ``unshare``, which dies with the harness (proc's PR_SET_PDEATHSIG): a ``kill -9`` of the
harness mid-build leaves no process and no mount. As a normal user mmdebstrap picks its unshare or
fakechroot mode, neither of which mounts anything on the host."""


def mmdebstrap(args: Sequence[str], log_path: Path, log: Log, what: str) -> None:
    if proc.which(MMDEBSTRAP.command) is None:
        raise BuildError("building %s needs mmdebstrap: %s" % (what, MMDEBSTRAP.hint))
    # The suite's main archive only: -updates and -security change daily and are
    # sometimes caught mid-sync on a mirror; guests need no security updates.
    hook = ('for f in "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/*.list; do '
            '[ -f "$f" ] || continue; sed -i -e "/-updates /d" -e "/-security /d" "$f"; done')
    argv = ["mmdebstrap", "--setup-hook=" + hook, *args]
    if os.geteuid() == 0:
        if proc.which(UNSHARE_TOOL.command) is None:
            raise BuildError("building %s as root needs unshare: %s" % (what, UNSHARE_TOOL.hint))
        argv = UNSHARE + argv
    build_step(argv, log_path, "mmdebstrap for %s" % what)


_DEPENDS = re.compile(rb"depends=([A-Za-z0-9_,-]*)\0")


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        data = lzma.decompress(data)
    elif path.name.endswith(".zst"):
        raise BuildError("zstd-compressed module %s is not supported" % path)
    elif path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data


def module_closure(moddir: Path, roots: Sequence[str]) -> List[Tuple[str, bytes]]:
    """The modules ``roots`` need, dependencies first, builtins skipped: [(name, .ko bytes)]."""
    files: Dict[str, Path] = {}
    for f in moddir.rglob("*.ko*"):
        files[f.name.split(".ko")[0].replace("-", "_")] = f
    builtin = set()
    bfile = moddir / "modules.builtin"
    if bfile.is_file():
        builtin = {ln.rsplit("/", 1)[-1].split(".ko")[0].replace("-", "_") for ln in bfile.read_text().split()}
    ordered: List[Tuple[str, bytes]] = []
    seen: Set[str] = set()

    def visit(name: str, chain: Tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in seen or name in builtin:
            return
        if name in chain:
            raise BuildError("module dependency cycle: %s" % " -> ".join(chain + (name,)))
        if name not in files:
            raise BuildError("module %s not found in %s (and not built in)" % (name, moddir))
        data = _read_module(files[name])
        m = _DEPENDS.search(data)
        for dep in (m.group(1).decode().split(",") if m and m.group(1) else []):
            if dep:
                visit(dep, chain + (name,))
        seen.add(name)
        ordered.append((name, data))

    for r in roots:
        visit(r, ())
    return ordered


@dataclass(frozen=True)
class KernelKit(Recipe):
    """A Debian kernel image, its release string, busybox, and the modules for a 9p root."""

    arch: str  # Debian architecture: amd64, i386, arm64, riscv64
    suite: str
    package: str  # linux-image-amd64, linux-image-686, ...
    image_glob: str  # boot/vmlinuz-* (boot/vmlinux-* on riscv64)
    modules: Tuple[str, ...]
    kind = "kernel"
    version = 1

    @property
    def name(self) -> str:
        return "%s-%s-%s" % (self.suite, self.arch, self.package.replace("linux-image-", ""))

    def inputs(self) -> Dict[str, object]:
        return {"arch": self.arch, "suite": self.suite, "package": self.package, "image": self.image_glob,
                "modules": list(self.modules)}

    def tools(self) -> Tuple[Tool, ...]:
        # --variant=extract runs nothing of the guest's: no emulation, no arch-test.
        return (MMDEBSTRAP,)

    def build(self, out: Path, cache: Cache, log: Log) -> None:
        x = out / "extract"
        mmdebstrap(["--variant=extract", "--include=%s,busybox-static" % self.package, "--arch=%s" % self.arch,
                     "--", self.suite, str(x)], out / "build.log", log, "the %s kernel" % self.name)
        images = sorted(x.glob(self.image_glob))
        if not images:
            raise BuildError("no kernel image matching %s in %s" % (self.image_glob, self.package))
        image = images[-1]
        release = image.name.split("-", 1)[1]
        moddir = next((d for d in (x / "lib/modules" / release, x / "usr/lib/modules" / release) if d.is_dir()), None)
        if moddir is None:
            raise BuildError("no modules for %s in %s" % (release, self.package))
        busybox = next((p for p in (x / "bin/busybox", x / "usr/bin/busybox") if p.exists()), None)
        if busybox is None:
            raise BuildError("busybox-static did not provide /bin/busybox")
        shutil.copy2(image, out / "kernel")
        shutil.copy2(busybox, out / "busybox")
        (out / "release").write_text(release + "\n")
        mods = out / "modules"
        mods.mkdir()
        order = []
        for name, data in module_closure(moddir, self.modules):
            (mods / (name + ".ko")).write_bytes(data)
            order.append(name)
        (mods / "order").write_text("\n".join(order) + "\n")
        shutil.rmtree(x)


@dataclass(frozen=True)
class Rootfs(Recipe):
    """A Debian root filesystem with python3, as a directory (``root/``)."""

    arch: str
    suite: str
    packages: Tuple[str, ...] = ("python3",)
    variant: str = "essential"  # mmdebstrap's: minbase for a machine with nothing on it (the pristine test)
    kind = "rootfs"
    version = 1

    @property
    def name(self) -> str:
        return "%s-%s%s" % (self.suite, self.arch, "" if self.variant == "essential" else "-" + self.variant)

    def inputs(self) -> Dict[str, object]:
        d: Dict[str, object] = {"arch": self.arch, "suite": self.suite, "packages": list(self.packages)}
        if self.variant != "essential":  # keeps the keys of the roots built before variants existed
            d["variant"] = self.variant
        return d

    def tools(self) -> Tuple[Tool, ...]:
        """mmdebstrap; for any architecture but the host's also arch-test (mmdebstrap refuses foreign
        architectures without it, and only *recommends* it); for one the host cannot run, qemu-user and binfmt."""
        out = [MMDEBSTRAP]
        host = host_arch()
        if self.arch != host:
            out.append(Tool("arch-test", "arch-test"))
        if not arches.runs_natively(self.arch, host):
            out += [Tool("qemu-%s-static" % arches.qemu_user_name(self.arch), "qemu-user-static"),
                    Tool("update-binfmts", "binfmt-support")]
        return tuple(out)

    def build(self, out: Path, cache: Cache, log: Log) -> None:
        ensure_binfmt(self.arch, log)
        root = out / "root"
        mmdebstrap(["--variant=%s" % self.variant, "--include=%s" % ",".join(self.packages),
                    "--arch=%s" % self.arch, "--", self.suite, str(root)], out / "build.log", log,
                   "the %s root filesystem" % self.name)
        for d in ("proc", "sys", "dev", "tmp", "mnt", "run"):
            (root / d).mkdir(exist_ok=True)


@dataclass(frozen=True)
class RootfsTarball(Recipe):
    """A cached root filesystem as ``rootfs.tar`` (for ``docker import``)."""

    rootfs: Rootfs
    kind = "rootfs-tar"
    version = 1

    @property
    def name(self) -> str:
        return self.rootfs.name

    def inputs(self) -> Dict[str, object]:
        return {"rootfs": self.rootfs.key()}

    def parts(self) -> Tuple[Recipe, ...]:
        return (self.rootfs,)

    def tools(self) -> Tuple[Tool, ...]:
        return (Tool("tar", "tar"),)

    def build(self, out: Path, cache: Cache, log: Log) -> None:
        root = cache.get(self.rootfs, log) / "root"
        build_step(["tar", "--numeric-owner", "--exclude=./dev/*", "-C", str(root), "-cf", str(out / "rootfs.tar"),
                    "."], out / "build.log", "tar of %s" % root)




def host_arch() -> str:
    """The host's Debian architecture name (amd64 on x86_64)."""
    return arches.host_debian()


def ensure_binfmt(arch: str, log: Log) -> None:
    """Foreign-arch rootfs builds run the guest's binaries through qemu-user: binfmt_misc must be ready."""
    host = host_arch()
    if arches.runs_natively(arch, host):
        return
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-%s" % arches.qemu_user_name(arch))
    if entry.exists() and entry.read_text().startswith("enabled"):
        return
    hint = "sudo apt-get install -y qemu-user-static binfmt-support"
    if not Path("/usr/bin/qemu-%s-static" % arches.qemu_user_name(arch)).exists():
        raise BuildError("building a %s root filesystem needs qemu-user-static: %s" % (arch, hint))
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        log("mounting binfmt_misc")
        c = proc.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], timeout=30)
        if c.returncode != 0:
            raise BuildError("cannot mount binfmt_misc (needs root): %s" % c.output.strip())
    if proc.which("update-binfmts"):
        proc.run(["update-binfmts", "--enable", "qemu-%s" % arches.qemu_user_name(arch)], timeout=60)
    if not (entry.exists() and entry.read_text().startswith("enabled")):
        raise BuildError("binfmt for %s is not enabled (%s): %s" % (arch, entry, hint))


@dataclass(frozen=True)
class Initramfs(Recipe):
    """busybox + a kit's modules + an init script, gzipped newc cpio. The kit is a ``KernelKit`` or a
    ``SourceKernelKit`` (same layout: ``busybox``, ``modules/*.ko`` and ``modules/order``, which a
    source-built kernel leaves empty: the init's loop then loads nothing)."""

    kit: Recipe
    init: str  # the init script's text
    extra_dirs: Tuple[str, ...] = field(default=("proc", "sys", "dev", "host", "tmp", "job"))
    kind = "initramfs"
    version = 2

    @property
    def name(self) -> str:
        return self.kit.name

    def inputs(self) -> Dict[str, object]:
        return {"kit": self.kit.key(), "init": hashlib.sha256(self.init.encode()).hexdigest(),
                "dirs": list(self.extra_dirs)}

    def parts(self) -> Tuple[Recipe, ...]:
        return (self.kit,)

    def build(self, out: Path, cache: Cache, log: Log) -> None:
        kit = cache.get(self.kit, log)
        c = Cpio()
        for d in ("bin", "sbin", "modules") + self.extra_dirs:
            c.dir(d)
        c.chardev("dev/console", 5, 1)
        c.chardev("dev/null", 1, 3)
        c.file("bin/busybox", (kit / "busybox").read_bytes(), 0o755)
        for applet in ("sh", "mount", "umount", "insmod", "mkdir", "cat", "echo", "poweroff", "chroot", "cp",
                       "sleep", "uname", "cut", "sync", "halt", "ip", "date"):
            c.symlink("bin/%s" % applet, "busybox")
        for ko in sorted((kit / "modules").glob("*.ko")):
            c.file("modules/%s" % ko.name, ko.read_bytes())
        c.file("modules/order", (kit / "modules" / "order").read_bytes())
        c.file("init", self.init.encode(), 0o755)
        with gzip.open(out / "initramfs.cpio.gz", "wb", compresslevel=6) as f:
            f.write(c.bytes())


@dataclass(frozen=True)
class SshDisk(Recipe):
    """An ext4 disk image of a Debian root with python3 and openssh-server, for VMs reached over SSH.

    Carries a generated user key (``id_ed25519``, authorized for root) and the
    image's host key (``host_ed25519.pub``), so the harness can pin it.
    """

    rootfs: Rootfs
    extra_mb: int = 256
    kind = "ssh-disk"
    version = 1

    @property
    def name(self) -> str:
        return self.rootfs.name

    def inputs(self) -> Dict[str, object]:
        return {"rootfs": self.rootfs.key(), "extra_mb": self.extra_mb}

    def parts(self) -> Tuple[Recipe, ...]:
        return (self.rootfs,)

    def tools(self) -> Tuple[Tool, ...]:
        return (Tool("ssh-keygen", "openssh-client"), Tool("mke2fs", "e2fsprogs"))

    def build(self, out: Path, cache: Cache, log: Log) -> None:
        root = cache.get(self.rootfs, log) / "root"
        stage = out / "stage"
        logf = out / "build.log"
        # Hard links: the stage shares the cached root's files; only new files are written.
        build_step(["cp", "-al", str(root), str(stage)], logf, "copying the root")
        build_step(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "arena-harness",
                    "-f", str(out / "id_ed25519")], logf, "ssh-keygen")
        ssh_dir = stage / "root" / ".ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text((out / "id_ed25519.pub").read_text())
        conf = stage / "etc/ssh/sshd_config.d"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "arena-harness.conf").write_text("PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                                                 "UsePAM no\nUseDNS no\n")
        host_key = stage / "etc/ssh/ssh_host_ed25519_key.pub"
        if not host_key.exists():
            raise BuildError("the image has no ed25519 host key (openssh-server's postinst did not run)")
        shutil.copyfile(host_key, out / "host_ed25519.pub")
        size_mb = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file() and not f.is_symlink()) // (1 << 20)
        build_step(["mke2fs", "-q", "-t", "ext4", "-L", "root", "-d", str(stage), str(out / "disk.img"),
            "%dM" % (size_mb + self.extra_mb)], logf, "mke2fs")
        shutil.rmtree(stage)



# -- the go probe ----------------------------------------------------------------------------------

GO = Tool("go", "golang-go")
_GO_FILES = ("*.go", "go.mod", "go.sum")
_ELF_MACHINE = {"amd64": 62, "386": 3, "arm64": 183, "riscv64": 243}  # e_machine: EM_X86_64, EM_386, ...
_go_versions: Dict[Tuple[str, int, int], Optional[str]] = {}


def go_env(work: Path, goarch: Optional[str] = None) -> Dict[str, str]:
    """The environment the host's Go runs in for a build: nothing of the user's Go set-up (GOROOT, GOFLAGS,
    go env files, workspaces), no network (GOPROXY=off: the probe needs the standard library only), and
    HOME, caches and temporary files under ``work``, so a build writes nothing outside its entry."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work / "home"), "GOENV": "off",
           "GOCACHE": str(work / "cache"), "GOPATH": str(work / "path"), "GOTMPDIR": str(work / "tmp"),
           "GOPROXY": "off", "GOFLAGS": "-mod=mod", "GOWORK": "off", "GO111MODULE": "on",
           "GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOOS": "linux"}
    if goarch is not None:
        env["GOARCH"] = goarch
    return env


def go_version() -> Optional[str]:
    """``go version`` of the host's Go ("go version go1.19.8 linux/amd64"), None without one. Asked once
    per binary (path, size and modification time), since every cache key of a go probe names it."""
    path = proc.which(GO.command)
    if path is None:
        return None
    st = os.stat(path)
    ident = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if ident not in _go_versions:
        work = Path("/nonexistent/arena-harness-go")  # go version reads no cache and writes nothing
        c = proc.run([path, "version"], timeout=60, env=go_env(work))
        _go_versions[ident] = c.output.strip() if c.returncode == 0 and c.output.startswith("go version ") else None
    return _go_versions[ident]


def go_sources(source: Path) -> Dict[str, bytes]:
    """The files of the Go program in ``source`` that its build reads (one package: no subdirectories)."""
    names = sorted({f.name for pattern in _GO_FILES for f in source.glob(pattern) if f.is_file()})
    return {name: (source / name).read_bytes() for name in names}


def _digest(files: Dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name, data in sorted(files.items()):
        h.update(b"%d:%s\0%d:" % (len(name), name.encode(), len(data)))
        h.update(data)
    return h.hexdigest()


def check_static_elf(path: Path, goarch: str) -> None:
    """That ``path`` is an ELF executable for ``goarch`` with no program interpreter (static)."""
    head = path.read_bytes()[:1 << 16]
    if head[:4] != b"\x7fELF" or head[5] != 1:  # all four arches are little-endian
        raise BuildError("go build wrote %s, which is not a little-endian ELF file" % path)
    machine = int.from_bytes(head[18:20], "little")
    if machine != _ELF_MACHINE.get(goarch, machine):
        raise BuildError("go build wrote a binary for ELF machine %d, not %s" % (machine, goarch))
    wide = head[4] == 2  # ELFCLASS64
    phoff = int.from_bytes(head[32:40] if wide else head[28:32], "little")
    phentsize = int.from_bytes(head[54:56] if wide else head[42:44], "little")
    phnum = int.from_bytes(head[56:58] if wide else head[44:46], "little")
    for i in range(phnum):
        off = phoff + i * phentsize
        if int.from_bytes(head[off:off + 4], "little") == 3:  # PT_INTERP: a dynamic loader is needed
            raise BuildError("go build wrote a dynamically linked %s (is CGO_ENABLED=0 ignored?)" % path)


@dataclass(frozen=True)
class GoProbe(Recipe):
    """The go probe (``probes/go``) built for one architecture: the static binary ``goprobe``
    (:data:`harness.probes.go.BINARY`) in the entry, and the source it was built from in ``src/``.

    Built with the host's Go, Debian's golang-go (1.19 on Debian 12, the version ``go-modern``
    models): ``go build -trimpath`` with CGO_ENABLED=0 and :func:`go_env`. The key is the source's
    hash, ``go version`` and GOARCH: a changed program or another Go is a new entry.
    """

    arch: str  # Debian architecture, as for the other recipes: amd64, i386, arm64, riscv64
    source: Path = go_probe.SOURCE  # another tree only in tests
    digest: str = field(init=False, compare=False, repr=False)  # of the source when this recipe was made
    kind = "go-probe"
    version = 1

    def __post_init__(self) -> None:
        rec = arches.BY_DEBIAN.get(self.arch)
        if rec is None or rec.goarch is None:
            known = ", ".join(a.debian for a in arches.ARCHES if a.goarch)
            raise BuildError("no Go port for architecture %r (the go probe builds for %s)" % (self.arch, known))
        # Read once: the key, the entry's name and what build() compiles all name this one snapshot.
        object.__setattr__(self, "digest", _digest(go_sources(self.source)))

    @property
    def goarch(self) -> str:
        return arches.BY_DEBIAN[self.arch].goarch or ""  # (never empty: __post_init__ checked)

    @property
    def name(self) -> str:
        return self.arch

    def inputs(self) -> Dict[str, object]:
        return {"arch": self.arch, "goarch": self.goarch, "source": self.digest, "go": go_version()}

    def tools(self) -> Tuple[Tool, ...]:
        return (GO,)

    def build(self, out: Path, cache: Cache, log: Log) -> None:
        if go_version() is None:
            raise BuildError("`go version` failed: the go probe needs a working Go: %s" % GO.hint)
        files = go_sources(self.source)
        if "main.go" not in files:
            raise BuildError("no main.go in %s: the go probe's source is missing" % self.source)
        if _digest(files) != self.digest:
            raise BuildError("%s changed after this run read it: run again" % self.source)
        src = out / "src"
        src.mkdir()
        for name, data in files.items():  # the snapshot the key names, whatever happens to the tree now
            (src / name).write_bytes(data)
        work = out / "work"
        (work / "tmp").mkdir(parents=True)
        env = go_env(work, self.goarch)
        # Through env -i, so that build.log's first line is the whole command, environment included.
        build_step(["env", "-i", *("%s=%s" % kv for kv in sorted(env.items())), GO.command, "build", "-trimpath",
                    "-o", str(out / go_probe.BINARY), "."], out / "build.log",
                   "go build of the go probe for %s" % self.goarch, env=env, cwd=src)
        check_static_elf(out / go_probe.BINARY, self.goarch)
        shutil.rmtree(work)  # the build cache: tens of MiB, and a new Go version is a new entry anyway


@dataclass(frozen=True)
class Made(Recipe):
    """A recipe a backend makes by running something (a saved guest, a trial boot): ``make(out, log)``
    leaves :attr:`product` in the entry. Its key's inputs come as sorted JSON (``inputs_json``); its
    name is ``label``."""

    label: str
    inputs_json: str  # the key's inputs, as sorted JSON
    make: Callable[[Path, Log], None] = field(compare=False, hash=False, repr=False)
    product: ClassVar[str] = ""

    @property
    def name(self) -> str:
        return self.label

    def inputs(self) -> Dict[str, object]:
        value: Dict[str, object] = json.loads(self.inputs_json)
        return value

    def build(self, out: Path, cache: Cache, log: Log) -> None:
        self.make(out, log)
        if not (out / self.product).is_file():
            raise BuildError("%s %s left no %s" % (self.kind, self.label, self.product), out / "build.log")


@dataclass(frozen=True)
class Snapshot(Made):
    """A QEMU guest saved right after its boot (``state.bin``, QEMU's migration stream), resumed by
    later runs with ``-incoming``. The backend that boots the machine saves it (``make``); the key is
    everything that shapes the saved state (the QEMU version, the machine's whole command line, the
    kernel's and the initramfs's keys, the guest root), never the per-run shares, which are mounted
    only after the resume. ``label``: the target's machine, for the cache listing."""

    kind = "snapshot"
    version = 1
    product: ClassVar[str] = "state.bin"


@dataclass(frozen=True)
class KvmVerdict(Made):
    """Whether KVM really runs QEMU guests of one architecture on this host (``verdict.json``:
    ``{"kvm": true|false, "why": "..."}``): a short trial boot's answer, since a device node alone proves
    nothing (a KVM guest may hang). Keyed by what can change it (the architecture, the host kernel's
    release, the QEMU version, the host's boot), so a new kernel or QEMU is tried again, and built under
    the cache's per-key lock, so parallel runs boot one trial. The QEMU backend boots it (``make``)."""

    kind = "kvm-verdict"
    version = 1
    portable = False  # this host's, since its boot: never in a CI cache's key (images key)
    product: ClassVar[str] = "verdict.json"
