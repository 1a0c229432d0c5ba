"""Turn a cell's raw Measurement into a Result: statistics, throughput with its CI, verdict."""

from __future__ import annotations

import numpy as np

from enginebench.measure.stats import summarize
from enginebench.measure.verdict import verdict
from enginebench.plan import Cell
from enginebench.results.model import Result
from enginebench.scenarios.base import Measurement

_THROUGHPUT_RESAMPLES = 1000


def closed_loop_throughput(worker_samples: list[np.ndarray], items_per_call: int, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Items/s of workers that each issue calls back to back: sum over workers of items / mean call time.

    The CI resamples each worker's calls (bootstrap), so it reflects the spread of the calls themselves.
    """
    means = [np.asarray(s, dtype=np.float64).mean() / 1e9 for s in worker_samples]
    point = sum(items_per_call / m for m in means)
    rng = np.random.default_rng(seed)
    boots = np.zeros(_THROUGHPUT_RESAMPLES)
    for s in worker_samples:
        s = np.asarray(s, dtype=np.float64) / 1e9
        idx = rng.integers(0, s.size, size=(_THROUGHPUT_RESAMPLES, s.size))
        boots += items_per_call / s[idx].mean(axis=1)
    return point, (float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975)))


def rate_summary(samples_ns: np.ndarray, tokens_per_call: float) -> dict:
    """tokens/s of calls: at the median call time (with the bootstrap CI of the median) and at the mean."""
    ms = summarize(np.asarray(samples_ns, dtype=np.float64) / 1e6)
    lo, hi = ms.ci95
    rate = tokens_per_call * 1e3
    return {"median": rate / ms.median, "mean": rate / ms.mean, "ci95": [rate / hi, rate / lo], "n": ms.n}


def generate_fields(cell: Cell, m: Measurement, details: dict) -> dict:
    """The generate scenario's Result fields: pp -> prefill tokens/s; tg -> decode tokens/s, TTFT, ITL."""
    from enginebench.measure.roofline import decode_roofline

    samples = m.worker_samples[0]
    if m.details.get("test", cell.workload).startswith("pp"):
        return {"prefill_tokens_per_s": rate_summary(samples, m.items_per_call * m.tokens_per_item)}
    decode = rate_summary(samples, m.items_per_call)
    speed = details.get("machine_speed") or {}
    decode["roofline"] = decode_roofline(decode["median"], m.items_per_call, details.get("model_params") or 0,
                                         m.executed_precision, m.details, speed.get("bandwidth_gbs"))
    ttft = m.details.get("ttft_ns") or []
    return {"decode_tokens_per_s": decode, "itl_ms": summarize(np.asarray(samples) / 1e6).to_dict(),
            "ttft_ms": summarize(np.asarray(ttft) / 1e6).to_dict() if ttft else None}


def build_result(cell: Cell, m: Measurement, *, model: str, seq_len: int, engine_version: str | None,
                 engine_options: dict, details: dict) -> Result:
    all_ns = np.concatenate([np.asarray(s, dtype=np.int64) for s in m.worker_samples])
    latency = summarize(all_ns / 1e6).to_dict()
    items_per_s, ci = closed_loop_throughput(m.worker_samples, m.items_per_call)
    total_items = sum(len(s) for s in m.worker_samples) * m.items_per_call
    throughput = {
        "items_per_s": items_per_s,
        "tokens_per_s": items_per_s * m.tokens_per_item,
        "ci95": list(ci),
        "wall_items_per_s": total_items / m.wall_s if m.wall_s > 0 else None,
    }
    # in the throughput scenario, each worker's samples are judged on their own and the reasons merged
    reasons: list[str] = []
    for i, s in enumerate(m.worker_samples):
        v = verdict(s)
        prefix = f"worker {i}: " if len(m.worker_samples) > 1 else ""
        reasons.extend(prefix + r for r in v["reasons"])
    extra = generate_fields(cell, m, details) if cell.scenario == "generate" else {}
    return Result(
        **extra,
        engine=cell.engine, model=model, precision=cell.precision, scenario=cell.scenario, workload=cell.workload,
        batch_size=cell.batch_size, seq_len=seq_len, workers=cell.workers, threads=cell.threads,
        status="ok", engine_version=engine_version, executed_precision=m.executed_precision,
        samples=all_ns.tolist(), latency_ms=latency, throughput=throughput, load_s=round(m.load_s, 4),
        peak_rss_mb=round(m.peak_rss_mb, 1), fidelity=m.fidelity, verdict={"ok": not reasons, "reasons": reasons},
        engine_options=engine_options, details={**details, **m.details, "wall_s": round(m.wall_s, 3)},
    )


def failed_result(cell: Cell, *, model: str, seq_len: int, error: str, status: str = "failed",
                  engine_version: str | None = None, engine_options: dict | None = None,
                  details: dict | None = None) -> Result:
    return Result(
        engine=cell.engine, model=model, precision=cell.precision, scenario=cell.scenario, workload=cell.workload,
        batch_size=cell.batch_size, seq_len=seq_len, workers=cell.workers, threads=cell.threads,
        status=status, error=error, engine_version=engine_version, engine_options=engine_options or {},
        details=details or {},
    )
