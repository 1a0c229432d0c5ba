"""A fast synthetic engine that fails on demand, for sweeps and fault handling: `-o fault.behaviour=...`

ok (1 ms calls) | segfault (a real one: reads address 0) | hang | hog (allocates 64 MB per call, without
bound) | flaky (the first process to load it in ENGINEBENCH_TEST_FLAKY_DIR crashes, later ones are fine).
Loaded through ENGINEBENCH_ENGINES; `FAST_TORCH` also stands in for torch, the fidelity reference, so that
no test waits for the real one."""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass, field

import numpy as np

from enginebench.engines.base import Engine, EngineOptions, Session
from helpers import child_pythonpath

BEHAVIOURS = ("ok", "segfault", "hang", "hog", "flaky")


@dataclass(frozen=True)
class FaultOptions(EngineOptions):
    behaviour: str = field(default="ok", metadata={"choices": BEHAVIOURS})
    call_ms: float = 1.0


class FaultSession(Session):
    def __init__(self, options: FaultOptions, hidden: int):
        self.options = options
        self.hidden = hidden
        self.executed_precision = "fp32"
        self.details = {}
        self.calls = 0
        self.hoard = []

    def prepare(self, batch):
        return batch

    def run(self, batch):
        self.calls += 1
        behaviour = self.options.behaviour
        if self.calls > 3:  # after the fidelity call and the first warm-up calls
            if behaviour == "segfault":
                ctypes.string_at(0)
            elif behaviour == "hang":
                time.sleep(3600)
            elif behaviour == "hog":
                self.hoard.append(np.ones(64 * 2**20 // 8))  # written, so resident
        time.sleep(self.options.call_ms / 1000)
        out = np.ones((batch.size, self.hidden), dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class FaultEngine(Engine):
    name = "fault"
    library = "numpy"
    requires = ("numpy",)
    extra = "test"
    Options = FaultOptions

    def load(self, model, precision, options):
        if options.behaviour == "flaky":
            folder = os.environ["ENGINEBENCH_TEST_FLAKY_DIR"]
            try:
                os.close(os.open(os.path.join(folder, "crashed"), os.O_CREAT | os.O_EXCL))
                ctypes.string_at(0)  # the first load crashes the process
            except FileExistsError:
                pass
        return FaultSession(options, model.hidden_size)


PLUGINS = "fault=helpers.fault_engines:FaultEngine,torch=helpers.fault_engines:FaultEngine"  # torch: a fast fidelity reference


def env(**extra) -> dict:
    """The environment a test's enginebench process needs to find these engines."""
    return {**os.environ, "PYTHONPATH": child_pythonpath(), "ENGINEBENCH_ENGINES": PLUGINS, "COLUMNS": "200", **extra}
