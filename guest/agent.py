"""The guest agent: runs a plan's programs in the target and hands back what they did.

``python3 allocator.pyz agent --plan DIR/plan.json [--out FILE]``

Every backend delivers the same files into one directory of the guest (the
zipapp, ``plan.json``, the programs the plan names) and runs this agent there:
the harness's one way to run anything in any target, whatever the channel (a
console, a share, ``docker exec``, SSH). The plan is JSON::

    {"agent": 1, "steps": [{"name": "go", "argv": ["{dir}/goprobe", "-grow", "64M*20"],
                            "rlimit_as": 1073741824, "stream": false}]}

In an ``argv``, ``{dir}`` at the start of an argument is the plan's directory
and ``{python}`` is this interpreter; with ``"expand": N`` only in the first N
arguments (a user's own arguments are passed as they are). ``--via "EMULATOR ARGS"`` runs every step
through that program (qemu-user runs the agent itself under ``qemu-ARCH -R N``;
a step's programs must get the same emulator and the same limit, not the host's
binfmt_misc handler, which knows no ``-R``). Each step runs in turn, with stdin from
/dev/null and ``rlimit_as`` (if set) as its RLIMIT_AS. After each step the agent
prints a frame (the result markers around one JSON line) with the step's exit
status or signal, and its stdout and stderr (each capped at ``CAPTURE_MAX``,
head kept); with ``--out`` the frames so far are also written to FILE
(atomically), so a timeout after a step keeps that step's result.

A ``stream`` step (``arena-harness exec``) instead passes its output through
as it comes, as lines ``@@ARENA-HARNESS-STREAM@@ o|e BASE64``: bytes survive a
serial console that way, and stdout and stderr stay apart.

With ``--serve`` (the pytest fixture ``harness_target``: one boot, many
commands) the agent then prints ``@@ARENA-HARNESS-AGENT-READY@@ DIR`` and reads
one JSON message a line from stdin (a console, a pipe, an SSH channel):
``{"put": NAME, "data": BASE64, "last": true|false}`` writes a file into DIR (a
fresh writable directory, named on the READY line),
``{"step": {...}}`` runs a step and frames its result, ``{"bye": true}`` (or the
end of stdin) ends the agent. Messages stay under 4 KiB a line: a console in
canonical mode cuts longer lines.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import selectors
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

FRAME_BEGIN = "@@ARENA-HARNESS-RESULT-BEGIN@@"  # the allocator's markers (allocator.probe), the same bytes
FRAME_END = "@@ARENA-HARNESS-RESULT-END@@"
STREAM = "@@ARENA-HARNESS-STREAM@@"
READY = "@@ARENA-HARNESS-AGENT-READY@@"
STEP = "@@ARENA-HARNESS-STEP@@"  # a step begins: the host's progress shows it
AGENT_SCHEMA = 1
CAPTURE_MAX = 512 * 1024  # per stream and step
FRAME_MAX = 960 * 1024  # a frame is one console line, which the host cuts at 1 MiB
STREAM_CHUNK = 3 * 1024  # bytes per stream line (4 KiB of base64)


class PlanError(Exception):
    pass


def load_plan(path: str) -> List[Dict[str, Any]]:
    """The plan's steps, checked (the harness wrote it, but a wrong one must say so, not trace back)."""
    with open(path, encoding="utf-8") as f:
        plan = json.load(f)
    if not isinstance(plan, dict) or plan.get("agent") != AGENT_SCHEMA or not isinstance(plan.get("steps"), list):
        raise PlanError("%s: not an agent plan of schema %d" % (path, AGENT_SCHEMA))
    for i, step in enumerate(plan["steps"]):
        argv = step.get("argv") if isinstance(step, dict) else None
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise PlanError("%s: steps[%d].argv: expected a non-empty list of strings" % (path, i))
        if not isinstance(step.get("name"), str):
            raise PlanError("%s: steps[%d].name: expected a string" % (path, i))
    steps: List[Dict[str, Any]] = plan["steps"]
    return steps


def expand(argv: List[str], directory: str, count: Optional[int] = None) -> List[str]:
    out = []
    for i, a in enumerate(argv):
        if count is not None and i >= count:
            pass
        elif a == "{python}":
            a = sys.executable or "python3"
        elif a.startswith("{dir}"):
            a = directory + a[len("{dir}"):]
        out.append(a)
    return out


def shebang(argv: List[str]) -> List[str]:
    """``argv`` for an emulator, which takes a path (not a name to look up on PATH) and runs ELF files
    only: the program found on PATH, and a script's ``#!`` interpreter made explicit."""
    path = argv[0]
    if "/" not in path:
        for d in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
            if os.access(os.path.join(d, path), os.X_OK):
                path = os.path.join(d, path)
                break
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return [path] + argv[1:]
    if not head.startswith(b"#!"):
        return [path] + argv[1:]
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip().split(None, 1)
    return shebang(words + [path] + argv[1:]) if words else [path] + argv[1:]


def _limit(rlimit_as: Optional[int]) -> Any:
    if rlimit_as is None:
        return None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))

    return apply


def _emit_stream(kind: str, data: bytes) -> None:
    for i in range(0, len(data), STREAM_CHUNK):
        piece = base64.b64encode(data[i:i + STREAM_CHUNK]).decode("ascii")
        sys.stdout.write("%s %s %s\n" % (STREAM, kind, piece))
    sys.stdout.flush()


def run_step(step: Dict[str, Any], directory: str, via: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run one step to its end: its result, never an exception (a program that cannot start is a result)."""
    count = step.get("expand")
    argv = expand(step["argv"], directory, count if isinstance(count, int) else None)
    missing = None
    if via:  # the emulator would fail with a bare exit status 1: say why, as exec(2) would
        argv = shebang(argv)
        missing = None if os.path.exists(argv[0]) else argv[0]
        argv = via + argv
    stream = bool(step.get("stream"))
    result: Dict[str, Any] = {"name": step["name"], "argv": argv, "returncode": None, "signal": None,
                              "stdout": "", "stderr": "", "truncated": False, "error": None}
    began = time.monotonic()
    env = dict(os.environ)
    env.update({k: v for k, v in (step.get("env") or {}).items() if isinstance(k, str) and isinstance(v, str)})
    try:
        if missing:
            raise FileNotFoundError(2, "No such file or directory", missing)
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 cwd=directory if os.access(directory, os.W_OK) else "/tmp", env=env,
                                 preexec_fn=_limit(step.get("rlimit_as")))
    except OSError as e:
        result["error"] = "cannot start %s: %s" % (getattr(e, "filename", None) or argv[0], e.strerror or e)
        result["returncode"] = 127 if isinstance(e, FileNotFoundError) else 126
        if stream:
            _emit_stream("e", ("%s\n" % result["error"]).encode())
        return result
    kept: Dict[str, List[bytes]] = {"o": [], "e": []}
    size = {"o": 0, "e": 0}
    sel = selectors.DefaultSelector()
    assert child.stdout is not None and child.stderr is not None
    sel.register(child.stdout, selectors.EVENT_READ, "o")
    sel.register(child.stderr, selectors.EVENT_READ, "e")
    open_streams = 2
    while open_streams:
        for key, _ in sel.select():
            data = os.read(key.fd, 65536)
            if not data:
                sel.unregister(key.fileobj)
                open_streams -= 1
                continue
            kind = key.data
            if stream:
                _emit_stream(kind, data)
                continue
            room = CAPTURE_MAX - size[kind]
            if room > 0:
                kept[kind].append(data[:room])
                size[kind] += min(room, len(data))
            if len(data) > room:
                result["truncated"] = True
    sel.close()
    rc = child.wait()
    if rc < 0:
        try:
            result["signal"] = signal.Signals(-rc).name
        except ValueError:
            result["signal"] = str(-rc)
    else:
        result["returncode"] = rc
    result["stdout"] = b"".join(kept["o"]).decode("utf-8", errors="backslashreplace")
    result["stderr"] = b"".join(kept["e"]).decode("utf-8", errors="backslashreplace")
    result["duration_s"] = round(time.monotonic() - began, 3)
    return result


def _write_out(path: str, steps: List[Dict[str, Any]]) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".agent-")
    with os.fdopen(fd, "w") as f:
        json.dump({"agent": AGENT_SCHEMA, "steps": steps}, f)
    os.replace(tmp, path)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python3 allocator.pyz agent", description=__doc__.split("\n")[0])
    p.add_argument("--plan", required=True, help="the plan (JSON); its directory holds the delivered files")
    p.add_argument("--out", metavar="FILE", help="also write the results so far to FILE after each step")
    p.add_argument("--via", metavar="COMMAND", help="run every step's program through this command (an emulator)")
    p.add_argument("--serve", action="store_true", help="then run the messages read from stdin (one JSON a line)")
    args = p.parse_args(argv)
    try:
        steps = load_plan(args.plan)
    except (OSError, ValueError, PlanError) as e:
        print("agent: %s" % e, file=sys.stderr)
        return 2
    directory = os.path.dirname(os.path.abspath(args.plan))
    via = shlex.split(args.via) if args.via else None
    done: List[Dict[str, Any]] = []
    status = 0
    for step in steps:
        if not step.get("stream"):  # exec's output is the program's alone
            sys.stdout.write("%s %s\n" % (STEP, step["name"]))
            sys.stdout.flush()
        result = run_step(step, directory, via)
        done.append(result)
        _frame(result)
        if args.out:
            try:
                _write_out(args.out, done)
            except OSError as e:  # the console frame still carries it
                print("agent: cannot write %s: %s" % (args.out, e), file=sys.stderr)
                args.out = None
        if step.get("stream"):
            status = result["returncode"] if result["returncode"] is not None else 128 + signal_number(result["signal"])
    if args.serve:
        return serve(directory, via, args.out)
    return status


def frame_text(result: Dict[str, Any]) -> str:
    """A step's result as the frame's one JSON line, at most ``FRAME_MAX`` characters: escaping can make a
    stream several times longer (control bytes become \\uXXXX), so the longer one is halved until it fits."""
    while True:
        text = json.dumps({"agent": AGENT_SCHEMA, "step": result}, separators=(",", ":"))
        if len(text) <= FRAME_MAX:
            return text
        key = "stdout" if len(result["stdout"]) >= len(result["stderr"]) else "stderr"
        result[key] = result[key][: len(result[key]) // 2]
        result["truncated"] = True


def _frame(result: Dict[str, Any]) -> None:
    sys.stdout.write("%s\n%s\n%s\n" % (FRAME_BEGIN, frame_text(result), FRAME_END))
    sys.stdout.flush()


def _workdir(out: Optional[str]) -> str:
    """A fresh directory this agent may write and run programs from: TMPDIR or /tmp, else where its
    results go (a UML guest's read-only root has only its results share)."""
    for base in (os.environ.get("TMPDIR"), "/tmp", os.path.dirname(os.path.abspath(out)) if out else None):
        if base and os.access(base, os.W_OK | os.X_OK):
            try:
                return tempfile.mkdtemp(prefix="arena-put-", dir=base)
            except OSError:
                continue
    raise PlanError("no writable directory for delivered files (tried TMPDIR, /tmp and the results directory)")


def _raw_console() -> None:
    """A console's line discipline echoes input and cuts lines at 4 KiB: serve from it raw and silent."""
    try:
        import termios

        if os.isatty(0):
            attrs = termios.tcgetattr(0)
            attrs[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
            attrs[0] &= ~(termios.IXON | termios.ICRNL | termios.INLCR | termios.IGNCR)
            attrs[6][termios.VMIN], attrs[6][termios.VTIME] = 1, 0
            termios.tcsetattr(0, termios.TCSANOW, attrs)
    except (ImportError, OSError) as e:  # termios.error is an OSError
        print("agent: the console stays as it is: %s" % e, file=sys.stderr)


def serve(directory: str, via: Optional[List[str]], out: Optional[str]) -> int:
    """Read messages from stdin until ``bye`` or its end (see the module's docstring)."""
    try:
        put = _workdir(out)
    except PlanError as e:
        print("agent: %s" % e, file=sys.stderr)
        return 2
    _raw_console()
    sys.stdout.write("%s %s\n" % (READY, put))
    sys.stdout.flush()
    files: Dict[str, Any] = {}
    for raw in sys.stdin:
        raw = raw.strip()
        if not raw.startswith("{"):
            continue  # a console's noise
        try:
            msg = json.loads(raw)
        except ValueError:
            print("agent: a message that is not JSON (%d bytes)" % len(raw), file=sys.stderr)
            continue
        if not isinstance(msg, dict):
            continue
        if msg.get("bye"):
            break
        if "put" in msg:
            # Each chunk is acknowledged: the sender waits for it, so a console's input buffer never
            # overflows (it drops what does not fit).
            name = str(msg["put"])
            try:
                if "/" in name or name in (".", "..") or not name:
                    raise ValueError("a file name must be a plain name")
                if msg.get("seq") == 0 and name in files:  # sent again from the start: start again
                    files.pop(name).close()
                f = files.get(name) or open(os.path.join(put, name), "wb")
                files[name] = f
                f.write(base64.b64decode(str(msg.get("data") or ""), validate=True))
                if msg.get("last"):
                    f.close()
                    os.chmod(os.path.join(put, name), 0o555)
                    del files[name]
                print("%s put %s %s" % (READY, name, msg.get("seq")))
            except (ValueError, OSError) as e:  # binascii.Error is a ValueError
                print("%s put-error %s %s" % (READY, name, str(e).replace("\n", " ")[:200]))
            sys.stdout.flush()
        elif isinstance(msg.get("step"), dict) and isinstance(msg["step"].get("argv"), list):
            step = msg["step"]
            step.setdefault("name", "step")
            step["expand"] = 0  # a session's commands are the user's, as they are
            _frame(run_step(step, directory, via))
    return 0


def signal_number(name: Optional[str]) -> int:
    """A signal's number from its name as a step result gives it ("SIGKILL" -> 9); 0 if it is none."""
    try:
        return int(signal.Signals[name or ""].value)
    except KeyError:
        return 0
