"""The local host: the allocator runs as a subprocess of the harness (optionally under RLIMIT_AS)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

from harness import proc
from harness.backends.base import Backend, RunContext, Tool


@dataclass(frozen=True)
class LocalOptions:
    python: str = "python3"

    def validate(self) -> Optional[Tuple[str, str]]:
        if not self.python.strip():
            return "python", "expected a Python interpreter, like python3"
        if "/" in self.python and not os.access(self.python, os.X_OK):
            return "python", "no such program: %s (fix the path, or give a name found on PATH)" % self.python
        return None


class LocalBackend(Backend):
    name: ClassVar[str] = "local"
    Options: ClassVar[type] = LocalOptions
    description: ClassVar[str] = "this machine, as a subprocess"

    def required_tools(self) -> Tuple[Tool, ...]:
        return (Tool(self.options.python, "python3"),)

    def execute(self, ctx: RunContext) -> proc.Completed:
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONPATH", None)  # the guest side stands alone: only the zipapp
        argv = [self.options.python, str(ctx.payload)] + self.probe_args(ctx)
        return self.spawn(ctx, argv, env=env)
