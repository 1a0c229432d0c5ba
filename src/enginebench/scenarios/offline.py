"""The offline scenario (LoadGen's Offline): every query is available at once and the engine is free to
batch (up to --max-batch per call); the figure is LoadGen's samples/s over the whole run."""

from __future__ import annotations

import tempfile

import numpy as np

from enginebench.measure.timing import StoppingRule
from enginebench.plan import Cell
from enginebench.scenarios.base import Measurement
from enginebench.scenarios.loadgen_sut import LoadgenRun, WorkerPool, run_loadgen
from enginebench.scenarios.server import (batching, capacity_estimate, loadgen_reasons, loadgen_result, loadgen_seeds,
                                          measurement_from, run_seeds)


def offline_figures(run: LoadgenRun, expected_qps: float) -> dict:
    t = run.trace
    n = int(t.arrival_ns.size)
    span_s = (t.complete_ns.max() - t.arrival_ns.min()) / 1e9
    result = loadgen_result(run.log)
    reasons = loadgen_reasons(result)
    # the samples LoadGen counted complete over its own clock (issue to last completion), as its summary says
    rate = float(result.get("samples_per_second") or n / span_s)
    return {"scenario": "offline", "queries": n, "samples_per_s": rate, "expected_qps": expected_qps,
            "batching": batching(run), "loadgen": result, "seeds": run_seeds(run), "valid": not reasons,
            "reasons": reasons}


def run_offline(load_session, workload, cell: Cell, rule: StoppingRule, fidelity_inputs=None,
                on_loaded=None, repetition: int = 0) -> tuple[Measurement, np.ndarray | None]:
    """One offline cell. The Measurement's samples are, per worker, its session calls (ns), each on a batch of
    up to `cell.serving.max_batch` queries: the same closed loop as the throughput scenario, fed by LoadGen."""
    max_batch = cell.serving.max_batch
    pool = WorkerPool(load_session, workload.pool, cell.workers, max_batch, rule.warmup_s, fidelity_inputs,
                      dynamic=workload.dynamic_padding)
    try:
        ready = pool.start()
        if on_loaded is not None:
            on_loaded()
        expected = capacity_estimate(ready, max_batch)  # sets how many queries LoadGen issues (duration x qps)
        with tempfile.TemporaryDirectory(prefix="enginebench-loadgen-") as outdir:
            run = run_loadgen(pool, scenario="offline", max_batch=max_batch, max_wait_ms=0.0, outdir=outdir,
                              min_duration_s=rule.duration_s, min_queries=rule.min_samples, expected_qps=expected,
                              seeds=loadgen_seeds(cell.serving.seed, repetition, 0))
    finally:
        byes = pool.close()
    b = run.trace.batches
    calls = [(b[b[:, 0] == w, 4] - b[b[:, 0] == w, 3]).astype(np.int64) for w in range(cell.workers)]
    calls = [c for c in calls if c.size] or [b[:, 4] - b[:, 3]]
    figures = offline_figures(run, expected)
    wall = (run.trace.complete_ns.max() - run.trace.arrival_ns.min()) / 1e9
    return measurement_from(run, figures, pool, byes, calls, wall, max_batch, {}), ready[0]["outputs"]
