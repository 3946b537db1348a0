"""The reports on real runtimes: the model beside real Go and the JVM's results."""

from __future__ import annotations

from harness import report
from harness.model import Record, Status
from harness.results import RunDocument

GO_OOM = "out of memory allocating heap arena metadata"


def test_a_disagreement_has_a_markdown_icon_and_a_terminal_colour() -> None:
    # Was: markdown() had no icon for "disagree" (a KeyError on any run with a disagreement) and the table
    # printed it uncoloured.
    r = Record("rl", "local", "go-modern", Status.DISAGREE, None, "crash", "out of memory", None, None, 1.0, None,
               detail="the model says crash: out of memory, real go says crash: " + GO_OOM)
    doc = RunDocument("r", "s", "f", True, [r])
    assert all(s.value in report._MD_ICON for s in Status)
    assert "| rl | - | ⚖️ crash: out of memory |" in report.markdown(doc)
    assert "\033[95mdisagree" in report.table(doc, color=True)
