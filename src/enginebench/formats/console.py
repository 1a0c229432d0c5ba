"""table: a run's tables on a console, each kind of result in its own table (formats/tables: encoders, decoders'
generate tests, decoders served, endpoints, operators, blocks), each with its notes, then the machine; or a
comparison's. Rich tables folded to the width on a screen, the Markdown of md anywhere else (a pipe, a log, a
file)."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Console

from enginebench.formats.base import COMPARISON, RUNS, Format, Subject, subject_kind
from enginebench.formats.md import Markdown, to_markdown
from enginebench.formats.tables import comparison, sections
from enginebench.formats.terminal import is_screen, print_lines
from enginebench.store.labels import machine_line
from enginebench.store.model import Run


def render(run: Run, console=None) -> None:
    """The run's tables, notes and machine on a console: rich tables folded to the width in a terminal, the
    Markdown of `show --format md` anywhere else (a pipe, a log)."""
    console = console or Console()
    if not is_screen(console):
        console.out(to_markdown(run), highlight=False, end="")
        return
    drawn = sections(run)
    if not drawn:
        print_lines(console, [f"run {run.run_id} has no results: it stopped before its first cell finished"])
    for section in drawn:
        section.print(console, run.run_id)
    print_lines(console, [machine_line(run)])


class ConsoleTable(Format):
    name = "table"
    help = "rich tables folded to the terminal's width; Markdown in a pipe or a file"
    renders: ClassVar[frozenset[str]] = frozenset({RUNS, COMPARISON})
    suffix = ".md"

    def __init__(self, console: Console | None = None):
        self.console = console

    def show(self, subject: Subject) -> None:
        if subject_kind(subject) == COMPARISON:
            comparison.render(subject, self.console)
        else:
            render(subject[0], self.console)

    def text(self, subject: Subject) -> str:
        return Markdown().text(subject)


__all__ = ["ConsoleTable", "render"]
