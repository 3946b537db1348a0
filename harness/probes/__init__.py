"""Probes: what runs in a target, and how what it printed becomes result documents.

A probe is a program the guest agent (:mod:`guest.agent`) runs in the target,
with the files it needs delivered read-only beside the allocator. The host gets
back the program's exit status, stdout and stderr (capped), and the probe's
kind turns them into documents of the allocator's shape (:mod:`harness.document`),
one per result name. Kinds (:data:`harness.model.PROBE_KINDS`):

- ``model``: the allocator's policies (go-2012-pre, go-2012, go-modern), all in one
  step (the allocator runs each in a child of its own);
- ``go``: a real Go runtime (:mod:`harness.probes.go`: a program of the project's
  own, built per architecture by the image pipeline);
- ``jvm``: the guest's own OpenJDK (:mod:`harness.probes.jvm`);
- ``program``: a user's program. The protocol: print one JSON line with at least
  ``outcome`` (one of :data:`OUTCOMES`; ``crash`` carries the crash's message)
  as the last JSON line on stdout; the rest of its output is kept as its log.
  Other keys of the allocator's document (``heap``, ``facts``, ...) are read
  when they have its shape. A program given as a host file is delivered into
  the target; otherwise it is a command the guest has.

Every probe runs under the target's ``rlimit_as`` (the model sets it on itself
and accounts for the interpreter's share; the agent sets it for the others).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from allocator import SCHEMA
from allocator.probe import OUTCOMES
from allocator.runtime import DEFAULT_GROW, DEFAULT_TOUCH_EVERY
from guest.agent import signal_number
from harness.backends.console import parse_documents
from harness.document import check_document
from harness.errors import HarnessError
from harness.files import write_atomically
from harness.model import Probe, Target

PLAN = "plan.json"
PAYLOAD = "allocator.pyz"
GO_BINARY = "goprobe"
Document = Dict[str, Any]


@dataclass
class Job:
    """What one boot runs: the agent's steps, and the files every channel delivers into one guest
    directory (``{dir}`` in the steps' argv)."""

    steps: List[Dict[str, Any]] = field(default_factory=list)
    files: Dict[str, Path] = field(default_factory=dict)  # name in the guest dir -> host file
    probes: List[Probe] = field(default_factory=list)

    def write(self, where: Path) -> None:
        """Write ``plan.json`` into ``where`` and add it to the files."""
        plan = where / PLAN
        write_atomically(plan, json.dumps({"agent": 1, "steps": self.steps}, indent=1).encode(), mode=0o444)
        self.files[PLAN] = plan


def model_args(target: Target, policies: Sequence[str]) -> List[str]:
    """The allocator's command line for the target's model policies (after ``python3 allocator.pyz``)."""
    args = ["probe", "--json", "--policy", ",".join(policies)]
    if target.grow:
        args += ["--grow", target.grow]
    if target.touch_every is not None:
        args += ["--touch-every", str(target.touch_every)]
    if target.rlimit_as is not None:
        args += ["--rlimit-as", str(target.rlimit_as)]
    return args


def job(target: Target, probes: Sequence[Probe], payload: Path, go_binary: Optional[Path] = None) -> Job:
    """The steps for ``probes`` on ``target``: the model's policies first (one step), then each other
    probe in the order given. ``go_binary``: the go probe built for the target's architecture."""
    j = Job(files={PAYLOAD: payload}, probes=list(probes))
    model = [p.name for p in probes if p.kind == "model"]
    if model:
        j.steps.append({"name": "model", "argv": ["{python}", "{dir}/" + PAYLOAD] + model_args(target, model)})
    for p in probes:
        if p.kind == "model":
            continue
        step: Dict[str, Any] = {"name": p.name, "rlimit_as": target.rlimit_as}
        if p.kind == "go":
            go: Any = importlib.import_module("harness.probes.go")
            if go_binary is None:
                raise HarnessError("the go probe has no binary for this target's architecture")
            j.files[GO_BINARY] = go_binary
            step["argv"] = go.argv("{dir}/" + GO_BINARY, target.grow or DEFAULT_GROW,
                                   DEFAULT_TOUCH_EVERY if target.touch_every is None else target.touch_every)
        elif p.kind == "jvm":
            jvm: Any = importlib.import_module("harness.probes.jvm")
            step["argv"] = jvm.argv("java", jvm.heap_from_grow(target.grow) if target.grow else None)
        else:
            assert p.program is not None
            if p.host_file:
                name = "program-%s" % p.name
                j.files[name] = Path(p.program)
                step["argv"] = ["{dir}/" + name, *p.args]
            else:
                step["argv"] = [p.program, *p.args]
        j.steps.append(step)
    return j


def file_mode(name: str, src: Path) -> int:
    """A delivered file's mode in the guest: read-only always; executable for programs (a user's
    program need not be executable on the host: a script is run for what it is)."""
    return 0o555 if os.access(src, os.X_OK) or name.startswith(("program-", GO_BINARY)) else 0o444


def stage(files: Dict[str, Path], into: Path) -> Path:
    """Copy the delivered files into ``into`` (a boot's read-only directory)."""
    into.mkdir(exist_ok=True)
    into.chmod(0o755)  # whatever the umask: a jailed guest runs as a uid of its own
    for name, src in files.items():
        dst = into / name
        if not dst.exists():
            shutil.copyfile(src, dst)
            dst.chmod(file_mode(name, src))
    return into


def provision(probes: Sequence[Probe], backend: Any, cache: Any, log: Any = None) -> Optional[Path]:
    """Build what the probes need for ``backend``'s target (the go probe's binary for its architecture,
    cached by the image pipeline) before the boot's deadline starts; the go binary's path, or None."""
    if not any(p.kind == "go" for p in probes):
        return None
    import images

    recipe = images.GoProbe(backend.guest_arch())
    path: Path = cache.get(recipe, log or (lambda msg: None)) / GO_BINARY
    return path


# -- turning a step's output into documents ----------------------------------------------------------

def _error(name: str, message: str) -> Document:
    return {"schema": SCHEMA, "policy": name, "facts": None, "outcome": None, "crash": None, "error": message}


def _died(step: Dict[str, Any]) -> Optional[str]:
    """How a step's program ended, when that was not a normal exit, else None."""
    if step.get("error"):
        return str(step["error"])
    if step.get("signal"):
        return "killed by %s" % step["signal"]
    return None


def _tail(text: Any, n: int = 3) -> str:
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[:400]


def interpret_model(step: Dict[str, Any], probes: Sequence[Probe]) -> Dict[str, Document]:
    docs, problem = parse_documents(str(step.get("stdout") or "").strip() or "null")
    if problem:
        why = _died(step) or problem
        if step.get("stderr"):
            why += ": " + _tail(step["stderr"])
        return {p.name: _error(p.name, why) for p in probes}
    out = {}
    for p in probes:
        doc = docs.get(p.name)
        if doc is None:
            doc = _error(p.name, "the allocator gave no result for it")
        elif doc.get("error"):  # the allocator's own error document (a policy's child that died): say whose
            doc = dict(doc, error="allocator: %s" % doc["error"])
        out[p.name] = doc
    return out


def last_json_line(text: str) -> Tuple[Optional[int], Optional[Dict[str, Any]]]:
    """The last line of ``text`` that is a JSON object (a program's result line) and its index, or
    (None, None)."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict):
                return i, value
    return None, None


def interpret_program(step: Dict[str, Any], probe: Probe) -> Document:
    """A user program's result line as a document of the allocator's shape (its other keys kept)."""
    stdout = str(step.get("stdout") or "")
    at, reported = last_json_line(stdout)
    if reported is None or "outcome" not in reported:
        why = _died(step) or "exit status %s" % step.get("returncode")
        return _error(probe.name, "printed no JSON line with an outcome (%s)%s" % (
            why, ": " + _tail(step.get("stderr")) if step.get("stderr") else ""))
    doc = dict(reported)
    doc.update(schema=SCHEMA, policy=probe.name, error=None)
    doc.setdefault("crash", None)
    doc.setdefault("facts", None)
    if doc["outcome"] not in OUTCOMES:
        return _error(probe.name, "outcome %s is not one of %s"
                      % (json.dumps(doc["outcome"])[:60], ", ".join(OUTCOMES)))
    problem = check_document(doc)
    if problem:
        return _error(probe.name, "its JSON line does not have the allocator's shape: %s" % problem)
    # the rest of what it printed is its log (capped: the agent kept 512 KiB of each stream already)
    log = [ln for i, ln in enumerate(stdout.splitlines()) if i != at]
    doc["program"] = {"returncode": step.get("returncode"), "signal": step.get("signal"),
                      "stdout": "\n".join(log)[-16384:], "stderr": str(step.get("stderr") or "")[-16384:]}
    return doc


Interpreter = Callable[[str, str, Optional[int]], Document]


def interpret_runtime(step: Dict[str, Any], probe: Probe) -> Document:
    """A real runtime's output (go, jvm) through its module's ``document``."""
    module = importlib.import_module("harness.probes." + probe.kind)
    if step.get("error"):
        return _error(probe.name, str(step["error"]))
    rc = step.get("returncode")
    if step.get("signal"):  # the runtimes' readers take a signal as subprocess does: -N
        rc = -signal_number(str(step["signal"])) or None
    doc: Document = module.document(str(step.get("stdout") or ""), str(step.get("stderr") or ""), rc)
    doc["policy"] = probe.name
    problem = check_document(doc)
    return _error(probe.name, "unusable %s result: %s" % (probe.kind, problem)) if problem else doc


def interpret(steps: Sequence[Dict[str, Any]], probes: Sequence[Probe]) -> Dict[str, Document]:
    """Every probe's documents from the agent's step results (a probe whose step did not report is absent)."""
    by_name = {s.get("name"): s for s in steps if isinstance(s, dict)}
    out: Dict[str, Document] = {}
    model = [p for p in probes if p.kind == "model"]
    if model and "model" in by_name:
        out.update(interpret_model(by_name["model"], model))
    for p in probes:
        step = by_name.get(p.name)
        if p.kind == "model" or step is None:
            continue
        out[p.name] = interpret_program(step, p) if p.kind == "program" else interpret_runtime(step, p)
    return out


def agent_steps(text: str) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """The agent's step results in a frame or its ``--out`` file (``{"agent": 1, "step"|"steps": ...}``)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        return [], "result is not valid JSON (%s; %d bytes)" % (str(e)[:80], len(text))
    if not isinstance(value, dict) or value.get("agent") != 1:
        return [], "result is not the agent's (schema 1)"
    steps = value.get("steps") if "steps" in value else [value.get("step")]
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        return [], "result is not the agent's (schema 1): no steps"
    return steps, None
