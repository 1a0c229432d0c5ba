"""What a measuring process tells the process that launched it: one small record per kind of news, matched by
type (`match msg: case Measured(index, m): ...`), never by position in a tuple.

A child (child.py) to its parent (local.py), in this order for each cell: Started, then Loading/Loaded around
the model's load (only for the cell that loads it), TrialStarted for each timed LoadGen run, Ready when a
client node of several reaches the cell's start line (the parent answers with the epoch second to start at),
then Measured or CellFailed; References for a reference-only job; Done at the end. The parent adds Died when
a child ends any other way (killed, crashed, timed out, over its memory limit).

A Ray task (ray.py) to the dispatcher on the head: NodeStarted first, then CellStarted and Outcome per cell (or
NodeReferences for a reference job); the dispatcher's thread adds JobEnded or JobLost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enginebench.execution.faults import Failure
from enginebench.plan import Cell
from enginebench.scenarios.base import Measurement


# -- child -> parent ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Started:
    index: int  # the cell's index in the plan


@dataclass(frozen=True)
class Loading:
    index: int


@dataclass(frozen=True)
class Loaded:
    index: int


@dataclass(frozen=True)
class TrialStarted:
    index: int
    expected_s: float  # how long LoadGen's run should take: the parent's timeout counts from its end


@dataclass(frozen=True)
class Ready:
    index: int  # at the cell's start line (a client node of several): it starts when the parent says when


@dataclass(frozen=True)
class Measured:
    index: int
    measurement: Measurement


@dataclass(frozen=True)
class CellFailed:
    index: int  # -1: the reference engine failed, not a cell
    error: str
    traceback: str = ""
    kind: str = "error"  # "skipped": the cell cannot run there (scenarios/base.py NotRunnable)
    details: dict | None = None  # a skipped cell's: what its measuring process learnt (NotRunnable.details)


@dataclass(frozen=True)
class References:
    outputs: dict  # workload name (or DECODER_REFERENCE) -> the reference engine's outputs


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class Died:
    failure: Failure | str  # a bare reason: a crash of unknown kind

    def as_failure(self) -> Failure:
        return self.failure if isinstance(self.failure, Failure) else Failure(str(self.failure), "signal")


ChildMessage = Started | Loading | Loaded | TrialStarted | Ready | Measured | CellFailed | References | Done | Died


# -- Ray task -> dispatcher ----------------------------------------------------------------------
@dataclass(frozen=True)
class NodeStarted:
    info: dict  # machine_info() of the node, with its Ray id and address
    engine_version: str | None


@dataclass(frozen=True)
class CellStarted:
    cell: Cell


@dataclass(frozen=True)
class Outcome:
    index: int
    outcome: Measurement | Failure
    failures: list = field(default_factory=list)  # the earlier failed attempts of this repetition


@dataclass(frozen=True)
class NodeReferences:
    references: dict | None
    error: str | None


@dataclass(frozen=True)
class JobEnded:
    pass


@dataclass(frozen=True)
class JobLost:
    error: Exception


__all__ = ["Started", "Loading", "Loaded", "TrialStarted", "Ready", "Measured", "CellFailed", "References", "Done", "Died",
           "ChildMessage", "NodeStarted", "CellStarted", "Outcome", "NodeReferences", "JobEnded", "JobLost"]
