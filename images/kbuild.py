"""Kernels built from Debian's kernel source with Debian's cross compilers: the configurations
distributions do not ship (arm64 with 39-bit VA, 64K pages) and minimal guests that boot in a second.

Two recipes:

- ``SourceKernelKit`` is what a QEMU target boots (``kernel: source``, ``kernel_config: [...]``): in
  ``KernelKit``'s layout (``kernel``, ``busybox``, ``release``, an empty ``modules/``: everything is
  built in) plus the final ``config``. Its key is what was asked: the architecture, the source
  package's version, the compiler's version, the base config of the architecture
  (:attr:`harness.arches.Arch.kernel_config`) and the target's fragment. Building it unpacks
  ``/usr/src/linux-source-X.tar.xz``, makes ``tinyconfig``, merges base then fragment, runs
  ``olddefconfig`` and checks every option asked for is in the final .config (:mod:`images.kconfig`
  says why one is not), then takes the kernel from:
- ``KernelBuild``: one compile, keyed by the source package's version, the hash of the final .config
  and the compiler's version, so fragments that come to the same .config share it. ``make -jN`` of
  the boot image, one at a time on a machine (a compile takes every core for minutes), its output
  counted in progress lines, kept in ``build.log``.

Every command runs in a PID namespace of its own that dies with the harness (``unshare --pid
--kill-child``): a ``kill -9`` mid-compile leaves no compiler running, and the cache's ``.partial``
directories go with the next build, ``images prune`` or ``clean``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from harness import arches, proc
from images import kconfig
from images.cache import BUILD_TIMEOUT, MMDEBSTRAP, BuildError, Cache, Log, Recipe, Tool
from images.recipes import build_step, mmdebstrap

PROGRESS_EVERY = 15.0  # seconds between two progress lines of a compile
COMPILE_LOCK = "kernel-compile"  # the cache's machine-wide lock: one compile at a time


def source_tarball(package: str) -> Path:
    return Path("/usr/src/%s.tar.xz" % package)


_versions: Dict[Tuple[object, ...], Optional[str]] = {}


def _ident(path: str) -> Tuple[object, ...]:
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def source_version(package: str) -> Optional[str]:
    """``<package> <Debian version>`` of the installed kernel source, None when it is not installed.
    Asked once per tarball (path, size, modification time): every key of a source-built kernel names it."""
    tarball = source_tarball(package)
    if not tarball.is_file():
        return None
    ident = ("source",) + _ident(str(tarball))
    if ident not in _versions:
        c = proc.run(["dpkg-query", "-W", "-f=${Version}", package], timeout=60)
        _versions[ident] = "%s %s" % (package, c.output.strip()) if c.returncode == 0 and c.output.strip() else None
    return _versions[ident]


def compiler_version(prefix: str) -> Optional[str]:
    """The first lines of ``<prefix>gcc --version`` and ``<prefix>ld --version`` (Debian's revisions
    included), None without that compiler. Asked once per binary."""
    gcc = proc.which(prefix + "gcc")
    if gcc is None:
        return None
    ident = ("gcc",) + _ident(gcc)
    if ident not in _versions:
        lines = []
        for tool in ("gcc", "ld"):
            c = proc.run([prefix + tool, "--version"], timeout=60)
            lines.append(c.output.strip().splitlines()[0] if c.returncode == 0 and c.output.strip() else "?")
        _versions[ident] = "; ".join(lines)
    return _versions[ident]


def spec(arch: str) -> arches.SourceKernel:
    """The architecture's source-kernel record; a BuildError for one the table has none for."""
    rec = arches.BY_NAME.get(arch)
    if rec is None or rec.source_kernel is None:
        known = ", ".join(a.name for a in arches.ARCHES if a.source_kernel)
        raise BuildError("no source-built kernel for %r: harness/arches.py has a base config for %s" % (arch, known))
    return rec.source_kernel


def kernel_tools(arch: str, source: str = arches.KERNEL_SOURCE) -> Tuple[Tool, ...]:
    """What building ``arch``'s kernel runs or reads here: the source tarball, the cross compiler (the
    native ``gcc`` package's on a host of that architecture), the host's gcc and C headers (kbuild's own
    tools: kconfig, fixdep), make, bison, flex, bc, tar, xz, the architecture's extra headers."""
    sk = spec(arch)
    native = arches.BY_NAME[arch].debian == arches.host_debian()
    return (Tool(str(source_tarball(source)), source),
            Tool(sk.cross_compile + "gcc", "gcc" if native else sk.compiler_package),
            Tool("gcc", "gcc"), Tool("/usr/include/stdio.h", "libc6-dev"), Tool("make", "make"),
            Tool("bison", "bison"), Tool("flex", "flex"), Tool("bc", "bc"),
            Tool("tar", "tar"), Tool("xz", "xz-utils"), Tool("unshare", "util-linux"),
            *(Tool(path, package) for path, package in sk.headers))


_own_pid_ns: Dict[int, List[str]] = {}


def contained(argv: Sequence[str]) -> List[str]:
    """``argv`` in a PID namespace of its own, whose processes all die when the harness does:
    ``unshare`` dies with the harness (proc's PR_SET_PDEATHSIG), ``--kill-child`` takes make with it,
    and the kernel kills the rest of a namespace whose first process ended. As a normal user the
    namespace needs a user namespace too; where neither works, ``argv`` runs as it is (a killed
    harness then leaves make's compilers to finish their file)."""
    uid = os.geteuid()
    if uid not in _own_pid_ns:
        prefixes = [["unshare", "--pid", "--fork", "--kill-child", "--"]]
        if uid != 0:
            prefixes.insert(0, ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--"])
        _own_pid_ns[uid] = next((p for p in prefixes if proc.which("unshare") and
                                 proc.run(p + ["true"], timeout=30).returncode == 0), [])
    return _own_pid_ns[uid] + list(argv)


def _env(home: Path) -> Dict[str, str]:
    """A build's whole environment: nothing of the user's (ARCH, CROSS_COMPILE, KCONFIG_CONFIG, ...)."""
    # TMPDIR: the compilers' temporary files stay in the entry being built (a killed build's go with it).
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TMPDIR": str(home), "LC_ALL": "C",
            "KBUILD_BUILD_USER": "arena-harness", "KBUILD_BUILD_HOST": "arena-harness"}


def unpack(source: str, dest: Path, log_path: Path, log: Log) -> Path:
    """The kernel source unpacked into ``dest`` (about 1.5 GB, 15 to 20 s); the tree's root."""
    tarball = source_tarball(source)
    if not tarball.is_file():
        raise BuildError("no %s: install it with: sudo apt-get install -y --no-install-recommends %s"
                         % (tarball, source))
    log("unpacking %s" % tarball.name)
    dest.mkdir(parents=True)
    build_step(contained(["tar", "-xJf", str(tarball), "-C", str(dest), "--strip-components=1", "--no-same-owner"]),
               log_path, "unpacking %s" % tarball.name, env=_env(dest))
    return dest


def make(sk: arches.SourceKernel, tree: Path, obj: Path, targets: Sequence[str], log_path: Path, what: str,
         log: Optional[Log] = None, jobs: int = 1) -> None:
    """``make O=obj ARCH=.. CROSS_COMPILE=.. targets`` in ``tree``; with ``log``, a progress line every
    :data:`PROGRESS_EVERY` seconds counting kbuild's steps (``  CC  kernel/fork.o``)."""
    began = time.monotonic()
    state = {"steps": 0, "said": began}

    def watch(line: str) -> Optional[str]:
        if re.match(r"  [A-Z][A-Z0-9_-]* ", line):
            state["steps"] += 1
        now = time.monotonic()
        if log is not None and now - state["said"] >= PROGRESS_EVERY:
            state["said"] = now
            log("%s: %d build steps in %ds (a minimal kernel takes about 1300)" % (what, state["steps"], now - began))
        return None

    argv = ["make", "-C", str(tree), "O=%s" % obj, "ARCH=%s" % sk.make_arch, "CROSS_COMPILE=%s" % sk.cross_compile,
            "-j%d" % jobs, *targets]
    c = proc.run(contained(argv), timeout=BUILD_TIMEOUT, log_path=log_path, env=_env(obj), watch=watch)
    if c.returncode != 0 or c.timed_out:
        tail = " | ".join(ln.strip() for ln in c.lines[-4:] if ln.strip())
        raise BuildError("%s failed: %s" % (what, tail or c.error or c.returncode), log=log_path)


def jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# -- the compile --------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelBuild(Recipe):
    """One kernel compiled from a final .config: ``kernel`` (the boot image), ``config``, ``release``.
    Keyed by the source package's version, the hash of the final .config and the compiler's version."""

    arch: str  # the harness's name: x86_64, arm64, riscv64
    config: str = field(repr=False)  # the final .config's text
    source: str = arches.KERNEL_SOURCE
    tree: Optional[Path] = field(default=None, compare=False, repr=False)  # an unpacked source to use
    kind = "kernel-build"
    version = 1

    @property
    def name(self) -> str:
        return "%s-%s" % (self.arch, self.source.replace("linux-source-", ""))

    def inputs(self) -> Dict[str, object]:
        return {"arch": self.arch, "source": source_version(self.source),
                "compiler": compiler_version(spec(self.arch).cross_compile),
                "config": hashlib.sha256(self.config.encode()).hexdigest()}

    def tools(self) -> Tuple[Tool, ...]:
        return kernel_tools(self.arch, self.source)

    def build(self, out: Path, cache: Cache, log: Log) -> None:
        sk = spec(self.arch)
        logf = out / "build.log"
        tree = self.tree if self.tree is not None and self.tree.is_dir() else unpack(self.source, out / "src", logf,
                                                                                        log)
        obj = out / "obj"
        obj.mkdir()
        (obj / ".config").write_text(self.config)
        make(sk, tree, obj, ["olddefconfig"], logf, "olddefconfig")
        if (obj / ".config").read_text() != self.config:
            raise BuildError("olddefconfig changed a final .config: this source or compiler is not the one it "
                             "was made with", log=logf)
        with cache.exclusive(COMPILE_LOCK, log, "another kernel compile on this machine to finish"):
            n = jobs()
            log("compiling the %s kernel (%s) with make -j%d: minutes" % (self.arch, sk.target, n))
            make(sk, tree, obj, [sk.target], logf, "make %s" % sk.target, log, n)
        c = proc.run(["make", "-s", "-C", str(tree), "O=%s" % obj, "ARCH=%s" % sk.make_arch,
                      "CROSS_COMPILE=%s" % sk.cross_compile, "kernelrelease"], timeout=120, env=_env(obj))
        release = c.output.strip().splitlines()[-1] if c.returncode == 0 and c.output.strip() else "unknown"
        shutil.copyfile(obj / sk.image, out / "kernel")
        shutil.copyfile(obj / ".config", out / "config")
        (out / "release").write_text(release + "\n")
        shutil.rmtree(obj)
        if (out / "src").exists():
            shutil.rmtree(out / "src")


# -- what a target boots ----------------------------------------------------------------------------


class KernelConfigError(BuildError):
    """Options asked for that the final .config does not have: ``problems`` is [(NAME=value, why)],
    ``fragment`` those of them that came from the target's fragment (not the architecture's base)."""

    def __init__(self, arch: str, problems: List[Tuple[str, str]], fragment: List[str], log: Optional[Path]) -> None:
        self.problems = problems
        self.fragment = fragment
        said = "; ".join("%s did not survive olddefconfig: %s" % p for p in problems)
        super().__init__("the %s kernel's config: %s" % (arch, said), log=log)


@dataclass(frozen=True)
class SourceKernelKit(Recipe):
    """A source-built kernel in ``KernelKit``'s layout: ``kernel``, ``busybox`` (Debian's busybox-static of
    ``suite``), ``release``, ``modules/`` with an empty ``order`` (9p and virtio are built in), ``config``."""

    arch: str  # the harness's name: x86_64, arm64, riscv64
    fragment: Tuple[str, ...] = ()  # NAME=value items (kconfig.normalize), over the architecture's base
    suite: Optional[str] = None  # busybox-static's release (default: the architecture's)
    source: str = arches.KERNEL_SOURCE
    kind = "source-kernel"
    version = 1

    @property
    def name(self) -> str:
        """``arm64-6.1-minimal``; with a fragment its first option's name (``arm64-6.1+ARM64_VA_BITS_39``)
        and how many more: the key tells fragments apart, the name is for people."""
        version = self.source.replace("linux-source-", "")
        if not self.fragment:
            return "%s-%s-minimal" % (self.arch, version)
        more = "+%d" % (len(self.fragment) - 1) if len(self.fragment) > 1 else ""
        return "%s-%s+%s%s" % (self.arch, version, kconfig.parse_option(self.fragment[0])[0], more)

    @property
    def base(self) -> Tuple[str, ...]:
        spec(self.arch)
        return arches.BY_NAME[self.arch].kernel_config

    def inputs(self) -> Dict[str, object]:
        return {"arch": self.arch, "source": source_version(self.source),
                "compiler": compiler_version(spec(self.arch).cross_compile), "base": list(self.base),
                "fragment": list(self.fragment), "busybox": self.suite or arches.BY_NAME[self.arch].suite}

    def tools(self) -> Tuple[Tool, ...]:
        return (MMDEBSTRAP,) + kernel_tools(self.arch, self.source)

    def build(self, out: Path, cache: Cache, log: Log) -> None:
        rec = arches.BY_NAME[self.arch]
        logf = out / "build.log"
        x = out / "extract"
        log("fetching busybox-static (%s, %s)" % (rec.debian, self.suite or rec.suite))
        mmdebstrap(["--variant=extract", "--include=busybox-static", "--arch=%s" % rec.debian, "--",
                    self.suite or rec.suite, str(x)], logf, log, "busybox for the %s kernel" % self.name)
        busybox = next((p for p in (x / "bin/busybox", x / "usr/bin/busybox") if p.exists()), None)
        if busybox is None:
            raise BuildError("busybox-static did not provide /bin/busybox", log=logf)
        shutil.copy2(busybox, out / "busybox")
        shutil.rmtree(x)
        tree = unpack(self.source, out / "src", logf, log)
        final = self.resolve(tree, out / "obj", logf, log)
        built = cache.get(KernelBuild(self.arch, final, self.source, tree=tree), log)
        for name in ("kernel", "config", "release"):
            try:  # the build's files, linked: an entry never changes, and prune may remove the build's
                os.link(built / name, out / name)
            except OSError:
                shutil.copyfile(built / name, out / name)
        (out / "modules").mkdir()
        (out / "modules" / "order").write_text("")
        shutil.rmtree(out / "src")
        shutil.rmtree(out / "obj")
        log("%s: kernel %s" % (self.name, (out / "release").read_text().strip()))

    def resolve(self, tree: Path, obj: Path, logf: Path, log: Log) -> str:
        """The final .config: tinyconfig, the base and the fragment merged in, olddefconfig; a
        :class:`KernelConfigError` naming each option asked for that it does not have, and why."""
        sk = spec(self.arch)
        log("resolving the %s kernel's config (tinyconfig + %d base + %d fragment options, olddefconfig)"
            % (self.arch, len(self.base), len(self.fragment)))
        obj.mkdir()
        make(sk, tree, obj, ["tinyconfig"], logf, "make tinyconfig")
        text = kconfig.merge((obj / ".config").read_text(), self.base + self.fragment)
        (obj / ".config").write_text(text)
        make(sk, tree, obj, ["olddefconfig"], logf, "make olddefconfig")
        final = (obj / ".config").read_text()
        index = kconfig.Index(tree, _srcarch(sk.make_arch))
        wanted = kconfig.requested(self.base, self.fragment, index)
        values = kconfig.config_values(final)
        missing = kconfig.unmet(wanted, values)
        if missing:
            asked = {kconfig.parse_option(o)[0] for o in self.fragment}
            problems = [("%s=%s" % (n, v), kconfig.explain(n, v, values, index, self.source)) for n, v in missing]
            raise KernelConfigError(self.arch, problems, [p for p, _ in problems if p.split("=")[0] in asked],
                                    logf)
        return final


def _srcarch(make_arch: str) -> str:
    """The kernel's arch/ directory for a make ARCH= value (x86_64 and i386 are arch/x86)."""
    return "x86" if make_arch in ("x86_64", "i386") else make_arch
