"""The data model's own behaviour: the one deadline every wait takes what is left of."""

from __future__ import annotations

from pathlib import Path
from typing import List

from harness.backends.base import RunContext
from harness.model import Deadline, Target


def test_a_deadline_gives_what_is_left_and_never_less_than_asked() -> None:
    now: List[float] = [100.0]
    d = Deadline(30, clock=lambda: now[0])
    assert d.left() == 30 and not d.expired
    now[0] += 12
    assert d.left() == 18 and d.elapsed() == 12
    now[0] += 20
    assert d.left() == 0 and d.left(at_least=1.0) == 1.0 and d.expired


def test_a_run_context_carries_one_deadline() -> None:
    t = Target(name="t", backend="local", options=None)
    shared = Deadline(60)
    ctx = RunContext("r", t, ["go-2012"], Path("/w"), Path("/p"), Path("/l"), shared)
    assert ctx.deadline is shared and ctx.timeout == 60  # the object is passed down, not copied
    assert isinstance(RunContext("r", t, [], Path("/w"), Path("/p"), Path("/l"), 5).deadline, Deadline)
