"""Rates of calls measured in several processes: items/s of workers calling back to back, tokens/s of calls,
each the geometric mean over processes with the t interval over their logs (measure/stats.py)."""

from __future__ import annotations

import numpy as np

from enginebench.measure.compare import closed_loop_rate, process_rate
from enginebench.measure.stats import SPIKE_SHARE, over_processes, spike_share, summarize

SPIKY_LOW_CONFIDENCE = 0.99  # the low end of items/s over spiky calls (spiky_low_end)

_THROUGHPUT_RESAMPLES = 1000


def closed_loop_throughput(repetitions: list[list[np.ndarray]], items_per_call: int,
                           seed: int = 0) -> tuple[float, tuple[float, float] | None]:
    """Items/s of workers that each issue calls back to back: per process, the sum over its workers of
    items / mean call time; the figure is the geometric mean over processes (repetitions), its 95% CI the t
    interval over the processes' log rates (`measure.stats.over_processes`, `measure.compare.closed_loop_rate`).
    Where the calls are spiky (`spiky_low_end`) the processes' rates are skewed low, and the low end takes t's
    99% quantile: 94.5-98.1% coverage in benchmarks/ci_coverage.py's spiky cells, 87.5-94.1% without.
    One process: the bootstrap of each worker's calls, which covers the noise within that process only. None
    when there is a single call in all."""
    repetitions = [ws for ws in ([np.asarray(s, dtype=np.float64) for s in ws if len(s)] for ws in repetitions) if ws]
    point = closed_loop_rate(repetitions, items_per_call)
    if sum(s.size for ws in repetitions for s in ws) < 2:
        return point, None
    if len(repetitions) > 1:
        skewed = spiky_low_end(repetitions) is not None
        _, lo, hi = over_processes([process_rate(ws, items_per_call) for ws in repetitions],
                                   low_confidence=SPIKY_LOW_CONFIDENCE if skewed else None)
        return point, (float(lo), float(hi))
    rng = np.random.default_rng(seed)
    boot = np.zeros(_THROUGHPUT_RESAMPLES)  # the one process's rate, its workers' calls resampled
    for s in repetitions[0]:
        s = s / 1e9
        idx = rng.integers(0, s.size, size=(_THROUGHPUT_RESAMPLES, s.size))
        boot += items_per_call / s[idx].mean(axis=1)
    return point, (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975)))


def spiky_low_end(repetitions: list[list[np.ndarray]]) -> float | None:
    """The share of calls over twice their worker's median (`measure.stats.spike_share`) where it makes
    `closed_loop_throughput`'s interval over processes take its low end at SPIKY_LOW_CONFIDENCE (more than
    SPIKE_SHARE of them, two processes or more); None where the interval stays symmetric."""
    repetitions = [ws for ws in ([s for s in ws if len(s)] for ws in repetitions) if ws]
    if len(repetitions) < 2:
        return None
    share = spike_share([w for ws in repetitions for w in ws])
    return share if share > SPIKE_SHARE else None


def rate_summary(groups_ns: list[np.ndarray], tokens_per_call: float) -> dict:
    """tokens/s of calls: at the median call time (the geometric mean over processes of their medians, with its
    CI) and at the mean call time."""
    ms = summarize(None, [np.asarray(g, dtype=np.float64) / 1e6 for g in groups_ns])
    rate = tokens_per_call * 1e3
    ci = [rate / ms.ci95[1], rate / ms.ci95[0]] if ms.ci95 else None
    return {"median": rate / ms.median, "mean": rate / ms.mean, "ci95": ci, "n": ms.n, "processes": ms.processes}


__all__ = ["closed_loop_throughput", "spiky_low_end", "rate_summary", "SPIKY_LOW_CONFIDENCE"]
