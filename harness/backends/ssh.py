"""Machines reached over SSH with paramiko: real boards, vendor kernels, cloud VMs.

The machine is already running; :class:`SshChannel` is the way in (also for a
QEMU guest booted from a disk image, ``boot: ssh``).

Host keys are checked against a known_hosts file (read by
:mod:`harness.known_hosts`, which understands ``@revoked`` and skips
``@cert-authority`` lines); a host not in it is refused unless the target opts
in with ``accept_new_host_key: true`` (then its key is appended as one line; the
file is never rewritten). A changed key is always refused, and so is a revoked
one. Authentication: a key file, or the
agent; a password only through an environment variable named by
``password_env`` (never in the targets file). Each run makes a fresh temp dir
on the remote (``mktemp -d``), ships the allocator there over SFTP, runs it
with the remote ``python3`` under the target's deadline, and removes the dir
whatever happened.
"""

from __future__ import annotations

import base64
import binascii
import os
import shlex
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

from harness import arches, known_hosts, proc
from harness import probes as probing
from harness.backends.base import Backend, RunContext, StdinHook
from harness.errors import HarnessError, ToolMissing
from harness.model import FILE, Deadline, Seconds, Target


class SshError(HarnessError):
    pass


@dataclass(frozen=True)
class SshOptions:
    host: str = ""
    port: int = 22
    user: str = "root"
    key_file: Optional[str] = field(default=None, metadata={FILE: "the private key to log in with"})
    use_agent: bool = True
    password_env: Optional[str] = None  # the NAME of an environment variable holding the password
    known_hosts: str = "~/.ssh/known_hosts"
    accept_new_host_key: bool = False
    connect_timeout: Seconds = Seconds(10.0)
    python: str = "python3"
    # the remote machine's Debian architecture, for programs built for it (the go probe); default: this host's
    arch: Optional[str] = None

    def validate(self) -> Optional[Tuple[str, str]]:
        if self.arch is not None and self.arch not in arches.BY_DEBIAN:
            return "arch", "%r is not a known arch, options are %s" % (self.arch, ", ".join(arches.BY_DEBIAN))
        if not self.host:
            return "host", "expected a host name or address"
        if not 0 < self.port < 65536:
            return "port", "expected a port number, got %d" % self.port
        if self.password_env is not None and not self.password_env.replace("_", "").isalnum():
            return "password_env", "expected the name of an environment variable, like SSH_PASSWORD"
        return None


def _place(arg: str, remote_dir: str) -> str:
    """``{dir}`` at the start of an argument becomes the remote directory the files were put in."""
    return remote_dir + arg[len("{dir}"):] if arg.startswith("{dir}") else arg


class SshChannel:
    """A command run on a machine over SSH, and files moved in over SFTP: the ssh backend's way in, and a
    QEMU guest booted from a disk image's (``boot: ssh``).

    ``run`` connects (host key checked as above), makes a fresh remote directory (``mktemp -d``), puts the
    given files there read-only, and runs the command in it under what is left of the deadline, which the
    remote side enforces too (``timeout -s KILL``). ``close`` removes the directory and disconnects; safe
    to call twice.
    """

    def __init__(self, options: SshOptions) -> None:
        self.options = options
        self._client: Any = None
        self._remote_dir: Optional[str] = None

    @property
    def where(self) -> str:
        o = self.options
        return "%s@%s:%d" % (o.user, o.host, o.port)

    # -- connecting ------------------------------------------------------------------------
    def connect(self) -> Any:
        import paramiko

        o = self.options
        c = paramiko.SSHClient()
        known = os.path.expanduser(o.known_hosts)
        hosts = known_hosts.KnownHosts(Path(known))
        name = known_hosts.lookup_name(o.host, o.port)
        # paramiko gets only this host's trusted keys (it then prefers their type when negotiating);
        # everything else is decided by the policy below or after the handshake.
        for entry in hosts.trusted(name):
            try:
                key = paramiko.PKey.from_type_string(entry.keytype, base64.b64decode(entry.key, validate=True))
            except (paramiko.SSHException, ValueError, binascii.Error):
                continue  # a key type paramiko cannot use, or a damaged line: ssh skips those too
            c.get_host_keys().add(name, entry.keytype, key)
        accepted: List[Any] = []
        channel = self

        class Policy(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]  # paramiko has no types
            """A key paramiko was not given: revoked, unknown (refused), or accepted to be appended."""

            def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
                channel._refuse_if_revoked(hosts, key)
                if not o.accept_new_host_key:
                    raise SshError("%s: unknown host key (not in %s): add it with ssh-keyscan, or set "
                                   "accept_new_host_key: true on the target" % (channel.where, known))
                accepted.append(key)

        c.set_missing_host_key_policy(Policy())
        try:
            self._connect(c, hosts)
        except BaseException:
            c.close()
            raise
        if accepted:
            known_hosts.append(Path(known), name, accepted[0].get_name(), accepted[0].get_base64())
        return c

    def _refuse_if_revoked(self, hosts: known_hosts.KnownHosts, key: Any) -> None:
        o = self.options
        entry = hosts.revoked(known_hosts.lookup_name(o.host, o.port), key.get_base64())
        if entry is not None:
            raise SshError("%s: the host key %s %s is REVOKED (%s line %d): refusing to connect"
                           % (self.where, key.get_name(), key.get_fingerprint().hex(), hosts.path, entry.line))

    def _connect(self, c: Any, hosts: known_hosts.KnownHosts) -> None:
        import paramiko

        o = self.options
        password = None
        if o.password_env:
            password = os.environ.get(o.password_env)
            if password is None:
                raise SshError("%s: password_env names %s, which is not set" % (self.where, o.password_env))
        try:
            c.connect(o.host, port=o.port, username=o.user, key_filename=os.path.expanduser(o.key_file)
                      if o.key_file else None, password=password, allow_agent=o.use_agent,
                      look_for_keys=o.key_file is None and password is None, timeout=o.connect_timeout,
                      banner_timeout=o.connect_timeout, auth_timeout=o.connect_timeout)
        except paramiko.BadHostKeyException as e:
            self._refuse_if_revoked(hosts, e.key)  # revoked and replaced: say revoked, not merely changed
            raise SshError("%s: the host key CHANGED (got %s %s, %s has another): refusing to connect; if the "
                           "change is expected, remove the old key with ssh-keygen -R" %
                           (self.where, e.key.get_name(), e.key.get_fingerprint().hex(), hosts.path)) from None
        except paramiko.AuthenticationException as e:
            raise SshError("%s: authentication failed (%s)" % (self.where, e)) from None
        except paramiko.SSHException as e:
            if "banner" in str(e) or "No existing session" in str(e):
                # The port answered, SSH did not (paramiko reports it either way).
                raise SshError("%s: connection timed out: no SSH server answered within %.0fs"
                               % (self.where, o.connect_timeout)) from None
            raise SshError("%s: %s" % (self.where, e)) from None
        except (socket.timeout, TimeoutError):
            raise SshError("%s: connection timed out after %.0fs" % (self.where, o.connect_timeout)) from None
        except paramiko.ssh_exception.NoValidConnectionsError:
            raise SshError("%s: connection refused" % self.where) from None
        except OSError as e:
            raise SshError("%s: %s" % (self.where, e.strerror or e)) from None

    def _exec(self, command: str, timeout: float, sink: Optional[Callable[[bytes], None]] = None,
              on_stdin: Optional[StdinHook] = None
              ) -> Tuple[int, str, str, bool]:
        """Run a remote command with a deadline: (status, stdout, stderr, timed_out). With ``sink``, its
        output (stdout, then stderr as it comes) goes there instead, and the strings are empty."""
        chan = self._client.get_transport().open_session(timeout=timeout)
        chan.settimeout(0.2)
        chan.exec_command(command)
        if on_stdin is not None:
            on_stdin(chan.sendall, chan.close)
        out: List[bytes] = []
        err: List[bytes] = []
        deadline = time.monotonic() + timeout
        while True:
            while chan.recv_ready():
                data = chan.recv(65536)
                if sink:
                    sink(data)
                else:
                    out.append(data)
            while chan.recv_stderr_ready():
                data = chan.recv_stderr(65536)
                if sink:
                    sink(data)
                else:
                    err.append(data)
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if time.monotonic() >= deadline:
                chan.close()
                return -1, b"".join(out).decode(errors="backslashreplace"), \
                    b"".join(err).decode(errors="backslashreplace"), True
            time.sleep(0.02)
        status = chan.recv_exit_status()
        chan.close()
        return status, b"".join(out).decode(errors="backslashreplace"), \
            b"".join(err).decode(errors="backslashreplace"), False

    def run(self, argv: List[str], deadline: Deadline, log_path: Path, files: Dict[str, Path],
            on_line: Optional[Callable[[str], Any]] = None,
            on_stdin: Optional[StdinHook] = None
            ) -> proc.Completed:
        """Put ``files`` (name -> host file) into a fresh remote directory and run ``argv`` there (``{dir}``
        at the start of an argument is that directory); ``on_line`` sees each line of output as it comes."""
        start = time.monotonic()
        self._client = self.connect()
        py = shlex.quote(self.options.python)
        status, out, _, _ = self._exec("command -v %s && mktemp -d /tmp/arena-harness.XXXXXXXX" % py,
                                       min(30.0, deadline.left(at_least=1.0)))
        lines = out.split()
        if status != 0 or len(lines) < 2:
            raise SshError("%s: no %s on the remote: install Python 3 there (apt-get install python3)"
                           % (self.where, self.options.python))
        self._remote_dir = lines[-1]
        sftp = self._client.open_sftp()
        try:
            for name, local in files.items():
                remote = "%s/%s" % (self._remote_dir, name)
                sftp.put(str(local), remote)
                sftp.chmod(remote, probing.file_mode(name, local))
        finally:
            sftp.close()
        remaining = deadline.left(at_least=1.0)
        args = " ".join(shlex.quote(_place(a, self._remote_dir)) for a in argv)
        # The remote side enforces the deadline too, so nothing outlives it there.
        command = "if command -v timeout >/dev/null; then T='timeout -s KILL %d'; else T=; fi; " \
                  "cd %s && PYTHONDONTWRITEBYTECODE=1 exec $T %s" % (
                      int(remaining) + 1, shlex.quote(self._remote_dir), args)
        with open(log_path, "a", encoding="utf-8", errors="backslashreplace") as log:
            log.write("[harness] remote dir %s\n" % self._remote_dir)
            log.write("$ ssh %s %s\n" % (self.where, command))
            # Streamed and capped like any guest's output (stdout and stderr interleaved as they come).
            capture = proc.LineCapture(log, on_line)
            status, _, _, timed_out = self._exec(command, remaining, sink=capture.feed, on_stdin=on_stdin)
            lines = capture.close()
            if timed_out:
                log.write("[harness] deadline of %.1fs reached: channel closed\n" % deadline.seconds)
        return proc.Completed([], None if timed_out else status, time.monotonic() - start, "\n".join(lines),
                              timed_out=timed_out, stopped="timeout" if timed_out else None, lines=lines)

    def close(self) -> None:
        if self._client is not None:
            try:
                if self._remote_dir and self._remote_dir.startswith("/tmp/arena-harness."):
                    self._exec("rm -rf %s" % shlex.quote(self._remote_dir), 30)
            except Exception:  # noqa: BLE001 - the connection may be gone: the remote dir goes with the machine
                pass
            self._client.close()
            self._client = None
            self._remote_dir = None


class SshBackend(Backend[SshOptions]):
    name: ClassVar[str] = "ssh"
    Options: ClassVar[type] = SshOptions
    description: ClassVar[str] = "a machine reached over SSH (paramiko)"
    key_hints: ClassVar[Dict[str, str]] = {
        "password": "a password does not belong in a targets file: use key_file, the agent, or "
                    "password_env: NAME_OF_AN_ENVIRONMENT_VARIABLE",
    }

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self._channel: Optional[SshChannel] = None

    def missing(self) -> Optional[ToolMissing]:
        try:
            import paramiko  # noqa: F401
        except ImportError:
            return ToolMissing(self.name, "the paramiko Python package", "pip install 'arena-harness[ssh]'")
        return None

    def guest_arch(self) -> str:
        return self.options.arch or super().guest_arch()

    # -- the lifecycle --------------------------------------------------------------------------
    @property
    def where(self) -> str:
        o = self.options
        return "%s@%s:%d" % (o.user, o.host, o.port)

    def execute(self, ctx: RunContext) -> proc.Completed:
        self._channel = SshChannel(self.options)
        agent = [self.options.python] + self.agent_args("{dir}") + self.serve_args(ctx)
        return self._channel.run(agent, ctx.deadline, ctx.log_path, ctx.files, on_line=ctx.on_line,
                                 on_stdin=ctx.on_stdin)

    def shutdown(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        super().shutdown()
