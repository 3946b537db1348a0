"""The runner with a fake backend, the process module, and console parsing."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest

from allocator.probe import FRAME_BEGIN, FRAME_END
from harness import config, proc, runner
from harness.backends.console import extract_frames, find_panic, parse_documents
from harness.model import Status


def targets(fake: type, *specs: str) -> List[config.Target]:
    body = "targets:\n"
    for spec in specs:
        name, behaviour = spec.split(":")
        body += (
            "  - name: %s\n    backend: fake\n    behaviour: %s\n    timeout: 3s\n"
            "    expect: {go-2012: fallback-32bit, go-2012-pre: \"crash: runtime: out of memory\"}\n"
            % (name, behaviour)
        )
    return list(config.parse(body, "fake.yaml").targets)


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for its (re-)parent to reap it."""
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def run_tmpdirs(run_id: str) -> list:
    return [p for p in os.listdir(tempfile.gettempdir()) if p.startswith("arena-harness-%s-" % run_id)]


def test_a_fake_backend_is_found_by_name_and_judged(fake_backend: type, tmp_path: Path) -> None:
    doc = runner.run(targets(fake_backend, "a:ok"), artifacts=tmp_path)
    assert doc.complete
    by_policy = {r.policy: r for r in doc.records}
    assert by_policy["go-2012"].status is Status.PASS
    assert by_policy["go-2012-pre"].status is Status.PASS
    assert by_policy["go-modern"].status is Status.OBSERVED and by_policy["go-modern"].expected is None
    assert by_policy["go-2012"].channel == "console"
    log = Path(by_policy["go-2012"].log or "")
    assert log.read_text().startswith("$ %s -c " % sys.executable)
    assert run_tmpdirs(doc.run_id) == []  # the run's temp dir is gone


@pytest.mark.parametrize(
    "behaviour,status,detail",
    [
        ("garbage", Status.ERROR, "no result (exit status 0): random noise | {not json"),
        ("truncated", Status.ERROR, "result frame began but never ended (output truncated)"),
        # A guest is untrusted: a document of the wrong shape was an AttributeError that ended the run.
        ("misshapen", Status.ERROR, "result is not a usable allocator document: reservation: expected a mapping"),
        ("nothing", Status.ERROR, "no result (exit status 0), no output"),
        ("panic", Status.PANIC,
         "kernel panic: Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"),
        ("hang", Status.TIMEOUT, "deadline of 3s reached; no result before the deadline"),
        ("crash-backend", Status.ERROR, "internal error in fake backend: RuntimeError: backend exploded"),
    ],
)
def test_every_failure_becomes_a_record(fake_backend: type, tmp_path: Path, behaviour: str, status: Status,
                                        detail: str) -> None:
    start = time.monotonic()
    doc = runner.run(targets(fake_backend, "t:%s" % behaviour), artifacts=tmp_path, policies=["go-2012"])
    assert time.monotonic() - start < 3 + 5  # deadline + 5 s at most
    (rec,) = doc.records
    assert rec.status is status
    assert rec.detail == detail
    assert proc.live_pids() == []


def test_a_backend_that_raises_while_provisioning_is_an_internal_error_not_an_interrupt(
        fake_backend: type, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # Was: the exception killed the target's thread (its traceback on stderr) and the complete,
    # uninterrupted run reported "interrupted: the run was stopped before this target finished".
    doc = runner.run(targets(fake_backend, "p:crash-provision", "after:ok"), artifacts=tmp_path,
                     policies=["go-2012"])
    assert doc.complete and doc.interrupted is None
    assert [(r.target, r.status, r.detail) for r in doc.records] == [
        ("p", Status.ERROR, "internal error in fake backend: ModuleNotFoundError: No module named 'paramiko'"),
        ("after", Status.PASS, None)]
    assert "Traceback" not in capfd.readouterr().err
    assert proc.live_pids() == []


def test_parallel_jobs_keep_the_target_order(fake_backend: type, tmp_path: Path) -> None:
    ts = targets(fake_backend, "one:ok", "two:nothing", "three:ok", "four:panic")
    seen: Dict[str, List[str]] = {}
    doc = runner.run(ts, artifacts=tmp_path, jobs=2, policies=["go-2012"],
                     progress=lambda ev, t, msg, recs: seen.setdefault(t.name, []).append(
                         ev + (":" + msg if ev == "phase" else "")))
    assert [r.target for r in doc.records] == ["one", "two", "three", "four"]
    assert [r.status for r in doc.records] == [Status.PASS, Status.ERROR, Status.PASS, Status.PANIC]
    # Each target's events in order, its phases (for a live display) between its start and its result.
    assert seen == {n: ["start", "phase:provision", "phase:boot", "phase:collect", "done"]
                    for n in ("one", "two", "three", "four")}


def test_a_missing_default_tool_skips_with_the_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ts = config.parse("targets:\n  - name: l\n    backend: local\n", "t.yaml")
    monkeypatch.setenv("PATH", str(tmp_path))  # no python3 here: the default program is missing
    monkeypatch.setattr("harness.backends.local.VIEW_PATH", str(tmp_path))  # where the jail looks for it
    doc = runner.run(ts.targets, artifacts=tmp_path)
    assert {r.status for r in doc.records} == {Status.SKIP}
    assert doc.records[0].detail == "local backend needs python3: install it with: sudo apt-get install -y python3"


def test_a_missing_explicit_program_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness import cli

    f = tmp_path / "t.yaml"
    f.write_text("targets:\n  - name: u\n    backend: uml\n    kernel: /nonexistent/linux.uml\n")
    assert cli.main(["run", "--targets", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["arena-harness: %s:4 [u] kernel: no such program: /nonexistent/linux.uml "
                   "(install user-mode-linux, or fix the path)" % f]
    # A typo in a name looked up on PATH: was a skip, and run exited 0.
    f.write_text("targets:\n  - name: u\n    backend: uml\n    kernel: linux.umll\n")
    assert cli.main(["run", "--targets", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["arena-harness: %s:4 [u] kernel: no such program on PATH: linux.umll "
                   "(install user-mode-linux, or fix the path)" % f]


def test_the_watchdog_stops_a_silent_guest(fake_backend: type, tmp_path: Path) -> None:
    ts = config.parse("targets:\n  - name: quiet\n    backend: fake\n    behaviour: hang\n    timeout: 60s\n"
                      "    watchdog: 1s\n", "t.yaml")
    start = time.monotonic()
    (rec,) = runner.run(ts.targets, artifacts=tmp_path, policies=["go-2012"]).records
    assert time.monotonic() - start < 6
    assert rec.status is Status.TIMEOUT and rec.detail == "watchdog: no output from the guest for 1s"
    assert "no output for 1.0s: process group stopped (watchdog)" in Path(rec.log or "").read_text()


# -- proc ----------------------------------------------------------------------------------


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"
    script = "sleep 300 & echo $! > %s; wait" % marker
    start = time.monotonic()
    c = proc.run(["sh", "-c", script], timeout=1.0, log_path=tmp_path / "log", grace=0.5)
    assert c.timed_out and c.stopped == "timeout"
    assert time.monotonic() - start < 4
    pid = int(marker.read_text())
    time.sleep(0.1)
    assert not alive(pid)
    log = (tmp_path / "log").read_text()
    assert log.startswith("$ sh -c ") and "deadline of 1.0s reached" in log


def test_watcher_stops_after_the_reason(tmp_path: Path) -> None:
    c = proc.run(["sh", "-c", "echo hello; echo STOP; sleep 30"], timeout=20,
                 watch=lambda line: "asked" if line == "STOP" else None, after_stop_request=0.2, grace=0.2)
    assert c.stopped == "asked" and not c.timed_out and c.lines[:2] == ["hello", "STOP"]
    assert c.duration_s < 5


def test_output_is_decoded_with_backslashreplace() -> None:
    c = proc.run(["printf", "a\\377b\\n"], timeout=10)
    assert c.lines == ["a\\xffb"]


def test_a_missing_program_is_one_clear_error(tmp_path: Path) -> None:
    c = proc.run(["/nonexistent/linux.uml"], timeout=5, log_path=tmp_path / "l")
    assert not c.started and c.error == "cannot start /nonexistent/linux.uml: No such file or directory"


# -- console -------------------------------------------------------------------------------


def test_frames_panics_and_documents() -> None:
    lines = ["noise", FRAME_BEGIN, '{"schema":1,', '"policy":"go-2012"}', FRAME_END, "x " + FRAME_BEGIN + " [1"]
    frames, problem = extract_frames(lines)
    assert frames == ['{"schema":1,"policy":"go-2012"}'] and problem is not None
    assert parse_documents(frames[0])[0] == {"go-2012": {"schema": 1, "policy": "go-2012"}}
    assert parse_documents("[1]")[1] == "result is not an allocator document of schema 1"
    assert find_panic("[    1.2] Kernel panic - not syncing: VFS") == "Kernel panic - not syncing: VFS"
    assert find_panic("Unable to handle kernel paging request at virtual address 0") is not None
    assert find_panic('"fn":"SysMap","call":"mmap"') is None


# -- output is capped: a flooding child costs a bounded log and bounded memory -----------------------


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError("no %s in /proc/self/status" % field)


def _peak_growth_mib(fn: "Callable[[], proc.Completed]") -> "Tuple[proc.Completed, float]":
    """Run ``fn`` and return how far this process's peak RSS rose above its RSS before (MiB)."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _rss_kib("VmRSS")
    c = fn()
    return c, (_rss_kib("VmHWM") - before) / 1024


CAP = (proc.OUTPUT_HEAD + proc.OUTPUT_TAIL) / (1 << 20)  # MiB


def test_a_flood_of_200_mb_keeps_head_and_tail_and_the_frames_at_the_end(tmp_path: Path) -> None:
    # 200 MB of 1000-byte lines, then a result frame: what a guest flooding its console before the end
    # looks like. Before the cap: a 200 MB log and over 400 MB of harness memory.
    script = ("import sys\nw = sys.stdout.buffer.write\nw(b'BOOT-START\\n')\nline = b'x' * 999 + b'\\n'\n"
              "for i in range(200000): w(line)\n"
              "w(b'%s\\n{\"schema\":1,\"policy\":\"go-2012\"}\\n%s\\n')\n" % (FRAME_BEGIN, FRAME_END))
    log = tmp_path / "flood.log"
    c, growth = _peak_growth_mib(lambda: proc.run([sys.executable, "-c", script], timeout=120, log_path=log))
    assert c.returncode == 0 and not c.timed_out
    size = log.stat().st_size / (1 << 20)
    assert CAP - 0.5 < size < CAP + 0.5, size  # was 200 MB
    text = log.read_text()
    assert text.startswith("$ ") and text.split("\n")[text.split("\n").index("BOOT-START") + 1] == "x" * 999
    gap = [ln for ln in text.splitlines() if ln.startswith("[harness] output capped: ")]
    assert len(gap) == 1 and " lines (" in gap[0] and "the first 4 MiB and the last 4 MiB are kept" in gap[0]
    dropped = int(gap[0].split("dropped")[0].split("(")[1].split()[0])
    assert 190_000_000 < dropped < 200_000_000
    assert text.rstrip("\n").endswith(FRAME_END)
    assert growth < 64, "harness memory grew by %.0f MiB" % growth  # was over 400 MiB
    assert len(c.output) < (CAP + 1) * (1 << 20)
    frames, problem = extract_frames(c.lines)  # the frames come last, so the tail keeps them
    assert problem is None and parse_documents(frames[-1])[0].keys() == {"go-2012"}


def test_a_flood_of_short_lines_is_bounded_in_memory_too(tmp_path: Path) -> None:
    log = tmp_path / "yes.log"
    c, growth = _peak_growth_mib(lambda: proc.run(["yes"], timeout=4, log_path=log, grace=0.5))
    assert c.timed_out
    assert log.stat().st_size < CAP * (1 << 20)  # each kept line also counts its overhead
    assert growth < 64, "harness memory grew by %.0f MiB" % growth
    assert "[harness] output capped: " in log.read_text()


def test_one_endless_line_is_cut(tmp_path: Path) -> None:
    # 300 MB without a newline: readline() without a limit would hold all of it.
    script = ("import sys\nw = sys.stdout.buffer.write\nb = b'y' * (1 << 20)\n"
              "for i in range(300): w(b)\nw(b'\\nlast line\\n')\n")
    log = tmp_path / "line.log"
    c, growth = _peak_growth_mib(lambda: proc.run([sys.executable, "-c", script], timeout=120, log_path=log))
    assert c.returncode == 0 and c.lines[-1] == "last line"
    cut = 300 * (1 << 20) - proc.LINE_MAX
    assert c.lines[0] == "y" * proc.LINE_MAX + " [harness: %d bytes of this line cut]" % cut
    assert growth < 64, "harness memory grew by %.0f MiB" % growth
    assert log.stat().st_size < 2 * proc.LINE_MAX


def test_wait_for_sees_a_line_the_cap_drops(tmp_path: Path) -> None:
    # The marker comes after 6 MB and is followed by 6 MB more: by the time a waiter looks at what is
    # kept, it is gone from the middle. wait_for sees every line as it arrives.
    script = ("import sys, time\nw = sys.stdout.buffer.write\nline = b'z' * 999 + b'\\n'\ntime.sleep(0.5)\n"
              "for i in range(6000): w(line)\nw(b'MARKER\\n')\nfor i in range(6000): w(line)\n"
              "sys.stdout.flush(); time.sleep(30)\n")
    r = proc.start([sys.executable, "-c", script], log_path=tmp_path / "w.log")
    assert isinstance(r, proc.Running)
    try:
        seen = r.wait_for(lambda ln: ln == "MARKER", timeout=30)
        time.sleep(0.5)
        kept = r.lines
    finally:
        r.finish(grace=0.2)
    assert seen == "MARKER"
    assert "MARKER" not in kept and any(ln.startswith("[harness] output capped: ") for ln in kept)
