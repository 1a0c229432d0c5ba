"""A cell's history, as stored with its Result, read back so that a resumed sweep runs only what is missing.

Each repetition record of a Result (store/model.py) carries `measurement`: what rebuilds that process's
Measurement besides the sample arrays the store keeps apart. `details.attempts` lists every failed attempt
({repetition, attempt, kind, error}); a repetition with attempts and no record failed for good.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enginebench.execution.faults import Failure
from enginebench.scenarios.base import Measurement
from enginebench.store.derive import measurement_from_record, measurement_record
from enginebench.store.model import Result


@dataclass
class CellHistory:
    """What is known of one cell: measured repetitions, repetitions that failed for good, every failed attempt."""

    measured: list[tuple[int, Measurement]] = field(default_factory=list)
    failed: dict[int, Failure] = field(default_factory=dict)  # repetition -> its last attempt's failure
    attempts: list[dict] = field(default_factory=list)  # {repetition, attempt, kind, error}

    def finished(self, retry_failed: bool = False) -> set[int]:
        """Repetitions that need no further process (failed ones too, unless they are to be retried)."""
        done = {r for r, _ in self.measured}
        return done if retry_failed else done | set(self.failed)

    def tries(self, repetition: int) -> int:
        return sum(1 for a in self.attempts if a["repetition"] == repetition)


def history_of(result: Result) -> CellHistory:
    """A stored Result's history; a skipped result has none (it is stored again, never measured)."""
    history = CellHistory(attempts=list((result.details or {}).get("attempts") or []))
    if result.status == "skipped":
        return history
    history.measured = [(rep["index"], measurement_from_record(rep)) for rep in result.repetitions
                         if "measurement" in rep]
    measured = {r for r, _ in history.measured}
    for a in history.attempts:
        if a["repetition"] not in measured:
            history.failed[a["repetition"]] = Failure(a["error"], a.get("kind", "error"))
    return history


__all__ = ["measurement_record", "measurement_from_record", "CellHistory", "history_of"]
