"""The README stays true: its CLI synopsis is the parser's, its outcome table is the allocator's, and it
points at nothing outside the repository."""

from __future__ import annotations

import argparse
import re
from typing import Dict, List, Set, Tuple

from allocator.probe import OUTCOMES
from harness import cli
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index("\n## %s\n" % title)
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else len(README)]


def readme_synopses() -> Dict[str, str]:
    """Command ("run", "images build", ...) -> its synopsis in the README's CLI block (continuations joined,
    trailing comments dropped)."""
    block = section("CLI").split("```\n")[1]
    lines: List[str] = []
    for ln in block.splitlines():
        ln = ln.split("  #")[0].rstrip()
        if ln.startswith(" ") and lines:
            lines[-1] += " " + ln.strip()
        elif ln:
            lines.append(ln)
    out = {}
    for ln in lines:
        words = ln.split()
        assert words[0] == "arena-harness", ln
        name = " ".join(words[1:3]) if words[1] == "images" else words[1]
        out[name] = ln
    return out


def subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> Dict[str, argparse.ArgumentParser]:
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = subparsers(sub, prefix + name + " ")
                if nested:
                    out.update(nested)
                else:
                    out[prefix + name] = sub
    return out


def synopsis(parser: argparse.ArgumentParser) -> Tuple[Set[str], List[str]]:
    """What ``--help`` shows: each option as ``[--long METAVAR]`` (`` ...`` when repeatable, no metavar for a
    flag), and the positionals (``...`` for one taking several)."""
    options = set()
    positionals = []
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if not a.option_strings:
            positionals.append("..." if a.nargs in ("+", "*") else "ONE")
            continue
        long = max(a.option_strings, key=len)
        if a.nargs == 0:
            options.add("[%s]" % long)
        else:
            options.add("[%s %s%s]" % (long, a.metavar, " ..." if isinstance(a, argparse._AppendAction) else ""))
    return options, positionals


def test_every_command_is_in_the_readme_as_its_help_shows_it() -> None:
    documented = readme_synopses()
    commands = subparsers(cli.build_parser())
    assert sorted(documented) == sorted(commands)
    for name, sub in commands.items():
        options, positionals = synopsis(sub)
        line = documented[name]
        assert set(re.findall(r"\[--[^\]]*\]", line)) == options, name
        rest = re.sub(r"\[--[^\]]*\]", "", line).split()[1 + len(name.split()):]
        shown = ["..." if w == "..." else "ONE" for w in rest if w != "--"]  # exec's -- PROGRAM ...
        if positionals and positionals[-1] == "...":  # nargs="+": one word, then "..."
            positionals = positionals[:-1] + ["ONE", "..."]
        assert shown == positionals, name


def test_every_outcome_is_defined_in_one_table() -> None:
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| ", README, flags=re.M)
    assert [r for r in rows if r in OUTCOMES] == list(OUTCOMES)
    assert README.count("| outcome | what happened |") == 1


def test_the_readme_points_at_nothing_outside_the_repository() -> None:
    assert "RECIPES" not in README and not re.search(r"(?<!\.)\.\./\w", README)  # no ../shared/...
    for path in re.findall(r"`((?:harness|allocator|scripts|images|tests|benchmarks|\.github|\.ci)/[\w./-]*)`",
                           README):
        assert (ROOT / path.rstrip("/")).exists() or "<" in path or "*" in path, path


def test_quick_start_is_said_once() -> None:
    assert README.count("## Quick start") == 1
    assert "Each command installs what it needs first" not in README


def test_timings_are_in_one_place() -> None:
    # Was: the Quick start's "41 s warm" and per-target boot times for 66 results beside the Speed
    # section's 55.1 s for 63 results, neither dated.
    quick = section("Quick start (a fresh Debian 12 machine)")
    assert "Timings: see Speed." in quick
    assert re.findall(r"\b\d+(?:\.\d+)? ?s\b", quick) == []
    assert "boot+probe" not in quick


def test_the_ci_section_says_where_uml_keeps_its_memory() -> None:
    import yaml

    ci = section("CI workflows")
    assert "UML maps its memory there" not in ci and "exec-able 1 GiB" not in ci
    assert "UML keeps its memory in the jail's private `/tmp`" in ci
    # ... which is why no workflow gives its container a bigger or executable /dev/shm.
    for wf in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        for name, job in yaml.safe_load(wf.read_text())["jobs"].items():
            container = job.get("container")
            options = str(container.get("options", "")) if isinstance(container, dict) else ""
            assert "shm" not in options, (wf.name, name, options)
