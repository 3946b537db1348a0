"""What the inner pytest sessions of the plugin's tests share."""

# A backend registered like a plugin's, whose tool is installed nowhere: its targets skip with the
# hint. (A program named explicitly in the targets file that does not exist is a config error instead.)
CONFTEST = """\
from typing import ClassVar, Tuple

from harness import backends
from harness.backends.base import Backend, Tool


class LabBackend(Backend):
    name: ClassVar[str] = "lab"
    tools: ClassVar[Tuple[Tool, ...]] = (Tool("arena-harness-lab-controller", "arena-harness-lab"),)


backends.register(LabBackend)
"""
