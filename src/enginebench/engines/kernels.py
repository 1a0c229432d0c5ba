"""An engine's single-operator kernels, for `enginebench ops`: an optional part of the engine.

An engine offers them by naming a `Kernels` subclass as its class's `op_kernels` (engines/base.py); the ops
scenario finds them there (scenarios/ops/engines.py), so adding an engine with kernels touches no other file.

`prepare(op, arrays, precision)` does everything but the call: converts the inputs to the engine's own tensors
(in the precision asked for), builds and compiles the graph, and returns a Prepared whose `run(arg)` is the one
call to time. An operator or precision the engine cannot express raises Unsupported with the reason, which
becomes the row's text. `op` is the operator's name (scenarios/ops/definitions.py says what each computes).

`setup(threads)` runs once per process, before the engine's library is imported where that matters (XLA
sizes its thread pool when its CPU backend starts).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

LAYERNORM_EPS = 1e-5  # the layernorm operator's epsilon, on every engine


class Unsupported(Exception):
    """The engine cannot express this operator or precision (the message says why)."""


@dataclass
class Prepared:
    run: Callable[[Any], Any]  # the timed call
    arg: Any  # what run is called with, built before timing
    fetch: Callable[[Any], np.ndarray]  # run's result -> a numpy array (outside the timed region)
    io_itemsize: int  # bytes per element the call reads and writes
    note: str = ""  # how the engine expressed it, when worth saying


class Kernels:
    #: import names the kernels need (fewer than the engine's own: no exporter, no model code)
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self):
        self.threads_info: dict = {}

    @classmethod
    def missing(cls) -> list[str]:
        return [m for m in cls.requires if importlib.util.find_spec(m) is None]

    def setup(self, threads: int) -> None:
        self.threads_info = {"threads": threads}

    def prepare(self, op: str, arrays: dict[str, np.ndarray], precision: str) -> Prepared:
        raise NotImplementedError


__all__ = ["Kernels", "Prepared", "Unsupported", "LAYERNORM_EPS"]
