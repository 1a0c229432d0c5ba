"""Raw measurements and plans made by hand, for the tests that drive the parent's bookkeeping and the
statistics without measuring anything."""

from __future__ import annotations

import numpy as np

from enginebench.measure.timing import StoppingRule
from enginebench.plan import Cell, Plan
from enginebench.scenarios.base import Measurement


def measurement(samples=None, workers: int = 1, batch: int = 1) -> Measurement:
    """One process's raw measurement of `samples` (ns per call; 12 calls of 1 ms when not given), split over
    `workers`, each call `batch` items of 16 tokens."""
    samples = np.full(12, 1_000_000, dtype=np.int64) if samples is None else samples
    parts = np.array_split(np.asarray(samples, dtype=np.int64), workers)
    return Measurement(worker_samples=parts, items_per_call=batch, tokens_per_item=16.0, load_s=0.1,
                       peak_rss_mb=100.0, executed_precision="fp32", wall_s=float(np.sum(samples)) / 1e9 / workers)


def two_engine_plan(titles, minilm, repeat: int, seed: int = 0) -> Plan:
    """onnxruntime and openvino at batch 1 and 2 on titles: four latency cells, `repeat` processes each."""
    cells = [Cell(engine, "fp32", "latency", "titles", b, 1, 1) for engine in ("onnxruntime", "openvino")
             for b in (1, 2)]
    return Plan(minilm, {"titles": titles}, cells, StoppingRule(duration_s=0, min_samples=1), {}, timeout_s=60,
                repeat=repeat, order_seed=seed)
