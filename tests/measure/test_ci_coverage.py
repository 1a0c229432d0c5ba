"""Intervals with the coverage they claim: simulated cells (benchmarks/ci_coverage.py) measured in 2, 3, 5 and 10
processes, with the between-process spread absent, comparable to and dominating the noise of a process's median,
and calls normal-ish, skewed (lognormal) or heavy-tailed with spikes. Every stated 95% CI must cover the true
value in 93-98% of 2,000 cells (one binomial standard error is 0.5 points). The two-level bootstrap enginebench
stated before fails it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from enginebench.measure.stats import median_over_processes, over_processes, t_quantile
from enginebench.measure.rates import closed_loop_throughput, spiky_low_end

_spec = importlib.util.spec_from_file_location("ci_coverage", Path(__file__).parents[2] / "benchmarks" / "ci_coverage.py")
sim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sim)

CELLS = 2000


@pytest.mark.parametrize("spread", sim.SPREADS)
@pytest.mark.parametrize("dist", list(sim.DISTRIBUTIONS))
def test_every_stated_95_percent_interval_covers_93_to_98_percent(dist, spread):
    rng = np.random.default_rng(10 * sim.SPREADS.index(spread) + list(sim.DISTRIBUTIONS).index(dist))
    for k in sim.PROCESSES:
        covered = sim.new_coverage(rng, CELLS, k, dist, spread)
        assert 0.93 <= covered["median"] <= 0.98, (k, covered)  # latency median; tokens/s and TTFT are the same CI
        # Welch's degrees of freedom underestimate the pooled 2(k-1) when both sides have 1: 97.9% over 20,000
        # cells with 2 processes a side, erring towards "no significant difference"
        assert 0.93 <= covered["speed-up"] <= (0.985 if k == 2 else 0.98), (k, covered)
        # items/s over spiky calls: its low end at t's 99% quantile where over 1% of calls took twice their median
        assert 0.93 <= covered["items/s"] <= 0.98, (k, covered)
        assert covered["spiky cells"] >= 0.95 if dist == "spiky" else covered["spiky cells"] == 0, (k, covered)


def test_items_per_s_over_spiky_calls_needed_its_wider_low_end():
    """The symmetric t interval over the processes' log rates, as before spikes widened the low end: spiky,
    heavy-tailed calls (no third moment) make the processes' mean call times skewed and it covers under 93%."""
    rng = np.random.default_rng(7)
    assert min(sim.new_coverage(rng, CELLS, k, "spiky", "comparable")["items/s, t both ends"]
               for k in sim.PROCESSES) < 0.91


def test_a_cell_with_spiky_calls_has_the_wider_low_end_and_one_without_does_not():
    rng = np.random.default_rng(3)
    steady = [[1e6 * (1 + 0.03 * rng.standard_normal(200))] for _ in range(3)]
    spiky = [[np.where(rng.random(200) < 0.05, 3.0, 1.0) * w[0]] for w in steady]
    assert spiky_low_end(steady) is None and spiky_low_end(spiky) is not None
    for processes, skewed in ((steady, False), (spiky, True)):
        point, (lo, hi) = closed_loop_throughput(processes, 4)
        rates = [4 / (np.mean(ws[0]) / 1e9) for ws in processes]
        _, t_lo, t_hi = over_processes(rates)
        assert hi == pytest.approx(float(t_hi)) and np.sqrt(float(t_lo) * float(t_hi)) == pytest.approx(point)
        assert (lo < float(t_lo) * 0.999) == skewed and (lo == pytest.approx(float(t_lo))) != skewed


@pytest.mark.parametrize("k, at_most", [(2, 0.70), (3, 0.82)])
def test_the_old_two_level_bootstrap_does_not_cover_when_processes_differ(k, at_most):
    # resampling k processes with replacement gives (k-1)/k of the variance, and its percentiles are normal
    # where t's are needed: ~61% with 2 processes, ~73% with 3 (benchmarks/ci_coverage.py, 1,000 cells)
    covered = sim.old_coverage(np.random.default_rng(k), 400, k, "lognormal", "dominating")
    assert covered <= at_most
    # and the interval that replaces it covers the same cells' kind as it claims
    assert sim.new_coverage(np.random.default_rng(k), CELLS, k, "lognormal", "dominating")["median"] >= 0.93


def test_t_quantiles_match_the_tables():
    assert t_quantile(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(9) == pytest.approx(2.2622, abs=1e-4)
    assert t_quantile(9, 0.99) == pytest.approx(3.2498, abs=1e-4)
    assert t_quantile(100_000) == pytest.approx(1.95998, abs=1e-4)


def test_the_figures_point_and_interval_are_the_same_quantity():
    # the point is the centre of the interval on the log scale, whatever each process's sample count
    rng = np.random.default_rng(0)
    groups = [m * np.exp(0.05 * rng.standard_normal(n)) for m, n in ((1.0, 900), (1.1, 300), (1.3, 100))]
    point, (lo, hi) = median_over_processes(groups)
    medians = np.array([np.median(g) for g in groups])
    assert point == pytest.approx(np.exp(np.log(medians).mean()))
    assert np.sqrt(lo * hi) == pytest.approx(point)
    assert point != pytest.approx(np.median(np.concatenate(groups)), rel=1e-3)  # not the pooled median
    # items/s: the geometric mean of the processes' rates, its interval the same t interval over their logs
    ns = [[g * 1e6] for g in groups]
    items, ci = closed_loop_throughput(ns, 4)
    rates = np.array([4 / (np.mean(g) / 1e3) for g in groups])
    expected = over_processes(rates)
    assert items == pytest.approx(float(expected[0]))
    assert ci == pytest.approx((float(expected[1]), float(expected[2])))
