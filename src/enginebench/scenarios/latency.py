"""Single stream: one batch at a time on one session."""

from __future__ import annotations

import time

from enginebench.engines.base import Session
from enginebench.measure.memory import peak_rss_mb, start_peak_window
from enginebench.measure.timing import StoppingRule, measure_calls
from enginebench.scenarios.base import Measurement
from enginebench.workloads import WorkloadData


def run_latency(session: Session, workload: WorkloadData, batch_size: int, rule: StoppingRule,
                load_s: float) -> Measurement:
    batches = workload.batches(batch_size)
    prepared = [session.prepare(b) for b in batches]
    details = dict(session.details)
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
