"""csv: the frame of formats/frame.py, one flat row per result (with the columns of its scenarios' own). The machine is in columns of every row
(hostname, cpu, cores, affinity, memory_gb, python) and each row's notes in its own columns (error,
verdict_reasons, notes), so a plain `pandas.read_csv(path)` reads everything back: no comment lines."""

from __future__ import annotations

from typing import ClassVar

from enginebench.formats.base import RUNS, Format, Subject
from enginebench.formats.frame import export_frame
from enginebench.store.model import Run


def to_csv(run: Run) -> str:
    return export_frame(run).to_csv(index=False)


class Csv(Format):
    name = "csv"
    help = "one flat row per result, the machine and notes in columns"
    renders: ClassVar[frozenset[str]] = frozenset({RUNS})
    suffix = ".csv"

    def text(self, subject: Subject) -> str:
        return to_csv(subject[0])


__all__ = ["Csv", "to_csv"]
