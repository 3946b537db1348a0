"""The local host: the allocator runs as a subprocess of the harness (optionally under RLIMIT_AS)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Tuple

from harness import proc
from harness.backends.base import Backend, RunContext, Tool
from harness.config import PROGRAM


@dataclass(frozen=True)
class LocalOptions:
    python: str = field(default="python3", metadata={PROGRAM: "python3"})  # set explicitly: must exist here

    def validate(self) -> Optional[Tuple[str, str]]:
        if not self.python.strip():
            return "python", "expected a Python interpreter, like python3"
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
