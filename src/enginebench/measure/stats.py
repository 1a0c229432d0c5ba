"""Statistics of timing samples: percentiles, the CI of a cell's median over its processes, robust outlier
counts.

The independent unit is the process (a repetition): its samples share its heap layout, JIT state, thread
placement and the machine's state that minute. A cell's figure is therefore the geometric mean of its
processes' own figures (each process's median, or its items/s), and its 95% CI the Student t interval over
those k log figures with k − 1 degrees of freedom (`over_processes`). A process's figure carries its own
within-process noise as well as its offset, so the spread of the k figures covers both and nothing is
added for the noise inside a process. One process: the percentile bootstrap of its samples, which covers
the noise within that process only.

Why not the two-level bootstrap this module used before (resample the processes, then the samples within
them)? With k processes it is close to [fastest, slowest process]: the k-process bootstrap has (k−1)/k of the
variance and normal tails where t's are needed, so it covered the true value in ~75% of cells with 3
processes and ~50% with 2 whenever processes differed more than the samples inside one (the usual case).
`benchmarks/ci_coverage.py` prints both methods' coverage; tests/measure/test_ci_coverage.py holds the t interval to
93-98% for 2, 3, 5 and 10 processes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

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


@lru_cache(maxsize=64)
def t_quantile(df: int, confidence: float = 0.95) -> float:
    """The two-sided `confidence` quantile of Student's t with `df` >= 1 degrees of freedom (4.303 for df 2 at
    95%). scipy is imported here, not at the top: the measuring processes import this module and never need
    it (it would cost each of them a fifth of a second)."""
    from scipy.special import stdtrit

    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, not {df}")
    return float(stdtrit(df, 0.5 + confidence / 2))


def over_processes(figures, confidence: float = 0.95,
                   low_confidence: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cell's figure from its processes' own figures (`figures[..., k]`, positive, k >= 2), vectorised over
    the leading axes: (point, lo, hi), the point exp(mean of the k logs) — the geometric mean — and the interval
    exp(mean ± t(k−1)·s/√k), s the standard deviation of the logs. The point and the interval describe the same
    quantity: the typical process's figure, each process weighing the same however many samples it took.
    `low_confidence`: the low end's t quantile is that confidence's instead (a figure known to be skewed
    downwards: items/s over spiky calls, measure/rates.py's `spiky_low_end`)."""
    logs = np.log(np.asarray(figures, dtype=np.float64))
    k = logs.shape[-1]
    if k < 2:
        raise ValueError("an interval over processes needs at least two of them")
    centre = logs.mean(axis=-1)
    se = logs.std(axis=-1, ddof=1) / math.sqrt(k)
    half = t_quantile(k - 1, confidence) * se
    low_half = t_quantile(k - 1, low_confidence) * se if low_confidence else half
    return np.exp(centre), np.exp(centre - low_half), np.exp(centre + half)


SPIKE_FACTOR, SPIKE_SHARE = 2.0, 0.01


def spike_share(groups) -> float:
    """The share of calls that took over twice their own group's median (a process's or a worker's). Spikes
    make a mean call time right-skewed, so a rate over it (items/s) is skewed low: the symmetric t interval over
    such processes' log rates covered 87.5-94.1% in benchmarks/ci_coverage.py's spiky cells (measure/rates.py
    widens its low end)."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    total = sum(g.size for g in groups)
    slow = sum(int((g > SPIKE_FACTOR * np.median(g)).sum()) for g in groups)
    return slow / total if total else 0.0


def relative_half_width(ci: tuple[float, float] | list | None, point: float) -> float | None:
    """The CI's half-width relative to its point on the log scale (±x% for an interval symmetric in logs)."""
    if not ci or point <= 0 or ci[0] <= 0:
        return None
    return math.sqrt(ci[1] / ci[0]) - 1


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
    median: float  # several processes: the geometric mean of their medians (the CI's centre); one: the median
    p5: float
    p90: float
    p99: float
    stdev: float
    cv: float  # stdev / mean
    # 95% CI of `median`: the t interval over the processes' log medians (k − 1 df) when there are several, the
    # bootstrap of the one process's samples (within-process noise only) when one; None if n = 1
    ci95: tuple[float, float] | None
    outliers: int  # beyond OUTLIER_MADS scaled MADs; counted, never dropped
    processes: int = 1  # independent processes the values came from

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return d


def median_over_processes(groups: list) -> tuple[float, tuple[float, float] | None]:
    """(median, 95% CI) of values split by process: `over_processes` of the processes' medians when there are
    two or more with positive medians; the pooled median with the bootstrap CI of a single process otherwise
    (a non-positive median has no logarithm: the pooled values' bootstrap, for want of better)."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    medians = np.array([np.median(g) for g in groups])
    if len(groups) >= 2 and (medians > 0).all():
        point, lo, hi = over_processes(medians)
        return float(point), (float(lo), float(hi))
    pooled = np.concatenate(groups)
    return float(np.median(pooled)), bootstrap_ci(pooled)


def summarize(values, groups: list | None = None) -> Summary:
    """Statistics of the pooled values; with `groups` (the same values split by process), the median and its CI
    are over the processes (`median_over_processes`); the mean, percentiles and spread stay those of the pooled
    values."""
    v = np.asarray(values, dtype=np.float64) if groups is None else np.concatenate(
        [np.asarray(g, dtype=np.float64) for g in groups])
    if v.size == 0:
        raise ValueError("cannot summarise an empty sample")
    processes = len([g for g in groups if len(g)]) if groups is not None else 1
    median, ci = median_over_processes(groups if groups is not None else [v])
    mean = float(v.mean())
    stdev = float(v.std(ddof=1)) if v.size > 1 else 0.0
    p5, p90, p99 = (float(x) for x in np.percentile(v, [5, 90, 99]))
    return Summary(
        n=int(v.size), mean=mean, median=median, p5=p5, p90=p90, p99=p99, stdev=stdev,
        cv=stdev / mean if mean else 0.0, ci95=ci, outliers=int(outlier_mask(v).sum()), processes=processes,
    )
