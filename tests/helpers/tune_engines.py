"""Synthetic engines with known speeds and known fidelity, for `enginebench tune`'s tests (loaded through
ENGINEBENCH_ENGINES; children are spawned, so this module is found through PYTHONPATH).

Every engine returns the same function of the token ids (a normalised bag of hashed tokens), exactly (faithful)
or perturbed (a known cosine); calls sleep a known time. "torch" and "sentence-transformers" are replaced too,
so the fidelity reference and the baselines cost nothing to load."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from enginebench.engines.base import Engine, EngineOptions, Session

HIDDEN = 384  # MiniLM's: the reference's shape


def embeddings(batch) -> np.ndarray:
    out = np.zeros((batch.size, HIDDEN))
    rows, cols = np.nonzero(batch.attention_mask)
    np.add.at(out, (rows, (batch.input_ids[rows, cols] * 2654435761) % HIDDEN), 1.0)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def call_seconds(engine: str, precision: str, mode: str, threads: int, batch: int, cores: int) -> float:
    """The known speed: base time per call, halved by mode=fast, 1.5× slower on fewer threads than cores."""
    base = BASE_MS[(engine, precision)] / 1000 * (1 + 0.25 * (batch - 1))
    return base * (0.5 if mode == "fast" else 1.0) * (1.0 if threads >= cores else 1.5)


BASE_MS = {("torch", "fp32"): 8.0, ("sentence-transformers", "fp32"): 10.0, ("syn", "fp32"): 6.0,
           ("syn", "int8"): 4.0, ("syn-wrong", "int8"): 0.5}
COSINE = {("syn", "int8"): 0.995, ("syn-wrong", "int8"): 0.6}  # the rest: exact


class _Session(Session):
    def __init__(self, engine, precision, options):
        import os

        self.key = (engine, precision)
        self.call_s = call_seconds(engine, precision, getattr(options, "mode", "slow"), options.threads, 1,
                                   len(os.sched_getaffinity(0)))
        self.executed_precision = precision
        self.details = {}

    def prepare(self, batch):
        return batch

    def run(self, batch):
        time.sleep(self.call_s * (1 + 0.25 * (batch.size - 1)))
        exact = embeddings(batch)
        cosine = COSINE.get(self.key)
        if cosine is None:
            return exact
        # a unit vector at exactly `cosine` from the exact one, per row
        noise = np.random.default_rng(0).standard_normal(exact.shape)
        noise -= (noise * exact).sum(axis=1, keepdims=True) * exact
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        return (cosine * exact + np.sqrt(1 - cosine ** 2) * noise).astype(np.float32)


@dataclass(frozen=True)
class SynOptions(EngineOptions):
    mode: str = field(default="slow", metadata={"choices": ("slow", "fast"), "tune": True})


def _engine(engine_name, precisions, options=EngineOptions):
    class Syn(Engine):
        name = engine_name
        library = "numpy"
        requires = ("numpy",)
        extra = "test"
        formats = ()
        Options = options

        def load(self, model, precision, opts):
            return _Session(engine_name, precision, opts)

    Syn.precisions = precisions
    Syn.__name__ = "Syn" + engine_name.title().replace("-", "")
    return Syn


TorchEngine = _engine("torch", ("fp32",))
StEngine = _engine("sentence-transformers", ("fp32",))
SynEngine = _engine("syn", ("fp32", "int8"), SynOptions)
WrongEngine = _engine("syn-wrong", ("int8",))

PLUGINS = ("torch=helpers.tune_engines:TorchEngine,sentence-transformers=helpers.tune_engines:StEngine,"
           "syn=helpers.tune_engines:SynEngine,syn-wrong=helpers.tune_engines:WrongEngine")
