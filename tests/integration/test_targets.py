"""Every (target, policy) of the matrix, booted for real: ``pytest -m uml`` runs the UML ones."""

from __future__ import annotations

import pytest

from harness.model import Record
from harness.plugin import check

pytestmark = pytest.mark.integration


def test_target(harness_result: Record) -> None:
    check(harness_result)
    probe = harness_result.probe
    assert probe is not None
    if harness_result.kind == "jvm" or (harness_result.kind == "go" and harness_result.outcome == "crash"):
        # A JVM names no uname; a Go runtime that died printed no facts: the crash text is checked by check()
        return
    assert probe["facts"]["kernel"]
    # Every result carries the guest's own view of itself.
    assert harness_result.kernel == probe["facts"]["kernel"]
    assert harness_result.machine == probe["facts"]["machine"]
    if harness_result.target == "local-bullseye" and harness_result.kind == "model":
        # The oldest Python the guest side claims, from a root filesystem the image pipeline builds.
        assert probe["facts"]["python"].startswith("3.9."), probe["facts"]["python"]
