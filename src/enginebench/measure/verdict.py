"""Is a figure trustworthy? A verdict with reasons, from the samples alone."""

from __future__ import annotations

import numpy as np

from enginebench.measure.stats import bootstrap_ci, outlier_mask

MIN_SAMPLES = 10
MAX_CV = 0.10
MAX_OUTLIER_FRACTION = 0.10
MIN_DRIFT = 0.05  # halves must differ by more than this (relative) as well as statistically


def verdict(samples_ns) -> dict:
    """{"ok": bool, "reasons": [...]}; warn on too few samples, a high CV, many outliers, or drift."""
    v = np.asarray(samples_ns, dtype=np.float64)
    reasons = []
    if v.size < MIN_SAMPLES:
        reasons.append(f"only {v.size} samples (want >= {MIN_SAMPLES}): raise --duration")
    if v.size > 1:
        cv = v.std(ddof=1) / v.mean()
        if cv > MAX_CV:
            reasons.append(f"CV {cv:.0%} > {MAX_CV:.0%}: noisy machine or unstable engine")
        outliers = int(outlier_mask(v).sum())
        if outliers > MAX_OUTLIER_FRACTION * v.size:
            reasons.append(f"{outliers} outliers ({outliers / v.size:.0%} of samples) beyond 3 MAD")
    if v.size >= 2 * MIN_SAMPLES:
        half = v.size // 2
        a_lo, a_hi = bootstrap_ci(v[:half], resamples=500)
        b_lo, b_hi = bootstrap_ci(v[half:], resamples=500)
        a, b = np.median(v[:half]) / 1e6, np.median(v[half:]) / 1e6
        if (a_hi < b_lo or b_hi < a_lo) and abs(a - b) > MIN_DRIFT * min(a, b):
            reasons.append(f"drift: first-half median {a:.3g} ms vs second-half {b:.3g} ms (CIs disjoint)")
    return {"ok": not reasons, "reasons": reasons}
