"""Where an encoder result sits under the machine's compute roofline (`enginebench machine`'s GEMM ceilings).

FLOPs per item (one sequence) are counted from the model's structure (config.json: layers, hidden size, heads,
FFN size) at the executed sequence length, a multiply-add as 2:
  - linear: the weight MatMuls of every token, 2·L·S·(4·H² + 2·H·F) (q, k, v, out; FFN up and down);
  - attention: the two products of activations per layer, Q·Kᵀ and P·V, 2·L·2·S²·H (the S² terms).
Embeddings, softmax, layer norm, GELU, residual adds and the pooler (one token per sequence) are left out: they
are not GEMMs, cost a few % of the FLOPs, and their time counts against the result, so the roofline is an
upper bound. MiniLM-L6 at 128 tokens: 2.87 GFLOP, 95% of it linear.

Each part runs in the precision the engine executed: the share of the weight MatMuls' FLOPs the quantization
read-back found quantized (details.quantization.share_of_matmul_flops, measure/quantization.py) runs in int8,
and so does the share of the attention products it found running on int8 operands
(details.quantization.attention_products: OpenVINO's NNCF quantizes Q·Kᵀ, not P·V; ONNX Runtime's QDQ graph
both); the rest runs in the float precision (bf16 where the executed precision says bf16, else fp32). Counting
an int8 product against the fp32 ceiling would lower the roofline and overstate the share (OpenVINO int8-static,
every Linear, on a VNNI EPYC: its roofline 257/s read, 277/s true; 74% read, 69% true). A part's time is FLOPs ÷
that precision's measured GEMM ceiling, so

    roofline items/s = 1 / Σ_parts FLOPs_part / ceiling_part,   share = measured items/s ÷ roofline items/s,

the share's 95% CI the items/s one divided by the same constant. Without a ceiling a part needs, or without
knowing which MatMuls ran int8, there is no figure and `unknown` says why.

The ceilings are measured once per machine; a shared host's speed moves (here 2-3x within minutes). So each
cell's measuring process times the stored reference GEMM (numpy float32 at the stored size) just before and just
after the cell (measure/roofline.gemm_probe): the median of those probes over the cell's processes ÷ the stored
figure is the machine's speed factor while the cell ran. `beside` holds it, and the share against the ceilings
scaled by it (every precision alike: neighbours' load and throttling slow every kernel). Outside
[1/DRIFT, DRIFT] the figure is marked drifted, and the tables and recommend say both shares. Each probe is a best of
calls, like the ceilings, so the factor leans high and the scaled share low.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from enginebench.measure.host_load import busy_cores

DRIFT = 1.25  # the machine's speed beside a cell this far from the stored one (either way) is called a drift
NO_CEILINGS = "no GEMM ceilings stored for this machine: run `enginebench machine` (once per machine)"
_STRUCTURE_KEYS = {"layers": "num_hidden_layers", "hidden_size": "hidden_size", "heads": "num_attention_heads",
                   "intermediate_size": "intermediate_size"}


def encoder_structure(config: dict) -> dict | None:
    """The dimensions the FLOP count needs, from a BERT-like config.json; None when one is missing."""
    try:
        return {key: int(config[name]) for key, name in _STRUCTURE_KEYS.items()}
    except (KeyError, TypeError, ValueError):
        return None


def model_structure(folder: str) -> dict | None:
    """An encoder's dimensions from its folder's config.json, None when unreadable."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return encoder_structure(config) if isinstance(config, dict) else None


def encoder_flops(structure: dict, seq_len: int) -> dict[str, float]:
    """{"linear": FLOPs, "attention": FLOPs} of one sequence of `seq_len` tokens (see the module's docstring)."""
    layers, hidden, ffn = structure["layers"], structure["hidden_size"], structure["intermediate_size"]
    linear = 2.0 * layers * seq_len * (4 * hidden * hidden + 2 * hidden * ffn)
    attention = 2.0 * layers * 2 * seq_len * seq_len * hidden
    return {"linear": linear, "attention": attention}


def float_precision(executed: str | None) -> str:
    """The precision the unquantized MatMuls ran in: bf16 where the executed precision says so, else fp32."""
    return "bf16" if executed and "bf16" in executed else "fp32"


def _runs_int8(executed: str | None, precision: str | None) -> bool:
    return "int8" in f"{executed or ''} {precision or ''}"


def _integer(dtype: str | None) -> bool:
    return bool(dtype) and dtype.startswith(("int", "uint"))


def flop_parts(flops: dict[str, float], executed: str | None, quantization: dict | None,
               precision: str | None = None) -> list[dict] | str:
    """[{what, precision, flops}] split by the precision each part ran in, or why that is not known."""
    floating = float_precision(executed)
    share = (quantization or {}).get("share_of_matmul_flops")
    if share is None:
        if _runs_int8(executed, precision):
            return "which MatMuls ran int8 is not known (no quantization read-back)"
        share = 0.0
    if not _integer((quantization or {}).get("activations")):  # weights-only int8: the products run in float
        share = 0.0
    attention = attention_int8_share(quantization)
    parts = [{"what": "linear (int8)", "precision": "int8", "flops": flops["linear"] * share},
             {"what": f"linear ({floating})", "precision": floating, "flops": flops["linear"] * (1 - share)},
             {"what": "attention products (int8)", "precision": "int8", "flops": flops["attention"] * attention},
             {"what": f"attention products ({floating})", "precision": floating,
              "flops": flops["attention"] * (1 - attention)}]
    return [p for p in parts if p["flops"] > 0]


def attention_int8_share(quantization: dict | None) -> float:
    """The share of the attention products' FLOPs that ran on int8 operands. Q·Kᵀ and P·V cost S²·H each, so it
    is the share of those products counted int8; 0 where the read-back found none (or did not look)."""
    products = (quantization or {}).get("attention_products") or {}
    return products["int8"] / products["total"] if products.get("total") else 0.0


def ceiling_of(speed: dict | None, precision: str) -> float | None:
    """This precision's measured GEMM GFLOP/s (int8: GOP/s) from a run's machine speed, or None."""
    ceilings = (speed or {}).get("gemm_gflops_by_precision") or {}
    return ceilings.get(precision)


def bound_of(speed: dict | None, precision: str) -> tuple[float | None, str | None]:
    """(the GEMM rate a part in `precision` is bounded by, the precision whose ceiling that is). A precision this
    CPU has no instructions for is emulated, and an engine's emulation can beat the probe's (on AVX2 torch's
    bf16 Linear ran 19 GFLOP/s where torch.matmul's bf16 ran 1): its bound is the faster of its own ceiling and
    fp32's, since an emulation that widens to fp32 runs on the fp32 units (a bf16 row was put at 1920% of a
    roofline of 1 GFLOP/s)."""
    own = ceiling_of(speed, precision)
    if own is None or not ((speed or {}).get("gemm_emulated") or {}).get(precision):
        return own, precision
    fp32 = ceiling_of(speed, "fp32") or 0.0
    return (fp32, "fp32") if fp32 > own else (own, precision)


def probe_gflops(probes: list[dict | None]) -> list[float]:
    """The GFLOP/s of processes' GEMM probes (details.gemm_probe: before and after the cell), in the order taken."""
    return [p[k] for p in probes if p for k in ("before", "after") if p.get(k)]


def machine_factor(probes: list[dict | None], speed: dict | None) -> dict | None:
    """How fast the machine ran beside a cell, from its processes' GEMM probes (details.gemm_probe: before and
    after) against the stored reference (speed.gemm_probe); None without either."""
    reference = (speed or {}).get("gemm_probe")
    figures = probe_gflops(probes)
    if not reference or not figures:
        return None
    factor = statistics.median(figures) / reference["gflops"]
    return {"factor": factor, "probe_gflops": [round(f, 1) for f in figures], "reference_gflops": reference["gflops"],
            "n": reference["n"], "drifted": not 1 / DRIFT <= factor <= DRIFT}


def drift_words(beside: dict) -> tuple[str, str]:
    """How a drifted figure is said, wherever it is shown: ("the machine ran at 48% of its stored GEMM speed",
    "71% (95% CI 59-80%)", the share against the ceilings at that speed)."""
    ci = beside.get("ci95")
    share = f"{beside['pct_of_roofline']:.0f}%" + (f" (95% CI {ci[0]:.0f}-{ci[1]:.0f}%)" if ci else "")
    return f"the machine ran at {100 * beside['factor']:.0f}% of its stored GEMM speed", share


def roofline_share(items_per_s: float, ci95, parts: list[dict], speed: dict | None,
                   probes: list[dict | None] = ()) -> dict:
    """The roofline items/s of `parts` under the machine's ceilings and the share `items_per_s` reaches; with
    the cell's GEMM `probes`, the same share against the ceilings scaled to the machine's speed beside it."""
    total = sum(p["flops"] for p in parts)
    out = {**_no_figure(None), "flops_per_item": total, "ceilings_from": (speed or {}).get("measured_at")}
    if (busy := busy_cores(speed)) is not None:  # measured beside other work: the share reads high, its note says so
        out["ceilings_busy_cores"] = busy
    seconds = 0.0
    for p in parts:
        ceiling, of = bound_of(speed, p["precision"])
        out["parts"].append({**p, "ceiling_gflops": ceiling, "share_of_flops": p["flops"] / total if total else None,
                             **({"ceiling_of": of} if of != p["precision"] else {})})
        if not ceiling:
            out["unknown"] = _missing_ceiling(speed, p["precision"])
            continue
        seconds += p["flops"] / (ceiling * 1e9)
    if out["unknown"] or seconds <= 0:
        out["unknown"] = out["unknown"] or "no FLOPs counted"
        return out
    bound = 1.0 / seconds
    out.update(roofline_items_per_s=bound, pct_of_roofline=100.0 * items_per_s / bound,
               ci95=[100.0 * c / bound for c in ci95] if ci95 else None,
               precision=main_precision(out["parts"]),
               emulated=[p for p, note in ((speed or {}).get("gemm_emulated") or {}).items()
                         if any(x["precision"] == p for x in parts) and note])
    beside = machine_factor(list(probes), speed)
    if beside:
        factor = beside["factor"]
        beside.update(pct_of_roofline=out["pct_of_roofline"] / factor,
                      ci95=[c / factor for c in out["ci95"]] if out["ci95"] else None)
        out["beside"] = beside
    return out


def _missing_ceiling(speed: dict | None, precision: str) -> str:
    if (speed or {}).get("gemm_unknown"):  # stored, but under other CPU features (ENGINEBENCH_CPU_FEATURES)
        return (f"the stored GEMM ceilings were {speed['gemm_unknown']}: run `enginebench machine` under this "
                "process's CPU features")
    if not ceiling_of(speed, "fp32"):
        return NO_CEILINGS
    return f"no {precision} GEMM ceiling stored for this machine: run `enginebench machine` again"


def _no_figure(why: str | None) -> dict:
    """Result.roofline's fields, none known yet; `unknown` says why when it stays so."""
    return {"flops_per_item": None, "parts": [], "roofline_items_per_s": None, "pct_of_roofline": None, "ci95": None,
            "precision": None, "emulated": [], "ceilings_from": None, "unknown": why}


def main_precision(parts: list[dict]) -> str:
    """The precision that holds most of the FLOPs: what a sentence names ("54% of the int8 roofline")."""
    return max(parts, key=lambda p: p["flops"])["precision"] if parts else "fp32"


def encoder_roofline(items_per_s: float, ci95, seq_len: int, executed: str | None, precision: str | None,
                     details: dict, measurement_details: dict, probes: list[dict | None] = ()) -> dict | None:
    """A result's compute-roofline figure (Result.roofline), from the launcher's details (model_structure,
    machine_speed) and the measuring processes' (quantization; `probes`: each one's details.gemm_probe); None
    where the model's structure is unknown."""
    structure = details.get("model_structure")
    if not structure:
        return None
    parts = flop_parts(encoder_flops(structure, seq_len), executed, measurement_details.get("quantization"),
                       precision)
    if isinstance(parts, str):
        return _no_figure(parts)
    return roofline_share(items_per_s, ci95, parts, details.get("machine_speed"), probes)


__all__ = ["DRIFT", "probe_gflops", "machine_factor", "drift_words", "encoder_structure", "encoder_flops", "flop_parts", "attention_int8_share", "roofline_share", "encoder_roofline", "ceiling_of",
           "float_precision", "main_precision", "NO_CEILINGS"]
