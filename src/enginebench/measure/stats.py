"""Statistics of timing samples: percentiles, a bootstrap CI of the median, robust outlier counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
OUTLIER_MADS = 3.0
_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


def bootstrap_ci(values: np.ndarray, statistic=np.median, confidence: float = 0.95,
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of `statistic` (seeded, so reports are reproducible).
    None for a single value: one sample says nothing about its spread, and a zero-width CI would claim it does."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return None
    rng = np.random.default_rng(seed)
    # resample in chunks to keep memory bounded for long runs
    stats = []
    chunk = max(1, 4_000_000 // values.size)
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        idx = rng.integers(0, values.size, size=(n, values.size))
        stats.append(statistic(values[idx], axis=1))
    s = np.concatenate(stats)
    alpha = (1 - confidence) / 2
    return float(np.quantile(s, alpha)), float(np.quantile(s, 1 - alpha))


def hierarchical_ci(groups: list, statistic=np.median, confidence: float = 0.95,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float] | None:
    """CI of `statistic` over the pooled values of independent processes (groups), by a two-level bootstrap:
    resample the processes with replacement, then the values within each chosen process.

    A process's values share its heap layout, JIT state, thread placement and the machine's state at that
    minute, so they are not independent of each other: with several processes the CI widens by the spread
    between them, which a bootstrap of the pooled values alone would hide. One group: the ordinary bootstrap."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    if sum(g.size for g in groups) < 2:
        return None
    if len(groups) == 1:
        return bootstrap_ci(groups[0], statistic, confidence, resamples, seed)
    rng = np.random.default_rng(seed)
    k = len(groups)
    stats = np.empty(resamples)
    for b in range(resamples):
        picked = rng.integers(0, k, size=k)
        pooled = np.concatenate([groups[i][rng.integers(0, groups[i].size, size=groups[i].size)] for i in picked])
        stats[b] = statistic(pooled)
    alpha = (1 - confidence) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def outlier_mask(values: np.ndarray, mads: float = OUTLIER_MADS) -> np.ndarray:
    """True for samples further than `mads` scaled MADs from the median (robust to the outliers themselves)."""
    values = np.asarray(values, dtype=np.float64)
    med = np.median(values)
    mad = np.median(np.abs(values - med)) * _MAD_TO_SIGMA
    if mad == 0:
        return values != med
    return np.abs(values - med) > mads * mad


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    median: float
    p5: float
    p90: float
    p99: float
    stdev: float
    cv: float  # stdev / mean
    ci95: tuple[float, float] | None  # bootstrap 95% CI of the median (over processes when several); None if n = 1
    outliers: int  # beyond OUTLIER_MADS scaled MADs; counted, never dropped
    processes: int = 1  # independent processes the values came from

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return d


def summarize(values, groups: list | None = None) -> Summary:
    """Statistics of the pooled values; with `groups` (the same values split by process), the CI of the
    median is the hierarchical one."""
    v = np.asarray(values, dtype=np.float64) if groups is None else np.concatenate(
        [np.asarray(g, dtype=np.float64) for g in groups])
    if v.size == 0:
        raise ValueError("cannot summarise an empty sample")
    processes = len([g for g in groups if len(g)]) if groups is not None else 1
    ci = hierarchical_ci(groups) if groups is not None and processes > 1 else bootstrap_ci(v)
    mean = float(v.mean())
    stdev = float(v.std(ddof=1)) if v.size > 1 else 0.0
    p5, median, p90, p99 = (float(x) for x in np.percentile(v, [5, 50, 90, 99]))
    return Summary(
        n=int(v.size), mean=mean, median=median, p5=p5, p90=p90, p99=p99, stdev=stdev,
        cv=stdev / mean if mean else 0.0, ci95=ci, outliers=int(outlier_mask(v).sum()), processes=processes,
    )
