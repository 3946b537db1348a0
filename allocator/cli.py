"""``python3 -m allocator``: exit 0 when the model ran to its end (a crash is a finding),
2 on usage errors, 70 on an internal error, each failure with one line on stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any, Dict, List, NoReturn, Optional

from allocator import __version__
from allocator.probe import (
    FRAME_BEGIN,
    FRAME_END,
    POLICIES,
    expand_policies,
    internal_error,
    run_isolated,
    run_policy,
    set_rlimit_as,
    summary,
)
from allocator.runtime import DEFAULT_GROW, DEFAULT_TOUCH_EVERY, PlanError, parse_grow
from allocator.simulated import PRESETS, SIM_KEYS, SimSpecError, parse_size, parse_spec

EX_USAGE = 2
EX_SOFTWARE = 70


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python3 -m allocator", description="Model Go's arena reservation with real mmaps.")
    p.add_argument("--version", action="version", version="allocator " + __version__)
    sub = p.add_subparsers(dest="command")
    probe = sub.add_parser("probe", help="run policies and report what happened")
    probe.add_argument(
        "--policy",
        action="append",
        default=None,
        help="policy to run: %s or all; repeat or comma-separate (default go-2012)" % ", ".join(POLICIES),
    )
    probe.add_argument("--json", action="store_true", help="print exactly one JSON document (an array for several)")
    probe.add_argument("--frame", action="store_true", help="put the JSON between marker lines (for serial consoles)")
    probe.add_argument("--out", metavar="FILE", help="also write the JSON to FILE (atomically)")
    probe.add_argument(
        "--simulate",
        metavar="SPEC",
        help="use the simulated kernel: presets %s; keys %s (e.g. uml,rlimit-as=1G)"
        % (",".join(PRESETS), ",".join(SIM_KEYS)),
    )
    probe.add_argument("--grow", default=DEFAULT_GROW, help="growth plan (default %(default)s)")
    probe.add_argument("--touch-every", default=str(DEFAULT_TOUCH_EVERY),
                       help="touch one page per SIZE mapped (0: none)")
    probe.add_argument("--rlimit-as", metavar="SIZE",
                       help="run the model as a Go process under RLIMIT_AS SIZE (real runs): set on this process, "
                            "then moved by the interpreter's own share before each of the model's mmaps")
    probe.add_argument("--no-trace", action="store_true", help="leave the call trace out")
    sub.add_parser("policies", help="list the policies")
    return p


def _emit(text: str, out: Optional[str]) -> None:
    if out:
        d = os.path.dirname(os.path.abspath(out))
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".allocator-")
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, out)


def main(argv: Optional[List[str]] = None) -> int:
    try:
        return _main(argv)
    except UsageError as e:
        print("allocator: error: %s (see --help)" % e, file=sys.stderr)
        return EX_USAGE
    except KeyboardInterrupt:
        print("allocator: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        print("allocator: %s" % internal_error(e), file=sys.stderr)
        return EX_SOFTWARE


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "policies":
        for name in POLICIES:
            print(name)
        return 0
    if args.command != "probe":
        raise UsageError("a command is required: probe or policies")
    try:
        policies = expand_policies(args.policy or ["go-2012"])
        parse_grow(args.grow)
        touch_every = parse_size(args.touch_every)
        if args.simulate is not None:
            parse_spec(args.simulate)
        rlimit = parse_size(args.rlimit_as) if args.rlimit_as else None
    except (ValueError, PlanError, SimSpecError) as e:
        raise UsageError(str(e)) from None
    if not policies:
        raise UsageError("no policy given")
    if rlimit is not None:
        if args.simulate is not None:
            raise UsageError("--rlimit-as applies to real runs; use --simulate ...,rlimit-as=SIZE")
        set_rlimit_as(rlimit)
    kw: Dict[str, Any] = dict(simulate=args.simulate, grow=args.grow, touch_every=touch_every, trace=not args.no_trace,
                              rlimit_as=rlimit)
    if len(policies) == 1 and not (args.policy and "all" in ",".join(args.policy)):
        docs = [run_policy(policies[0], **kw)]
        single = True
    else:
        docs = [run_isolated(p, **kw) for p in policies]
        single = False
    payload: Any = docs[0] if single else docs
    text = json.dumps(payload, separators=(",", ":") if args.frame else None, indent=None if args.frame else 1)
    _emit(text, args.out)
    if args.frame:
        sys.stdout.write("%s\n%s\n%s\n" % (FRAME_BEGIN, text, FRAME_END))
    elif args.json:
        sys.stdout.write(text + "\n")
    else:
        print("\n\n".join(summary(d) for d in docs))
    sys.stdout.flush()
    if any(d.get("error") for d in docs):
        for d in docs:
            if d.get("error"):
                print("allocator: %s: %s" % (d["policy"], d["error"]), file=sys.stderr)
        return EX_SOFTWARE
    return 0
