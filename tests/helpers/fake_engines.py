"""Engines that misbehave on purpose, loaded through ENGINEBENCH_ENGINES to test isolation and flagging."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from enginebench.engines.base import Engine, Session


class _Session(Session):
    def __init__(self, behaviour: str, hidden: int):
        self.behaviour = behaviour
        self.hidden = hidden
        self.executed_precision = "fp32"
        self.details = {}
        self.calls = 0

    def prepare(self, batch):
        return batch

    def run(self, batch):
        self.calls += 1
        if self.behaviour == "crash" and self.calls > 3:
            os.kill(os.getpid(), signal.SIGSEGV)
        if self.behaviour == "hang" and self.calls > 3:
            time.sleep(3600)
        if self.behaviour == "raise" and self.calls > 3:
            raise RuntimeError("engine exploded")
        time.sleep(0.001)
        rng = np.random.default_rng(int(batch.input_ids.sum()))
        out = rng.standard_normal((batch.size, self.hidden)).astype(np.float32)  # fast and wrong
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _engine(behaviour: str):
    class Fake(Engine):
        name = f"fake-{behaviour}"
        library = "numpy"
        requires = ("numpy",)
        extra = "test"
        formats = ()

        def load(self, model, precision, options):
            return _Session(behaviour, model.hidden_size)

    Fake.__name__ = f"Fake{behaviour.capitalize()}Engine"
    return Fake


WrongEngine = _engine("wrong")
CrashEngine = _engine("crash")
HangEngine = _engine("hang")
RaiseEngine = _engine("raise")

PLUGINS = ",".join(f"fake-{b}=helpers.fake_engines:{b.capitalize()}Engine" for b in ("wrong", "crash", "hang", "raise"))


class HangGraphEngine(Engine):
    """Loads ONNX graphs (so `blocks` runs it) but never finishes loading one."""

    name = "fake-hang-graph"
    library = "numpy"
    requires = ("numpy",)
    extra = "test"
    cuts_graph = True

    def load(self, model, precision, options):
        return _Session("hang", model.hidden_size)

    def load_onnx_graph(self, path, options):
        time.sleep(3600)
