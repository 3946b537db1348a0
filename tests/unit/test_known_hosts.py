"""known_hosts parsing and matching (the ssh backend's tests check the same against a real sshd)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

from harness import known_hosts
from harness.known_hosts import CERT_AUTHORITY, REVOKED, Entry, host_matches, lookup_name, parse

TEXT = """\
# comment
   # indented comment

@cert-authority *.example.org ssh-ed25519 AAAAca
@revoked * ssh-rsa AAAArevoked
@unknown-marker h ssh-ed25519 AAAAx
only-two fields
h1,h2 ssh-ed25519 AAAAplain trailing comment
"""


def test_parse_keeps_key_lines_with_their_markers_and_numbers() -> None:
    assert parse(TEXT) == [
        Entry(CERT_AUTHORITY, "*.example.org", "ssh-ed25519", "AAAAca", 4),
        Entry(REVOKED, "*", "ssh-rsa", "AAAArevoked", 5),
        Entry(None, "h1,h2", "ssh-ed25519", "AAAAplain", 8),
    ]


def test_patterns_match_like_openssh() -> None:
    assert lookup_name("h", 22) == "h" and lookup_name("10.0.0.1", 2222) == "[10.0.0.1]:2222"
    assert host_matches("h1,h2", "h2") and not host_matches("h1,h2", "h3")
    assert host_matches("*.Example.ORG", "ci.example.org")  # case-insensitive
    assert host_matches("[10.0.0.?]:2222", "[10.0.0.7]:2222")  # brackets are literal, not a character class
    assert not host_matches("[10.0.0.1]:2222", "1")
    assert not host_matches("*,!bad", "bad") and host_matches("*,!bad", "good")
    salt = b"0123456789abcdefghij"
    digest = hmac.new(salt, b"[10.0.0.1]:2222", hashlib.sha1).digest()
    hashed = "|1|%s|%s" % (base64.b64encode(salt).decode(), base64.b64encode(digest).decode())
    assert host_matches(hashed, "[10.0.0.1]:2222") and not host_matches(hashed, "10.0.0.1")
    assert not host_matches("|1|not base64!|x", "h")


def test_trusted_and_revoked(tmp_path: Path) -> None:
    f = tmp_path / "known_hosts"
    f.write_text("h ssh-ed25519 AAAAgood\nh ssh-rsa AAAArevoked\n@revoked h ssh-rsa AAAArevoked\n")
    kh = known_hosts.KnownHosts(f)
    assert [e.key for e in kh.trusted("h")] == ["AAAAgood"]
    assert kh.revoked("h", "AAAArevoked") == Entry(REVOKED, "h", "ssh-rsa", "AAAArevoked", 3)
    assert kh.revoked("other", "AAAArevoked") is None and kh.revoked("h", "AAAAgood") is None
    assert known_hosts.KnownHosts(tmp_path / "missing").entries == []


def test_append_adds_one_line_and_nothing_else(tmp_path: Path) -> None:
    f = tmp_path / "ssh" / "known_hosts"
    known_hosts.append(f, "[h]:2222", "ssh-ed25519", "AAAAnew")
    assert f.read_bytes() == b"[h]:2222 ssh-ed25519 AAAAnew\n" and f.stat().st_mode & 0o777 == 0o600
    f.write_bytes(b"# mine\n\xff odd bytes kept\nno final newline")
    known_hosts.append(f, "h", "ssh-rsa", "AAAAx")
    assert f.read_bytes() == b"# mine\n\xff odd bytes kept\nno final newline\nh ssh-rsa AAAAx\n"
