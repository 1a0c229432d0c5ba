"""Single stream: one batch at a time on one session."""

from __future__ import annotations

import itertools
import time

from enginebench.engines.base import Session
from enginebench.measure.memory import peak_rss_mb, start_peak_window
from enginebench.measure.timing import StoppingRule, measure_calls
from enginebench.plan import Cell
from enginebench.scenarios.base import (CellRun, Grid, Measurement, Scenario, encoder_roofline_of,
                                        positions_per_item)
from enginebench.scenarios.requests import endpoint_figures, endpoint_table, measure_requests
from enginebench.workloads import WorkloadData


def run_latency(session: Session, workload: WorkloadData, batch_size: int, rule: StoppingRule,
                load_s: float) -> Measurement:
    batches = workload.batches(batch_size)
    prepared = [session.prepare(b) for b in batches]
    details = {**session.details, "positions_per_item": positions_per_item(session, batches)}
    start_peak_window(details)  # the peak covers this cell; the loaded model stays resident and is counted
    marks: dict[str, float] = {}
    samples = measure_calls(session.run, prepared, rule, after_warmup=lambda: marks.update(start=time.perf_counter()))
    wall = time.perf_counter() - marks["start"]  # the measured window only, warm-up excluded
    return Measurement(
        worker_samples=[samples],
        items_per_call=batch_size,
        tokens_per_item=sum(b.real_tokens for b in batches) / (len(batches) * batch_size),
        load_s=load_s,
        peak_rss_mb=peak_rss_mb(),
        executed_precision=session.executed_precision,
        wall_s=wall,
        details=details,
    )


class Latency(Scenario):
    """One session (--threads each, every core by default), one batch at a time: the median call."""

    name = "latency"
    default = True
    per_call_latency = True
    uses_roofline = True
    charts = ("latency by engine",)
    drives_endpoint = True

    def figures(self, cell: Cell, measurements: list[Measurement], details: dict) -> dict:
        return endpoint_figures(measurements) or {"roofline": encoder_roofline_of(cell, measurements, details)}

    def table(self, result) -> str:
        return endpoint_table(result) or "encoders"

    def cells(self, grid: Grid, settings=None) -> list[Cell]:
        return [Cell(engine, precision, self.name, workload, batch, 1, threads)
                for engine, precision in itertools.product(grid.engines, grid.precisions)
                for workload, batch in itertools.product(grid.workloads, grid.batch_sizes)
                for threads in grid.threads or [grid.cores]]

    def measure(self, run: CellRun) -> Measurement:
        session, load_s, load_peak = run.shared_session()
        if run.remote:  # a server: one request at a time
            return measure_requests(run, session, clients=1)
        if not run.fidelity_known():
            run.set_fidelity(session.run(session.prepare(run.workload.fidelity_inputs())))
        m = run_latency(session, run.workload, run.cell.batch_size, run.rule, load_s)
        m.details["load_peak_rss_mb"] = round(load_peak, 1)
        m.fidelity = run.fidelity()
        return m
