"""The clock, the stopping rule and parallel workers, on a synthetic engine whose calls take a known time."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.fake_engines import SleepFactory, SleepSession

from enginebench.measure.timing import StoppingRule, measure_calls
from enginebench.scenarios.latency import run_latency
from enginebench.scenarios.throughput import run_throughput

pytestmark = pytest.mark.waits  # wall-clock windows, barrier spread and rates of timed calls

CALL_S = 0.01


def test_stopping_rule_needs_both_the_duration_and_the_count():
    session = SleepSession(CALL_S)
    samples = measure_calls(session.run, [_batch()], StoppingRule(duration_s=0.15, min_samples=3, warmup_s=0.0,
                                                                   min_warmup=2))
    assert samples.sum() / 1e9 >= 0.15 and len(samples) >= 3
    assert len(samples) < 0.15 / CALL_S + 3  # it stops once both hold
    few = measure_calls(session.run, [_batch()], StoppingRule(duration_s=0.0, min_samples=7, warmup_s=0.0))
    assert len(few) == 7


def test_warmup_calls_are_run_but_not_counted():
    session = SleepSession(CALL_S)
    samples = measure_calls(session.run, [_batch()], StoppingRule(duration_s=0.0, min_samples=5, warmup_s=0.1,
                                                                   min_warmup=2))
    assert len(samples) == 5
    assert session.calls >= 5 + 0.1 / CALL_S * 0.8  # the warm-up ran about 10 calls
    assert np.all(samples >= CALL_S * 1e9)  # each sample is one whole call


def test_latency_wall_clock_excludes_the_warmup(titles):
    rule = StoppingRule(duration_s=0.3, min_samples=3, warmup_s=0.6)
    m = run_latency(SleepSession(CALL_S), titles, 1, rule, load_s=0.0)
    assert 0.3 <= m.wall_s < 0.5  # 0.9 s if the warm-up were inside
    calls = sum(len(s) for s in m.worker_samples)
    assert calls / m.wall_s == pytest.approx(1 / CALL_S, rel=0.3)


def test_workers_meet_at_the_barrier_and_their_rates_add_up(titles, tmp_path):
    call_s, workers, batch = 0.02, 2, 4
    factory = SleepFactory(call_s, slow_marker=str(tmp_path / "slow"), slow_load_s=0.8)
    rule = StoppingRule(duration_s=0.5, min_samples=5, warmup_s=0.1)
    loaded = []
    m, _ = run_throughput(factory, titles, batch, workers, rule, on_loaded=lambda: loaded.append(True))
    assert loaded == [True]
    load_times = m.details["worker_load_s"]
    assert max(load_times) - min(load_times) >= 0.7  # one worker loaded 0.8 s longer ...
    assert m.details["barrier_spread_ms"] < 150  # ... yet both started measuring together
    assert m.wall_s < 0.5 + 0.4  # one shared window, not two staggered ones
    from enginebench.measure.rates import closed_loop_throughput

    items_per_s, ci = closed_loop_throughput([m.worker_samples], batch)
    assert items_per_s == pytest.approx(workers * batch / call_s, rel=0.15)  # Σ over workers: 400 items/s
    assert ci[0] <= items_per_s <= ci[1]


def _batch():
    from enginebench.workloads.batch import TokenBatch

    ids = np.ones((1, 4), dtype=np.int64)
    return TokenBatch(input_ids=ids, attention_mask=ids, token_type_ids=np.zeros_like(ids))
