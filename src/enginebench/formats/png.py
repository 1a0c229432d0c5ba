"""png: the charts of formats/charts.py, one PNG file each, into a folder (`plot --output DIR`); a chart the
data does not support is named on stderr with the reason."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

from enginebench.formats.base import RUNS, Format, Subject


class Png(Format):
    name = "png"
    help = "the report's charts, one PNG file each, into --output DIR"
    renders: ClassVar[frozenset[str]] = frozenset({RUNS})
    folder = True
    several_runs = True

    def write(self, subject: Subject, path: Path) -> list[Path]:
        from enginebench.formats.charts import build_charts, write_pngs  # matplotlib: only when charts are drawn

        charts = build_charts(subject)
        paths = write_pngs(charts, path)
        for line in charts.not_drawn:
            print(f"not drawn: {line}", file=sys.stderr)
        return paths


__all__ = ["Png"]
