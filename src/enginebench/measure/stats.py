"""Statistics of timing samples: percentiles, a bootstrap CI of the median, robust outlier counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
OUTLIER_MADS = 3.0
_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


def bootstrap_ci(values: np.ndarray, statistic=np.median, confidence: float = 0.95,
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `statistic` (seeded, so reports are reproducible)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 1:
        return float(values[0]), float(values[0])
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
    ci95: tuple[float, float]  # bootstrap 95% CI of the median
    outliers: int  # beyond OUTLIER_MADS scaled MADs; counted, never dropped

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d


def summarize(values) -> Summary:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("cannot summarise an empty sample")
    mean = float(v.mean())
    stdev = float(v.std(ddof=1)) if v.size > 1 else 0.0
    p5, median, p90, p99 = (float(x) for x in np.percentile(v, [5, 50, 90, 99]))
    return Summary(
        n=int(v.size), mean=mean, median=median, p5=p5, p90=p90, p99=p99, stdev=stdev,
        cv=stdev / mean if mean else 0.0, ci95=bootstrap_ci(v), outliers=int(outlier_mask(v).sum()),
    )
