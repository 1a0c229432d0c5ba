"""Output fidelity: an engine's sentence embeddings against the reference engine's on the same inputs."""

from __future__ import annotations

import numpy as np

# Minimum cosine similarity per sentence against the torch fp32 reference.
# fp32: engines differ only by summation order and fused kernels (~1e-6); anything lower is a bug.
# Reduced precision (fp16/bf16/int8): quantization error is expected but must not change what the
# embedding means; 0.99 keeps nearest-neighbour rankings essentially intact.
THRESHOLDS = {"fp32": 0.9999}
REDUCED_PRECISION_THRESHOLD = 0.99


def threshold_for(precision: str) -> float:
    return THRESHOLDS.get(precision, REDUCED_PRECISION_THRESHOLD)


def compare_embeddings(output: np.ndarray, reference: np.ndarray, precision: str) -> dict:
    out = np.asarray(output, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if out.shape != ref.shape:
        return {"metric": "min_cosine", "value": None, "ok": False, "threshold": threshold_for(precision),
                "error": f"output shape {out.shape} differs from the reference's {ref.shape}"}
    # Per item (first axis), whatever the output's rank: a model cut mid-graph gives [batch, tokens, hidden]
    # hidden states, compared item by item after flattening; a scalar or 1-D output is one item.
    items = out.shape[0] if out.ndim >= 2 else 1
    out, ref = out.reshape(items, -1), ref.reshape(items, -1)
    num = (out * ref).sum(axis=1)
    den = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
    same = np.all(out == ref, axis=1)  # e.g. an all-zero slice of a cut model's output: equal, not orthogonal
    cos = np.where(den > 0, num / np.where(den > 0, den, 1), np.where(same, 1.0, 0.0))
    value = float(cos.min()) if np.all(np.isfinite(cos)) else float("nan")
    threshold = threshold_for(precision)
    return {
        "metric": "min_cosine",
        "value": value,
        "ok": bool(np.isfinite(value) and value >= threshold),
        "threshold": threshold,
        "mean_cosine": float(np.nanmean(cos)),
        "max_abs_diff": float(np.max(np.abs(out - ref))),
        "items": int(out.shape[0]),
    }
