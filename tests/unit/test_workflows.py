"""The GitHub workflows: actionlint (with ShellCheck on every ``run:`` step) finds nothing, every
``arena-harness`` call in them parses and can write its outputs, and the jobs run the way the
README says (a Debian 12 container, as root, through scripts/setup.sh)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import yaml

from harness import cli, config, proc
from harness.plugin import skip_or_fail
from tests.conftest import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
HARNESS_CALL = re.compile(r"(?:\.venv/bin/arena-harness|python3 -m harness\.cli)((?: +[^\s|;>)\"]+)*)")
BOOTS = re.compile(r"arena-harness (?:run|images build)|pytest -m ")  # builds roots, boots UML, binfmt


def linter_path(name: str) -> str:
    """A linter from the ``test`` extra: next to this Python (CI calls .venv/bin/pytest without activating
    the venv), else on PATH; missing, the test skips with the install hint (fails under HARNESS_REQUIRE)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if os.access(beside, os.X_OK) else proc.which(name)
    if found is None:
        skip_or_fail(name, "%s not found: pip install -e '.[test]' (./scripts/setup.sh does)" % name)
    assert found is not None
    return found


def actionlint(*files: Path) -> "subprocess.CompletedProcess[str]":
    """actionlint with ShellCheck named explicitly, so a missing ShellCheck cannot silently turn it off."""
    return subprocess.run([linter_path("actionlint"), "-shellcheck", linter_path("shellcheck"), "-pyflakes", "",
                           "-no-color", "-oneline", *map(str, files)], capture_output=True, text=True, timeout=120,
                          cwd=str(files[0].parent.parent.parent))


def workflows() -> Dict[str, Dict[str, Any]]:
    return {wf.name: yaml.safe_load(wf.read_text()) for wf in sorted(WORKFLOWS.glob("*.yml"))}


def steps() -> Iterator[Tuple[str, str, Dict[str, Any], Dict[str, Any]]]:
    """(workflow, job id, job, step) for every step."""
    for name, doc in workflows().items():
        for job_id, job in doc["jobs"].items():
            for step in job.get("steps", []):
                yield name, job_id, job, step


def harness_calls() -> List[Tuple[str, List[str]]]:
    """(workflow, argv) of every arena-harness call in a run: step, ``${{ ... }}`` replaced by a word."""
    out = []
    for name, _, _, step in steps():
        text = re.sub(r"\$\{\{[^}]*\}\}", "X1", step.get("run", ""))
        for m in HARNESS_CALL.finditer(text):
            out.append((name, shlex.split(m.group(1))))
    return out


def test_actionlint_and_shellcheck_find_nothing() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["ci.yml", "matrix.yml", "nightly.yml"]
    done = actionlint(*files)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_linter_really_runs_shellcheck(tmp_path: Path) -> None:
    """The same invocation on a workflow with an unquoted variable and an action on the retired node20."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("name: bad\non: push\njobs:\n  j:\n    runs-on: ubuntu-24.04\n    steps:\n"
                   "      - uses: actions/checkout@v4\n      - run: rm -rf $TARGET_DIR/out\n")
    done = actionlint(bad)
    assert done.returncode == 1
    found = done.stdout.splitlines()
    assert any(":8:" in ln and "shellcheck reported issue" in ln and "SC2086" in ln for ln in found), found
    assert any(":7:" in ln and "node20" in ln and "actions/checkout@v4" in ln for ln in found), found


def test_the_workflows_run_only_commands_that_exist() -> None:
    parser = cli.build_parser()
    seen: Dict[str, int] = {}
    for _, argv in harness_calls():
        parser.parse_args(argv)  # raises UsageError if the CLI lacks the command or an option
        seen[argv[0]] = seen.get(argv[0], 0) + 1
    for _, _, _, step in steps():
        for script_path in re.findall(r"\./scripts/[\w.-]+", step.get("run", "")):
            assert (ROOT / script_path[2:]).is_file(), "a workflow runs %s, which does not exist" % script_path
    assert {"run", "groups", "merge", "diff", "report", "doctor", "images"} <= set(seen)


def test_every_output_path_in_the_workflows_can_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative to a fresh checkout with no results/ directory, as on a runner."""
    monkeypatch.chdir(tmp_path)
    parser = cli.build_parser()
    outputs = []
    for _, argv in harness_calls():
        args = parser.parse_args(argv)
        for key in ("json", "junit", "markdown", "html", "output", "track"):
            path = getattr(args, key, None)
            if isinstance(path, Path):
                assert not path.is_absolute(), path
                outputs.append(path)
    assert len(outputs) >= 10
    cli.make_output_dirs(*outputs)
    for path in outputs:
        path.write_text("x")


def test_jobs_run_in_debian_12_as_root_and_privileged_where_they_boot() -> None:
    for name, doc in workflows().items():
        for job_id, job in doc["jobs"].items():
            container = job["container"] if isinstance(job["container"], dict) else {"image": job["container"]}
            assert container["image"] == "debian:bookworm", (name, job_id)
            scripts = " ".join(s.get("run", "") for s in job["steps"])
            assert not re.search(r"\bsudo\b", scripts), (name, job_id)
            if BOOTS.search(scripts):
                options = container.get("options", "")
                assert "--privileged" in options, (name, job_id)


def test_the_image_cache_is_the_one_the_harness_uses() -> None:
    cached = 0
    for name, job_id, job, step in steps():
        if step.get("uses", "").startswith("actions/cache"):
            assert step["with"]["path"] == job["env"]["ARENA_HARNESS_CACHE"], (name, job_id)
            cached += 1
    assert cached >= 6  # a restore and a save in each of ci's uml, matrix's run, nightly's shard


def test_a_nightly_shard_without_results_fails_and_the_merge_names_it() -> None:
    doc = workflows()["nightly.yml"]
    shard_steps = doc["jobs"]["shard"]["steps"]
    assert not any("continue-on-error" in s for s in shard_steps)
    run = next(s["run"] for s in shard_steps if "arena-harness run" in s.get("run", ""))
    assert '[ "$status" -gt 1 ]' in run and "[ ! -s results/shard-" in run and "exit 1" in run
    compare = doc["jobs"]["compare"]
    assert compare["needs"] == "shard" and compare["if"] == "${{ !cancelled() }}"
    (merge,) = [argv for name, argv in harness_calls() if name == "nightly.yml" and argv[0] == "merge"]
    assert merge[2:] == ["shards/results/shard-%d.json" % k for k in (1, 2, 3, 4)]


def test_groups_needs_only_python_and_pyyaml(tmp_path: Path) -> None:
    """What the matrix's groups job runs, in an interpreter that sees the standard library, PyYAML and the
    checkout, nothing else: no docker SDK, no paramiko, not the installed package."""
    import yaml as pyyaml

    site = tmp_path / "site"
    shutil.copytree(Path(pyyaml.__file__).parent, site / "yaml")
    script = ("import importlib.util, runpy, sys\n"
              "sys.path[:0] = [%r, %r]\n"
              "assert [m for m in ('docker', 'paramiko') if importlib.util.find_spec(m)] == []\n"
              "sys.argv = ['arena-harness', 'groups', '--json']\n"
              "runpy.run_module('harness.cli', run_name='__main__')\n" % (str(site), str(ROOT)))
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=str(tmp_path))
    assert (done.returncode, done.stderr) == (0, "")
    assert yaml.safe_load(done.stdout) == [g.name for g in config.load_groups(config.load())]
    job = workflows()["matrix.yml"]["jobs"]["groups"]
    scripts = " ".join(s.get("run", "") for s in job["steps"])
    assert "setup.sh" not in scripts and "python3 -m harness.cli groups --json" in scripts
