"""One operator case (operator × shape × precision, with where the shape comes from), as the ops scenario's cells
carry it, and what timing it on one engine found: the rows the ops tables read (formats/tables/ops.py)."""

from __future__ import annotations

from dataclasses import dataclass

from enginebench.scenarios.base import ScenarioSettings
from enginebench.scenarios.ops.definitions import format_shape


@dataclass(frozen=True)
class OpCase:
    op: str
    shape: tuple[int, ...]
    precision: str
    label: str = ""  # where the shape comes from, e.g. "minilm b32 FFN up"; "" for a --shape override
    batch: int = 1  # the model's sequences in a call at this shape
    tokens: int = 1  # tokens per sequence in the model's phase (128 prefill, 1 decode)

    @property
    def workload(self) -> str:
        """How a stored result names the case: the shape, then its label."""
        return f"{format_shape(self.shape)} {self.label}".strip()


@dataclass(frozen=True)
class CaseSettings(ScenarioSettings):
    """An op cell's settings: its case. A result keeps none of them apart (`stored`): its model is the operator,
    its workload the shape and label, its precision, batch size and seq_len the case's."""

    case: OpCase

    def label(self) -> str:
        return self.case.op

    def stored(self) -> dict | None:
        return None

    @classmethod
    def from_dict(cls, d: dict) -> "CaseSettings":
        case = d["case"]
        return cls(OpCase(**{**case, "shape": tuple(case["shape"])}))


@dataclass
class OpMeasurement:
    """One case on one engine: samples in ns, or why there are none."""

    case: OpCase
    engine: str
    samples_ns: list[int] | None = None
    max_rel_error: float | None = None
    io_itemsize: int | None = None  # bytes per element the engine's call read and wrote
    note: str = ""
    unsupported: str | None = None  # the engine cannot express it: why
    error: str | None = None  # it failed: why
    threads: dict | None = None  # how the engine's threads were set, as the engine reports it
    engine_version: str | None = None
    prepare_s: float | None = None  # converting the inputs, building and compiling the graph
    wall_s: float | None = None  # warm-up and timed calls together
    peak_rss_mb: float | None = None  # the engine's process so far (earlier cases included)


__all__ = ["OpCase", "CaseSettings", "OpMeasurement"]
