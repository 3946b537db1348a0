"""The local host: the allocator runs as a jailed subprocess of the harness (optionally under RLIMIT_AS).

The process sees the host's kernel and its own PID namespace, but of the host's
files only a read-only view (:mod:`harness.backends.jail`): ``/usr``, ``/etc``, the
zipapp, a private ``/tmp``; as root it runs as a guest uid of its own. The
interpreter is looked up in the view (``/usr/local/bin``, ``/usr/bin``); one
given by a path outside ``/usr`` (a pyenv or venv build) has its installation
bound into the view read-only at the same path.

With ``suite:`` (e.g. bullseye) the view's root is that Debian release's root
filesystem for the host's architecture instead (a cached image), and its own
``python3`` runs: the host's kernel with another release's userland. The
shipped ``local-bullseye`` target runs the guest side under Python 3.9 this way,
the oldest Python it claims.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, List, Optional, Tuple

import images
from harness import proc
from harness.backends import jail
from harness.backends.base import Backend, RunContext, Tool
from harness.model import DEBIAN, PROGRAM, Target

VIEW_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class LocalOptions:
    python: str = field(default="python3", metadata={PROGRAM: "python3"})  # set explicitly: must exist here
    suite: Optional[str] = field(default=None, metadata={DEBIAN: "a Debian release"})  # its root and python3

    def validate(self) -> Optional[Tuple[str, str]]:
        if not self.python.strip():
            return "python", "expected a Python interpreter, like python3"
        return None


class LocalBackend(Backend[LocalOptions]):
    name: ClassVar[str] = "local"
    Options: ClassVar[type] = LocalOptions
    description: ClassVar[str] = "this machine, as a subprocess"

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self._root: Optional[Path] = None

    def required_tools(self) -> Tuple[Tool, ...]:
        if self.options.suite:
            return ()  # the interpreter comes with the root filesystem
        return (Tool(self.interpreter() or self.options.python, "python3"),)

    def recipes(self) -> List[images.Recipe]:
        if not self.options.suite:
            return []
        return [images.Rootfs(images.host_arch(), self.options.suite)]

    def provision(self, cache: images.Cache, log: images.Log) -> None:
        if self.options.suite:
            self._root = cache.get(self.recipes()[0], log) / "root"

    def interpreter(self) -> Optional[str]:
        """The interpreter's path on the host: a given path, else the name looked up as the view sees PATH."""
        python: str = self.options.python
        if "/" in python:
            return python
        return shutil.which(python, path=VIEW_PATH)

    def view(self, ctx: RunContext) -> jail.View:
        ro: List[Tuple[Path, str]] = [(self.boot_dir(ctx), jail.guest_path("boot"))]
        if self._root is not None:
            return jail.View(root=self._root, ro=tuple(ro), proc=True)
        python = os.path.realpath(self.interpreter() or self.options.python)
        if not python.startswith("/usr/"):
            prefix = Path(python).parent.parent  # PREFIX/bin/python3.X -> PREFIX
            ro.append((prefix, str(prefix)))
        return jail.View(ro=tuple(ro), proc=True)

    def argv(self, ctx: RunContext) -> List[str]:
        if self.options.suite and self._root is None:
            self.provision(images.Cache(), lambda msg: None)
        python = "/usr/bin/python3" if self.options.suite else (self.interpreter() or self.options.python)
        return self.jailed(ctx, self.view(ctx), [python] + self.agent_args(jail.guest_path("boot")) +
                           self.serve_args(ctx))

    def execute(self, ctx: RunContext) -> proc.Completed:
        env = {"PATH": VIEW_PATH, "PYTHONDONTWRITEBYTECODE": "1", "LC_ALL": "C", "HOME": "/tmp"}
        return self.spawn(ctx, self.argv(ctx), env=env, watch=self.watcher(ctx))
