import numpy as np
import pytest

from enginebench.measure.stats import bootstrap_ci, outlier_mask, summarize
from enginebench.measure.verdict import verdict


def test_summary_matches_a_known_normal_distribution():
    rng = np.random.default_rng(1)
    x = rng.normal(100.0, 5.0, 20_000)
    s = summarize(x)
    assert s.n == 20_000
    assert s.mean == pytest.approx(100, abs=0.2)
    assert s.median == pytest.approx(100, abs=0.2)
    assert s.stdev == pytest.approx(5, rel=0.03)
    assert s.cv == pytest.approx(0.05, rel=0.03)
    # normal quantiles: z(0.05) = -1.645, z(0.90) = 1.2816, z(0.99) = 2.3263
    assert s.p5 == pytest.approx(100 - 1.645 * 5, abs=0.3)
    assert s.p90 == pytest.approx(100 + 1.2816 * 5, abs=0.3)
    assert s.p99 == pytest.approx(100 + 2.3263 * 5, abs=0.5)
    assert s.ci95[0] < s.median < s.ci95[1]


def test_exponential_percentiles():
    rng = np.random.default_rng(2)
    x = rng.exponential(2.0, 50_000)
    s = summarize(x)
    assert s.median == pytest.approx(2.0 * np.log(2), rel=0.03)
    assert s.p99 == pytest.approx(2.0 * np.log(100), rel=0.05)


def test_bootstrap_ci_covers_the_true_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    true_median = 10.0
    hits = 0
    trials = 200
    for t in range(trials):
        x = rng.normal(true_median, 1.0, 60)
        lo, hi = bootstrap_ci(x, resamples=400, seed=t)
        hits += lo <= true_median <= hi
    assert 0.88 <= hits / trials <= 0.99


def test_ci_narrows_with_more_samples():
    rng = np.random.default_rng(4)
    small = bootstrap_ci(rng.normal(0, 1, 50))
    large = bootstrap_ci(rng.normal(0, 1, 5000))
    assert (large[1] - large[0]) < (small[1] - small[0]) / 5


def test_outliers_are_counted_not_dropped():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(10, 0.1, 1000), [50, 60, 70, 80, 90]])
    s = summarize(x)
    assert s.outliers >= 5
    assert outlier_mask(x)[-5:].all()
    assert s.n == 1005  # nothing removed
    assert s.mean > np.mean(x[:1000])  # the mean still sees them


def test_verdict_flags_too_few_samples_noise_and_drift():
    rng = np.random.default_rng(6)
    steady = rng.normal(1e6, 1e4, 200)
    assert verdict(steady) == {"ok": True, "reasons": [], "codes": []}

    few = verdict(steady[:4])
    assert not few["ok"] and "samples" in few["reasons"][0]

    noisy = verdict(rng.lognormal(13, 0.6, 200))
    assert not noisy["ok"] and any("CV" in r for r in noisy["reasons"])

    drifting = np.concatenate([rng.normal(1e6, 1e4, 100), rng.normal(1.3e6, 1e4, 100)])
    assert any("drift" in r for r in verdict(drifting)["reasons"])


def test_summarize_refuses_empty():
    with pytest.raises(ValueError):
        summarize([])
