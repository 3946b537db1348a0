"""The image pipeline without network: the cpio writer, the cache's guarantees, module ordering."""

from __future__ import annotations

import lzma
import os
import shlex
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import pytest

import images
from harness import proc
from images import Cache, Cpio, Recipe, module_closure
from tests.conftest import ROOT, stopped_while_waiting


def parse_newc(data: bytes) -> List[Tuple[str, int, bytes, Tuple[int, int]]]:
    """A reader for the newc format, independent of the writer."""
    out = []
    off = 0
    while True:
        assert off % 4 == 0
        hdr = data[off:off + 110]
        assert hdr[:6] == b"070701", hdr[:6]
        f = [int(hdr[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name = data[off + 110:off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        body = data[off:off + size]
        off += size + (-size % 4)
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, body, (rmaj, rmin)))


def test_cpio_newc_round_trip() -> None:
    c = Cpio()
    c.file("bin/busybox", b"\x7fELF" + b"x" * 5, 0o755)
    c.symlink("bin/sh", "busybox")
    c.chardev("dev/console", 5, 1)
    c.file("init", b"#!/bin/sh\n", 0o755)
    entries = {name: (mode, body, dev) for name, mode, body, dev in parse_newc(c.bytes())}
    assert stat.S_ISDIR(entries["bin"][0])
    assert entries["bin/busybox"][1] == b"\x7fELF" + b"x" * 5 and entries["bin/busybox"][0] & 0o777 == 0o755
    assert stat.S_ISLNK(entries["bin/sh"][0]) and entries["bin/sh"][1] == b"busybox"
    assert stat.S_ISCHR(entries["dev/console"][0]) and entries["dev/console"][2] == (5, 1)
    assert list(entries)[0] == "bin"  # parents before children


@dataclass(frozen=True)
class Toy(Recipe):
    label: str
    fail: str = ""
    kind = "toy"

    @property
    def name(self) -> str:
        return self.label

    def inputs(self) -> Dict[str, object]:
        return {"label": self.label, "fail": self.fail}

    def build(self, out: Path, cache: Cache, log: images.Log) -> None:
        calls.append(self.label)
        (out / "artefact").write_text(self.label)
        if self.fail == "error":
            raise images.BuildError("toy failed")
        if self.fail == "interrupt":
            raise KeyboardInterrupt


calls: List[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


def test_a_second_get_builds_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    p1 = cache.get(Toy("a"))
    p2 = Cache(tmp_path).get(Toy("a"))
    assert p1 == p2 and (p1 / "artefact").read_text() == "a" and calls == ["a"]
    assert (p1 / "manifest.json").is_file()
    assert Toy("a").key() != Toy("b").key() and p1.name.startswith("toy-a-")


@pytest.mark.parametrize("how", ["error", "interrupt"])
def test_a_failed_or_interrupted_build_leaves_nothing(tmp_path: Path, how: str) -> None:
    cache = Cache(tmp_path)
    with pytest.raises((images.BuildError, KeyboardInterrupt)):
        cache.get(Toy("x", fail=how))
    assert cache.entries() == []
    assert [p.name for p in tmp_path.iterdir()] == ["locks"]


def test_parallel_gets_build_once(tmp_path: Path) -> None:
    results: List[Path] = []
    threads = [threading.Thread(target=lambda: results.append(Cache(tmp_path).get(Toy("shared"))))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["shared"] and len(set(results)) == 1


def test_list_and_prune(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    keep = cache.get(Toy("keep"))
    cache.get(Toy("drop"))
    (tmp_path / ".toy-stale-0.999999.partial").mkdir()  # a crashed build's leftover
    assert sorted(e.name for e in cache.entries()) == ["drop", "keep"]
    removed = cache.prune(keep=[keep])
    assert sorted(p.name for p in removed)[0].startswith(".toy-stale")
    assert [e.name for e in cache.entries()] == ["keep"]
    assert cache.prune(keep=[keep], older_than=3600) == []


def test_cache_root_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ARENA_HARNESS_CACHE", str(tmp_path / "c"))
    assert images.cache_root() == tmp_path / "c"
    monkeypatch.delenv("ARENA_HARNESS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert images.cache_root() == tmp_path / "xdg" / "arena-harness"


def fake_module(d: Path, name: str, depends: str, xz: bool = False) -> None:
    data = b"\x7fELF....\0name=%s\0depends=%s\0vermagic=6.1\0" % (name.encode(), depends.encode())
    path = d / "kernel" / "fs" / (name.replace("_", "-") + ".ko")
    path.parent.mkdir(parents=True, exist_ok=True)
    if xz:
        path.with_name(path.name + ".xz").write_bytes(lzma.compress(data))
    else:
        path.write_bytes(data)


def test_module_closure_orders_dependencies_and_skips_builtins(tmp_path: Path) -> None:
    fake_module(tmp_path, "9p", "9pnet,netfs,fscache")
    fake_module(tmp_path, "9pnet", "")
    fake_module(tmp_path, "netfs", "", xz=True)
    fake_module(tmp_path, "9pnet_virtio", "9pnet,virtio_ring,virtio")
    fake_module(tmp_path, "virtio_pci", "virtio_pci_legacy_dev,virtio_ring,virtio")
    fake_module(tmp_path, "virtio_pci_legacy_dev", "")
    (tmp_path / "modules.builtin").write_text("kernel/fs/fscache.ko\nkernel/drivers/virtio/virtio.ko\n"
                                               "kernel/drivers/virtio/virtio_ring.ko\n")
    order = [n for n, _ in module_closure(tmp_path, ["9p", "9pnet_virtio", "virtio_pci"])]
    assert order == ["9pnet", "netfs", "9p", "9pnet_virtio", "virtio_pci_legacy_dev", "virtio_pci"]
    data = dict(module_closure(tmp_path, ["netfs"]))["netfs"]
    assert b"name=netfs" in data  # decompressed


def test_module_closure_names_what_is_missing(tmp_path: Path) -> None:
    fake_module(tmp_path, "9p", "9pnet")
    with pytest.raises(images.BuildError, match="module 9pnet not found"):
        module_closure(tmp_path, ["9p"])


def test_recipes_are_shipped_in_the_package() -> None:
    text = images.recipe_text("qemu", "init.sh")
    assert text.startswith("#!/bin/sh") and "@@ARENA-HARNESS-DONE@@" in text


@dataclass(frozen=True)
class Steps(Recipe):
    """A recipe whose build runs real commands through build_step, like the mmdebstrap recipes."""

    script: str
    needs: Tuple[Recipe, ...] = ()
    kind = "steps"

    @property
    def name(self) -> str:
        return "steps"

    def inputs(self) -> Dict[str, object]:
        return {"script": self.script, "needs": [r.key() for r in self.needs]}

    def build(self, out: Path, cache: Cache, log: images.Log) -> None:
        for r in self.needs:
            cache.get(r, log)
        images.build_step(["sh", "-c", self.script], out / "build.log", "the toy step")


def test_a_failed_build_points_at_a_log_that_still_exists(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    recipe = Steps("echo fetching; echo 'E: no such package' >&2; exit 3")
    with pytest.raises(images.BuildError) as e:
        cache.get(recipe)
    kept = cache.failed_log(recipe)
    # Was: "(see CACHE/.steps-....partial/build.log)", a directory already deleted.
    assert str(e.value) == "the toy step failed: fetching | E: no such package (see %s)" % kept
    assert kept == tmp_path / "failed" / ("%s.log" % recipe.dirname())
    log = kept.read_text()
    assert log.startswith("$ sh -c ") and "E: no such package" in log
    assert not list(tmp_path.glob(".*.partial")) and cache.entries() == []
    # A recipe that needs it fails too, and the error keeps pointing at the log of the step that failed.
    outer = Steps("true", needs=(recipe,))
    with pytest.raises(images.BuildError, match=r"\(see %s\)$" % kept):
        cache.get(outer)
    assert not cache.failed_log(outer).exists()
    # The log is diagnostics: prune removes it (with --older-than, only old ones).
    assert cache.prune(older_than=3600) == []
    assert cache.prune() == [kept] and not kept.exists()


# -- what a killed build leaves ----------------------------------------------------------------

HOLD_LOCK = "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('locked', " \
            "flush=True); time.sleep(60)"


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[Callable[[Recipe], None]]:
    """Another process building ``recipe``: it holds the key's lock until the test ends."""
    held: List["subprocess.Popen[str]"] = []

    def hold(recipe: Recipe) -> None:
        (tmp_path / "locks").mkdir(exist_ok=True)
        p = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "locks" / (recipe.key() + ".lock"))],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "locked"
        held.append(p)

    yield hold
    for p in held:
        p.kill()
        p.wait()


def test_a_killed_builders_partial_goes_with_the_next_build_of_its_key(tmp_path: Path) -> None:
    stale = tmp_path / (".%s.%d.partial" % (Toy("k").dirname(), 999999))
    (stale / "root" / "half-written").mkdir(parents=True)
    Cache(tmp_path).get(Toy("k"))
    assert not stale.exists() and calls == ["k"]


def test_a_partial_whose_builder_lives_is_left_alone(tmp_path: Path, lock_holder: Callable[[Recipe], None]) -> None:
    busy = tmp_path / (".%s.%d.partial" % (Toy("busy").dirname(), 4242))
    busy.mkdir()
    lock_holder(Toy("busy"))
    cache = Cache(tmp_path)
    assert cache.stale_partials() == [] and cache.prune() == [] and busy.is_dir()


def test_waiting_for_another_build_ends_on_a_stop_request(tmp_path: Path,
                                                          lock_holder: Callable[[Recipe], None]) -> None:
    lock_holder(Toy("slow"))
    errors: List[BaseException] = []

    def get() -> None:
        try:
            Cache(tmp_path).get(Toy("slow"))
        except images.BuildError as e:
            errors.append(e)

    assert stopped_while_waiting(get)
    assert str(errors[0]) == "interrupted while waiting for another build of toy slow"


def test_a_tree_is_removed_without_reaching_into_what_is_mounted_inside(tmp_path: Path) -> None:
    """A leftover build root with a bind mount inside (as an old harness's killed mmdebstrap left): the
    mount is detached first, so the directory it showed keeps its files. In a mount namespace of its own."""
    if os.geteuid() != 0 or proc.which("unshare") is None:
        pytest.skip("needs root and unshare (util-linux) to mount")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "file").write_text("keep me")
    tree = tmp_path / ".rootfs-x-0123456789abcdef.1.partial"
    (tree / "root" / "dev").mkdir(parents=True)
    remove = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; from harness import mounts; "
              "mounts.remove_tree(Path(sys.argv[2])); print(mounts.under(Path(sys.argv[2])))")
    script = "mount --bind %s && %s" % (shlex.join([str(precious), str(tree / "root" / "dev")]),
                                        shlex.join([sys.executable, "-c", remove, str(ROOT), str(tree)]))
    c = proc.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], timeout=30)
    assert c.returncode == 0, c.output
    assert c.lines[-1] == "[]"
    assert not tree.exists() and (precious / "file").read_text() == "keep me"
