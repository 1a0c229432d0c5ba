"""What a scenario hands back to the orchestrator: raw facts, no statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Measurement:
    worker_samples: list[np.ndarray]  # per worker, every measured call in ns
    items_per_call: int  # batch size
    tokens_per_item: float  # mean non-padding tokens per input
    load_s: float
    peak_rss_mb: float
    executed_precision: str
    wall_s: float  # measured wall-clock span, all workers together
    details: dict = field(default_factory=dict)
    fidelity: dict | None = None
