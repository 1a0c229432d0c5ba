"""The clock and the stopping rule.

Nothing sits in the timed region but the call: inputs are prepared before, and the only work between two
clock reads besides the call is appending an int to a list.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from enginebench.errors import UsageError


@dataclass(frozen=True)
class StoppingRule:
    duration_s: float = 10.0  # measure at least this long ...
    min_samples: int = 10  # ... and at least this many calls
    warmup_s: float = 1.0  # warm-up time, not counted ...
    min_warmup: int = 2  # ... and at least this many warm-up calls

    def __post_init__(self):
        if not (self.duration_s >= 0 and self.warmup_s >= 0):
            raise UsageError("durations must be zero or positive, e.g. --duration 10s")
        if self.min_samples < 1 or self.min_warmup < 0:
            raise UsageError("--min-samples must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """The rule in a few words, for table titles: `cells ≥1 s & ≥5 calls after 0.3 s warm-up`."""
        return f"cells ≥{self.duration_s:g} s & ≥{self.min_samples} calls after {self.warmup_s:g} s warm-up"


def measure_calls(call: Callable[[Any], Any], inputs: Sequence[Any], rule: StoppingRule,
                  after_warmup: Callable[[], None] | None = None) -> np.ndarray:
    """Call `call(inputs[i % len(inputs)])` under the rule; return each measured call's duration in ns.

    `after_warmup` runs between warm-up and measurement (parallel workers meet at a barrier there).
    """
    clock = time.perf_counter_ns
    k = len(inputs)
    warm_end = clock() + int(rule.warmup_s * 1e9)
    n = 0
    while n < rule.min_warmup or clock() < warm_end:
        call(inputs[n % k])
        n += 1
    if after_warmup is not None:
        after_warmup()
    samples: list[int] = []
    append = samples.append
    stop_at = clock() + int(rule.duration_s * 1e9)
    i = 0
    while True:
        x = inputs[i % k]
        t0 = clock()
        call(x)
        t1 = clock()
        append(t1 - t0)
        i += 1
        if t1 >= stop_at and i >= rule.min_samples:
            break
    return np.asarray(samples, dtype=np.int64)
