"""Every file a command writes: missing parent directories are created, the mode is 0644, bad paths are one line."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from harness import cli, results
from harness.results import RunDocument


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def tight_umask() -> Iterator[None]:
    """umask 077, as under ``sudo`` on some systems: the files must still come out 0644."""
    old = os.umask(0o077)
    yield
    os.umask(old)


@pytest.fixture
def fake_targets(fake_backend: type, tmp_path: Path) -> Path:
    f = tmp_path / "targets.yaml"
    f.write_text("targets:\n  - name: f\n    backend: fake\n    timeout: 5s\n"
                 "    expect: {go-2012: fallback-32bit}\n")
    return f


def run(fake_targets: Path, tmp_path: Path, out: Path, artifacts: Optional[Path] = None) -> List[Path]:
    files = [out / "a" / "r.json", out / "b" / "r.xml", out / "c" / "r.md", out / "d" / "r.html"]
    argv = ["run", "--targets", str(fake_targets), "--policy", "go-2012", "-q",
            "--artifacts", str(artifacts or tmp_path / "logs"),
            "--json", str(files[0]), "--junit", str(files[1]), "--markdown", str(files[2]), "--html", str(files[3])]
    assert cli.main(argv) == 0
    return files


def test_run_creates_missing_directories_and_writes_0644(fake_targets: Path, tmp_path: Path,
                                                         tight_umask: None) -> None:
    files = run(fake_targets, tmp_path, tmp_path / "results" / "deep")
    for f in files:
        assert f.is_file() and f.stat().st_size > 0
        assert mode(f) == 0o644, f
    assert RunDocument.load(files[0]).records[0].outcome == "fallback-32bit"


def test_artefacts_and_results_are_readable_by_others_under_umask_077(fake_targets: Path, tmp_path: Path,
                                                                       tight_umask: None) -> None:
    # Was: the artefacts directories and the console log 0700/0600 (and the results' new directories 0700)
    # while the results and reports were 0644: a CI upload step running as another user could read none.
    art = tmp_path / "art" / "deep"
    files = run(fake_targets, tmp_path, tmp_path / "results" / "deep", artifacts=art)
    (run_dir,) = list(art.iterdir())
    for d in (tmp_path / "art", art, run_dir, tmp_path / "results", tmp_path / "results" / "deep",
              files[0].parent):
        assert mode(d) == 0o755, d
    log, results = sorted(run_dir.iterdir())
    assert log.name == "f.log" and log.read_text().startswith("$ ") and mode(log) == 0o644
    # a run always leaves its results beside the console logs, whether --json was given or not
    assert results.name == "results.json" and mode(results) == 0o644
    assert RunDocument.load(results).records[0].target == "f"


def test_report_diff_and_merge_create_missing_directories(fake_targets: Path, tmp_path: Path,
                                                          tight_umask: None) -> None:
    (results_json, *_) = run(fake_targets, tmp_path, tmp_path / "first")
    new = tmp_path / "new"
    written = [new / "report" / "r.html", new / "report" / "r.md", new / "report" / "r.xml"]
    assert cli.main(["report", str(results_json), "--html", str(written[0]), "--markdown", str(written[1]),
                     "--junit", str(written[2])]) == 0
    diff_md = new / "diff" / "d.md"
    state = new / "state" / "regressions.json"
    assert cli.main(["diff", str(results_json), str(results_json), "--markdown", str(diff_md),
                     "--track", str(state)]) == 0
    merged = new / "merged" / "all.json"
    assert cli.main(["merge", str(merged), str(results_json), str(results_json), "--prefer", "last"]) == 0
    for f in written + [diff_md, merged]:
        assert f.is_file() and mode(f) == 0o644, f
    assert state.is_file()
    assert len(RunDocument.load(merged).records) == 1


def test_an_unwritable_output_is_one_line_before_the_run(fake_targets: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    logs = tmp_path / "logs"
    assert cli.main(["run", "--targets", str(fake_targets), "-q", "--artifacts", str(logs),
                     "--json", str(blocker / "sub" / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["arena-harness: cannot write %s: %s is not a directory" % (blocker / "sub" / "r.json", blocker)]
    assert not logs.exists()  # refused before anything booted
    assert cli.main(["run", "--targets", str(fake_targets), "-q", "--artifacts", str(logs),
                     "--json", str(tmp_path)]) == 2
    err_line = capsys.readouterr().err.strip()
    assert err_line == "arena-harness: cannot write %s: it is a directory; name a file" % tmp_path


def test_merge_fails_loudly_when_a_shard_is_missing(fake_targets: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (shard1, *_) = run(fake_targets, tmp_path, tmp_path / "shards")
    out = tmp_path / "merged" / "all.json"
    missing = tmp_path / "shards" / "shard-2.json"
    assert cli.main(["merge", str(out), str(shard1), str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "No such file" in err
    assert not out.exists()


def test_write_atomically_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "x" / "y.txt"
    results.write_atomically(target, "one\n")
    results.write_atomically(target, "two\n")
    assert target.read_text() == "two\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["y.txt"]


def test_a_target_named_twice_runs_once_and_its_results_load(fake_targets: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    # Was: two records for f/go-2012 in the file, which no reader could then load.
    assert cli.main(["run", "--targets", str(fake_targets), "--only", "f", "--only", "f", "--policy", "go-2012", "-q",
                     "--artifacts", str(tmp_path / "logs"), "--json", str(out)]) == 0
    assert [(r.target, r.policy) for r in RunDocument.load(out).records] == [("f", "go-2012")]


def test_dash_means_standard_output_and_the_table_goes_to_stderr(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Was: --markdown - wrote a file named "-"."""
    from harness import cli
    from harness.model import Record, Status
    from harness.results import RunDocument

    doc = RunDocument("r1", "2026-11-26T00:00:00+00:00", None, True,
                      [Record("t", "local", "go-2012", Status.PASS, "high-arena", "high-arena", None, True, False,
                              0.1, None)])
    doc.write(tmp_path / "r.json")
    monkey_cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert cli.main(["report", "r.json", "--markdown", "-"]) == 0
    finally:
        os.chdir(monkey_cwd)
    out, err = capsys.readouterr()
    assert out.startswith("# arena-harness run r1") and "| t |" in out
    assert "TARGET" in err and not (tmp_path / "-").exists()
    assert cli.main(["report", str(tmp_path / "r.json"), "--markdown", "-", "--junit", "-"]) == 2


def test_only_takes_globs_and_suggests_a_name() -> None:
    from harness import config
    from harness.errors import ConfigError

    ts = config.load()
    assert [t.name for t in ts.select(["qemu-riscv64-*"])] == [
        "qemu-riscv64-sv57", "qemu-riscv64-sv48", "qemu-riscv64-sv39"]
    assert [t.name for t in ts.select(["local", "loc*"])][0] == "local"
    with pytest.raises(ConfigError, match=r"did you mean uml-6\.1\?"):
        ts.select(["uml-6.13"])
    with pytest.raises(ConfigError, match=r"no target matches 'nothing-\*'"):
        ts.select(["nothing-*"])
