"""The harness's exceptions: everything derives from HarnessError; each knows its exit code."""

from __future__ import annotations

from typing import Optional

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class HarnessError(Exception):
    """An error the user can act on: printed as one line, never as a traceback."""

    exit_code = EXIT_USAGE


class UsageError(HarnessError):
    pass


class ConfigError(HarnessError):
    """A targets file that is wrong: names file:line, the target and the key, and what was expected."""

    def __init__(self, message: str, path: str = "", line: Optional[int] = None, target: str = "", key: str = ""):
        self.message = message
        self.path = path
        self.line = line
        self.target = target
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or "<targets>"
        if self.line is not None:
            where += ":%d" % self.line
        parts = [where]
        if self.target:
            parts.append("[%s]" % self.target)
        head = " ".join(parts)
        return "%s %s: %s" % (head, self.key, self.message) if self.key else "%s: %s" % (head, self.message)


class ToolMissing(HarnessError):
    """A backend cannot run here: which tool is missing and how to install it."""

    def __init__(self, backend: str, tool: str, hint: str):
        self.backend = backend
        self.tool = tool
        self.hint = hint
        super().__init__("%s backend needs %s: %s" % (backend, tool, hint))
