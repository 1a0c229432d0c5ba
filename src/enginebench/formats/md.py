"""md: a run's tables, their notes as a list under each, and a `machine:` line; or a comparison's table, its
notes and the gate's line. What the console format prints anywhere but a screen."""

from __future__ import annotations

from typing import ClassVar

from enginebench.formats.base import COMPARISON, RUNS, Format, Subject, subject_kind
from enginebench.formats.tables import comparison
from enginebench.formats.tables.decoder import decoder_markdown
from enginebench.formats.tables.encoder import measured_how, notes, table_rows
from enginebench.formats.tables.endpoint import endpoint_markdown
from enginebench.formats.tables.serving import serving_markdown
from enginebench.formats.terminal import markdown_table
from enginebench.scenarios.registry import in_table
from enginebench.store.labels import machine_line
from enginebench.store.model import Run


def to_markdown(run: Run) -> str:
    encoders = in_table(run.results, "encoders")
    decoders = decoder_markdown(run) + serving_markdown(run) + endpoint_markdown(run)
    parts = []
    if encoders:
        headers, rows, constants = table_rows(encoders)
        models = sorted({r.model for r in encoders})
        title = (f"**run {run.run_id}** · model {', '.join(models)}"
                 + "".join(f" · {k} {v}" for k, v in constants.items()) + measured_how(run.config))
        parts.append(f"{title}\n\n{markdown_table(headers, rows)}")
        parts += ["".join(f"- {line}\n" for line in notes(encoders))] if notes(encoders) else []
    else:
        parts.append(f"**run {run.run_id}**" + (" · decoders" if decoder_markdown(run) or serving_markdown(run)
                                                else "" if decoders else " · no results") + "\n")
    if decoders:
        parts.append(decoders)
    parts.append(machine_line(run) + "\n")
    return "\n".join(parts)


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
