"""Is a figure trustworthy? A verdict with reasons, from the samples alone."""

from __future__ import annotations

import math

import numpy as np

from enginebench.measure.stats import bootstrap_ci, outlier_mask, relative_half_width, t_quantile

MIN_SAMPLES = 10
MAX_CV = 0.10
MAX_OUTLIER_FRACTION = 0.10
MIN_DRIFT = 0.05  # halves must differ by more than this (relative) as well as statistically
MIN_SPREAD = 0.02  # repetitions' medians must differ by more than this (relative) as well as statistically
# Processes that differ by up to this much are a note, not a warning: the CI is taken over the processes and
# covers their spread (a shared machine's processes often differ by a few percent); beyond it, a warning
MAX_SPREAD = 0.10
# A CI over fewer than SUGGESTED_PROCESSES processes wider than ±WIDE_CI is wide for want of processes: a note names
# the fix (t's quantile with k-1 degrees of freedom: 12.7 with 2 processes, 4.30 with 3, 2.78 with 5)
WIDE_CI = 0.02
SUGGESTED_PROCESSES = 5


def verdict(samples_ns) -> dict:
    """{"ok": bool, "reasons": [...], "codes": [...]}; warn on too few samples, a high CV, many outliers, or
    drift. `codes` names each reason's kind (one_sample, few_samples, cv, outliers, drift), in the same order."""
    v = np.asarray(samples_ns, dtype=np.float64)
    reasons, codes = [], []
    if v.size == 1:
        reasons.append("one sample: no confidence interval; raise --duration or --min-samples")
        codes.append("one_sample")
    elif v.size < MIN_SAMPLES:
        reasons.append(f"only {v.size} samples (want >= {MIN_SAMPLES}): raise --duration")
        codes.append("few_samples")
    if v.size > 1:
        cv = v.std(ddof=1) / v.mean()
        if cv > MAX_CV:
            reasons.append(f"CV {cv:.0%} > {MAX_CV:.0%}: noisy machine or unstable engine")
            codes.append("cv")
        outliers = int(outlier_mask(v).sum())
        if outliers > MAX_OUTLIER_FRACTION * v.size:
            reasons.append(f"{outliers} outliers ({outliers / v.size:.0%} of samples) beyond 3 MAD")
            codes.append("outliers")
    if v.size >= 2 * MIN_SAMPLES:
        half = v.size // 2
        a_lo, a_hi = bootstrap_ci(v[:half], resamples=500)
        b_lo, b_hi = bootstrap_ci(v[half:], resamples=500)
        a, b = np.median(v[:half]) / 1e6, np.median(v[half:]) / 1e6
        if (a_hi < b_lo or b_hi < a_lo) and abs(a - b) > MIN_DRIFT * min(a, b):
            reasons.append(f"drift: first-half median {a:.3g} ms vs second-half {b:.3g} ms (CIs disjoint)")
            codes.append("drift")
    return {"ok": not reasons, "reasons": reasons, "codes": codes}


def process_spread(groups: list) -> float:
    """How far apart the slowest and the fastest process's medians are, relative to the fastest."""
    medians = [float(np.median(g)) for g in groups if len(g)]
    return max(medians) / min(medians) - 1 if medians and min(medians) > 0 else 0.0


def repetitions_disagree(groups: list) -> str | None:
    """A reason when independent processes measured different things: the fastest and the slowest process's
    medians have disjoint CIs (within-process spread cannot explain the gap) and differ by > MIN_SPREAD.
    Whether it warns or is a note is the caller's choice (MAX_SPREAD)."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups if len(g) >= 2]
    if len(groups) < 2:
        return None
    medians = [float(np.median(g)) for g in groups]
    lo, hi = int(np.argmin(medians)), int(np.argmax(medians))
    lo_ci, hi_ci = bootstrap_ci(groups[lo], resamples=500), bootstrap_ci(groups[hi], resamples=500)
    spread = medians[hi] / medians[lo] - 1 if medians[lo] > 0 else 0.0
    if lo_ci[1] < hi_ci[0] and spread > MIN_SPREAD:
        return (f"repetitions disagree: process medians {medians[lo] / 1e6:.3g}-{medians[hi] / 1e6:.3g} ms "
                f"(+{spread:.0%}, CIs disjoint): the machine's state changed between processes; the CI covers it")
    return None


def few_processes_note(ci, point: float, processes: int) -> str | None:
    """A note when the 95% CI is over 2-4 processes and wider than ±WIDE_CI: how wide, and how much narrower
    --repeat SUGGESTED_PROCESSES would make it at the same spread between processes (the t quantile over √k)."""
    half = relative_half_width(ci, point)
    if half is None or not 2 <= processes < SUGGESTED_PROCESSES or half <= WIDE_CI:
        return None
    k, more = processes, SUGGESTED_PROCESSES
    shrink = (t_quantile(more - 1) / math.sqrt(more)) / (t_quantile(k - 1) / math.sqrt(k))
    narrower = math.exp(math.log1p(half) * shrink) - 1
    return (f"95% CI over {k} processes: ±{half:.1%} (t with {k - 1} degree{'s' if k > 2 else ''} of freedom); --repeat {more} "
            f"narrows it to about ±{narrower:.1%} at the same spread between processes")
