"""Looking before doing: ``list`` shows the slice ``run`` would run, ``images prune --dry-run`` what prune
would remove, and ``images list`` which targets use each cache entry and what tells alike entries apart."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, List, Sequence

import pytest

import images
from harness import backends, cleanup, cli, config, runner
from harness.model import Target
from images import Cache, Recipe
from tests.unit.test_images import Toy


class Selected(Exception):
    def __init__(self, targets: Sequence[Target]) -> None:
        super().__init__()
        self.names = [t.name for t in targets]


def what_run_selects(monkeypatch: pytest.MonkeyPatch, *options: str) -> List[str]:
    """The targets ``run`` hands the runner with these options (the run itself is stopped right there)."""

    def stop(targets: Sequence[Target], **kw: Any) -> None:
        raise Selected(targets)

    monkeypatch.setattr(runner, "run", stop)
    monkeypatch.setattr(cleanup, "clean", lambda **kw: cleanup.Report())  # other runs' leftovers are not ours
    with pytest.raises(Selected) as e:
        cli.main(["run", "-q", *options])
    return e.value.names


def what_list_shows(capsys: pytest.CaptureFixture[str], *options: str) -> List[str]:
    assert cli.main(["list", *options]) == 0
    return [line.split()[0] for line in capsys.readouterr().out.splitlines() if line and not line[0].isspace()]


FIRST_GROUP = config.load_groups(config.load())[0].name


@pytest.mark.parametrize("options", [
    ("--shard", "2/3"), ("--shard", "3/3"), ("--group", FIRST_GROUP), ("--group", "qemu-*"),
    ("--only", "qemu-*", "--shard", "1/2"), ("--only", "uml*"),
])
def test_list_previews_exactly_what_run_would_run(options: Sequence[str], monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # Was: list had no --shard or --group (issue 16).
    shown = what_list_shows(capsys, *options)
    assert shown and shown == what_run_selects(monkeypatch, *options)
    assert len(shown) < len(config.load().targets)


def test_list_of_an_empty_selection_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    everything = len(config.load().targets)
    assert cli.main(["list", "--shard", "%d/%d" % (everything + 1, everything + 1)]) == 2
    assert "leaves no target" in capsys.readouterr().err


def publish(cache: Cache, recipe: Recipe) -> Path:
    """A cache entry for ``recipe`` as a build published it before manifests recorded sizes (the tools to
    build the real recipes are not needed to list them)."""
    path = cache.path(recipe)
    (path / "root").mkdir(parents=True)
    (path / "root" / "file").write_bytes(b"x" * 5000)
    manifest = {"kind": recipe.kind, "name": recipe.name, "key": recipe.key(), "inputs": recipe.inputs(),
                "built": time.time() - 7200, "build_s": 1.0}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def recipes_of(name: str) -> List[Recipe]:
    target = next(t for t in config.load().targets if t.name == name)
    return list(backends.get(target.backend)(target).recipes())


def test_images_list_says_who_uses_each_entry_and_what_tells_alike_ones_apart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Was: three "rootfs bookworm-amd64" rows told apart only by their hash, and no "used by" (issue 16).
    monkeypatch.setenv(images.CACHE_ENV, str(tmp_path))
    cache = Cache(tmp_path)
    uml_root = recipes_of("uml-6.1")[0]
    (docker_tar,) = recipes_of("docker-amd64")
    docker_root = docker_tar.parts()[0]
    assert (uml_root.kind, uml_root.name) == (docker_root.kind, docker_root.name) and uml_root != docker_root
    for r in (uml_root, docker_tar, docker_root):
        publish(cache, r)
    unused = publish(cache, Toy("old"))
    assert cli.main(["images", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    head = out[1].split()
    assert head[:6] == ["KIND", "NAME", "SIZE", "BUILT", "USED", "KEY"]
    assert head[6:] == ["TOLD", "APART", "BY", "USED", "BY"]
    rows = {line.split()[5]: re.split(r"\s{2,}", line.strip()) for line in out[2:-1]}
    assert rows[uml_root.key()][3:] == ["2h", "0s", uml_root.key(), "packages=python3,user-mode-linux,mount",
                                        "uml-6.1"]
    assert rows[docker_root.key()][6:] == ["packages=python3", "docker-amd64 (part), docker-amd64-rlimit-1g (part)"]
    assert rows[docker_tar.key()][6:] == ["docker-amd64, docker-amd64-rlimit-1g"]  # alone of its name
    assert rows[Toy("old").key()][6:] == ["-"]
    assert out[-1].startswith("4 entries") and "1 used by no target" in out[-1]
    assert unused.is_dir()


def test_listing_walks_an_entrys_tree_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Was: every images list walked every file of every entry (3.6 s for the matrix's cache).
    cache = Cache(tmp_path)
    built = cache.get(Toy("new"))
    assert json.loads((built / "manifest.json").read_text())["size"] == len("new")  # recorded by the build
    legacy = publish(cache, Toy("legacy"))
    size = 5000 + (legacy / "manifest.json").stat().st_size
    assert {e.name: e.size for e in cache.entries()} == {"new": 3, "legacy": size}
    assert (legacy / images.cache.SIZE_FILE).read_text() == str(size)

    def walk(path: Path) -> int:
        raise AssertionError("walked %s again" % path)

    monkeypatch.setattr(images.cache, "tree_size", walk)
    assert {e.name: e.size for e in cache.entries()} == {"new": 3, "legacy": size}


def test_images_prune_dry_run_lists_and_removes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(images.CACHE_ENV, str(tmp_path))
    cache = Cache(tmp_path)
    old = cache.get(Toy("old"))
    (tmp_path / ".toy-stale-0.999999.partial").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(["images", "prune", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sorted(out[:-1]) == sorted(["would remove %s" % old, "would remove %s" % (tmp_path / ".toy-stale-0.999999"
                                                                                     ".partial")])
    assert out[-1] == "2 to remove (dry run: nothing removed)"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert cli.main(["images", "prune"]) == 0
    assert capsys.readouterr().out.splitlines()[:-1] == [line.replace("would remove", "removed") for line in out[:-1]]
    assert not old.exists()
