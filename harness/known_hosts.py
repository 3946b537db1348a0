"""known_hosts files as OpenSSH reads them, and new keys appended without rewriting anything.

paramiko's own loader stops at lines it does not understand (a
``@cert-authority`` line raises InvalidHostKey for the whole file) and its
saver rewrites the file from what it parsed, dropping comments and every line
it skipped. Here the file is only read, line by line, and a new key is
appended as one line; every other byte stays as it was.

Understood, as in sshd(8)'s "SSH_KNOWN_HOSTS FILE FORMAT": comments and blank
lines; host patterns with ``*``, ``?`` and ``!`` negation, ``[host]:port``, and
hashed names (``|1|salt|hash``); the markers ``@revoked`` (that key must never
be accepted for the hosts the patterns match; ``*`` for all) and
``@cert-authority`` (host certificates, which paramiko does not negotiate: such
lines are skipped, and plain keys are checked as usual). Lines with an unknown
marker or an unknown key type are skipped, as ssh does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from harness.inputs import MiB, read_text

REVOKED = "@revoked"
CERT_AUTHORITY = "@cert-authority"
MAX_BYTES = 16 * MiB


@dataclass(frozen=True)
class Entry:
    """One key line: its marker (None for a plain key), host patterns, key type and base64 key."""

    marker: Optional[str]
    patterns: str
    keytype: str
    key: str
    line: int

    def matches(self, host: str) -> bool:
        """Whether this line's patterns match ``host`` (``name``, or ``[name]:port`` off port 22)."""
        return host_matches(self.patterns, host)


def lookup_name(host: str, port: int) -> str:
    """The name a host is looked up (and saved) under: ``host``, or ``[host]:port`` off port 22."""
    return host if port == 22 else "[%s]:%d" % (host, port)


def _glob(pattern: str, name: str) -> bool:
    # OpenSSH's match_pattern: only * and ? are special (brackets are literal, as in [host]:port).
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name) is not None


def host_matches(patterns: str, host: str) -> bool:
    host = host.lower()
    if patterns.startswith("|1|"):
        try:
            salt, digest = (base64.b64decode(p, validate=True) for p in patterns[3:].split("|", 1))
        except (ValueError, binascii.Error):
            return False
        return hmac.compare_digest(hmac.new(salt, host.encode(), hashlib.sha1).digest(), digest)
    matched = False
    for pattern in patterns.lower().split(","):
        negated = pattern.startswith("!")
        if _glob(pattern[1:] if negated else pattern, host):
            if negated:
                return False  # a negated match wins over any other pattern on the line
            matched = True
    return matched


def parse(text: str) -> List[Entry]:
    """The key lines of a known_hosts file (comments, blank and malformed lines skipped)."""
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = None
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
            if marker not in (REVOKED, CERT_AUTHORITY):
                continue
        if len(fields) < 3:
            continue
        entries.append(Entry(marker, fields[0], fields[1], fields[2], number))
    return entries


class KnownHosts:
    """A known_hosts file, read once (a missing file knows no host)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        text = ""
        if path.exists():
            # Lenient decoding: a stray byte spoils its own line, not the file.
            text = read_text(path, "known_hosts files", MAX_BYTES, errors="replace")
        self.entries = parse(text)

    def trusted(self, host: str) -> List[Entry]:
        """The plain keys known for ``host``, less any a ``@revoked`` line revokes."""
        revoked = {e.key for e in self.entries if e.marker == REVOKED and e.matches(host)}
        return [e for e in self.entries if e.marker is None and e.key not in revoked and e.matches(host)]

    def revoked(self, host: str, key_base64: str) -> Optional[Entry]:
        """The ``@revoked`` line that revokes this key for ``host``, if any."""
        return next((e for e in self.entries if e.marker == REVOKED and e.key == key_base64 and e.matches(host)),
                    None)


def append(path: Path, host: str, keytype: str, key_base64: str) -> None:
    """Add one ``host keytype key`` line at the end of the file (created 0600 if missing); nothing
    else is written."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(str(path), os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "r+b") as f:
        size = os.fstat(fd).st_size
        head = b""
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                head = b"\n"  # the last line has no newline: end it rather than join the new key to it
        f.write(head + ("%s %s %s\n" % (host, keytype, key_base64)).encode("ascii"))
