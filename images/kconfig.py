"""Kernel config fragments: their syntax, merging them into a .config, and why an option did not stick.

A fragment is a list of ``NAME=value`` items (``ARM64_VA_BITS_39=y``, ``NR_CPUS=4``,
``CMDLINE="quiet"``; a leading ``CONFIG_`` is accepted and dropped). Merged like
the kernel's ``merge_config.sh``: a later item replaces an earlier one of the same
name, and a choice member set later wins over one set earlier (kconfig warns
"override: ... changes choice state" and keeps the last).

``olddefconfig`` silently drops what it cannot honour (``9P_FS`` without ``INET``),
so every option asked for is checked against the final .config, and one that did
not stick is explained from the Kconfig files themselves: the conditions it
depends on that are off in the final .config (with file and line), a missing
prompt, the options that select it, or that this architecture does not have it.
A small reader of the Kconfig language (:class:`Index`) is enough for that: it
knows blocks, ``if``/``menu``/``choice`` nesting, ``depends on``, prompts with
``if``, ``select``; help texts are skipped. It does not follow ``source``, so a
condition of a block that sources a file from another file is not seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

OPTION_RE = re.compile(r'(?:CONFIG_)?([A-Za-z0-9_]+)=(y|n|m|-?[0-9]+|0x[0-9A-Fa-f]+|"[^"\\]*")')
NAME_MAX = 64


def parse_option(text: str) -> Tuple[str, str]:
    """``(NAME, value)`` of one fragment item; ValueError saying what is expected."""
    m = OPTION_RE.fullmatch(text.strip())
    if m is None or len(m.group(1)) > NAME_MAX:
        raise ValueError('expected NAME=VALUE with VALUE y, n, m, a number or a "quoted string" '
                         '(like ARM64_VA_BITS_39=y)')
    return m.group(1), m.group(2)


def normalize(text: str) -> str:
    """A fragment item as it is keyed and shown: ``NAME=value``, without ``CONFIG_``."""
    return "%s=%s" % parse_option(text)


def config_values(text: str) -> Dict[str, str]:
    """The symbols a .config sets: NAME -> value (``n`` for ``# CONFIG_NAME is not set``)."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            name, value = line[len("CONFIG_"):].split("=", 1)
            out[name] = value
        else:
            m = re.fullmatch(r"# CONFIG_([A-Za-z0-9_]+) is not set", line)
            if m:
                out[m.group(1)] = "n"
    return out


def merge(config: str, options: Iterable[str]) -> str:
    """``config`` with each option written last in place of any earlier line for its name."""
    lines = config.splitlines()
    for item in options:
        name, value = parse_option(item)
        own = re.compile(r"(CONFIG_%s=.*|# CONFIG_%s is not set)" % (name, name))
        lines = [ln for ln in lines if not own.fullmatch(ln)]
        lines.append("# CONFIG_%s is not set" % name if value == "n" else "CONFIG_%s=%s" % (name, value))
    return "\n".join(lines) + "\n"


# -- the Kconfig files ------------------------------------------------------------------------


@dataclass
class Definition:
    """One ``config NAME`` block: where it is, and what it takes for the option to be settable."""

    name: str
    path: str  # relative to the source tree
    line: int
    conditions: List["Condition"] = field(default_factory=list)
    prompt: bool = False
    choice: Optional[Tuple[str, int]] = None  # the enclosing choice block: (path, line)
    selects: List[Tuple[str, str]] = field(default_factory=list)  # (NAME selected, "if" condition or "")


@dataclass(frozen=True)
class Condition:
    """What an option takes to be settable: ``kind`` is "depends on", "if" (an enclosing if block), "menu"
    or "choice" (an enclosing one's depends on), or "prompt" (its prompt's if)."""

    kind: str
    expr: str
    path: str
    line: int

    def said(self) -> str:
        return {"depends on": "it depends on %s", "if": "it is inside `if %s`", "menu": "its menu depends on %s",
                "choice": "its choice depends on %s", "prompt": "its prompt shows only if %s"}[self.kind] % self.expr


@dataclass
class _Frame:
    kind: str  # if, menu, choice
    conditions: List[Condition]
    where: Tuple[str, int]


_BLOCK_WORDS = {"config", "menuconfig", "choice", "endchoice", "menu", "endmenu", "if", "endif", "source",
                "rsource", "osource", "orsource", "comment", "mainmenu"}
_TYPES = {"bool", "tristate", "string", "int", "hex", "prompt"}


def _indent(line: str) -> int:
    return len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())


class Index:
    """Every ``config`` block an architecture reads, by name: the Kconfig files read the way kconfig reads
    them, from the top-level ``Kconfig`` through each ``source`` (``$(SRCARCH)`` expanded), so a block
    inherits the ``if``, ``menu`` and ``choice`` conditions of the files that source it."""

    def __init__(self, tree: Path, srcarch: str) -> None:
        self.tree = tree
        self.srcarch = srcarch
        self.defs: Dict[str, List[Definition]] = {}
        self._seen: Set[Path] = set()
        self._read(tree / "Kconfig", [])

    def _lines(self, path: Path) -> List[Tuple[int, str]]:
        """(line number, text) with backslash continuations joined onto their first line."""
        out: List[Tuple[int, str]] = []
        pending: Optional[Tuple[int, str]] = None
        for n, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pending is not None:
                raw = pending[1] + " " + raw.strip()
                n = pending[0]
                pending = None
            if raw.endswith("\\"):
                pending = (n, raw[:-1].rstrip())
                continue
            out.append((n, raw))
        if pending is not None:
            out.append(pending)
        return out

    def _read(self, path: Path, inherited: List[_Frame]) -> None:
        if not path.is_file() or path in self._seen:
            return
        self._seen.add(path)
        rel = str(path.relative_to(self.tree))
        stack: List[_Frame] = list(inherited)
        current: Optional[Definition] = None
        frame: Optional[_Frame] = None  # a menu or choice whose attributes follow
        help_indent: Optional[int] = None
        for n, raw in self._lines(path):
            text = raw.strip()
            if help_indent is not None:
                if not text or _indent(raw) > help_indent:
                    continue
                help_indent = None
            if not text or text.startswith("#"):
                continue
            word, _, rest = text.partition(" ")
            rest = rest.strip()
            if word in _BLOCK_WORDS:
                current, frame = None, None
            if word in ("config", "menuconfig"):
                choice = next((f.where for f in reversed(stack) if f.kind == "choice"), None)
                current = Definition(rest, rel, n, [c for f in stack for c in f.conditions], choice=choice)
                self.defs.setdefault(rest, []).append(current)
            elif word in ("choice", "menu"):
                frame = _Frame(word, [], (rel, n))
                stack.append(frame)
            elif word == "if":
                stack.append(_Frame("if", [Condition("if", rest, rel, n)], (rel, n)))
            elif word in ("endchoice", "endmenu", "endif") and len(stack) > len(inherited):
                stack.pop()
            elif word in ("source", "rsource", "osource", "orsource"):
                name = rest.strip('"').replace("$(SRCARCH)", self.srcarch)
                base = path.parent if word.startswith(("r", "or")) else self.tree
                for sub in sorted(base.glob(name)) if "*" in name else [base / name]:
                    self._read(sub, stack)
            elif word in ("help", "---help---"):
                help_indent = _indent(raw)
            elif text.startswith("depends on "):
                expr = text[len("depends on "):].strip()
                if current is not None:
                    current.conditions.append(Condition("depends on", expr, rel, n))
                elif frame is not None:
                    frame.conditions.append(Condition(frame.kind, expr, rel, n))
            elif current is not None and word in _TYPES:
                m = re.match(r'"(?:[^"\\]|\\.)*"(?:\s+if\s+(.+))?$', rest)
                if m:
                    current.prompt = True
                    if m.group(1):
                        current.conditions.append(Condition("prompt", m.group(1).strip(), rel, n))
            elif current is not None and word == "select":
                target, _, cond = rest.partition(" if ")
                current.selects.append((target.strip(), cond.strip()))

    def definitions(self, name: str) -> List[Definition]:
        """The blocks of ``name`` this architecture reads."""
        return self.defs.get(name, [])

    def elsewhere(self, name: str) -> List[str]:
        """The other architectures' Kconfig files that define ``name`` (read only to say so)."""
        pattern = re.compile(r"^\s*(?:menu)?config\s+%s\s*$" % re.escape(name), re.M)
        return sorted(str(p.relative_to(self.tree)) for p in (self.tree / "arch").glob("*/Kconfig*")
                      if p.is_file() and p.parent.name != self.srcarch
                      and pattern.search(p.read_text(errors="replace")))

    def choice(self, name: str) -> Optional[Tuple[str, int]]:
        return next((d.choice for d in self.definitions(name) if d.choice), None)

    def selectors(self, name: str) -> List[Tuple[str, str]]:
        """(option, condition) of every block this architecture reads that selects ``name``."""
        return [(d.name, cond) for ds in self.defs.values() for d in ds for target, cond in d.selects
                if target == name]


# -- expressions ----------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(&&|\|\||!=|<=|>=|[!()=<>]|"[^"]*"|[A-Za-z0-9_]+)')
_TRI = {"n": 0, "m": 1, "y": 2}


class _Expr:
    """A Kconfig expression's tristate value (0 n, 1 m, 2 y) against a .config's values."""

    def __init__(self, text: str, values: Mapping[str, str]) -> None:
        self.values = values
        self.tokens: List[str] = []
        pos = 0
        while pos < len(text.rstrip()):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ValueError(text)
            self.tokens.append(m.group(1))
            pos = m.end()
        self.i = 0

    def value(self) -> int:
        v = self._or()
        if self.i != len(self.tokens):
            raise ValueError("trailing %s" % self.tokens[self.i])
        return v

    def _peek(self) -> Optional[str]:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _take(self) -> str:
        if self.i >= len(self.tokens):
            raise ValueError("unexpected end")
        self.i += 1
        return self.tokens[self.i - 1]

    def _or(self) -> int:
        v = self._and()
        while self._peek() == "||":
            self._take()
            v = max(v, self._and())
        return v

    def _and(self) -> int:
        v = self._not()
        while self._peek() == "&&":
            self._take()
            v = min(v, self._not())
        return v

    def _not(self) -> int:
        if self._peek() == "!":
            self._take()
            return 2 - self._not()
        if self._peek() == "(":
            self._take()
            v = self._or()
            if self._take() != ")":
                raise ValueError("unbalanced")
            return v
        left = self._atom()
        if self._peek() in ("=", "!=", "<", ">", "<=", ">="):
            op = self._take()
            right = self._atom()
            return 2 if _compare(left, op, right) else 0
        return _TRI.get(left, 0)

    def _atom(self) -> str:
        tok = self._take()
        if tok.startswith('"'):
            return tok[1:-1]
        if tok in _TRI or re.fullmatch(r"-?[0-9]+|0x[0-9A-Fa-f]+", tok):
            return tok
        return self.values.get(tok, "n").strip('"')


def _compare(a: str, op: str, b: str) -> bool:
    """Kconfig's comparison: numbers as numbers when both sides are, else as strings."""
    x: Union[int, str]
    y: Union[int, str]
    try:
        x, y = int(a, 0), int(b, 0)
    except ValueError:
        x, y = a, b
    if op in ("=", "!="):
        return (x == y) == (op == "=")
    if isinstance(x, int) != isinstance(y, int):
        x, y = str(x), str(y)
    less, more = x < y, x > y  # type: ignore[operator]  # same types, by the line above
    return {"<": less, ">": more, "<=": not more, ">=": not less}[op]


def evaluate(expr: str, values: Mapping[str, str]) -> Optional[int]:
    """The tristate value of ``expr`` (0, 1, 2), or None for an expression this reader cannot parse."""
    try:
        return _Expr(expr, values).value()
    except (ValueError, IndexError):
        return None


def _symbols(expr: str) -> List[str]:
    names = [t for t in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", re.sub(r'"[^"]*"', "", expr)) if t not in _TRI]
    return list(dict.fromkeys(names))


# -- why an option did not stick --------------------------------------------------------------------


def requested(base: Sequence[str], fragment: Sequence[str], index: Optional[Index]) -> Dict[str, str]:
    """What the final .config must have: NAME -> value, the fragment's over the base's. A fragment's choice
    member set to y displaces the base's member of the same choice (the fragment's ARM64_VA_BITS_39=y
    replaces the base's ARM64_VA_BITS_48=y), which ``index`` tells."""
    out: Dict[str, str] = dict(parse_option(o) for o in base)
    for item in fragment:
        name, value = parse_option(item)
        choice = index.choice(name) if index is not None and value == "y" else None
        if choice is not None:
            for other in [n for n, v in out.items() if v == "y" and n != name]:
                if index is not None and index.choice(other) == choice:
                    del out[other]
        out.pop(name, None)
        out[name] = value
    return out


def unmet(wanted: Mapping[str, str], final: Mapping[str, str]) -> List[Tuple[str, str]]:
    """(NAME, value asked) of every option the final .config does not have as asked."""
    return [(name, value) for name, value in wanted.items() if final.get(name, "n") != value]


def explain(name: str, value: str, final: Mapping[str, str], index: Index, source: str) -> str:
    """Why ``NAME=value`` is not in the final .config, in one clause, from the Kconfig files."""
    got = final.get(name, "n")
    defs = index.definitions(name)
    if not defs:
        other = index.elsewhere(name)
        if other:
            return "%s is not an option of this architecture (it is defined in %s only)" % (name, ", ".join(other))
        return "%s is not an option of %s (a typo?)" % (name, source)
    if value != "n" and got == "n" or value == "y" and got == "m":
        reasons = []
        for d in defs:
            for c in d.conditions:
                v = evaluate(c.expr, final)
                if v is not None and v < _TRI.get(value, 1):
                    shown = ", ".join("%s=%s" % (s, final.get(s, "n")) for s in _symbols(c.expr))
                    reasons.append("%s (%s:%d), and here %s" % (c.said(), c.path, c.line, shown))
        if reasons:
            return "; ".join(dict.fromkeys(reasons))
        if not any(d.prompt for d in defs):
            return "it has no prompt (%s:%d): only another option's select turns it on" % (defs[0].path,
                                                                                             defs[0].line)
        if any(d.choice for d in defs):
            return "another member of its choice (%s:%d) won: set only one of them" % (defs[0].choice or ("", 0))
        return "its conditions look met here; see %s:%d" % (defs[0].path, defs[0].line)
    if value == "n":
        on = [(s, c) for s, c in index.selectors(name) if final.get(s, "n") in ("y", "m")
              and (not c or (evaluate(c, final) or 0) > 0)]
        if on:
            return "it is selected by %s" % ", ".join("%s (on here)" % s for s, _ in on)
        if not any(d.prompt for d in defs):
            return "it has no prompt (%s:%d): it cannot be turned off" % (defs[0].path, defs[0].line)
    if value == "m" and final.get("MODULES", "n") != "y":
        return "the final .config has %s=%s: modules are off (MODULES=n), use y" % (name, got)
    return "the final .config has %s=%s (see %s:%d)" % (name, got, defs[0].path, defs[0].line)
