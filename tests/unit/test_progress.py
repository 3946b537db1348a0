"""What a run shows while it runs: a live panel on a terminal whose timers keep counting while a guest
boots, whole lines that never merge anywhere else, columns that keep their place.

The terminal is a real pseudo-terminal and the run a real ``arena-harness run`` process (its backend the
fake one of tests/conftest.py, whose guest takes the time it is told)."""

from __future__ import annotations

import os
import re
import select
import sys
import threading
import time
from pathlib import Path
from typing import List, Tuple

import pytest

from harness import config, progress
from harness.model import Record, Status
from tests.conftest import ROOT

TARGETS = """\
targets:
  - name: slow
    backend: fake
    delay: 3
    policies: [go-2012]
  - name: quick
    backend: fake
    policies: [go-2012]
    expect: {go-2012: fallback-32bit}
"""
CHILD = """\
import sys
from harness import backends, cli
from tests.conftest import FakeBackend
backends.register(FakeBackend)
sys.exit(cli.main(sys.argv[1:]))
"""
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_on_a_terminal(tmp_path: Path) -> Tuple[int, str]:
    """``arena-harness run`` on a pseudo-terminal (80 columns): its exit status and all it wrote."""
    import pty

    (tmp_path / "t.yaml").write_text(TARGETS)
    (tmp_path / "child.py").write_text(CHILD)
    argv = [sys.executable, str(tmp_path / "child.py"), "run", "--targets", str(tmp_path / "t.yaml"), "-j", "2",
            "--artifacts", str(tmp_path / "logs")]
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="80", LINES="24", TERM="xterm-256color")
    pid, fd = pty.fork()
    if pid == 0:  # the child: the run, its stdout and stderr the terminal
        try:
            os.chdir(str(ROOT))
            os.execve(sys.executable, argv, env)
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


def test_on_a_terminal_the_panel_shows_what_is_in_flight_with_a_growing_timer(tmp_path: Path) -> None:
    # Was: one line per start or finish, nothing between them (issue 16: in tmux the screen did not change
    # from t=12 s to t=36 s).
    code, raw = run_on_a_terminal(tmp_path)
    assert code == 0, raw
    text = ANSI.sub("", raw).replace("\r", "\n")
    timers = [float(t) for t in re.findall(r"^slow +boot +(\d+\.\d)s", text, re.M)]
    assert len(timers) >= 6 and timers == sorted(timers), timers  # redrawn, never going back
    assert timers[-1] - timers[0] >= 2.0, timers  # counting while the 3 s guest runs
    result = text.index("slow   observed")
    assert text.rindex("slow  boot", 0, result) < result  # the timer ran until the result came
    assert "quick  pass" in text and text.index("quick  pass") < result  # each result as it arrives
    assert "\nTARGET  POLICY" in text  # then the table
    assert "\x1b[?25h" in raw[raw.rindex("2 of 2 done"):]  # the cursor is given back


class SlowStream:
    """A stream whose writes take a while (a slow terminal, a loaded pipe): a line written in two writes
    (``print`` writes the text, then the newline) is cut by whatever another thread writes meanwhile."""

    def __init__(self) -> None:
        self.chunks: List[str] = []

    def write(self, text: str) -> int:
        time.sleep(0.002)
        self.chunks.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_lines_from_parallel_targets_never_merge() -> None:
    # Was: "[ ..  ] qemu-arm64 … starting (…)[ ..  ] uml … starting": each thread printed without a lock.
    names = ["t%d" % i for i in range(8)]
    ts = config.parse("targets:\n" + "".join("  - {name: %s, backend: local}\n" % n for n in names), "t.yaml").targets
    stream = SlowStream()
    with progress.shown(ts, stream) as show:  # type: ignore[arg-type]
        assert show is not None
        go = threading.Barrier(len(ts))

        def target_events(i: int) -> None:
            t = ts[i]
            go.wait()
            show("start", t, "booting", [])
            show("build", t, "building rootfs bookworm-amd64", [])
            show("done", t, "", [Record(t.name, "local", "go-2012", Status.PASS, "high-arena", "high-arena", None,
                                        True, False, 0.5, None)])

        threads = [threading.Thread(target=target_events, args=(i,)) for i in range(len(ts))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    lines = "".join(stream.chunks).split("\n")
    assert lines[-1] == "" and len(lines) - 1 == 3 * len(ts)
    shape = re.compile(r"^\[(  \.\. | img | \d/8 )\] t\d +(start|building|pass)\b")
    assert [ln for ln in lines[:-1] if not shape.match(ln) or ln.count("[") > 1] == []


def test_columns_keep_their_place() -> None:
    # Was: "%-7s" for the statuses joined ("fail,pass"), so the time column moved from line to line.
    ts = config.parse("targets:\n  - {name: a, backend: local}\n  - {name: a-longer-name, backend: local}\n",
                      "t.yaml").targets
    board = progress.Board(ts)
    lines = []
    for t, statuses in zip(ts, ([Status.FAIL, Status.PASS], [Status.OBSERVED])):
        board.event("start", t, "", [])
        recs = [Record(t.name, "local", p, s, None, "high-arena", None, True, False, 1.0, None)
                for p, s in zip(("go-2012", "go-modern"), statuses)]
        lines.append(board.event("done", t, "", recs) or "")
    assert lines[0].startswith("[ 1/2 ] a             fail     ")
    assert [ln.index("s  go-") for ln in lines] == [lines[0].index("s  go-")] * 2
    assert lines[0].endswith("go-2012=high-arena[fail] go-modern=high-arena")


def test_a_quiet_run_shows_nothing_and_plain_output_names_what_is_in_flight_when_silent() -> None:
    ts = config.parse("targets:\n  - {name: a, backend: local}\n", "t.yaml").targets
    with progress.shown(ts, SlowStream(), quiet=True) as show:  # type: ignore[arg-type]
        assert show is None
    stream = SlowStream()
    board = progress.Board(ts)
    with progress.Plain(board, stream, heartbeat=0.2) as show:  # type: ignore[arg-type]
        show("start", ts[0], "", [])
        show("phase", ts[0], "provision", [])
        show("phase", ts[0], "boot", [])
        time.sleep(0.7)
    text = "".join(stream.chunks)
    assert re.search(r"^\[  \.\. \] \d\.\ds: 0 of 1 done; in flight: a \(boot 0\.\ds\)$", text, re.M), text


@pytest.mark.parametrize("term, tty, live", [("xterm", True, True), ("dumb", True, False), ("xterm", False, False)])
def test_live_only_on_a_terminal_that_can_redraw(term: str, tty: bool, live: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", term)
    stream = SlowStream()
    monkeypatch.setattr(stream, "isatty", lambda: tty)
    assert progress.live_terminal(stream) is live  # type: ignore[arg-type]
