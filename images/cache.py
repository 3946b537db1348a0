"""The image cache: content-addressed, built once under a per-key lock, published by one rename.

A recipe's key is a hash of its kind, its inputs and its version; its artefact
lives in ``<cache>/<kind>-<name>-<key>/`` and is built once: builds run in a
``.partial`` directory under a per-key file lock and are published by one
rename, so an interrupted build never leaves a half-written entry and parallel
runs build each entry once. A ``.partial`` whose key's lock is free belongs to
a builder that was killed: the next build of that key, ``images prune`` and
``arena-harness clean`` remove it. The cache is ``$ARENA_HARNESS_CACHE``, else
``$XDG_CACHE_HOME/arena-harness``, else ``~/.cache/arena-harness``.

Recipes: ``KernelKit`` (a Debian kernel, busybox and the modules a 9p root
needs, fetched with ``mmdebstrap --variant=extract``, no change to the host's
apt), ``Rootfs`` (``mmdebstrap --variant=essential --include=python3``),
``Initramfs`` (busybox, modules and an init script, written as newc cpio) and
``GoProbe`` (the go probe, ``probes/go``, built for one architecture with the host's Go).
"""


from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from harness import mounts, proc
from harness.errors import HarnessError

CACHE_ENV = "ARENA_HARNESS_CACHE"
BUILD_TIMEOUT = 1800.0
Log = Callable[[str], None]


class BuildError(HarnessError):
    """A recipe that could not be built; ``log`` is its build log, when there is one to read."""

    def __init__(self, message: str, log: Optional[Path] = None) -> None:
        super().__init__(message)
        self.message = message
        self.log = log

    def __str__(self) -> str:
        return "%s (see %s)" % (self.message, self.log) if self.log else self.message


@dataclass(frozen=True)
class Tool:
    """A host program, and the Debian package that brings it. A ``command`` that is an absolute path
    names a file instead (the kernel source's tarball, a header): it must exist, not be executable."""

    command: str
    package: str

    @property
    def hint(self) -> str:
        return "install it with: sudo apt-get install -y %s" % self.package

    def present(self) -> bool:
        if os.path.isabs(self.command):
            return os.path.isfile(self.command)
        return proc.which(self.command) is not None


MMDEBSTRAP = Tool("mmdebstrap", "mmdebstrap")
UNSHARE_TOOL = Tool("unshare", "util-linux")  # essential on Debian: checked when a build runs, not by doctor


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "arena-harness"


def recipe_text(*parts: str) -> str:
    """A file of this package's recipes (``images/qemu/init.sh``), installed with it as package data."""
    return resources.files("images").joinpath(*parts).read_text(encoding="utf-8")


# -- the cache ------------------------------------------------------------------------------


class Recipe:
    kind = ""
    version = 1
    portable = True  # an artefact another machine may reuse (images key hashes only these)

    def inputs(self) -> Dict[str, object]:
        raise NotImplementedError

    def parts(self) -> Tuple["Recipe", ...]:
        """The recipes this one is built from (each built first when the cache lacks it)."""
        return ()

    def tools(self) -> Tuple[Tool, ...]:
        """The host programs this recipe's own build runs (not those of its parts)."""
        return ()

    @property
    def name(self) -> str:
        raise NotImplementedError

    def key(self) -> str:
        blob = json.dumps({"kind": self.kind, "version": self.version, "inputs": self.inputs()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def dirname(self) -> str:
        return "%s-%s-%s" % (self.kind, re.sub(r"[^A-Za-z0-9_.-]", "_", self.name), self.key())

    def build(self, out: Path, cache: "Cache", log: Log) -> None:
        raise NotImplementedError


@dataclass
class Entry:
    """A cache entry as its manifest says: ``used`` is when a build or a run last took it (the
    manifest's mtime), ``inputs`` what its key was made from (what tells two entries of a name apart)."""

    path: Path
    kind: str
    name: str
    key: str
    size: int
    built: float
    used: float
    build_s: float
    inputs: Dict[str, object] = field(default_factory=dict)


class Cache:
    def __init__(self, root: Optional[Path] = None) -> None:
        self.root = Path(root) if root else cache_root()
        self.hits = 0
        self.builds = 0

    def path(self, recipe: Recipe) -> Path:
        return self.root / recipe.dirname()

    def ready(self, recipe: Recipe) -> bool:
        return (self.path(recipe) / "manifest.json").is_file()

    def plan(self, recipes: Iterable[Recipe]) -> Tuple[List[Recipe], List[Recipe]]:
        """(cached, to build): the entries :meth:`get` of each recipe would use, and those it would build,
        parts first. The parts of a cached recipe are not needed and appear in neither list."""
        cached: List[Recipe] = []
        build: List[Recipe] = []

        def visit(r: Recipe) -> None:
            if r in cached or r in build:
                return
            if self.ready(r):
                cached.append(r)
                return
            for part in r.parts():
                visit(part)
            build.append(r)

        for r in recipes:
            visit(r)
        return cached, build

    def to_build(self, recipe: Recipe) -> List[Recipe]:
        """What :meth:`get` would build for ``recipe``, parts first: nothing when it is cached."""
        return self.plan([recipe])[1]

    def build_tools(self, recipe: Recipe) -> List[Tool]:
        """The host programs building ``recipe`` would run here (none when it is cached)."""
        out: List[Tool] = []
        for r in self.to_build(recipe):
            out.extend(t for t in r.tools() if t not in out)
        return out

    def get(self, recipe: Recipe, log: Optional[Log] = None) -> Path:
        """The artefact directory of ``recipe``, built first if the cache does not have it."""
        log = log or (lambda msg: None)
        final = self.path(recipe)
        if (final / "manifest.json").is_file():
            self._touch(final)
            self.hits += 1
            return final
        with self._locked(recipe.key()) as lock:
            if lock is None:
                raise BuildError("interrupted while waiting for another build of %s %s" % (recipe.kind, recipe.name))
            if (final / "manifest.json").is_file():  # another run built it while we waited
                self.hits += 1
                return final
            absent = [t for t in recipe.tools() if not t.present()]
            if absent:
                raise BuildError("building %s %s needs %s: %s" % (recipe.kind, recipe.name, absent[0].command,
                                                                  absent[0].hint))
            # Holding the key's lock, every .partial of this key is a dead builder's: remove them.
            for stale in self.root.glob(".%s.*.partial" % recipe.dirname()):
                mounts.remove_tree(stale)
            partial = self.root / (".%s.%d.partial" % (recipe.dirname(), os.getpid()))
            partial.mkdir(parents=True)
            start = time.monotonic()
            log("building %s %s" % (recipe.kind, recipe.name))
            try:
                try:
                    recipe.build(partial, self, log)
                except BaseException as e:
                    # The .partial directory goes; its build log must outlive it for the error to point at.
                    kept = self._keep_failed_log(recipe, partial)
                    if kept is not None and isinstance(e, BuildError) and e.log in (None, partial / "build.log"):
                        e.log = kept  # (an inner recipe's failure keeps pointing at its own log)
                    raise
                manifest = {
                    "kind": recipe.kind,
                    "name": recipe.name,
                    "key": recipe.key(),
                    "inputs": recipe.inputs(),
                    "built": time.time(),
                    "build_s": round(time.monotonic() - start, 1),
                    "size": tree_size(partial),  # once: an entry never changes, and listing walks no tree
                }
                (partial / "manifest.json").write_text(json.dumps(manifest, indent=1))
                if final.exists():
                    shutil.rmtree(final)
                os.replace(partial, final)
            finally:
                if partial.exists():
                    mounts.remove_tree(partial)
            self.builds += 1
            log("built %s %s in %.1fs" % (recipe.kind, recipe.name, time.monotonic() - start))
            return final

    def failed_log(self, recipe: Recipe) -> Path:
        """Where the build log of ``recipe``'s last failed build is kept."""
        return self.root / "failed" / ("%s.log" % recipe.dirname())

    def _keep_failed_log(self, recipe: Recipe, partial: Path) -> Optional[Path]:
        built = partial / "build.log"
        if not built.is_file():
            return None
        kept = self.failed_log(recipe)
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.replace(built, kept)
        return kept

    @contextlib.contextmanager
    def _locked(self, key: str, wait: bool = True) -> Iterator[Optional[IO[str]]]:
        """The key's build lock (an flock, so a killed builder's is released with it), or None: not
        free (``wait=False``), or the harness is stopping. Polled, so an interrupt ends the wait."""
        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        with open(self.root / "locks" / (key + ".lock"), "a") as f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait or proc.stopping():
                        yield None
                        return
                    time.sleep(0.2)
            yield f

    @contextlib.contextmanager
    def exclusive(self, name: str, log: Log, what: str) -> Iterator[None]:
        """Held by one build at a time on this machine (per cache): for steps that take every core for
        minutes, such as compiling a kernel. Says once that it waits; an interrupt ends the wait."""
        with self._locked(name, wait=False) as free:
            if free is not None:
                yield
                return
        log("waiting for %s" % what)
        with self._locked(name) as lock:
            if lock is None:
                raise BuildError("interrupted while waiting for %s" % what)
            yield

    def stale_partials(self) -> List[Path]:
        """``.partial`` directories no builder is working in (their key's lock is free): what a killed
        build left. Live builds of other runs are not touched."""
        out = []
        for d in sorted(self.root.glob(".*.partial")) if self.root.is_dir() else []:
            dirname = d.name[1:-len(".partial")].rsplit(".", 1)[0]
            key = dirname.rsplit("-", 1)[-1]
            try:
                with self._locked(key, wait=False) as lock:
                    if lock is not None:
                        out.append(d)
            except OSError:  # a cache this user cannot write: nothing of it is this user's to remove
                continue
        return out

    def _touch(self, path: Path) -> None:
        try:
            os.utime(path / "manifest.json")
        except OSError:
            pass

    def entries(self) -> List[Entry]:
        out: List[Entry] = []
        if not self.root.is_dir():
            return out
        for d in sorted(self.root.iterdir()):
            m = d / "manifest.json"
            if not m.is_file():
                continue
            try:
                meta = json.loads(m.read_text())
            except ValueError:
                continue
            inputs = meta.get("inputs")
            out.append(Entry(d, meta.get("kind", "?"), meta.get("name", "?"), meta.get("key", "?"),
                             self._size(d, meta), meta.get("built", 0.0), m.stat().st_mtime,
                             meta.get("build_s", 0.0), inputs if isinstance(inputs, dict) else {}))
        return out

    def _size(self, entry: Path, meta: Dict[str, object]) -> int:
        """An entry's size: from its manifest, else (an entry built before manifests said) from a ``size``
        file written the first time it is asked for, else by walking its tree (a cache this user cannot
        write). Walking the whole cache's trees made ``images list`` take seconds."""
        size = meta.get("size")
        if isinstance(size, int) and not isinstance(size, bool):
            return size
        recorded = entry / SIZE_FILE
        try:
            return int(recorded.read_text())
        except (OSError, ValueError):
            pass
        total = tree_size(entry)
        tmp = entry / (".%s.%d" % (SIZE_FILE, os.getpid()))
        try:
            tmp.write_text(str(total))
            os.replace(tmp, recorded)  # whole or not at all: another lister may read it meanwhile
        except OSError:  # a cache shared read-only: walk again next time
            with contextlib.suppress(OSError):
                tmp.unlink()
        return total

    def prune(self, keep: Iterable[Path] = (), older_than: Optional[float] = None,
              dry_run: bool = False) -> List[Path]:
        """Remove entries not in ``keep`` (and, if given, unused for ``older_than`` seconds), and leftovers
        (killed builds' ``.partial`` directories, failed builds' logs); the paths removed. ``dry_run``:
        the paths that would be, removing nothing."""
        keep_set = {Path(k).resolve() for k in keep}
        removed = []
        now = time.time()
        for e in self.entries():
            if e.path.resolve() in keep_set:
                continue
            if older_than is not None and now - e.used < older_than:
                continue
            if not dry_run:
                shutil.rmtree(e.path, ignore_errors=True)
            removed.append(e.path)
        for d in self.stale_partials():
            if not dry_run:
                mounts.remove_tree(d)
            removed.append(d)
        for f in sorted((self.root / "failed").glob("*.log")):  # failed builds' logs: diagnostics only
            if older_than is None or now - f.stat().st_mtime >= older_than:
                if not dry_run:
                    f.unlink()
                removed.append(f)
        return removed


SIZE_FILE = "size"
"""In an entry built before manifests recorded its size: the size, recorded the first time it was listed."""


def tree_size(path: Path) -> int:
    """The bytes of the regular files under ``path`` (symbolic links not followed), with one ``lstat`` a
    file (``os.scandir``): a root filesystem holds some ten thousand."""
    total = 0
    stack = [str(path)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:  # unreadable (a root filesystem's root-only directory, listed by a user)
            continue
        with it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    return total


