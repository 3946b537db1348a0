"""Targets files: YAML parsed once into frozen dataclasses, every error naming file:line, target and key.

A target has the common keys below; every other key is an option of its
backend, checked against that backend's ``Options`` dataclass::

    targets:
      - name: uml
        backend: uml
        memory: 256M            # a uml option
        timeout: 60s
        expect:
          go-2012: fallback-32bit
          go-2012-pre: "crash: runtime: out of memory"
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import math
import os
import re
import shutil
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from allocator.probe import OUTCOMES, POLICIES
from allocator.runtime import PlanError, parse_grow
from allocator.simulated import parse_size
from harness import backends
from harness.errors import ConfigError, UsageError
from harness.inputs import MAX_TARGETS_BYTES, read_text
from harness.model import (
    BUILTIN_PROBES,
    DEBIAN,
    DEBIAN_NAME_RE,
    DEFAULT_TIMEOUT,
    DIRECTORY,
    FILE,
    ITEM,
    MODEL_PROBES,
    PROGRAM,
    QUOTE_MAX,
    Expectation,
    Group,
    Probe,
    Seconds,
    Size,
    Target,
    TargetSet,
    quote,
)

DEFAULT_TARGETS = "targets.yaml"
# A target's name becomes file names (logs, locks, umids) and table rows: a short, safe token.
NAME_MAX = 64
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,%d}" % (NAME_MAX - 1))
MAX_TARGETS = 1000
MAX_SECONDS = 7 * 24 * 3600.0  # timeouts and watchdogs: finite, and at most a week
MAX_SIZE = 1 << 60  # sizes: positive, and at most 1 EiB (RLIMIT_AS and guest memory fit in 64 bits)
MAX_INT = (1 << 63) - 1


# -- YAML with line numbers ------------------------------------------------------------


class _Map(dict):  # type: ignore[type-arg]
    """A mapping that remembers the line of each key (1-based)."""

    line: int = 0
    key_lines: Dict[str, int]


class _Seq(list):  # type: ignore[type-arg]
    line: int = 0
    item_lines: List[int]


class _Loader(yaml.SafeLoader):
    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as e:
            # PyYAML lets these through from its scalar constructors: a 5000-digit int, 0x... too big for a
            # float, a date like 2001-13-45. The message names the kind of problem, not the value.
            raise ConfigError("not valid YAML: a value that cannot be read (%s)" % quote(str(e), 60),
                              line=node.start_mark.line + 1) from None


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    m = _Map()
    m.line = node.start_mark.line + 1
    m.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            key = str(key)
        if key in m:
            raise ConfigError("duplicate key", line=key_node.start_mark.line + 1, key=key_name(key))
        m[key] = loader.construct_object(value_node, deep=True)
        m.key_lines[key] = key_node.start_mark.line + 1
    return m


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    s = _Seq(loader.construct_object(n, deep=True) for n in node.value)
    s.line = node.start_mark.line + 1
    s.item_lines = [n.start_mark.line + 1 for n in node.value]
    return s


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)




COMMON_KEYS = {
    "name": "the target's unique name",
    "backend": "which backend runs it",
    "description": "one line for humans",
    "expect": "policy -> expected outcome",
    "markers": "extra pytest markers",
    "timeout": "deadline for the whole boot and probe, like 60s",
    "probes": "what runs in it: model policies, go, jvm, or {name, program, args} (default: the model's policies)",
    "policies": "the model's policies to run (the older spelling of probes:)",
    "grow": "the allocator's growth plan, like 64M*8,sysalloc:64M",
    "touch_every": "touch one page per SIZE mapped",
    "rlimit_as": "RLIMIT_AS for the allocator, like 1G",
    "watchdog": "stop a guest that prints nothing for this long, like 30s",
}


# -- conversion ------------------------------------------------------------------------------


class _Ctx:
    def __init__(self, path: str, target: str = "") -> None:
        self.path = path
        self.target = target

    def error(self, line: Optional[int], key: str, message: str) -> ConfigError:
        return ConfigError(message, path=self.path, line=line, target=self.target, key=key)


_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,%d}" % QUOTE_MAX)


def key_name(key: str) -> str:
    """A key as an error shows it: a name is quoted; anything else is only described, since a file that
    is not a targets file at all (``/etc/shadow`` read as YAML is one mapping whose key is the whole
    first line) must not have its content printed."""
    if _KEY_RE.fullmatch(key):
        return key
    return "<a key of %d characters that is not a name>" % len(key)


def did_you_mean(key: object, known: List[str]) -> str:
    """``"did you mean memory? "`` for a key one typo away from a known one (difflib's closest, as for
    unknown target names), else nothing. Only for a key that is a name (see :func:`key_name`)."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        return ""
    close = difflib.get_close_matches(key, known, n=1)
    return "did you mean %s? " % close[0] if close else ""


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return '"%s"' % quote(value)
    if value is None:
        return "nothing"
    if isinstance(value, (dict, list)):
        return "a %s" % ("mapping" if isinstance(value, dict) else "list")
    if isinstance(value, int) and value.bit_length() > 128:  # repr() refuses ints of over 4300 digits
        return "a number of %d bits" % value.bit_length()
    if isinstance(value, datetime.date):  # YAML reads 2024-01-01 as a date
        return "a date (%s)" % value.isoformat()
    return quote(repr(value))


def _as_float(value: "int | float") -> float:
    """A YAML number as a float; an int too big for one (0xfff... of any length) is infinite."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def duration(text: str, what: str) -> Seconds:
    """A duration given on the command line (``--timeout 90s``); a UsageError naming ``what`` if it is not one."""
    try:
        value: Seconds = convert(text, Seconds, _Ctx(what), None, what)
    except ConfigError as e:
        raise UsageError("%s: %s" % (what, e.message)) from None
    if value <= 0:
        raise UsageError("%s: expected a positive duration, like 60s" % what)
    return value


def size(text: str, what: str) -> Size:
    """A size given on the command line (``--from 4G``, ``--to 0xf000000000``), read as a targets file reads
    one; a UsageError naming ``what`` if it is not one."""
    try:
        value: Size = convert(text, Size, _Ctx(what), None, what)
    except ConfigError as e:
        raise UsageError("%s: %s" % (what, e.message)) from None
    return value


def convert(value: Any, typ: Any, ctx: _Ctx, line: Optional[int], key: str) -> Any:
    """Check and convert one value to an option type; errors say what was expected."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return convert(value, inner, ctx, line, key)
    if typ is Size:
        if isinstance(value, str) and len(value) <= QUOTE_MAX:
            try:
                size = parse_size(value)
            except (ValueError, OverflowError):
                pass
            else:
                if 0 < size <= MAX_SIZE:
                    return Size(size)
                raise ctx.error(line, key, "expected a size above 0 and at most 1 EiB, got %s" % _describe(value))
        raise ctx.error(line, key, 'expected a size like "256M", got %s' % _describe(value))
    if typ is Seconds:
        secs: Optional[float] = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            secs = _as_float(value)
        elif isinstance(value, str):
            m = re.fullmatch(r"\s*([0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})\s*(ms|s|m|h)?\s*", value)
            if m:
                scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2) or "s"]
                secs = float(m.group(1)) * scale
        if secs is not None:
            # .inf would mean no deadline at all and .nan compares false with every deadline.
            if math.isfinite(secs) and 0 < secs <= MAX_SECONDS:
                return Seconds(secs)
            raise ctx.error(line, key, "expected a duration above 0 and at most 7 days, got %s" % _describe(value))
        raise ctx.error(line, key, 'expected a duration like "60s" or "2m", got %s' % _describe(value))
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ctx.error(line, key, "expected true or false, got %s" % _describe(value))
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_INT:
            return value
        raise ctx.error(line, key, "expected a whole number, got %s" % _describe(value))
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(_as_float(value)):
            return float(value)
        raise ctx.error(line, key, "expected a number, got %s" % _describe(value))
    if typ is str:
        if isinstance(value, str):
            return value
        raise ctx.error(line, key, "expected a string, got %s" % _describe(value))
    if origin in (tuple, list) and args:
        if not isinstance(value, list):
            raise ctx.error(line, key, "expected a list, got %s" % _describe(value))
        lines = getattr(value, "item_lines", [line] * len(value))
        return tuple(convert(v, args[0], ctx, ln, key) for v, ln in zip(value, lines))
    raise TypeError("unsupported option type %r for %s" % (typ, key))  # a backend bug, not user input


def _host_path_problem(f: "dataclasses.Field[Any]", value: Any) -> Optional[str]:
    """Why an explicitly set program, file or directory (see PROGRAM) cannot be used here, or None."""
    if isinstance(value, tuple):  # a list of Debian names (packages:): each one checked
        return next((p for p in (_host_path_problem(f, v) for v in value) if p), None)
    if not isinstance(value, str):
        return None
    shown = quote(value, 200)
    if DEBIAN in f.metadata and not DEBIAN_NAME_RE.fullmatch(value):
        return "expected %s: lower-case letters, digits, '.', '+' and '-', like bookworm, got %s" % (
            f.metadata[DEBIAN], _describe(value))
    if PROGRAM in f.metadata and shutil.which(value) is None:
        where = "" if "/" in value else " on PATH"
        return "no such program%s: %s (install %s, or fix the path)" % (where, shown, f.metadata[PROGRAM])
    if FILE in f.metadata and not os.path.isfile(os.path.expanduser(value)):
        return "no such file: %s (%s)" % (shown, f.metadata[FILE])
    if DIRECTORY in f.metadata and not os.path.isdir(value):
        return "no such directory: %s (%s)" % (shown, f.metadata[DIRECTORY])
    return None


def _options(backend_cls: Any, raw: Dict[str, Any], lines: Dict[str, int], ctx: _Ctx) -> Any:
    opt_cls = backend_cls.Options
    hints = typing.get_type_hints(opt_cls, vars(__import__(opt_cls.__module__, fromlist=["_"])))
    fields = {f.name: f for f in dataclasses.fields(opt_cls)}
    kwargs: Dict[str, Any] = {}
    for key, value in raw.items():
        kwargs[key] = convert(value, hints[key], ctx, lines.get(key), key)
        problem = _host_path_problem(fields[key], kwargs[key])
        if problem:
            raise ctx.error(lines.get(key), key, problem)
        check_item = fields[key].metadata.get(ITEM)
        if check_item is not None:
            item_lines = getattr(value, "item_lines", [])
            for i, item in enumerate(kwargs[key]):
                problem = check_item(item)
                if problem:
                    raise ctx.error(item_lines[i] if i < len(item_lines) else lines.get(key), key,
                                    "%s: %s" % (_describe(item), problem))
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ctx.error(None, missing[0], "required by the %s backend" % backend_cls.name)
    opts = opt_cls(**kwargs)
    check = getattr(opts, "validate", None)
    if check is not None:
        problem = check()
        if problem:
            key, message = problem
            raise ctx.error(lines.get(key), key, message)
    return opts


def _target(raw: Any, line: int, defaults: Mapping[str, Any], ctx: _Ctx, seen: Dict[str, int]) -> Target:
    if not isinstance(raw, dict):
        raise ctx.error(line, "targets", "each target must be a mapping with name: and backend:, got %s"
                        % _describe(raw))
    key_lines: Dict[str, int] = dict(getattr(defaults, "key_lines", {}))
    key_lines.update(getattr(raw, "key_lines", {}))
    merged: Dict[str, Any] = dict(defaults)
    merged.update(raw)
    name = merged.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ctx.error(key_lines.get("name", line), "name",
                        "expected a name of 1 to %d letters, digits, '.', '_' or '-', beginning with a letter or "
                        "digit, got %s" % (NAME_MAX, _describe(name)))
    ctx.target = name
    if name in seen:
        raise ctx.error(key_lines.get("name", line), "name", "duplicate target name (first at line %d)" % seen[name])
    seen[name] = key_lines.get("name", line)
    backend_name = merged.get("backend")
    if not isinstance(backend_name, str):
        raise ctx.error(key_lines.get("backend", line), "backend",
                        "expected one of %s, got %s" % (", ".join(backends.names()), _describe(backend_name)))
    try:
        backend_cls = backends.get(backend_name)
    except KeyError:
        raise ctx.error(key_lines.get("backend", line), "backend",
                        "unknown backend '%s'; known: %s" % (quote(backend_name), ", ".join(backends.names()))
                        ) from None
    option_names = [f.name for f in dataclasses.fields(backend_cls.Options)]
    opt_raw: Dict[str, Any] = {}
    for key in merged:
        if key in COMMON_KEYS:
            continue
        if key not in option_names:
            hint = getattr(backend_cls, "key_hints", {}).get(key)
            if hint:
                raise ctx.error(key_lines.get(key, line), key_name(key), hint)
            allowed = sorted(COMMON_KEYS) + sorted(option_names)
            raise ctx.error(key_lines.get(key, line), key_name(key), "unknown key for a %s target; %sknown keys: %s"
                            % (backend_name, did_you_mean(key, allowed), ", ".join(allowed)))
        opt_raw[key] = merged[key]
    options = _options(backend_cls, opt_raw, key_lines, ctx)

    def kl(k: str) -> int:
        return key_lines.get(k, line)

    probes = _probes(merged, kl, ctx)
    expect: List[Tuple[str, Expectation]] = []
    raw_expect = merged.get("expect", {}) or {}
    if not isinstance(raw_expect, dict):
        raise ctx.error(kl("expect"), "expect", "expected a mapping of policy: outcome, got %s" % _describe(raw_expect))
    exp_lines = getattr(raw_expect, "key_lines", {})
    for policy, text in raw_expect.items():
        pline = exp_lines.get(policy, kl("expect"))
        known = list(dict.fromkeys([p.name for p in probes] + list(BUILTIN_PROBES)))
        if policy not in known:
            shown = key_name(policy)
            close = difflib.get_close_matches(policy, known, n=1) if shown == policy else []
            raise ctx.error(pline, "expect", "unknown probe %s; %sknown: %s"
                            % ("'%s'" % shown if shown == policy else shown,
                               "did you mean %s? " % close[0] if close else "", ", ".join(known)))
        if not isinstance(text, str):
            raise ctx.error(pline, "expect.%s" % policy, "expected an outcome (%s, or \"crash: <message>\"), got %s"
                            % (", ".join(OUTCOMES), _describe(text)))
        exp = Expectation.parse(text)
        if exp.outcome not in OUTCOMES:
            raise ctx.error(pline, "expect.%s" % policy,
                            "expected one of %s (or \"crash: <message>\"), got %s"
                            % (", ".join(OUTCOMES), _describe(text)))
        expect.append((policy, exp))
    markers = convert(merged.get("markers", []) or [], Tuple[str, ...], ctx, kl("markers"), "markers")
    for m in markers:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", m):
            raise ctx.error(kl("markers"), "markers", "expected identifiers usable as pytest markers, got %s"
                            % _describe(m))
    grow = merged.get("grow")
    if grow is not None:
        grow = convert(grow, str, ctx, kl("grow"), "grow")
        try:
            parse_grow(grow)
        except (PlanError, ValueError) as e:
            raise ctx.error(kl("grow"), "grow", quote(str(e), 200)) from None
    timeout = convert(merged.get("timeout", DEFAULT_TIMEOUT), Seconds, ctx, kl("timeout"), "timeout")
    touch = convert(merged.get("touch_every"), Optional[Size], ctx, kl("touch_every"), "touch_every")
    rlimit = convert(merged.get("rlimit_as"), Optional[Size], ctx, kl("rlimit_as"), "rlimit_as")
    desc = convert(merged.get("description", ""), str, ctx, kl("description"), "description")
    watchdog = convert(merged.get("watchdog"), Optional[Seconds], ctx, kl("watchdog"), "watchdog")
    return Target(
        name=name,
        backend=backend_name,
        options=options,
        expect=tuple(expect),
        markers=markers,
        timeout=float(timeout),
        probes=probes,
        grow=grow,
        touch_every=None if touch is None else int(touch),
        rlimit_as=None if rlimit is None else int(rlimit),
        watchdog=None if watchdog is None else float(watchdog),
        description=desc,
        source=ctx.path,
        line=seen[name],
    )


def _probes(merged: Mapping[str, Any], kl: Any, ctx: _Ctx) -> Tuple[Probe, ...]:
    """``probes:`` (or its older spelling ``policies:``, the model's policies only), checked."""
    if "probes" in merged and "policies" in merged:
        raise ctx.error(kl("policies"), "policies", "give probes: alone (policies: is its older spelling, for the "
                        "model's policies only)")
    key = "probes" if "probes" in merged else "policies"
    if key not in merged:
        return MODEL_PROBES
    raw = merged[key]
    if not isinstance(raw, list) or not raw:
        # An empty list would drop the target from every run without a word.
        raise ctx.error(kl(key), key, "expected a list of at least one of %s, or {name: ..., program: ...} "
                        "(or leave the key out for the model's policies)" % ", ".join(BUILTIN_PROBES))
    lines = getattr(raw, "item_lines", [])
    out: List[Probe] = []
    for i, item in enumerate(raw):
        line = lines[i] if i < len(lines) else kl(key)
        where = "%s[%d]" % (key, i)
        if isinstance(item, str):
            probe = Probe.builtin(item)
            if probe is None or (key == "policies" and probe.kind != "model"):
                names = list(POLICIES) if key == "policies" else list(BUILTIN_PROBES)
                close = difflib.get_close_matches(item, names, n=1)
                raise ctx.error(line, where, "unknown %s '%s'; %sknown: %s%s" % (
                    "policy" if key == "policies" else "probe", quote(item),
                    "did you mean %s? " % close[0] if close else "", ", ".join(names),
                    "" if key == "policies" else ", or {name: ..., program: ...} for a program of yours"))
        elif isinstance(item, dict) and key == "probes":
            probe = _program_probe(item, line, where, ctx)
        else:
            raise ctx.error(line, where, "expected a probe's name or {name: ..., program: ...}, got %s"
                            % _describe(item))
        if any(p.name == probe.name for p in out):
            raise ctx.error(line, where, "probe '%s' is listed twice" % probe.name)
        out.append(probe)
    return tuple(out)


def _program_probe(item: Mapping[str, Any], line: int, where: str, ctx: _Ctx) -> Probe:
    """``{name: NAME, program: PATH-OR-COMMAND, args: [...]}``: a user's program as a probe. A program
    with a ``/`` is a file on this host (relative to the targets file), delivered into the target."""
    lines = getattr(item, "key_lines", {})
    for k in item:
        if k not in ("name", "program", "args"):
            raise ctx.error(lines.get(k, line), "%s.%s" % (where, key_name(str(k))),
                            "unknown key; a program probe has name, program and args")
    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ctx.error(lines.get("name", line), where + ".name", "expected a name of letters, digits, '.', '_' "
                        "or '-', got %s" % _describe(name))
    if name in BUILTIN_PROBES or name == "model":
        raise ctx.error(lines.get("name", line), where + ".name", "'%s' is a built-in probe's name; give yours "
                        "another" % name)
    program = item.get("program")
    if not isinstance(program, str) or not program.strip():
        raise ctx.error(lines.get("program", line), where + ".program",
                        "expected a file on this host (./probe.sh) or a command in the guest, got %s"
                        % _describe(program))
    args = convert(item.get("args", []) or [], Tuple[str, ...], ctx, lines.get("args", line), where + ".args")
    if "/" not in program:
        return Probe(name, "program", program, args)
    path = Path(program).expanduser()
    if not path.is_absolute():
        path = Path(ctx.path).resolve().parent / path if ctx.path and not ctx.path.startswith("<") else path
    if not path.exists():
        raise ctx.error(lines.get("program", line), where + ".program",
                        "no such file: %s (a program with a / is a file on this host, relative to the targets "
                        "file; a command in the guest is a bare name)" % quote(str(path), 120))
    if not path.is_file():  # a FIFO, a device or a directory: nothing to deliver
        raise ctx.error(lines.get("program", line), where + ".program",
                        "not a regular file: %s" % quote(str(path), 120))
    return Probe(name, "program", str(path.resolve()), args, host_file=True)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's problem without its context snippet (str(e) quotes the file's lines), with any quoted
    token cut short."""
    problem = getattr(e, "problem", None) or type(e).__name__
    return re.sub(r"'([^']{%d,})'" % QUOTE_MAX, lambda m: "'%s'" % quote(m.group(1)), quote(problem, 200))


def _yaml_line(e: yaml.YAMLError) -> Optional[int]:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return mark.line + 1 if mark is not None else None


def parse(text: str, path: str = "<string>") -> TargetSet:
    ctx = _Ctx(path)
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except ConfigError as e:
        e.path = path
        raise
    except yaml.reader.ReaderError as e:
        raise ConfigError("not valid YAML: unacceptable character #x%04x" % e.character, path=path,
                          line=text.count("\n", 0, e.position) + 1) from None
    except yaml.YAMLError as e:
        raise ConfigError("not valid YAML: %s" % _yaml_problem(e), path=path, line=_yaml_line(e)) from None
    except RecursionError:
        raise ConfigError("not valid YAML: nested too deeply", path=path) from None
    if not isinstance(doc, dict):
        # Not even a mapping: say what it is, never what it says (it may be any file at all).
        if isinstance(doc, str):
            kind = "text"
        elif isinstance(doc, (list, dict)) or doc is None:
            kind = _describe(doc)
        else:
            kind = "a %s" % type(doc).__name__
        raise ConfigError("expected a mapping with a targets: list, got %s" % kind, path=path, line=1)
    top_lines = getattr(doc, "key_lines", {})
    for key in doc:
        if key not in ("schema", "defaults", "targets"):
            raise ctx.error(top_lines.get(key), key_name(key), "unknown top-level key; %sknown: schema, defaults, "
                            "targets" % did_you_mean(key, ["schema", "defaults", "targets"]))
    if doc.get("schema", 1) != 1:
        raise ctx.error(top_lines.get("schema"), "schema", "expected 1, got %s" % _describe(doc.get("schema")))
    defaults = doc.get("defaults", {}) or {}
    if not isinstance(defaults, dict):
        raise ctx.error(top_lines.get("defaults"), "defaults", "expected a mapping, got %s" % _describe(defaults))
    if "name" in defaults:
        raise ctx.error(getattr(defaults, "key_lines", {}).get("name"), "name", "a name cannot be a default")
    targets = doc.get("targets")
    if not isinstance(targets, list) or not targets:
        raise ctx.error(top_lines.get("targets", 1), "targets", "expected a non-empty list of targets, got %s"
                        % _describe(targets))
    if len(targets) > MAX_TARGETS:
        raise ctx.error(top_lines.get("targets", 1), "targets", "%d targets; at most %d fit in one file"
                        % (len(targets), MAX_TARGETS))
    seen: Dict[str, int] = {}
    lines = getattr(targets, "item_lines", [1] * len(targets))
    out = tuple(_target(raw, ln, defaults, _Ctx(path), seen) for raw, ln in zip(targets, lines))
    return TargetSet(out, path)


def load_groups(targets: TargetSet) -> List[Group]:
    """The CI matrix shipped in the package (matrix.yaml), checked against the targets."""
    text = resources.files("harness").joinpath("matrix.yaml").read_text(encoding="utf-8")
    doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader
    ctx = _Ctx("<matrix.yaml>")
    known = set(targets.names())
    out = []
    for raw, ln in zip(doc["groups"], getattr(doc["groups"], "item_lines", [])):
        ctx.target = raw.get("name", "")
        names = convert(raw.get("targets", []), Tuple[str, ...], ctx, ln, "targets")
        for n in names:
            if n not in known:
                raise ctx.error(ln, "targets", "unknown target %r; targets: %s" % (n, ", ".join(sorted(known))))
        out.append(Group(str(raw["name"]), convert(raw.get("kernels", []), Tuple[str, ...], ctx, ln, "kernels"),
                         names))
    return out


def load(path: Optional[str] = None) -> TargetSet:
    """Load a targets file, or the default matrix shipped in the package when ``path`` is None."""
    if path is None:
        text = resources.files("harness").joinpath(DEFAULT_TARGETS).read_text(encoding="utf-8")
        return parse(text, "<default targets>")
    return parse(read_text(Path(path), "targets files", MAX_TARGETS_BYTES), str(path))
