"""The go probe for the integration tests: built by its image recipe with the host's Go 1.19, run with
its stdout and stderr apart (as a guest agent returns them), read by :func:`harness.probes.go.document`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import images
from harness import proc
from harness.plugin import skip_or_fail
from harness.probes import go
from tests.conftest import require_tool

GO_HINT = "sudo apt-get install -y golang-go (Go 1.19 on Debian 12)"


def require_go_1_19() -> str:
    """The host's go (a skip without one, or with another version than the one go-modern models)."""
    path = require_tool("go", "go", GO_HINT)
    version = images.recipes.go_version() or ""
    if " go1.19" not in version:
        skip_or_fail("go", "go-modern models Go 1.19; this go is %r (Debian 12's golang-go is 1.19)" % version)
    return path


def binary(arch: str, cache: Optional[images.Cache] = None) -> Path:
    """The go probe for a Debian architecture, from ``cache`` (the user's image cache by default)."""
    require_go_1_19()
    return (cache or images.Cache()).get(images.GoProbe(arch)) / go.BINARY


@dataclass
class Ran:
    doc: Dict[str, Any]
    stdout: str
    stderr: str
    returncode: Optional[int]


def run(exe: Path, plan: str, *, tmp: Path, limit: Optional[int] = None, emulator: Sequence[str] = (),
        touch_every: int = 1 << 20) -> Ran:
    """Run the probe (under ``prlimit --as=limit``, through ``emulator``), stderr kept apart in a file."""
    argv = list(emulator) + go.argv(str(exe), plan, touch_every)
    if limit is not None:
        argv = [require_tool("go", "prlimit", "sudo apt-get install -y util-linux"), "--as=%d" % limit] + argv
    err = tmp / ("stderr-%d" % len(list(tmp.glob("stderr-*"))))
    # The environment a guest agent gives its programs (a few variables): the initial stack holds the
    # environment, and at a boundary found to 1 MiB a CI job's long one can tip RLIMIT_AS over it.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/tmp"}
    r = proc.run(["sh", "-c", 'exec "$@" 2>"$0"', str(err)] + argv, timeout=300, env=env)
    stderr = err.read_text(errors="backslashreplace") if err.exists() else ""
    return Ran(go.document(r.output, stderr, r.returncode, r.timed_out), r.output, stderr, r.returncode)


def fatal_line(stderr: str) -> Optional[str]:
    """What follows ``fatal error: `` on Go's stderr, read independently of :func:`go.document`."""
    for line in stderr.splitlines():
        if line.startswith("fatal error: "):
            return line[len("fatal error: "):]
    return None
