"""A user's own program as a probe, delivered from this host into a UML guest and a QEMU riscv64 guest
(Sv39), its results beside the model's: examples/probes/user-top.sh, a plain sh script."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import backends, config, runner
from harness.model import Status
from harness.plugin import skip_or_fail
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration]

PROBE = ROOT / "examples" / "probes" / "user-top.sh"
TARGETS = """\
targets:
  - name: um
    backend: uml
    probes: [go-modern, {name: user-top, program: %(probe)s}, {name: inline, program: sh,
             args: [-c, 'echo "not json"; echo ''{"outcome": "crash", "crash": "by design"}''']}]
    expect: {go-modern: os-chosen, user-top: os-chosen, inline: "crash: by design"}
  - name: sv39
    backend: qemu
    arch: riscv64
    kernel_args: [no4lvl]
    probes: [go-modern, {name: user-top, program: %(probe)s}]
    expect: {go-modern: os-chosen, user-top: os-chosen}
"""


def test_a_host_program_runs_as_a_probe_beside_the_model(tmp_path: Path) -> None:
    targets = config.parse(TARGETS % {"probe": PROBE}, "t.yaml").targets
    for t in targets:
        missing = backends.get(t.backend)(t).missing()
        if missing is not None:
            skip_or_fail(t.backend, str(missing))
    doc = runner.run(targets, artifacts=tmp_path)
    got = {(r.target, r.policy): r for r in doc.records}
    assert sorted(got) == [("sv39", "go-modern"), ("sv39", "user-top"), ("um", "go-modern"), ("um", "inline"),
                           ("um", "user-top")]
    for r in got.values():
        assert r.status is Status.PASS, (r.target, r.policy, r.detail)
    for target in ("um", "sv39"):
        r = got[(target, "user-top")]
        assert r.kind == "program" and r.probe is not None
        top = int(r.probe["facts"]["user_top"], 16)
        assert top < 0xF8 << 32, hex(top)  # neither reaches Go's hint: as go-modern found (os-chosen)
        assert r.probe["program"]["stdout"].startswith("stack ends at 0x")  # its other output: its log
    assert got[("um", "inline")].probe["program"]["stdout"] == "not json"
