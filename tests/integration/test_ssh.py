"""A real OpenSSH server on 127.0.0.1, started by this module: the ssh backend and each of its errors."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from harness import config, runner
from harness.errors import ConfigError
from harness.model import Status
from tests.conftest import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.ssh]


class Sshd:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = 0
        self.proc: "subprocess.Popen[bytes] | None" = None
        self.user = os.environ.get("USER") or "root"

    def keygen(self, path: Path) -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)

    def start(self, host_key: str = "host_key") -> None:
        if not (self.base / host_key).exists():
            self.keygen(self.base / host_key)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = self.base / "sshd_config"
        conf.write_text(
            "Port %d\nListenAddress 127.0.0.1\nHostKey %s\nPidFile %s\nAuthorizedKeysFile %s\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
            % (self.port, self.base / host_key, self.base / "sshd.pid", self.base / "authorized_keys"))
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        self.proc = subprocess.Popen([shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.base / "sshd.log", "ab"))
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start: %s" % (self.base / "sshd.log").read_text()[-500:])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def host_key_line(self, host_key: str = "host_key") -> str:
        kind, key = (self.base / (host_key + ".pub")).read_text().split()[:2]
        return "[127.0.0.1]:%d %s %s\n" % (self.port, kind, key)


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    require_tool("ssh", "/usr/sbin/sshd", "sudo apt-get install -y openssh-server")
    if os.geteuid() != 0:
        pytest.skip("the test sshd logs in as this user; it needs root to run sshd")
    base = Path(tempfile.mkdtemp(prefix="arena-sshd-"))
    server = Sshd(base)
    server.keygen(base / "user_key")
    (base / "authorized_keys").write_text((base / "user_key.pub").read_text())
    server.start()
    (base / "known_hosts").write_text(server.host_key_line())
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


def target(sshd: Sshd, extra: str = "", expect: str = "high-arena") -> config.Target:
    text = """
targets:
  - name: ssh-localhost
    backend: ssh
    host: 127.0.0.1
    port: %d
    user: %s
    key_file: %s
    use_agent: false
    known_hosts: %s
    timeout: 60s
    expect: {go-2012: %s}
%s""" % (sshd.port, sshd.user, sshd.base / "user_key", sshd.base / "known_hosts", expect, extra)
    return config.parse(text, "ssh.yaml").targets[0]


def with_options(t: config.Target, **kw: object) -> config.Target:
    import dataclasses

    return dataclasses.replace(t, options=dataclasses.replace(t.options, **kw))


def remote_dirs(rec: object) -> list:
    """The remote temp dirs this record's run made (the backend logs each), still present."""
    log = Path(rec.log or "").read_text()
    made = re.findall(r"\[harness\] remote dir (\S+)", log)
    return [d for d in made if os.path.exists(d)]


def run_one(t: config.Target, tmp_path: Path, policies: list = ["go-2012"]):  # noqa: B006
    doc = runner.run([t], policies=policies, artifacts=tmp_path)
    return doc.records[0]


def test_localhost_over_ssh_reports_high_arena(sshd: Sshd, tmp_path: Path) -> None:
    rec = run_one(target(sshd), tmp_path)
    assert rec.status is Status.PASS, rec.detail
    assert rec.outcome == "high-arena" and rec.kernel == os.uname().release
    assert "[harness] remote dir /tmp/arena-harness." in Path(rec.log or "").read_text()
    assert remote_dirs(rec) == []  # the remote temp dir is gone


def test_a_changed_host_key_fails_with_one_clear_line(sshd: Sshd, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    sshd.keygen(other)
    known = tmp_path / "known_hosts"
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    known.write_text("[127.0.0.1]:%d %s %s\n" % (sshd.port, kind, key))
    rec = run_one(with_options(target(sshd), known_hosts=str(known)), tmp_path)
    assert rec.status is Status.ERROR
    assert rec.detail is not None and "\n" not in rec.detail
    assert "the host key CHANGED" in rec.detail and "refusing to connect" in rec.detail


def test_an_unknown_host_key_is_refused_unless_accepted(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "kh"
    rec = run_one(with_options(target(sshd), known_hosts=str(empty)), tmp_path)
    assert rec.status is Status.ERROR and "unknown host key (not in %s)" % empty in (rec.detail or "")
    rec = run_one(with_options(target(sshd), known_hosts=str(empty), accept_new_host_key=True), tmp_path)
    assert rec.status is Status.PASS, rec.detail
    assert "ssh-ed25519" in empty.read_text()  # saved for next time


def test_authentication_failure(sshd: Sshd, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    sshd.keygen(stranger)
    rec = run_one(with_options(target(sshd), key_file=str(stranger)), tmp_path)
    assert rec.status is Status.ERROR and "authentication failed" in (rec.detail or "")


def test_no_python_on_the_remote(sshd: Sshd, tmp_path: Path) -> None:
    rec = run_one(with_options(target(sshd), python="python3-nonexistent"), tmp_path)
    assert rec.status is Status.ERROR
    assert rec.detail == "%s@127.0.0.1:%d: no python3-nonexistent on the remote: install Python 3 there " \
                         "(apt-get install python3)" % (sshd.user, sshd.port)


def test_connection_refused(sshd: Sshd, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    rec = run_one(with_options(target(sshd), port=closed), tmp_path)
    assert rec.status is Status.ERROR and (rec.detail or "").endswith(":%d: connection refused" % closed)


def test_connect_timeout(sshd: Sshd, tmp_path: Path) -> None:
    # A listener that never answers the SSH banner: the connect deadline must fire.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        start = time.monotonic()
        rec = run_one(with_options(target(sshd), port=silent.getsockname()[1], connect_timeout=2.0), tmp_path)
    finally:
        silent.close()
    assert rec.status is Status.ERROR and time.monotonic() - start < 15
    assert (rec.detail or "").endswith("connection timed out: no SSH server answered within 2s"), rec.detail


def test_the_remote_temp_dir_is_removed_after_a_timeout(sshd: Sshd, tmp_path: Path) -> None:
    import dataclasses

    t = dataclasses.replace(target(sshd), timeout=3.0)
    fake_py = tmp_path / "slowpy"  # a "python" that never finishes
    nap = "600.%d" % os.getpid()  # a sleep no other test runs
    fake_py.write_text("#!/bin/sh\nexec sleep %s\n" % nap)
    fake_py.chmod(0o755)
    rec = run_one(with_options(t, python=str(fake_py)), tmp_path)
    assert rec.status is Status.TIMEOUT, rec.detail
    time.sleep(0.5)
    assert remote_dirs(rec) == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep %s" % nap not in ps


def test_a_password_in_the_targets_file_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"password: a password does not belong in a targets file"):
        config.parse("targets:\n  - name: s\n    backend: ssh\n    host: h\n    password: hunter2\n", "s.yaml")


def test_a_vm_image_reached_over_ssh_reports_its_own_kernel(tmp_path: Path) -> None:
    require_tool("qemu", "qemu-system-x86_64", "sudo apt-get install -y qemu-system-x86")
    t = config.load().select(["qemu-x86_64-ssh"])[0]
    doc = runner.run([t], policies=["go-2012"], artifacts=tmp_path)
    (rec,) = doc.records
    assert rec.status is Status.PASS, rec.detail
    assert rec.kernel is not None and rec.kernel != os.uname().release  # the guest's kernel, not the host's
    assert rec.probe is not None and rec.probe["facts"]["kernel"] == rec.kernel
    log = Path(rec.log or "").read_text()
    assert "@@ARENA-HARNESS-SSHD-READY@@" in log and "$ ssh root@127.0.0.1:" in log
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "hostfwd=tcp:127.0.0.1" not in ps  # the VM is gone


# -- known_hosts: appended, never rewritten; markers understood -------------------------------------

PREAMBLE = (
    b"# my hosts, curated by hand\n"
    b"\n"
    b"@cert-authority *.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGAMBOvFvO8mrViYxPWTLtJIjz4I7VtcdVHm8WRju572\n"
    b"|1|JfKTdBh7rNbXkVAQCRp4OQoPfmI=|USECr3SWf1JUPsms5AqfD5QfxkM= ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC\n"
    b"old.example.org,10.0.0.1 ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBF\n"
    b"@future-marker host ssh-ed25519 AAAA\n"
    b"a line paramiko cannot parse \t\n"
    b"  # an indented comment without a final newline"
)


def test_accept_new_host_key_appends_one_line_and_keeps_every_other_byte(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_bytes(PREAMBLE)  # was: InvalidHostKey on the @cert-authority line; then a rewrite without comments
    rec = run_one(with_options(target(sshd), known_hosts=str(known), accept_new_host_key=True), tmp_path)
    assert rec.status is Status.PASS, rec.detail
    assert known.read_bytes() == PREAMBLE + b"\n" + sshd.host_key_line().encode()
    # Known now: the next run accepts it without adding anything.
    rec = run_one(with_options(target(sshd), known_hosts=str(known)), tmp_path)
    assert rec.status is Status.PASS, rec.detail
    assert known.read_bytes() == PREAMBLE + b"\n" + sshd.host_key_line().encode()


def test_a_cert_authority_line_does_not_break_plain_key_checking(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_bytes(PREAMBLE + b"\n" + sshd.host_key_line().encode())
    rec = run_one(with_options(target(sshd), known_hosts=str(known)), tmp_path)
    assert rec.status is Status.PASS, rec.detail  # was: "internal error in ssh backend: InvalidHostKey"


def hashed(name: str) -> str:
    import base64
    import hashlib
    import hmac

    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return "|1|%s|%s" % (base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


def test_hashed_and_wildcard_host_names_match(sshd: Sshd, tmp_path: Path) -> None:
    kind, key = (sshd.base / "host_key.pub").read_text().split()[:2]
    for pattern in (hashed("[127.0.0.1]:%d" % sshd.port), "other,[127.0.0.?]:%d" % sshd.port):
        known = tmp_path / "known_hosts"
        known.write_text("%s %s %s\n" % (pattern, kind, key))
        rec = run_one(with_options(target(sshd), known_hosts=str(known)), tmp_path)
        assert rec.status is Status.PASS, (pattern, rec.detail)
    known.write_text("*,![127.0.0.1]:%d %s %s\n" % (sshd.port, kind, key))  # negated: not known
    rec = run_one(with_options(target(sshd), known_hosts=str(known)), tmp_path)
    assert rec.status is Status.ERROR and "unknown host key" in (rec.detail or "")


def test_a_revoked_host_key_is_refused_with_one_clear_line(sshd: Sshd, tmp_path: Path) -> None:
    kind, key = (sshd.base / "host_key.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    # Listed as known, and revoked for every host: revoked wins.
    content = "%s@revoked * %s %s\n" % (sshd.host_key_line(), kind, key)
    known.write_text(content)
    rec = run_one(with_options(target(sshd), known_hosts=str(known)), tmp_path)
    assert rec.status is Status.ERROR and rec.detail is not None and "\n" not in rec.detail
    assert rec.detail.startswith("%s@127.0.0.1:%d: the host key ssh-ed25519 " % (sshd.user, sshd.port))
    assert rec.detail.endswith(" is REVOKED (%s line 2): refusing to connect" % known)
    # Not listed, revoked, and new keys accepted: still refused, and nothing is added.
    known.write_text("@revoked [127.0.0.1]:%d %s %s\n" % (sshd.port, kind, key))
    rec = run_one(with_options(target(sshd), known_hosts=str(known), accept_new_host_key=True), tmp_path)
    assert rec.status is Status.ERROR and (rec.detail or "").endswith("is REVOKED (%s line 1): refusing to connect"
                                                                      % known)
    assert known.read_text() == "@revoked [127.0.0.1]:%d %s %s\n" % (sshd.port, kind, key)
    # A revoked key that was replaced by another known one: says revoked, not merely changed.
    other = tmp_path / "other_key"
    sshd.keygen(other)
    okind, okey = other.with_suffix(".pub").read_text().split()[:2]
    known.write_text("[127.0.0.1]:%d %s %s\n@revoked * %s %s\n" % (sshd.port, okind, okey, kind, key))
    rec = run_one(with_options(target(sshd), known_hosts=str(known)), tmp_path)
    assert rec.status is Status.ERROR and "is REVOKED (%s line 2)" % known in (rec.detail or ""), rec.detail
