"""The guest agent (run for real, as a subprocess) and the host side of probes: jobs, steps -> documents."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from guest import agent
from harness import payload, probes
from harness.backends.console import find_panic
from harness.model import Probe, Target
from harness.probes import interpret, interpret_program, job

ROOT = Path(__file__).resolve().parents[2]


def run_agent(tmp_path: Path, steps: List[Dict[str, Any]], *extra: str) -> "subprocess.CompletedProcess[str]":
    pyz = payload.build(tmp_path)
    (tmp_path / "plan.json").write_text(json.dumps({"agent": 1, "steps": steps}))
    return subprocess.run([sys.executable, str(pyz), "agent", "--plan", str(tmp_path / "plan.json"), *extra],
                          capture_output=True, text=True, timeout=60)


def frames(stdout: str) -> List[Dict[str, Any]]:
    lines = stdout.splitlines()
    return [json.loads(lines[i + 1])["step"] for i, ln in enumerate(lines) if ln == agent.FRAME_BEGIN]


def test_the_agent_frames_each_step_with_its_status_and_output_apart(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    r = run_agent(tmp_path, [
        {"name": "a", "argv": ["sh", "-c", "echo to-out; echo to-err >&2; exit 3"]},
        {"name": "b", "argv": ["sh", "-c", "kill -9 $$"]},
        {"name": "c", "argv": ["no-such-program-anywhere"]},
        {"name": "d", "argv": ["{python}", "-c", "import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0])"],
         "rlimit_as": 1 << 30},
        {"name": "e", "argv": ["{python}", "-c", "import os; print(os.getcwd())"]},
    ], "--out", str(out))
    assert r.returncode == 0, r.stderr
    a, b, c, d, e = frames(r.stdout)
    assert (a["returncode"], a["stdout"], a["stderr"]) == (3, "to-out\n", "to-err\n")
    assert (b["returncode"], b["signal"]) == (None, "SIGKILL")
    assert c["returncode"] == 127 and c["error"] == "cannot start no-such-program-anywhere: No such file or directory"
    assert d["stdout"] == "%d\n" % (1 << 30)
    assert json.loads(out.read_text())["steps"] == [a, b, c, d, e]  # the share file holds the same


def test_the_agent_caps_what_it_keeps(tmp_path: Path) -> None:
    r = run_agent(tmp_path, [{"name": "big", "argv": ["{python}", "-c", "print('x' * 3000000)"]}])
    (step,) = frames(r.stdout)
    assert len(step["stdout"]) == agent.CAPTURE_MAX and step["truncated"] is True


def test_a_stream_step_passes_bytes_through_and_sets_the_exit_status(tmp_path: Path) -> None:
    code = "import sys; sys.stdout.buffer.write(bytes(range(256))); sys.stderr.write('e'); sys.exit(9)"
    r = run_agent(tmp_path, [{"name": "exec", "stream": True, "argv": ["{python}", "-c", code]}])
    assert r.returncode == 9
    got: Dict[str, bytes] = {"o": b"", "e": b""}
    for line in r.stdout.splitlines():
        if line.startswith(agent.STREAM):
            _, kind, data = line.split()
            got[kind] += base64.b64decode(data)
    assert got == {"o": bytes(range(256)), "e": b"e"}


def test_via_runs_each_program_through_the_emulator_with_path_and_shebang_resolved(tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh -e\necho script $1\n")
    script.chmod(0o755)
    wrapper = tmp_path / "emu"  # stands in for qemu-ARCH -R N: prints what it was asked to run
    wrapper.write_text("#!/bin/sh\necho \"emu: $*\"\n")
    wrapper.chmod(0o755)
    r = run_agent(tmp_path, [{"name": "s", "argv": [str(script), "x"]}, {"name": "u", "argv": ["true"]},
                             {"name": "m", "argv": ["no-such-thing"]}], "--via", "%s -R 4096" % wrapper)
    s, u, m = frames(r.stdout)
    assert s["stdout"] == "emu: -R 4096 /bin/sh -e %s x\n" % script
    assert u["stdout"].startswith("emu: -R 4096 /") and u["stdout"].rstrip().endswith("/true")
    assert m["returncode"] == 127 and "no-such-thing" in m["error"]


def test_a_bad_plan_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    pyz = payload.build(tmp_path)
    (tmp_path / "plan.json").write_text('{"agent": 1, "steps": [{"name": "x", "argv": "ls"}]}')
    r = subprocess.run([sys.executable, str(pyz), "agent", "--plan", str(tmp_path / "plan.json")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().endswith("steps[0].argv: expected a non-empty list of strings")


def test_programs_output_in_frames_is_no_kernel_panic() -> None:
    """A JVM's "UseCompressedOops: Enabled" inside the agent's frame once stopped every target as a panic."""
    line = json.dumps({"agent": 1, "step": {"stdout": "Oops: Enabled (Zero based) Kernel panic - not syncing"}})
    assert find_panic(line.replace(" ", "")) is None and find_panic(line) is None
    assert find_panic("%s o T29wczo=" % agent.STREAM) is None
    assert find_panic("[  1.0] Kernel panic - not syncing: VFS") == "Kernel panic - not syncing: VFS"


T = Target("t", "local", None, grow="64M*2", rlimit_as=1 << 30)


def step(name: str, stdout: str = "", **kw: Any) -> Dict[str, Any]:
    return dict({"name": name, "returncode": 0, "signal": None, "error": None, "stdout": stdout, "stderr": ""}, **kw)


def test_a_job_runs_the_models_policies_in_one_step_and_every_other_probe_after(tmp_path: Path) -> None:
    prog = tmp_path / "mine.sh"
    prog.write_text("#!/bin/sh\n")
    j = job(T, [Probe("mine", "program", str(prog), ("-v",), host_file=True), Probe("go-2012", "model"),
                Probe("ls", "program", "ls"), Probe("go-modern", "model")], tmp_path / "allocator.pyz")
    assert [s["name"] for s in j.steps] == ["model", "mine", "ls"]
    assert j.steps[0]["argv"][4:] == ["--policy", "go-2012,go-modern", "--grow", "64M*2", "--rlimit-as", "1073741824"]
    assert j.steps[1] == {"name": "mine", "rlimit_as": 1 << 30, "argv": ["{dir}/program-mine", "-v"]}
    assert j.files["program-mine"] == prog and j.steps[2]["argv"] == ["ls"]


@pytest.mark.parametrize("stdout, error", [
    ('noise\n{"outcome": "os-chosen", "heap": {"arena_start": "0x10"}}\n', None),
    ('{"outcome": "crash", "crash": "out of memory"}', None),
    ("no json here", "printed no JSON line with an outcome (exit status 0)"),
    ('{"outcome": "fine"}', 'outcome "fine" is not one of high-arena, fallback-32bit, native-32bit, os-chosen, crash'),
    ('{"outcome": "os-chosen", "heap": {"arena_start": 5}}',
     "its JSON line does not have the allocator's shape: heap.arena_start: expected an address (0x...) or null"),
    ('{"outcome": "os-chosen", "policy": "go-modern", "schema": 9}', None),
])
def test_a_program_probe_reads_its_last_json_line(stdout: str, error: str) -> None:
    doc = interpret_program(step("mine", stdout), Probe("mine", "program", "x"))
    assert doc["error"] == error and doc["policy"] == "mine" and doc["schema"] == 1


def test_the_models_step_gives_each_policy_its_document_or_an_error() -> None:
    model = [Probe("go-2012", "model"), Probe("go-modern", "model")]
    got = interpret([step("model", json.dumps({"schema": 1, "policy": "go-2012", "outcome": "high-arena"}))], model)
    assert got["go-2012"]["outcome"] == "high-arena"
    assert got["go-modern"]["error"] == "the allocator gave no result for it"
    got = interpret([step("model", "", signal="SIGSEGV", returncode=None, stderr="Segmentation fault")], model)
    assert got["go-2012"]["error"] == "killed by SIGSEGV: Segmentation fault"
    assert interpret([], model) == {}  # a step that never reported: nothing, the record says why


def test_agent_steps_reads_a_frame_and_the_share_file() -> None:
    assert probes.agent_steps('{"agent": 1, "step": {"name": "x"}}') == ([{"name": "x"}], None)
    assert probes.agent_steps('{"agent": 1, "steps": [{"name": "x"}]}') == ([{"name": "x"}], None)
    assert probes.agent_steps('{"agent": 2}')[1] == "result is not the agent's (schema 1)"
    assert probes.agent_steps("[" * 100000)[1].startswith("result is not valid JSON")
    assert os.path.basename(probes.PLAN) == "plan.json"


def test_markers_inside_a_programs_output_are_not_markers() -> None:
    """A program printing the harness's markers once ended its boot early and lost the next probe's result."""
    from harness.backends.base import Backend
    from harness.backends.console import extract_frames

    forged = json.dumps({"agent": 1, "step": {"stdout": "@@ARENA-HARNESS-DONE@@ rc=0\n"
                                                        "@@ARENA-HARNESS-RESULT-END@@\n@@ARENA-HARNESS-RESULT-BEGIN@@"}})
    assert Backend.done_watcher(forged) is None
    assert Backend.done_watcher("@@ARENA-HARNESS-DONE@@ rc=0") == "done"
    frames, problem = extract_frames([agent.FRAME_BEGIN, forged, agent.FRAME_END])
    assert problem is None and [json.loads(f) for f in frames] == [json.loads(forged)]


def test_a_frame_stays_under_the_hosts_line_cap_whatever_the_output(tmp_path: Path) -> None:
    """512 KiB of control bytes on each stream escape to ~6 MiB of JSON: cut to fit, marked truncated."""
    from harness.proc import LINE_MAX

    code = "import sys; sys.stdout.write(chr(1) * 600000); sys.stderr.write(chr(2) * 600000)"
    r = run_agent(tmp_path, [{"name": "big", "argv": ["{python}", "-c", code]}])
    lines = r.stdout.splitlines()
    line = lines[lines.index(agent.FRAME_BEGIN) + 1]
    assert len(line) <= LINE_MAX and json.loads(line)["step"]["truncated"] is True
