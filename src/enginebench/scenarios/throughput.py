"""Parallel workers: N processes, each with its own session, all driving batches back to back.

This is the seed's pattern for CPU serving (one session per worker, a few threads each). Workers load and
warm up independently, meet at a barrier, and then measure over the same wall-clock window.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import queue as queue_mod
import time
import traceback

import numpy as np

from enginebench.measure.memory import peak_rss_mb, start_peak_window
from enginebench.measure.timing import StoppingRule, measure_calls
from enginebench.plan import Cell
from enginebench.scenarios.base import (CellRun, Grid, Measurement, Scenario, encoder_roofline_of, positions_per_item,
                                        worker_args, workload_args)

BARRIER_TIMEOUT_S = 600


def _worker(index: int, load_session, workload, batch_size: int, rule: StoppingRule, barrier, out,
            want_outputs) -> None:
    try:
        t0 = time.perf_counter()
        session = load_session()
        load_s = time.perf_counter() - t0
        batches = workload.batches(batch_size)
        prepared = [session.prepare(b) for b in batches]
        outputs = session.run(session.prepare(want_outputs)) if want_outputs is not None else None
        details = {**session.details, "positions_per_item": positions_per_item(session, batches)}
        out.put(("loaded", index))
        start_peak_window(details)  # as in every scenario: the peak covers warm-up and measurement, not the load
        marks: dict[str, int] = {}

        def meet():
            barrier.wait(BARRIER_TIMEOUT_S)
            marks["start"] = time.perf_counter_ns()  # CLOCK_MONOTONIC: comparable across processes

        samples = measure_calls(session.run, prepared, rule, after_warmup=meet)
        out.put(("ok", index, {
            "samples": samples, "start_ns": marks["start"], "end_ns": time.perf_counter_ns(), "load_s": load_s,
            "peak_rss_mb": peak_rss_mb(), "executed_precision": session.executed_precision,
            "details": details, "outputs": outputs,
            "tokens_per_item": sum(b.real_tokens for b in batches) / (len(batches) * batch_size),
        }))
    except BaseException as e:  # noqa: BLE001 - report anything, the parent decides
        barrier.abort()
        out.put(("error", index, f"{type(e).__name__}: {e}", traceback.format_exc()))


def run_throughput(load_session, workload, batch_size: int, workers: int, rule: StoppingRule,
                   fidelity_inputs=None, on_loaded=None) -> tuple[Measurement, np.ndarray | None]:
    """`load_session` is a picklable callable returning a fresh Session (run in each worker process);
    `on_loaded()` is called once every worker has loaded its session (before warm-up)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(i, load_session, workload, batch_size, rule, barrier, out,
                                          fidelity_inputs if i == 0 else None), daemon=True)
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    reports: dict[int, dict] = {}
    loaded: set[int] = set()
    error = None
    while len(reports) < workers and error is None:
        try:
            msg = out.get(timeout=1.0)
        except queue_mod.Empty:
            dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
            if dead:
                error = f"worker process died with exit code {dead[0].exitcode}"
            continue
        if msg[0] == "loaded":
            loaded.add(msg[1])
            if len(loaded) == workers and on_loaded is not None:
                on_loaded()
        elif msg[0] == "ok":
            reports[msg[1]] = msg[2]
        else:
            error = f"worker {msg[1]}: {msg[2]}"
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
    if error:
        raise RuntimeError(error)
    ordered = [reports[i] for i in range(workers)]
    start = min(r["start_ns"] for r in ordered)
    end = max(r["end_ns"] for r in ordered)
    measurement = Measurement(
        worker_samples=[r["samples"] for r in ordered],
        items_per_call=batch_size,
        tokens_per_item=ordered[0]["tokens_per_item"],
        load_s=max(r["load_s"] for r in ordered),
        peak_rss_mb=sum(r["peak_rss_mb"] for r in ordered),
        executed_precision=ordered[0]["executed_precision"],
        wall_s=(end - start) / 1e9,
        details={**ordered[0]["details"], "worker_load_s": [round(r["load_s"], 3) for r in ordered],
                 "worker_peak_rss_mb": [round(r["peak_rss_mb"], 1) for r in ordered],
                 # how far apart the workers left the barrier: the measured windows overlap up to this
                 "barrier_spread_ms": round((max(r["start_ns"] for r in ordered) - start) / 1e6, 3)},
    )
    return measurement, ordered[0]["outputs"]


def worker_cells(name: str, grid: Grid, batch_sizes=None, *, serving=None, settings=None) -> list[Cell]:
    """Cells of a scenario whose workers each load a session: workers x threads per worker (the cores split
    over the workers unless --threads-per-worker says otherwise)."""
    return [Cell(engine, precision, name, workload, batch, workers, threads, serving, settings)
            for engine, precision in itertools.product(grid.engines, grid.precisions)
            for workload, batch in itertools.product(grid.workloads, batch_sizes or grid.batch_sizes)
            for workers in grid.workers
            for threads in grid.threads_per_worker or [max(1, grid.cores // workers)]]


class Throughput(Scenario):
    """--workers processes, each with its own session, driving batches back to back: items/s."""

    name = "throughput"
    default = True
    workers_load_sessions = True
    shows_workers = True
    judged_on = "throughput"
    counts_as_throughput = True
    uses_roofline = True
    charts = ("throughput by workers",)

    def figures(self, cell: Cell, measurements: list[Measurement], details: dict) -> dict:
        return {"roofline": encoder_roofline_of(cell, measurements, details)}

    def reproduce_args(self, result, corpus: str | None = None) -> list[str]:
        return workload_args(result, corpus) + ["--batch-size", str(result.batch_size)] + worker_args(result)

    def cells(self, grid: Grid, settings=None) -> list[Cell]:
        return worker_cells(self.name, grid)

    def measure(self, run: CellRun) -> Measurement:
        return run.in_worker_processes(lambda want, loaded: run_throughput(
            run.factory, run.workload, run.cell.batch_size, run.cell.workers, run.rule, want, on_loaded=loaded))
