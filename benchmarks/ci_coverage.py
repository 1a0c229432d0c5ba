"""How often does a stated 95% CI cover the true value? Simulated cells measured in k processes, each process
offset from the others (between-process spread absent, comparable to or dominating the noise of a process's
median), its calls drawn from a normal-ish, a skewed (lognormal) or a heavy-tailed, spiky distribution.
Prints the coverage of every interval enginebench states, and of the two-level bootstrap it used before.

    .venv/bin/python benchmarks/ci_coverage.py [--cells 2000] [--old-cells 1000] [--markdown]

The cell's true value is what the figures estimate: the typical process's figure, exp(mu) with each
process's true median exp(mu + b), b ~ N(0, spread²) — for a median, and 1 / (exp(mu) · E[call]) for items/s.
A faster process takes more calls (duration-based stopping): the fastest process of a cell gets the most.
tests/measure/test_ci_coverage.py runs the same simulation and holds every interval to 93-98%.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from enginebench.measure.compare import welch_half_width
from enginebench.measure.rates import SPIKY_LOW_CONFIDENCE
from enginebench.measure.stats import SPIKE_FACTOR, SPIKE_SHARE, over_processes

PROCESSES = (2, 3, 5, 10)
SPREADS = ("none", "comparable", "dominating")
CALLS = (160, 120, 90, 70)  # calls of a cell's fastest, second, ... process (then repeating): the stopping rule's way
_SPIKE_SHARE, _SPIKE_SCALE, _SPIKE_TAIL = 0.10, 3.0, 2.5  # spiky: 10% of the slower half × (1 + 3 · Lomax(2.5))


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


# name -> (sigma of the bulk on the log scale, mean of a call relative to its median of 1)
DISTRIBUTIONS = {
    "normal": (0.03, 1.0),
    "lognormal": (0.15, math.exp(0.15 ** 2 / 2)),
    # spikes only in the slower half keep the median at exactly 1; Lomax(2.5) has a finite variance, no 3rd moment
    "spiky": (0.03, math.exp(0.03 ** 2 / 2) * (1 + _SPIKE_SCALE * _SPIKE_SHARE / (_SPIKE_TAIL - 1) * _phi(0.03))),
}


def calls(rng: np.random.Generator, dist: str, shape: tuple) -> np.ndarray:
    """Call times with median 1 (the process's own offset multiplies them)."""
    sigma = DISTRIBUTIONS[dist][0]
    z = rng.standard_normal(shape)
    if dist == "normal":
        return 1 + sigma * z
    x = np.exp(sigma * z)
    if dist == "spiky":
        spike = (z > 0) & (rng.random(shape) < _SPIKE_SHARE)
        x = np.where(spike, x * (1 + _SPIKE_SCALE * rng.pareto(_SPIKE_TAIL, shape)), x)
    return x


def spread_sigma(dist: str, spread: str) -> float:
    """The between-process spread (sd of a process's log offset) against the noise of a process's median."""
    median_noise = math.sqrt(math.pi / 2) * DISTRIBUTIONS[dist][0] / math.sqrt(np.mean(CALLS))
    return {"none": 0.0, "comparable": median_noise, "dominating": max(10 * median_noise, 0.03)}[spread]


def cells(rng: np.random.Generator, n_cells: int, k: int, dist: str, spread: str,
          n_calls: tuple | None = None) -> list[np.ndarray]:
    """k arrays (cells × calls of that process), the processes of each cell sorted fastest first."""
    offsets = np.sort(spread_sigma(dist, spread) * rng.standard_normal((n_cells, k)), axis=1)
    n_calls = n_calls or tuple(CALLS[j % len(CALLS)] for j in range(k))
    return [np.exp(offsets[:, j:j + 1]) * calls(rng, dist, (n_cells, n_calls[j])) for j in range(k)]


def spiky_cells(processes: list[np.ndarray]) -> np.ndarray:
    """Per cell, measure.rates.spiky_low_end's rule vectorised: over SPIKE_SHARE of its calls beyond SPIKE_FACTOR times
    their process's median."""
    slow = sum((p > SPIKE_FACTOR * np.median(p, axis=1, keepdims=True)).sum(axis=1) for p in processes)
    return slow > SPIKE_SHARE * sum(p.shape[1] for p in processes)


def _covers(lo, hi, true) -> float:
    return float(np.mean((lo <= true) & (true <= hi)))


def new_coverage(rng: np.random.Generator, n_cells: int, k: int, dist: str, spread: str) -> dict[str, float]:
    """Coverage of the figures' intervals: median (latency, tokens/s, TTFT), items/s, and a speed-up."""
    base = cells(rng, n_cells, k, dist, spread)
    new = cells(rng, n_cells, k, dist, spread)
    medians = np.stack([np.median(p, axis=1) for p in base], axis=1)
    _, lo, hi = over_processes(medians)
    out = {"median": _covers(lo, hi, 1.0)}
    rates = np.stack([1 / p.mean(axis=1) for p in base], axis=1)
    _, lo, hi = over_processes(rates)
    _, spiky_lo, _ = over_processes(rates, low_confidence=SPIKY_LOW_CONFIDENCE)
    spiky = spiky_cells(base)
    out["items/s"] = _covers(np.where(spiky, spiky_lo, lo), hi, 1 / DISTRIBUTIONS[dist][1])
    out["items/s, t both ends"] = _covers(lo, hi, 1 / DISTRIBUTIONS[dist][1])  # before spikes widened the low end
    out["spiky cells"] = float(spiky.mean())
    logs_base = np.log(medians)
    logs_new = np.log(np.stack([np.median(p, axis=1) for p in new], axis=1))
    half = welch_half_width(logs_base.var(axis=1, ddof=1) / k, k - 1, logs_new.var(axis=1, ddof=1) / k, k - 1)
    centre = logs_new.mean(axis=1) - logs_base.mean(axis=1)  # the true ratio is 1: log 0
    out["speed-up"] = _covers(centre - half, centre + half, 0.0)
    return out


def old_coverage(rng: np.random.Generator, n_cells: int, k: int, dist: str, spread: str, resamples: int = 200,
                 n_calls: int = 50, chunk: int = 100) -> float:
    """Coverage of the pooled median's two-level percentile bootstrap (resample the processes, then the calls
    within each; the CI enginebench stated before), vectorised; every process takes `n_calls` calls."""
    hits = 0
    for start in range(0, n_cells, chunk):
        m = min(chunk, n_cells - start)
        values = np.stack(cells(rng, m, k, dist, spread, (n_calls,) * k), axis=1)  # m × k × n
        picked = rng.integers(0, k, size=(m, resamples, k, 1))
        within = rng.integers(0, n_calls, size=(m, resamples, k, n_calls))
        pooled = values[np.arange(m)[:, None, None, None], picked, within].reshape(m, resamples, k * n_calls)
        stats = np.median(pooled, axis=2)
        lo, hi = np.quantile(stats, [0.025, 0.975], axis=1)
        hits += int(((lo <= 1.0) & (1.0 <= hi)).sum())
    return hits / n_cells


def table(n_cells: int, old_cells: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for dist in DISTRIBUTIONS:
        for spread in SPREADS:
            for k in PROCESSES:
                row = {"distribution": dist, "spread": spread, "k": k, **new_coverage(rng, n_cells, k, dist, spread)}
                if old_cells and dist == "lognormal":
                    row["old median"] = old_coverage(rng, old_cells, k, dist, spread)
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=2000, help="simulated cells per row")
    parser.add_argument("--old-cells", type=int, default=1000,
                        help="cells per row for the old two-level bootstrap (lognormal rows; 0 skips it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true", help="a GitHub table")
    args = parser.parse_args()
    rows = table(args.cells, args.old_cells, args.seed)
    columns = ["distribution", "spread", "k", "median", "items/s", "items/s, t both ends", "spiky cells", "speed-up",
               "old median"]
    fmt = lambda v: f"{v:.1%}" if isinstance(v, float) else str(v)  # noqa: E731
    if args.markdown:
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for r in rows:
            print("| " + " | ".join(fmt(r[c]) if c in r else "" for c in columns) + " |")
        return
    print("  ".join(f"{c:>12}" for c in columns))
    for r in rows:
        print("  ".join(f"{fmt(r[c]) if c in r else '':>12}" for c in columns))


if __name__ == "__main__":
    main()
