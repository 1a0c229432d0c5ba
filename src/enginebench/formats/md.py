"""md: a run's tables, their notes as a list under each, and a `machine:` line; or a comparison's table, its
notes and the gate's line. What the console format prints anywhere but a screen."""

from __future__ import annotations

from typing import ClassVar

from enginebench.formats.base import COMPARISON, RUNS, Format, Subject, subject_kind
from enginebench.formats.tables import comparison, sections
from enginebench.store.labels import machine_line
from enginebench.store.model import Run


def to_markdown(run: Run) -> str:
    """Each table under its bold title line (`**run ID** · what it shows`), its notes as a list, then the machine."""
    parts = [section.markdown(run.run_id) for section in sections(run)] or [f"**run {run.run_id}** · no results\n"]
    return "\n".join(parts + [machine_line(run) + "\n"])


class Markdown(Format):
    name = "md"
    help = "the tables as GitHub Markdown, notes and machine included"
    renders: ClassVar[frozenset[str]] = frozenset({RUNS, COMPARISON})
    suffix = ".md"

    def text(self, subject: Subject) -> str:
        if subject_kind(subject) == COMPARISON:
            return comparison.to_markdown(subject)
        return to_markdown(subject[0])


__all__ = ["Markdown", "to_markdown"]
