"""Queueing theory for the serving scenarios' checks: the M/D/1 queue (Poisson arrivals, one worker, a fixed
service time) by simulation."""

from __future__ import annotations

import numpy as np


def md1_p99(lam: float, service_s: float, n: int = 200_000, seed: int = 1) -> float:
    """p99 of the sojourn time of an M/D/1 queue (Poisson arrivals at lam, deterministic service), from
    Lindley's recursion W' = max(0, W + D - A) over n arrivals."""
    gaps = np.random.default_rng(seed).exponential(1 / lam, n)
    wait, waits = 0.0, np.empty(n)
    for i in range(n):
        waits[i] = wait
        wait = max(0.0, wait + service_s - gaps[i])
    return float(np.percentile(waits + service_s, 99))


def md1_max_qps(service_s: float, slo_s: float) -> float:
    lo, hi = 0.3 / service_s, 0.999 / service_s
    for _ in range(25):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if md1_p99(mid, service_s, 50_000) <= slo_s else (lo, mid)
    return lo


def assert_bracketed(search: dict, tolerance: float = 0.05) -> tuple[float, float]:
    """A --find-max-qps search that ended as it should: a VALID trial at its answer and an INVALID one above it,
    within `tolerance`, every trial with arrivals of its own. Returns the bracket."""
    lo, hi = search["bracket"]
    assert lo is not None and hi is not None and lo < hi <= lo * (1 + tolerance) + 1e-9, search
    assert any(t["qps"] == lo and t["valid"] for t in search["trials"])
    assert any(t["qps"] == hi and not t["valid"] for t in search["trials"])
    assert len({tuple(t["seeds"].values()) for t in search["trials"]}) == len(search["trials"])  # own schedules
    return lo, hi
