"""Every (target, policy) of the matrix, booted for real: ``pytest -m uml`` runs the UML ones."""

from __future__ import annotations

import pytest

from harness.model import Record
from harness.plugin import check

pytestmark = pytest.mark.integration


def test_target(harness_result: Record) -> None:
    check(harness_result)
    probe = harness_result.probe
    assert probe is not None and probe["facts"]["kernel"]
    # Every result carries the guest's own view of itself.
    assert harness_result.kernel == probe["facts"]["kernel"]
    assert harness_result.machine == probe["facts"]["machine"]
    if harness_result.target == "local-bullseye":
        # The oldest Python the guest side claims, from a root filesystem the image pipeline builds.
        assert probe["facts"]["python"].startswith("3.9."), probe["facts"]["python"]
