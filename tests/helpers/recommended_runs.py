"""Results built from raw samples as the launcher builds them (3 processes, 1% noise) with a chosen median,
fidelity and verdict, for recommend and the cell identity."""

from __future__ import annotations

import numpy as np

from enginebench.measure.fidelity import threshold_for
from enginebench.plan import Cell
from enginebench.scenarios.base import Measurement
from enginebench.store.derive import build_result
from enginebench.store.model import Result

REC_MACHINE = {"hostname": "box", "cpu": "Test CPU", "logical_cores": 4}


REC_CONFIG = {"argv": ["--model", "minilm", "--workload", "titles"], "model": {"name": "minilm"},
          "stopping_rule": {"duration_s": 2.0, "min_samples": 20, "warmup_s": 0.5, "min_warmup": 2},
          "repeat": 3, "order_seed": 0}


def ranked_result(engine, median_ms, *, precision="fp32", scenario="latency", workload="titles", batch=1, workers=1,
            threads=2, fidelity=1.0, rss=200.0, warn=False, seed=0, options=None, quantization=None) -> Result:
    """A result built from raw samples as the orchestrator builds it: 3 processes, 1% noise."""
    rng = np.random.default_rng(seed)
    measured = []
    for rep in range(3):
        samples = (median_ms * 1e6 * (1 + 0.01 * rng.standard_normal(60))).astype(np.int64)
        parts = np.array_split(samples, workers)
        measured.append((rep, Measurement(worker_samples=parts, items_per_call=batch, tokens_per_item=13.0,
                                          load_s=1.0, peak_rss_mb=rss, executed_precision=precision,
                                          wall_s=float(samples.sum()) / 1e9 / workers)))
    cell = Cell(engine, precision, scenario, workload, batch, workers, threads)
    r = build_result(cell, measured, model="minilm", seq_len=16, engine_version="1",
                     engine_options={"threads": threads, **(options or {})},
                     details={"quantization": quantization} if quantization else {})
    r.fidelity = {"metric": "min_cosine", "value": fidelity, "ok": fidelity >= threshold_for(precision),
                  "threshold": threshold_for(precision)}
    r.verdict = {"ok": not warn, "reasons": ["CV 25% > 10%: noisy machine or unstable engine"] if warn else []}
    return r
