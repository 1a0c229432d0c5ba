"""The tables each output format draws: one module per kind of result (scenarios/base.py TABLES), each with a
`section(run)` that gives its Section (section.py) or None, and the engines' feature table and the graph's node
table; formats/terminal.py folds them to the terminal's width or writes them as Markdown. Adding a kind of table
is one module plus one line in SECTIONS."""

from __future__ import annotations

import importlib

from enginebench.formats.tables.section import Section
from enginebench.scenarios.base import TABLES

SECTIONS: dict[str, str] = {  # a table of TABLES -> the module whose section(run) draws it
    "encoders": "enginebench.formats.tables.encoder",
    "decoders": "enginebench.formats.tables.decoder",
    "decoder serving": "enginebench.formats.tables.serving",
    "endpoints": "enginebench.formats.tables.endpoint",
    "operators": "enginebench.formats.tables.ops",
    "blocks": "enginebench.formats.tables.graph",
}


def sections(run) -> list[Section]:
    """The run's tables in TABLES' order, those with rows."""
    drawn = (importlib.import_module(SECTIONS[table]).section(run) for table in TABLES)
    return [s for s in drawn if s is not None]


__all__ = ["SECTIONS", "Section", "sections"]
