"""json: a run's whole data model (`Run.to_dict`, machine included) plus `notes` (`from_json` reads it back),
or a comparison's every cell, verdict and difference."""

from __future__ import annotations

import json
from typing import ClassVar

from enginebench.formats.base import COMPARISON, RUNS, Format, Subject, subject_kind
from enginebench.formats.tables import comparison, sections
from enginebench.formats.tables.endpoint import server_tax
from enginebench.store.model import Result, Run


def run_notes(run: Run) -> list[str]:
    """Every footnote the tables print, table by table as `show` prints them."""
    return [line for section in sections(run) for line in section.notes]


def to_json(run: Run, with_samples: bool = True) -> str:
    d = run.to_dict(with_samples)
    tax = server_tax(run)  # derived across results: in-process beside a server
    return json.dumps({**{k: v for k, v in d.items() if k != "results"}, "notes": run_notes(run),
                       **({"server_tax": tax} if tax else {}), "results": d["results"]}, indent=2)


def from_json(text: str) -> Run:
    """The Run a `to_json` text holds (its notes are derived, so they are not read back)."""
    d = json.loads(text)
    return Run(d["run_id"], d["created_at"], d["machine"], d["config"],
               [Result.from_dict(r) for r in d["results"]], d.get("schema_version", 1))


class Json(Format):
    name = "json"
    help = "the whole data model, samples included"
    renders: ClassVar[frozenset[str]] = frozenset({RUNS, COMPARISON})
    suffix = ".json"

    def text(self, subject: Subject) -> str:
        if subject_kind(subject) == COMPARISON:
            return comparison.to_json(subject) + "\n"
        return to_json(subject[0])


__all__ = ["Json", "to_json", "from_json", "run_notes"]
