"""Shared test helpers: a fake backend (registered like a real one) and tool requirements."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Iterator, List, Optional, Tuple

import pytest

import images
from allocator.probe import FRAME_BEGIN, FRAME_END, run_policy
from harness import backends, proc
from harness.backends.base import Backend, RunContext

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class FakeOptions:
    """What the fake guest prints: "ok" (framed documents from the simulated kernel), "garbage",
    "truncated", "misshapen" (a framed document whose reservation is a number), "nothing", "panic",
    "hang", "crash-backend" (the backend itself raises while the guest runs) or "crash-provision" (it
    raises while provisioning, as a backend whose optional module is not installed would)."""

    behaviour: str = "ok"
    simulate: str = "uml"
    delay: float = 0.0

    def validate(self) -> Optional[Tuple[str, str]]:
        if self.behaviour not in ("ok", "garbage", "truncated", "misshapen", "nothing", "panic", "hang",
                                  "crash-backend", "crash-provision"):
            return "behaviour", "unknown behaviour %r" % self.behaviour
        return None


class FakeBackend(Backend):
    """A guest that is a Python one-liner printing what a real guest would."""

    name: ClassVar[str] = "fake"
    Options: ClassVar[type] = FakeOptions

    def provision(self, cache: images.Cache, log: images.Log) -> None:
        if self.options.behaviour == "crash-provision":
            raise ModuleNotFoundError("No module named 'paramiko'")
        super().provision(cache, log)

    def execute(self, ctx: RunContext) -> proc.Completed:
        o = self.options
        if o.behaviour == "crash-backend":
            raise RuntimeError("backend exploded")
        docs: List[Dict[str, Any]] = [run_policy(p, simulate=o.simulate, grow="64M") for p in ctx.policies]
        text = agent_frame(docs)
        script = {
            "ok": "print(%r); print(%r); print(%r)" % (FRAME_BEGIN, text, FRAME_END),
            "garbage": "print('random noise'); print('{not json')",
            "truncated": "print(%r); print(%r)" % (FRAME_BEGIN, text[: len(text) // 2]),
            "misshapen": "print(%r); print(%r); print(%r)" % (
                FRAME_BEGIN, agent_frame([dict(d, reservation=5) for d in docs]), FRAME_END),
            "nothing": "pass",
            "panic": "print('Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100')",
            "hang": "import time; print('booting', flush=True); time.sleep(600)",
        }[o.behaviour]
        if o.delay:
            script = "import time; time.sleep(%r); " % o.delay + script
        return self.spawn(ctx, [sys.executable, "-c", script], watch=self.done_watcher)


def agent_frame(docs: List[Dict[str, Any]]) -> str:
    """What the guest agent frames after the model's step, whose stdout is the allocator's documents."""
    step = {"name": "model", "argv": [], "returncode": 0, "signal": None, "error": None, "truncated": False,
            "stdout": json.dumps(docs), "stderr": ""}
    return json.dumps({"agent": 1, "step": step}, separators=(",", ":"))


@pytest.fixture
def fake_backend() -> Iterator[type]:
    backends.register(FakeBackend)
    yield FakeBackend
    backends.unregister("fake")


def installed_tree(tmp_path: Path) -> Path:
    """What a wheel would hold, laid out by setuptools' build_py (no wheel package or index needed) from a
    copy of the tree (a build in the checkout would leave build/ and egg-info in it): its site directory."""
    import shutil

    from harness.plugin import skip_or_fail

    try:
        import setuptools  # noqa: F401
    except ImportError:
        skip_or_fail("setuptools", "setuptools not installed: pip install setuptools")
    tree, site = tmp_path / "tree", tmp_path / "site"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    for name in ("allocator", "guest", "harness", "images", "probes"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    r = proc.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "build_py", "--build-lib",
                  str(site)], timeout=300, cwd=tree)
    assert r.returncode == 0, r.output[-2000:]
    return site


def stopped_while_waiting(wait: Callable[[], None]) -> bool:
    """Run ``wait`` on a thread, make the harness's stop request (as SIGINT would) once it is waiting,
    and say whether it ended within 2 s."""
    import threading
    import time

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.3)
    proc.request_stop("SIGINT")
    try:
        t.join(2)
    finally:
        proc.clear_stop()
    return not t.is_alive()


def require_tool(name: str, tool: str, hint: str) -> str:
    """The path of ``tool``, or a skip (a failure when HARNESS_REQUIRE names ``name``)."""
    from harness.plugin import skip_or_fail

    path = proc.which(tool) if not os.path.isabs(tool) else (tool if os.access(tool, os.X_OK) else None)
    if path is None:
        skip_or_fail(name, "%s not found: %s" % (tool, hint))
    assert path is not None
    return path


def require_docker(name: str = "docker") -> Any:
    """A Docker SDK client of a running daemon, or a skip (a failure when HARNESS_REQUIRE names ``name``)."""
    from harness.backends.docker import client
    from harness.errors import ToolMissing
    from harness.plugin import skip_or_fail

    try:
        return client()
    except ToolMissing as e:
        skip_or_fail(name, str(e))
        raise AssertionError("unreachable") from None
