"""A synthetic session with known call times (sleeps), to test the clock, the stopping rule and the workers."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from enginebench.engines.base import Session


class SleepSession(Session):
    def __init__(self, call_s: float):
        self.call_s = call_s
        self.calls = 0
        self.executed_precision = "fp32"
        self.details = {}

    def prepare(self, batch):
        return batch

    def run(self, batch):
        self.calls += 1
        time.sleep(self.call_s)
        return np.zeros((batch.size, 4), dtype=np.float32)


@dataclass(frozen=True)
class SleepFactory:
    """Picklable: each worker process builds its own session. The worker that creates `slow_marker` first
    loads `slow_load_s` longer, so the workers reach the barrier at different times."""

    call_s: float
    slow_marker: str = ""
    slow_load_s: float = 0.0

    def __call__(self):
        if self.slow_marker:
            try:
                os.close(os.open(self.slow_marker, os.O_CREAT | os.O_EXCL))
                time.sleep(self.slow_load_s)
            except FileExistsError:
                pass
        return SleepSession(self.call_s)
