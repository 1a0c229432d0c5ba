"""What a LoadGen user checks in enginebench's serving figures: each repetition and each search trial runs its
own arrival schedule (seeds recorded), LoadGen's own percentiles from the scheduled arrival are the primary
figures, offline counts what LoadGen completed, and a search over repetitions reports an interval."""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import pytest

from enginebench.measure.timing import StoppingRule
from enginebench.plan import Cell, Serving

sys.path.insert(0, os.path.dirname(__file__))
from synthetic_engine import SleepFactory  # noqa: E402
from test_serving import WORKLOAD, server_cell  # noqa: E402

pytest.importorskip("mlperf_loadgen")

QUICK = StoppingRule(duration_s=0.5, min_samples=10, warmup_s=0.1)


# -- seeds -----------------------------------------------------------------------------------------------------
def test_loadgen_seeds_differ_by_repetition_and_trial_and_are_reproducible():
    from enginebench.scenarios.server import loadgen_seeds

    seen = {tuple(loadgen_seeds(0, r, t).values()) for r in range(3) for t in range(4)}
    assert len(seen) == 12
    assert loadgen_seeds(7, 1, 2) == loadgen_seeds(7, 1, 2)
    assert loadgen_seeds(7, 1, 2) != loadgen_seeds(8, 1, 2)  # --seed still chooses the schedules
    assert set(loadgen_seeds(0, 0, 0)) == {"schedule_rng_seed", "qsl_rng_seed", "sample_index_rng_seed"}


def test_two_repetitions_of_a_server_cell_run_with_other_seeds_recorded_as_used():
    from enginebench.scenarios.server import run_server

    cell = server_cell(qps=200, slo_p99_ms=100)
    runs = [run_server(SleepFactory(0.001), WORKLOAD, cell, QUICK, repetition=r)[0] for r in (0, 1)]
    used = [m.details["loadgen"]["log"]["effective_schedule_rng_seed"] for m in runs]
    assert used[0] != used[1]
    assert [m.details["serving"]["seeds"]["schedule_rng_seed"] for m in runs] == used


def test_the_same_seeds_replay_the_same_arrivals_and_other_seeds_do_not():
    """Why the seeds must vary: LoadGen's schedule is a function of them."""
    from enginebench.scenarios.loadgen_sut import WorkerPool, run_loadgen
    from enginebench.scenarios.server import loadgen_seeds

    pool = WorkerPool(SleepFactory(0.001), WORKLOAD.pool, 1, 1, 0.1)
    try:
        pool.start()
        gaps = []
        for seeds in (loadgen_seeds(0, 0, 0), loadgen_seeds(0, 0, 0), loadgen_seeds(0, 1, 0)):
            with tempfile.TemporaryDirectory() as outdir:
                run = run_loadgen(pool, scenario="server", max_batch=1, max_wait_ms=0.0, outdir=outdir,
                                  min_duration_s=0.3, min_queries=100, seeds=seeds, qps=200, slo_ms=100)
            gaps.append(np.diff(np.sort(run.trace.arrival_ns)[:100]) / 1e6)
    finally:
        pool.close()
    same, other = np.corrcoef(gaps[0], gaps[1])[0, 1], np.corrcoef(gaps[0], gaps[2])[0, 1]
    assert same > 0.9 and abs(other) < 0.5, (same, other)


def test_each_repetition_knows_its_number_in_the_measuring_process(titles, minilm):
    """What seeds LoadGen apart per repetition reaches the child: the job carries its repetition."""
    from enginebench.launchers.local import Orchestrator
    from test_repetitions import _plan

    schedule = Orchestrator(_plan(titles, minilm, repeat=3)).schedule()
    assert [{job.repetition for job in jobs} for jobs in schedule] == [{0}, {1}, {2}]
