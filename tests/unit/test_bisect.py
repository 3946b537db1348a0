"""Boundary search: the search on fake point functions (several boundaries, windows, resolution, the
cache, stops), go-2012's crash window on the simulated kernel, the checks on a search's inputs, the CLI
and the HTML page."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pytest

import images
from allocator.probe import run_policy
from allocator.space import GO_STACK
from harness import bisect, cli, config, report
from harness.bisect import BisectDocument, Plan, Point, PointCache
from harness.errors import UsageError
from harness.model import Target

KiB = 1 << 10
MiB = 1 << 20
HINT = 0xF8 << 32  # Go 2012's arena hint
SIM_LO, SIM_HI = 0xF000000000, 0x10000000000

TARGETS = """\
schema: 1
targets:
  - name: here
    backend: local
    probes: [go-2012-pre, go-2012, go-modern, go]
  - name: umlk
    backend: uml
    suite: bookworm
  - name: emu
    backend: qemu-user
    arch: riscv64
    reserved_va: 256G
  - name: vm
    backend: qemu
    arch: x86_64
"""


def targets() -> Dict[str, Target]:
    return {t.name: t for t in config.parse(TARGETS, "t.yaml").targets}


class Fake:
    """A point function: the outcome at ``v`` is that of the last step at or below ``v`` (``steps``:
    (from value, outcome) pairs, ascending), per probe; it counts what it measured."""

    def __init__(self, steps: Dict[str, List[Tuple[int, str]]], status: str = "observed",
                 error_at: Optional[Callable[[int], bool]] = None) -> None:
        self.steps = steps
        self.status = status
        self.error_at = error_at
        self.calls: List[Tuple[int, Tuple[str, ...]]] = []

    def outcome(self, probe: str, value: int) -> str:
        return [o for v, o in self.steps[probe] if v <= value][-1]

    def __call__(self, value: int, probes: Sequence[str]) -> Dict[str, Point]:
        self.calls.append((value, tuple(probes)))
        out = {}
        for p in probes:
            if self.error_at is not None and self.error_at(value):
                out[p] = Point(value, None, None, "error", "no result at %d" % value)
                continue
            word, _, crash = self.outcome(p, value).partition(": ")
            out[p] = Point(value, word, crash or None, self.status)
        return out

    def measured(self, probe: str) -> int:
        return sum(1 for _, ps in self.calls if probe in ps)


def fake_plan(probes: Sequence[str] = ("p",), lo: int = 0, hi: int = 10000, resolution: int = 1,
              samples: int = 8, knob: str = "rlimit_as", kernels: Sequence[str] = ()) -> Plan:
    return Plan(targets()["here"], knob, lo, hi, resolution, samples, tuple(probes), tuple(kernels))


def run(plan: Plan, fake: Fake, cache: Optional[PointCache] = None,
        stop: Callable[[], Optional[str]] = lambda: None) -> BisectDocument:
    return bisect.search(plan, artifacts=Path("/nonexistent"), cache=cache, measure=fake, stop=stop, quiet=True)


def edges(doc: BisectDocument, probe: str = "p") -> List[Tuple[int, str, int, str]]:
    return [(b.last.value, b.last.label, b.first.value, b.first.label) for b in doc.boundaries(probe)]


# -- the search ---------------------------------------------------------------------------------


def test_every_boundary_is_found_to_the_resolution_with_the_outcomes_on_both_sides() -> None:
    fake = Fake({"p": [(0, "fallback-32bit"), (1000, "crash: runtime: out of memory"), (1300, "high-arena")]})
    doc = run(fake_plan(), fake)
    assert edges(doc) == [(999, "fallback-32bit", 1000, "crash: runtime: out of memory"),
                          (1299, "crash: runtime: out of memory", 1300, "high-arena")]
    assert all(b.resolved for b in doc.boundaries("p")) and doc.complete
    # Sampling and halving: far fewer points than the 10001 values.
    assert len(fake.calls) < 40 and doc.measured == len(fake.calls) == doc.measurements


class Flaky(Fake):
    """At ``value`` every ``every``-th measurement gives ``other`` instead (a runtime whose own use
    varies from run to run at its boundary)."""

    def __init__(self, steps: Dict[str, List[Tuple[int, str]]], value: int, other: str, every: int) -> None:
        super().__init__(steps)
        self.value, self.other, self.every, self.at_value = value, other, every, 0

    def outcome(self, probe: str, value: int) -> str:
        if value == self.value:
            self.at_value += 1
            if self.at_value % self.every == 0:
                return self.other
        return super().outcome(probe, value)


def test_confirm_measures_each_side_again_afresh_and_calls_a_varying_one_unstable(tmp_path: Path) -> None:
    steps = {"p": [(0, "crash: pageAlloc: out of memory"), (695, "high-arena")], "q": [(0, "fallback-32bit")]}
    # 695 gives the GC sweeper's crash on every second measurement, after the search's first one
    fake = Flaky(steps, 695, "crash: runtime: cannot allocate memory", every=2)
    plan = dataclasses.replace(fake_plan(("p", "q"), hi=1000), confirm=3)
    cache = PointCache(tmp_path / "points")
    doc = run(plan, fake, cache=cache)
    (b,) = doc.boundaries("p")
    assert (b.last.value, b.first.value) == (694, 695) and doc.boundaries("q") == []
    assert b.last.seen == {"crash: pageAlloc: out of memory": 4} and b.last.stable
    assert b.first.seen == {"high-arena": 2, "crash: runtime: cannot allocate memory": 2}
    assert not b.first.stable and not b.stable
    # each side 3 more times, in boots of its own, counted; q (no boundary) is not measured again
    again = [c for c in fake.calls if c[0] in (694, 695)]
    assert again[-6:] == [(694, ("p",))] * 3 + [(695, ("p",))] * 3
    assert doc.measurements == len(fake.calls)
    out = bisect.text(doc)
    assert "    confirmed at 694: crash: pageAlloc: out of memory 4 of 4" in out
    assert "    UNSTABLE at 695: high-arena 2 of 4, crash: runtime: cannot allocate memory 2 of 4" in out
    js = doc.to_json()
    assert js["confirm"] == 3 and js["probes"][0]["boundaries"][0]["stable"] is False
    assert js["probes"][0]["boundaries"][0]["first"]["seen"] == b.first.seen
    page = report.bisect_html(doc)
    assert ('<tr class="unstable"><td></td><td colspan="4" class="small">UNSTABLE at 695: high-arena 2 of 4, '
            'crash: runtime: cannot allocate memory 2 of 4</td></tr>') in page
    assert "confirmed at 694: crash: pageAlloc: out of memory 4 of 4" in page
    # A machine's error at a side is tallied but is no second outcome; a stop before a side's first
    # measurement again leaves it unconfirmed rather than "1 of 1".
    p = Point(695, "high-arena", None, "observed", seen={"high-arena": 3, "error": 1})
    assert p.stable
    probe = Fake(steps)
    run(dataclasses.replace(plan, confirm=0), probe)
    searched = len(probe.calls)  # the search's own measurements; the stop comes right after them
    fake2 = Fake(steps)
    stopped = run(dataclasses.replace(plan, confirm=2), fake2,
                  stop=lambda: "SIGTERM" if len(fake2.calls) >= searched else None)
    assert len(fake2.calls) == searched and stopped.interrupted
    assert all(not q.seen for pts in stopped.points.values() for q in pts)
    assert "confirmed" not in bisect.text(stopped)
    # A repeated search takes the points from the cache, and confirms afresh all the same.
    calls = len(fake.calls)
    again_doc = run(plan, fake, cache=cache)
    assert again_doc.cached > 0 and len(fake.calls) - calls == 6


def test_crash_messages_tell_outcomes_apart() -> None:
    fake = Fake({"p": [(0, "crash: runtime: out of memory"), (5000, "crash: runtime: address space conflict")]})
    assert edges(run(fake_plan(), fake)) == [(4999, "crash: runtime: out of memory", 5000,
                                              "crash: runtime: address space conflict")]


def test_a_window_between_two_other_outcomes_is_found_whatever_its_width() -> None:
    # Go 2012's crash window: fallback below, the high arena above; no sample lands in it.
    fake = Fake({"p": [(0, "fallback-32bit"), (6001, "crash"), (6003, "high-arena")]})
    doc = run(fake_plan(), fake)
    assert not any(v in (6001, 6002) for v, _ in fake.calls[:8])  # the samples missed it
    assert edges(doc) == [(6000, "fallback-32bit", 6001, "crash"), (6002, "crash", 6003, "high-arena")]


def test_a_window_with_one_outcome_on_both_sides_needs_a_sample_in_it() -> None:
    steps = {"p": [(0, "high-arena"), (4000, "crash"), (4100, "high-arena")]}
    assert edges(run(fake_plan(samples=8), Fake(steps))) == []  # samples every ~1428: none in 4000..4099
    found = edges(run(fake_plan(samples=101), Fake(steps)))  # every 100: 4000 is one
    assert found == [(3999, "high-arena", 4000, "crash"), (4099, "crash", 4100, "high-arena")]


def test_the_resolution_is_the_widest_a_boundary_stays_and_values_lie_on_its_grid() -> None:
    fake = Fake({"p": [(0, "a"), (777, "b")]})
    doc = run(fake_plan(lo=100, hi=10050, resolution=64), fake)
    (b,) = doc.boundaries("p")
    assert b.last.value < 777 <= b.first.value and b.first.value - b.last.value == 64
    assert all((v - 100) % 64 == 0 or v == 10050 for v, _ in fake.calls)  # the range's end need not be on it


def test_sample_values_and_middles() -> None:
    assert bisect.sample_values(0, 70, 1, 8) == [0, 10, 20, 30, 40, 50, 60, 70]
    assert bisect.sample_values(0, 3, 1, 8) == [0, 1, 2, 3]
    assert bisect.sample_values(0, 10, 4, 3) == [0, 4, 10]
    assert bisect.middle(0, 10, 1) == 5 and bisect.middle(0, 7, 4) == 4 and bisect.middle(8, 10, 1) == 9


def test_each_probe_is_searched_on_its_own_and_sampled_in_one_boot() -> None:
    fake = Fake({"a": [(0, "x"), (100, "y")], "b": [(0, "x"), (9000, "y")]})
    doc = run(fake_plan(probes=("a", "b")), fake)
    assert edges(doc, "a") == [(99, "x", 100, "y")] and edges(doc, "b") == [(8999, "x", 9000, "y")]
    samples = [c for c in fake.calls if len(c[1]) == 2]
    assert len(samples) == 8  # every sample measured both probes at once
    assert {c[1] for c in fake.calls if len(c[1]) == 1} == {("a",), ("b",)}  # halving measured one each


def test_points_are_cached_by_their_inputs_and_a_repeated_search_measures_nothing(tmp_path: Path) -> None:
    steps = {"p": [(0, "fallback-32bit"), (1000, "crash"), (1300, "high-arena")]}
    first = Fake(steps)
    doc1 = run(fake_plan(), first, PointCache(tmp_path))
    again = Fake(steps)
    doc2 = run(fake_plan(), again, PointCache(tmp_path))
    assert again.calls == [] and doc2.measured == 0 and doc2.cached == len(first.calls)
    assert edges(doc2) == edges(doc1) and all(p.cached for p in doc2.points["p"])
    # Another input (here the target's grow plan) is another point.
    plan = fake_plan()
    other = Plan(Target(**dict(vars(plan.target), grow="4M")), *list(vars(plan).values())[1:])
    third = Fake(steps)
    run(other, third, PointCache(tmp_path))
    assert len(third.calls) == len(first.calls)
    # --no-cache: read nothing, measure everything again.
    fourth = Fake(steps)
    run(fake_plan(), fourth, PointCache(tmp_path, enabled=False))
    assert len(fourth.calls) == len(first.calls)


def test_points_without_an_outcome_are_measured_again(tmp_path: Path) -> None:
    steps = {"p": [(0, "a"), (5000, "b")]}
    first = Fake(steps, error_at=lambda v: v == 10000)
    doc = run(fake_plan(), first, PointCache(tmp_path))
    assert doc.points["p"][-1].label == "error"
    again = Fake(steps)
    run(fake_plan(), again, PointCache(tmp_path))
    assert [v for v, _ in again.calls] == [10000]  # only the error was measured again


def test_a_torn_cache_file_is_a_miss(tmp_path: Path) -> None:
    steps = {"p": [(0, "a"), (5000, "b")]}
    run(fake_plan(), Fake(steps), PointCache(tmp_path))
    for f in tmp_path.glob("*.json"):
        f.write_text("{not json")
    again = Fake(steps)
    doc = run(fake_plan(), again, PointCache(tmp_path))
    assert again.calls and edges(doc) == [(4999, "a", 5000, "b")]


def test_a_stopped_search_keeps_what_it_found_and_says_what_is_unresolved() -> None:
    fake = Fake({"p": [(0, "a"), (5000, "b")]})
    doc = run(fake_plan(), fake, stop=lambda: "SIGINT" if len(fake.calls) >= 10 else None)
    assert doc.stopped == "interrupted by SIGINT" and doc.interrupted and not doc.complete
    (b,) = doc.boundaries("p")
    assert not b.resolved and b.last.value < 5000 <= b.first.value
    assert len(doc.points["p"]) == 9  # the tenth was measured as the stop came: a stopped guest's, not kept
    text = bisect.text(doc)
    assert "INCOMPLETE: interrupted by SIGINT" in text and "not narrowed to the resolution" in text
    assert json.loads(json.dumps(doc.to_json()))["probes"][0]["boundaries"][0]["resolved"] is False


def test_a_point_that_cannot_be_measured_stops_the_search_without_calling_it_an_interrupt() -> None:
    def measure(value: int, probes: Sequence[str]) -> Dict[str, Point]:
        if value > 3000:
            raise bisect.Unmeasurable("here cannot run here: no such tool")
        return {p: Point(value, "a", None, "observed") for p in probes}

    doc = bisect.search(fake_plan(), artifacts=Path("/nonexistent"), measure=measure, quiet=True)
    assert doc.stopped == "here cannot run here: no such tool" and not doc.interrupted
    assert [p.value for p in doc.points["p"]] == [0, 1428, 2857]


def test_a_kernel_search_reports_the_first_kernel_where_the_outcome_changes() -> None:
    kernels = ("bullseye", "bookworm", "trixie", "forky")
    fake = Fake({"p": [(0, "fallback-32bit"), (2, "os-chosen")]})
    doc = run(fake_plan(knob=bisect.KERNEL, lo=0, hi=3, resolution=1, kernels=kernels), fake)
    (b,) = doc.boundaries("p")
    assert (doc.fmt(b.last.value), doc.fmt(b.first.value)) == ("bookworm", "trixie")
    assert "boundary: last bookworm (fallback-32bit), first trixie (os-chosen)" in bisect.text(doc)


def test_the_progress_lines_name_the_interval_being_narrowed(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    fake = Fake({"p": [(0, "a"), (5000, "b")]})
    bisect.search(fake_plan(), artifacts=Path("/nonexistent"), measure=fake, stream=sys.stderr)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("[  1] p sample 0  -> p=a")
    assert any(re.search(r"p in 4285 \.\. 5714 \(about 11 steps left\): 4999", ln) for ln in err), err


# -- go-2012 on the simulated kernel -------------------------------------------------------------


def test_go_2012s_crash_window_on_the_simulated_kernel(tmp_path: Path) -> None:
    plan = bisect.plan(targets()["here"], knob="task_size", lo=SIM_LO, hi=SIM_HI, probes=["go-2012"],
                       probes_given=True)
    doc = bisect.search(plan, artifacts=tmp_path, cache=PointCache(tmp_path / "c"), quiet=True)
    bounds = doc.boundaries("go-2012")
    assert bounds[0].last.label == "fallback-32bit" and bounds[-1].first.label == "high-arena"
    assert all(b.first.outcome == "crash" for b in bounds[:-1]) and len(bounds) >= 2
    # The 64 KiB probe at the hint fits once user space reaches past it and the stack above it.
    assert bounds[0].first.value == HINT + 64 * KiB + GO_STACK
    for b in bounds:  # each side, measured again apart from the search, says the same
        assert b.first.value - b.last.value == bisect.PAGE
        for p in (b.last, b.first):
            d = run_policy("go-2012", simulate="task-size=%d,machine=x86_64" % p.value, trace=False)
            assert (d["outcome"], d["crash"]) == (p.outcome, p.crash)


def test_task_size_leaves_out_real_runtimes_unless_they_were_asked_for() -> None:
    t = targets()["here"]
    plan = bisect.plan(t, knob="task_size", lo=SIM_LO, hi=SIM_HI)
    assert plan.probes == ("go-2012-pre", "go-2012", "go-modern") and "go left out" in plan.notes[0]
    with pytest.raises(UsageError, match="go is a real runtime that needs a target"):
        bisect.plan(t, knob="task_size", lo=SIM_LO, hi=SIM_HI, probes=["go"], probes_given=True)


def test_the_simulated_kernel_gets_the_targets_architecture() -> None:
    t = targets()
    assert bisect.simulated_spec(t["emu"], 1 << 38) == "task-size=274877906944,machine=riscv64"
    assert bisect.simulated_spec(t["vm"], 1 << 38).endswith("machine=x86_64")


# -- what a search is given ----------------------------------------------------------------------


@pytest.mark.parametrize("target, kw, message", [
    ("umlk", dict(knob="reserved_va", lo=1 << 30, hi=2 << 30),
     "--vary reserved_va: .* is a knob of qemu-user targets, and umlk is a uml target"),
    ("here", dict(knob="memory", lo=1 << 30, hi=2 << 30), "is a knob of uml and qemu targets"),
    ("here", dict(knob="stack", lo=1, hi=2), "unknown knob 'stack'; knobs: reserved_va, memory, rlimit_as"),
    ("here", dict(knob="rlimit_as", lo=2 << 30, hi=1 << 30), "--from must be below --to"),
    ("here", dict(knob="rlimit_as", lo=1 << 30), "--vary rlimit_as needs --from and --to"),
    ("here", dict(knob="rlimit_as", lo=MiB, hi=2 * MiB, resolution=4 * MiB), "wider than the range"),
    ("emu", dict(knob="reserved_va", lo=MiB, hi=1 << 40), "--from: target emu reserved_va: expected at least"),
    ("vm", dict(knob="memory", lo=512 * MiB, hi=1 << 30, resolution=4096), "guests take whole MiB"),
    ("here", dict(), "give either --vary KNOB --from A --to B or --kernels"),
    ("here", dict(knob="rlimit_as", lo=0, hi=1, kernels=["a", "b"]), "give either"),
    ("here", dict(kernels=["bookworm", "trixie"]), "--kernels: here is a local target"),
    ("umlk", dict(kernels=["bookworm"]), "expected at least two"),
    ("umlk", dict(kernels=["bookworm", "--setup-hook=x"]), "expected Debian releases or kernel package names"),
    ("umlk", dict(kernels=["bookworm", "linux-image-amd64"]), "a uml target takes Debian releases"),
    ("umlk", dict(kernels=["bookworm", "bookworm"]), "named twice"),
    ("umlk", dict(kernels=["bookworm", "trixie"], resolution=1), "takes no --from, --to or --resolution"),
    ("here", dict(knob="rlimit_as", lo=MiB, hi=2 * MiB, samples=1), "--samples: expected 2 to 1000"),
    ("here", dict(knob="rlimit_as", lo=MiB, hi=2 * MiB, confirm=-1), "--confirm: expected 0 to 50"),
    ("here", dict(knob="rlimit_as", lo=MiB, hi=2 * MiB, probes=["someone-elses"], probes_given=True),
     "no probe to search on here"),
])
def test_a_search_that_cannot_be_is_one_clear_line(target: str, kw: Dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message) as e:
        bisect.plan(targets()[target], **kw)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)


def test_kernels_apply_as_suites_or_kernel_packages() -> None:
    t = targets()
    plan = bisect.plan(t["vm"], kernels=["bookworm", "linux-image-rt-amd64"])
    assert bisect.apply(t["vm"], bisect.KERNEL, 0, plan.kernels).options.suite == "bookworm"
    assert bisect.apply(t["vm"], bisect.KERNEL, 1, plan.kernels).options.kernel_package == "linux-image-rt-amd64"
    assert bisect.apply(t["umlk"], bisect.KERNEL, 1, ("bookworm", "trixie")).options.suite == "trixie"
    varied = bisect.apply(t["emu"], "reserved_va", 1 << 36)
    assert varied.options.reserved_va == 1 << 36 and varied.expect == ()
    assert bisect.apply(t["umlk"], "memory", 96 * MiB).options.memory == 96 * MiB
    assert bisect.apply(t["vm"], "rlimit_as", 700 * MiB).rlimit_as == 700 * MiB
    # A QEMU machine that changes with each value boots cold (a saved guest per value would only cost a
    # save, and hold memory being searched); one whose machine stays the same resumes its saved guest.
    assert not bisect.apply(t["vm"], "memory", 512 * MiB).options.snapshot
    assert not bisect.apply(t["vm"], bisect.KERNEL, 0, plan.kernels).options.snapshot
    assert bisect.apply(t["vm"], "rlimit_as", 700 * MiB).options.snapshot
    assert bisect.apply(t["here"], "task_size", 1 << 39) == bisect.apply(t["here"], "task_size", 1 << 40)


def test_sizes_on_the_command_line_read_as_in_a_targets_file() -> None:
    assert config.size("0xf000000000", "--from") == 0xF000000000
    assert config.size("700M", "--to") == 700 * MiB
    with pytest.raises(UsageError, match='--from: expected a size like "256M", got "lots"'):
        config.size("lots", "--from")


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(images.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_cli_prints_the_runs_and_boundaries_and_writes_json_and_html(
        tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    targets_file = tmp_path / "t.yaml"
    targets_file.write_text(TARGETS)
    argv = ["bisect", "here", "--targets", str(targets_file), "--vary", "task_size", "--from", "0xf000000000",
            "--to", "0x10000000000", "--probe", "go-2012", "--json", str(tmp_path / "b.json"), "--html",
            str(tmp_path / "b.html")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("bisect here (local): task_size from 0xf000000000 to 0x10000000000, resolution 0x1000")
    assert "  0xf000000000 .. 0xf800030000   fallback-32bit" in out
    assert "boundary: last 0xf800030000 (fallback-32bit), first 0xf800031000 (crash: runtime: out of memory)" in out
    d = json.loads((tmp_path / "b.json").read_text())
    assert d["kind"] == "arena-harness-bisect" and d["complete"] and d["knob"] == "task_size"
    first = d["probes"][0]["boundaries"][0]
    assert (first["last"]["text"], first["first"]["label"]) == ("0xf800030000", "crash: runtime: out of memory")
    assert (cache_dir / "bisect").is_dir()
    page = (tmp_path / "b.html").read_text()
    assert page.count("<svg") == 2 and "Boundary search: here (local)" in page  # the strip and its zoom
    # Again: all from the cache.
    assert cli.main(argv[:-4]) == 0
    again = capsys.readouterr().out
    assert re.search(r"\n0 points measured in 0 runs of the simulated kernel, \d+ from the cache", again)


@pytest.mark.parametrize("args, message", [
    (["here", "--vary", "memory", "--from", "1G", "--to", "2G"], "is a knob of uml and qemu targets"),
    (["here", "--vary", "rlimit_as", "--from", "lots", "--to", "2G"], '--from: expected a size like "256M"'),
    (["nowhere", "--vary", "rlimit_as", "--from", "1G", "--to", "2G"], "unknown target 'nowhere'"),
    (["here", "--vary", "rlimit_as", "--from", "1G", "--to", "2G", "--probe", "gogo"], "unknown probe 'gogo'"),
    (["here*", "--kernels", "a,b"], "give its name, not a pattern"),
    (["here", "--vary", "rlimit_as", "--from", "1G", "--to", "2G", "--samples", "x"], "invalid int value"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str],
                                          args: List[str], message: str) -> None:
    targets_file = tmp_path / "t.yaml"
    targets_file.write_text(TARGETS)
    assert cli.main(["bisect", "--targets", str(targets_file)] + args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("arena-harness: ") and message in err, err


def test_a_search_on_a_backend_that_cannot_run_here_is_refused_before_it_starts(
        tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import proc

    monkeypatch.setattr(proc, "which", lambda tool: None)
    targets_file = tmp_path / "t.yaml"
    targets_file.write_text(TARGETS)
    assert cli.main(["bisect", "--targets", str(targets_file), "emu", "--vary", "reserved_va", "--from", "1G",
                     "--to", "2G"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot search on emu here: qemu-user backend needs qemu-riscv64-static" in err


# -- the HTML page -------------------------------------------------------------------------------


def test_the_page_colours_runs_marks_boundaries_and_escapes_what_guests_said() -> None:
    evil = "crash: <img src=x onerror=alert(1)>"
    fake = Fake({"p": [(0, "fallback-32bit"), (4000, evil), (4100, "high-arena")]})
    doc = run(fake_plan(), fake)
    page = report.bisect_html(doc)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    strip = report.bisect_strip_svg(doc, "p", report.bisect_colors(doc))
    fills = re.findall(r'<rect x="[\d.]+" y="34" width="[\d.]+" height="28" fill="(#[0-9a-f]{6})"><title>', strip)
    assert fills == ["#fff176", report._CRASH_COLORS[0], "#a5d6a7"]  # fallback, the crash, the high arena
    assert strip.count('stroke="#212121" stroke-width="2">') == 2  # two boundaries, both narrowed
    assert report.bisect_zoom(doc, "p") is not None and page.count("<svg") == 2
    assert "Incomplete search" not in page


def test_the_page_of_a_stopped_search_says_so_and_dashes_what_was_not_narrowed() -> None:
    fake = Fake({"p": [(0, "a"), (5000, "b")]})
    doc = run(fake_plan(), fake, stop=lambda: "SIGTERM" if len(fake.calls) >= 9 else None)
    page = report.bisect_html(doc)
    assert "Incomplete search: interrupted by SIGTERM" in page and 'stroke-dasharray="3 2"' in page


def test_a_kernel_search_draws_a_cell_per_kernel() -> None:
    kernels = ("bullseye", "bookworm", "trixie")
    doc = run(fake_plan(knob=bisect.KERNEL, lo=0, hi=2, resolution=1, kernels=kernels),
              Fake({"p": [(0, "fallback-32bit"), (1, "os-chosen")]}))
    strip = report.bisect_strip_svg(doc, "p", report.bisect_colors(doc))
    assert all(">%s</text>" % k in strip for k in kernels) and strip.count("<title>boundary 1:") == 1


class Terminal:
    """A stream that says it is a terminal (the live line's), keeping what was written."""

    def __init__(self) -> None:
        self.chunks: List[str] = []

    def write(self, text: str) -> int:
        self.chunks.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_live_line_names_the_interval_and_counts_the_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TERM", "xterm-256color")
    steps = {"p": [(0, "a"), (5000, "b")]}
    fake = Fake(steps)

    def slow(value: int, probes: Sequence[str]) -> Dict[str, Point]:
        got = fake(value, probes)
        if value == 4999:  # a point that takes a while: the live line must show it being measured
            time.sleep(1.2)
            got["p"].seconds = 1.2
        return got

    term = Terminal()
    bisect.search(fake_plan(), artifacts=Path("/nonexistent"), measure=slow, stream=term)  # type: ignore[arg-type]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", "".join(term.chunks))
    timers = [float(t) for t in re.findall(r"p in 4285 \.\. 5714 \(about 11 steps left\): 4999  (\d+\.\d)s", text)]
    assert len(timers) >= 3 and timers == sorted(timers) and timers[-1] >= 0.8, text  # redrawn while it runs
    assert "] p in 4285 .. 5714 (about 11 steps left): 4999  -> p=a  1.2s\n" in text  # then its line, above it
