"""``arena-harness exec TARGET -- PROGRAM``: in one target of each backend, a command of the guest's and
a static binary from this host run, with stdout and stderr apart and the exit status passed through.

The host program is tests/data/hello, built by Debian's golang-go for the target's architecture (a
static binary: riscv64 for qemu-riscv64-sv39, arm64 for qemu-user). Each target is a shipped one, run
through the real command line; ssh runs against a real sshd of this module's (tests/integration/test_ssh.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from harness import proc
from tests.conftest import ROOT, require_tool
from tests.integration.test_ssh import Sshd, sshd  # noqa: F401 - the module's real sshd fixture

pytestmark = [pytest.mark.integration]

HELLO = ROOT / "tests" / "data" / "hello"
# target -> (its Debian arch, a word its `uname -r` must contain, what backend marker it is)
TARGETS: Dict[str, str] = {
    "local": "amd64",
    "uml": "amd64",
    "qemu-riscv64-sv39": "riscv64",
    "qemu-x86_64-ssh": "amd64",
    "qemu-user-arm64-4g": "arm64",
    "docker-amd64": "amd64",
}
GOARCH = {"amd64": "amd64", "arm64": "arm64", "riscv64": "riscv64", "i386": "386"}


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    go = require_tool("go", "go", "sudo apt-get install -y golang-go")
    out = tmp_path_factory.mktemp("hello")
    built = {}
    for arch in sorted(set(TARGETS.values())):
        exe = out / ("hello-" + arch)
        env = dict(os.environ, CGO_ENABLED="0", GOOS="linux", GOARCH=GOARCH[arch], GOPROXY="off",
                   GOFLAGS="-mod=mod")
        r = proc.run([go, "build", "-trimpath", "-o", str(exe), "."], timeout=900, env=env, cwd=HELLO)
        assert r.returncode == 0, r.output[-2000:]
        built[arch] = exe
    return built


def harness(*args: str, targets: "Path | None" = None, timeout: float = 300) -> "subprocess.CompletedProcess[str]":
    argv = [sys.executable, "-m", "harness", "exec"] + (["--targets", str(targets)] if targets else []) + list(args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def uname_r(target: str, targets: "Path | None" = None) -> str:
    r = harness(target, "--", "uname", "-r", targets=targets)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    return r.stdout.strip()


@pytest.mark.parametrize("target", list(TARGETS))
def test_exec_runs_a_guest_command_and_a_host_binary(target: str, hello: Dict[str, Path]) -> None:
    from harness import backends, config

    t = config.load(None).select([target])[0]
    missing = backends.get(t.backend)(t).missing()
    if missing is not None:
        from harness.plugin import skip_or_fail

        skip_or_fail(t.backend, str(missing))
    release = uname_r(target)
    assert release and "\n" not in release
    if target == "uml":
        assert release == proc.run(["linux.uml", "--version"], timeout=30).output.strip().split()[-1] or \
            release.startswith("6.1"), release
    elif target.startswith("qemu-riscv64"):
        assert "riscv64" in release, release
    r = harness(target, "--", str(hello[TARGETS[target]]), "a", "b c")
    assert r.returncode == 7, (r.returncode, r.stderr[-2000:])
    assert r.stdout == "hello from %s a b c\n" % GOARCH[TARGETS[target]]
    assert r.stderr.endswith("to stderr\n"), r.stderr[-500:]


def test_exec_over_ssh(sshd: Sshd, hello: Dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    f = tmp_path / "ssh.yaml"
    f.write_text("""targets:
  - name: ssh-localhost
    backend: ssh
    host: 127.0.0.1
    port: %d
    user: %s
    key_file: %s
    use_agent: false
    known_hosts: %s
    timeout: 60s
""" % (sshd.port, sshd.user, sshd.base / "user_key", sshd.base / "known_hosts"))
    assert uname_r("ssh-localhost", f) == os.uname().release
    r = harness("ssh-localhost", "--", str(hello["amd64"]), "x", targets=f)
    assert (r.returncode, r.stdout) == (7, "hello from amd64 x\n"), r.stderr[-2000:]
    assert r.stderr.endswith("to stderr\n")


def test_exec_exit_statuses_of_its_own(tmp_path: Path) -> None:
    """A program the guest lacks is 127 (as a shell says), a deadline 124, a bad target a usage error."""
    r = harness("local", "--", "no-such-program-here")
    assert r.returncode == 127 and "cannot start no-such-program-here" in r.stderr, r.stderr
    r = harness("local", "--timeout", "3s", "--", "sleep", "30")
    assert r.returncode == 124 and "deadline of 3s reached" in r.stderr, r.stderr
    r = harness("lcoal", "--", "true")
    assert r.returncode == 2 and "did you mean local?" in r.stderr, r.stderr
    r = harness("local", "--", "./no/such/file")
    assert r.returncode == 2 and "no such file here: ./no/such/file" in r.stderr, r.stderr
    r = harness("local")
    assert r.returncode == 2 and "exec needs a program" in r.stderr, r.stderr


def test_a_tight_umask_changes_nothing() -> None:
    """Under umask 077 the jail's mount points were 0700: the guest's own uid could not reach its files."""
    for target in ("local", "uml"):
        argv = [sys.executable, "-m", "harness", "exec", target, "--", "cat", "/proc/self/status"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT,
                           preexec_fn=lambda: os.umask(0o077))
        assert r.returncode == 0 and "Umask:\t0022" in r.stdout, (target, r.stderr[-1000:])


def test_a_closed_stdout_ends_exec_at_once_and_a_signal_is_an_interrupt() -> None:
    """exec | head once waited for the deadline (the reader thread died of BrokenPipeError) and printed a
    traceback; Ctrl-C gave 125 or 143 instead of 130."""
    import signal
    import time

    cmd = "%s -m harness exec local --timeout 60s -- yes | head -c 5 >/dev/null; echo ${PIPESTATUS[0]}" % sys.executable
    began = time.monotonic()
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.stdout.strip() == "141" and "Traceback" not in r.stderr, r.stderr[-1000:]
    assert time.monotonic() - began < 20
    p = subprocess.Popen([sys.executable, "-m", "harness", "exec", "local", "--", "sleep", "60"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130 and "interrupted by SIGINT" in err, (p.returncode, err[-1000:])
