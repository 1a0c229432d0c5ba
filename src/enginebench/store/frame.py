"""A run as a pandas DataFrame: one row per result, flat columns to filter, group and plot.

Figures keep their units in the column name (`median_ms`, `items_per_s`); each CI is two columns
(`median_ms_ci95_lo`, `median_ms_ci95_hi`). A figure a result does not have (a failed cell's median, an
encoder's decode rate, a single sample's CI) is NaN, never 0. The CSV and Parquet exports write this frame.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from enginebench.store.labels import affinity_text, precision_label

if TYPE_CHECKING:  # the model calls this module (Run.to_pandas): no import back
    from enginebench.store.model import Result, Run

# column -> pandas dtype; the order is the frame's
COLUMNS = {
    "run_id": "string", "created_at": "datetime64[ns, UTC]", "hostname": "string", "cpu": "string",
    "cores": "Int64", "affinity": "string", "memory_gb": "Float64", "python": "string", "node": "string",
    "engine": "string", "engine_version": "string", "model": "string",
    "precision": "string", "executed_precision": "string", "precision_label": "string", "quantized_share": "float64",
    "scenario": "string", "workload": "string", "batch_size": "int64", "seq_len": "int64", "workers": "int64",
    "threads": "int64", "status": "string", "error": "string",
    "median_ms": "float64", "median_ms_ci95_lo": "float64", "median_ms_ci95_hi": "float64", "p99_ms": "float64",
    "items_per_s": "float64", "items_per_s_ci95_lo": "float64", "items_per_s_ci95_hi": "float64",
    "tokens_per_s": "float64",
    "pct_of_roofline": "float64", "pct_of_roofline_ci95_lo": "float64", "pct_of_roofline_ci95_hi": "float64",
    "machine_speed_factor": "float64",
    "prefill_tokens_per_s": "float64", "prefill_tokens_per_s_ci95_lo": "float64",
    "prefill_tokens_per_s_ci95_hi": "float64",
    "decode_tokens_per_s": "float64", "decode_tokens_per_s_ci95_lo": "float64",
    "decode_tokens_per_s_ci95_hi": "float64",
    "ttft_ms": "float64", "itl_p99_ms": "float64", "load_s": "float64", "peak_rss_mb": "float64",
    "fidelity_metric": "string", "fidelity_value": "float64", "fidelity_ok": "boolean",
    "verdict_ok": "boolean", "verdict_reasons": "string", "notes": "string",
    "processes": "int64", "n_samples": "int64",
}


def to_frame(runs: Run | list[Run]) -> pd.DataFrame:
    """One row per result of the run(s), with the columns of COLUMNS in that order."""
    runs = list(runs) if isinstance(runs, (list, tuple)) else [runs]
    rows = [result_row(run, r) for run in runs for r in run.results]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, errors="coerce", format="ISO8601")
    return frame.astype(COLUMNS)


def result_row(run: Run, r: Result) -> dict:
    node = (r.details or {}).get("node") or {}
    m = {**(run.machine or {}), **node}  # measured on a Ray node: that node's machine, not the orchestrator's
    lat, thr, fidelity = _latency(r), r.throughput or {}, r.fidelity or {}
    quantization = (r.details or {}).get("quantization") or {}
    row = {
        "run_id": run.run_id, "created_at": run.created_at, "hostname": m.get("hostname"), "cpu": m.get("cpu"),
        "cores": m.get("logical_cores"), "affinity": affinity_text(m.get("affinity")) if m.get("affinity") else None,
        "memory_gb": m.get("memory_gb"), "python": m.get("python"), "node": node.get("ray_node_id"),
        "engine": r.engine, "engine_version": r.engine_version, "model": r.model,
        "precision": r.precision, "executed_precision": r.executed_precision or r.precision,
        "precision_label": precision_label(r), "quantized_share": quantization.get("share_of_matmul_flops"),
        "scenario": r.scenario, "workload": r.workload, "batch_size": r.batch_size, "seq_len": r.seq_len,
        "workers": r.workers, "threads": r.threads, "status": r.status, "error": r.error,
        "p99_ms": lat.get("p99"), "tokens_per_s": thr.get("tokens_per_s"),
        "ttft_ms": (r.ttft_ms or {}).get("median"), "itl_p99_ms": (r.itl_ms or {}).get("p99"),
        "load_s": r.load_s, "peak_rss_mb": r.peak_rss_mb,
        "fidelity_metric": fidelity.get("metric"), "fidelity_value": fidelity.get("value"),
        "fidelity_ok": fidelity.get("ok") if fidelity else None,
        "verdict_ok": (r.verdict or {}).get("ok"),
        "verdict_reasons": "; ".join((r.verdict or {}).get("reasons", ())) or None,
        "notes": "; ".join((r.details or {}).get("notes", ())) or None,
        "processes": (r.details or {}).get("processes") or len(r.repetitions) or (1 if r.samples else 0),
        "n_samples": len(r.samples) or lat.get("n") or 0,
    }
    row.update(_with_ci("median_ms", lat.get("median"), lat.get("ci95")))
    row.update(_with_ci("items_per_s", thr.get("items_per_s"), thr.get("ci95")))
    roofline = r.roofline or {}  # encoders: share of the machine's compute roofline (measure/compute_roofline.py)
    row.update(_with_ci("pct_of_roofline", roofline.get("pct_of_roofline"), roofline.get("ci95")))
    row["machine_speed_factor"] = (roofline.get("beside") or {}).get("factor")  # beside the cell ÷ stored
    for name in ("prefill_tokens_per_s", "decode_tokens_per_s"):
        rate = getattr(r, name) or {}
        row.update(_with_ci(name, rate.get("median"), rate.get("ci95")))
    return row


def _latency(r: Result) -> dict:
    """The latency figures a row shows: a serving result's are LoadGen's own percentiles, counted from each
    query's scheduled arrival (Result.serving), as its table shows them; enginebench's stamps only where a
    result has none."""
    served = (r.serving or {}).get("latency_ms") or {}
    if not {"p50", "p99"} <= served.keys():
        return r.latency_ms or {}
    p50, p99 = ({"value": x} if not isinstance(x, dict) else x for x in (served["p50"], served["p99"]))
    return {**(r.latency_ms or {}), "median": p50["value"], "ci95": p50.get("ci95"), "p99": p99["value"]}


def _with_ci(name: str, value, ci) -> dict:
    lo, hi = ci if ci else (None, None)
    return {name: _number(value), f"{name}_ci95_lo": _number(lo), f"{name}_ci95_hi": _number(hi)}


def _number(x) -> float:
    return math.nan if x is None else float(x)


__all__ = ["COLUMNS", "to_frame", "result_row"]
