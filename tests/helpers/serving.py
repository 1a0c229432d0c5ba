"""The synthetic serving inputs the LoadGen tests share: a zero-token workload, a server cell on the sleep
engine, a FIFO trace made by hand, and a decoder prompt set of exact lengths."""

from __future__ import annotations

import numpy as np

from enginebench.plan import Cell, Serving
from enginebench.scenarios.loadgen_sut import LoadgenRun, Trace
from enginebench.workloads import TokenBatch, WorkloadData, WorkloadSpec
from enginebench.workloads.prompts import DecoderTest, PromptSet

ZERO_IDS = np.zeros((64, 8), dtype=np.int64)


WORKLOAD = WorkloadData(WorkloadSpec("synthetic", 0, 8, "zeros"), TokenBatch(ZERO_IDS, np.ones_like(ZERO_IDS), ZERO_IDS))


def server_cell(workers=1, **serving) -> Cell:
    s = Serving(**serving)
    return Cell("sleep", "fp32", "server", "synthetic", s.max_batch, workers, 1, s)


# -- the verdict, on traces made by hand ---------------------------------------------------------------------
def trace_run(arrival_ms, service_ms, validity="VALID") -> LoadgenRun:
    """One worker, FIFO, a fixed service time: the trace such a server would leave."""
    arrival = np.asarray(arrival_ms, dtype=np.float64)
    free, dispatch, done = 0.0, [], []
    for a in arrival:
        start = max(a, free)
        free = start + service_ms
        dispatch.append(start)
        done.append(free)
    ns = lambda x: (np.asarray(x) * 1e6).astype(np.int64)  # noqa: E731
    batches = np.stack([np.zeros(len(arrival)), np.ones(len(arrival)), ns(dispatch), ns(dispatch), ns(done),
                        ns(done)], axis=1).astype(np.int64)
    log = {"result_validity": validity, "result_scheduled_samples_per_sec": 1e3 * len(arrival) / arrival[-1]}
    return LoadgenRun(Trace(ns(arrival), ns(dispatch), ns(done), np.ones(len(arrival), np.int64), batches), {}, log, "")


GEN = 6


def prompt_set(gen_len: int = GEN) -> PromptSet:
    test = DecoderTest("pg", 8, gen_len)
    ids = np.arange(8 * 8, dtype=np.int64).reshape(8, 8) % 16
    return PromptSet(WorkloadSpec(test.name, 0, 8, "synthetic"), test, ids, ids[:2])
