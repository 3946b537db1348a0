"""The layout's promises: data flows one way, with no import cycle, and readers of results load no backend."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "images", "allocator", "guest")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> Dict[str, Set[str]]:
    """Each module of ours -> the modules of ours it imports at module level (not inside functions:
    a deferred import is how a module reaches a layer above it on purpose, e.g. the CLI's lazy imports)."""
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        deps: Set[str] = set()
        for node in ast.parse(path.read_text(), str(path)).body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                base = node.module
                for alias in node.names:
                    full = "%s.%s" % (base, alias.name)
                    deps.add(full if full in modules else base)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    found: List[List[str]] = []
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


def test_there_is_no_import_cycle() -> None:
    graph = import_graph()
    assert "harness.config" in graph and "harness.backends.base" in graph  # the walk found the tree
    assert cycles(graph) == []


def test_the_model_imports_nothing_of_the_harness_but_its_error_types() -> None:
    deps = import_graph()["harness.model"]
    assert {d for d in deps if d.startswith("harness")} <= {"harness.errors"}
    assert {d for d in import_graph()["harness.document"] if d.startswith("harness")} == set()


def test_reading_results_loads_no_backend_and_no_yaml() -> None:
    code = ("import sys; import harness.report, harness.diff, harness.verdict, harness.results; "
            "print(sorted(m for m in sys.modules if m.startswith(('harness.backends', 'yaml', 'images', "
            "'docker', 'paramiko', 'harness.config', 'harness.proc'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_image_pipeline_does_not_import_the_backends() -> None:
    graph = import_graph()
    for name in ("images", "images.cache", "images.recipes"):
        assert not {d for d in graph[name] if d.startswith("harness.backends") or d == "harness.config"}, name
