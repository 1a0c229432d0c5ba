"""table: a run's tables on a console, each kind of result in its own table (encoders, decoders' generate
tests, decoders served, operators, blocks), then the notes and the machine; or a comparison's. The one module
that knows every table. Rich tables folded to the width on a screen, the Markdown of md anywhere else (a pipe, a
log, a file)."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Console

from enginebench.formats.base import COMPARISON, RUNS, Format, Subject, subject_kind
from enginebench.formats.md import Markdown, to_markdown
from enginebench.formats.tables import comparison
from enginebench.formats.tables.decoder import is_decoder_result, render_decoder_table
from enginebench.formats.tables.encoder import _PARAMS, encoder_title, measure_headers, notes, table_rows
from enginebench.formats.tables.endpoint import render_endpoint_table
from enginebench.formats.tables.graph import render_stored as render_blocks
from enginebench.formats.tables.ops import render_stored
from enginebench.formats.tables.serving import render_serving_table
from enginebench.formats.terminal import is_screen, print_lines, print_table
from enginebench.scenarios.registry import in_table, table_of
from enginebench.store.labels import machine_line
from enginebench.store.model import Run


def render(run: Run, console=None) -> None:
    """The run's tables, notes and machine on a console: rich tables folded to the width in a terminal, the
    Markdown of `show --format md` anywhere else (a pipe, a log)."""
    console = console or Console()
    if run.results and all(table_of(r) == "operators" for r in run.results):  # an `enginebench ops` run: its own table
        render_stored(run, console)
        return
    if run.results and all(table_of(r) == "blocks" for r in run.results):  # `enginebench blocks`: its own table
        render_blocks(run, console)
        return
    if not is_screen(console):
        console.out(to_markdown(run), highlight=False, end="")
        return
    if not run.results:
        print_lines(console, [f"run {run.run_id} has no results: it stopped before its first cell finished"])
    if any(map(is_decoder_result, run.results)):
        render_decoder_table(run, console)
    render_serving_table(run, console)
    render_endpoint_table(run, console)
    encoders = Run(run.run_id, run.created_at, run.machine, run.config,
                   in_table(run.results, "encoders"),
                   run.schema_version)
    if encoders.results:
        headers, rows, constants = table_rows(encoders.results)
        styles = ["red" if r.status == "failed" or (r.fidelity and not r.fidelity.get("ok")) else (
            "dim" if r.status == "skipped" else None) for r in encoders.results]
        # the row number names the row in the notes ([1] ...) and, with the engine, in every fold
        print_table(console, encoder_title(encoders, constants), ["#"] + headers,
                    [[str(i)] + row for i, row in enumerate(rows, 1)], keys=1 + len(headers) - len(measure_headers(encoders.results)),
                    left={"#"} | set(dict(_PARAMS)), styles=styles, repeat=2)
        print_lines(console, notes(encoders.results), style="yellow")
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
