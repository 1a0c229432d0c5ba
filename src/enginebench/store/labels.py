"""The words and figures every output writes about a result: its precision as executed, its threads as used,
its serving settings, a figure ± its interval, the machine it was measured on. Shared by the tables (formats/) and
the answers of compare and recommend (analysis/)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from enginebench.display import max_rate
from enginebench.display import significant as _num
from enginebench.measure.quantization import short_label
from enginebench.scenarios.registry import scenario_class

if TYPE_CHECKING:
    from enginebench.store.model import Result, Run


def precision_label(r: Result) -> str:
    """The precision asked for; `→ executed` when the engine ran another; for quantized results what was
    quantized, from details["quantization"]: `int8 (w8a8, 67% of MatMul FLOPs)`; `int8 (w8a32, 100% of MatMul
    FLOPs)` for int8 weights with fp32 activations (weights-only)."""
    executed = r.executed_precision
    as_asked = executed in (None, r.precision) or executed.startswith(f"{r.precision}-")  # int8-weights/fp32
    text = r.precision if as_asked else f"{r.precision}→{executed}"
    quantization = (r.details or {}).get("quantization")
    if quantization and as_asked:
        text += f" ({short_label(quantization)})"
    return text


def threads_label(r: Result) -> str:
    """`workers×threads`, with `→used` where the engine reports using another number of threads, and
    `(ignored)` where the engine's thread option has no effect (details["threads_used"] is None)."""
    text = f"{r.workers}×{r.threads}"
    details = r.details or {}
    if "threads_used" not in details:
        return text
    used = details["threads_used"]
    if used is None:
        return f"{text} (ignored)"
    return text if used == r.threads else f"{text}→{used}"


def serving_label(r: Result) -> str:
    """What a server or offline row was asked: `100 q/s · p99 ≤ 50 ms`, `max q/s under p99 ≤ 50 ms: 392
    (bracket 392–402)`, with `· batch ≤8, wait ≤5 ms` for the dynamic batcher; empty for the other scenarios."""
    s = r.serving or {}
    settings = s.get("settings") or {}
    if not s:
        return ""
    parts = []
    search = s.get("find_max_qps")
    if search:
        parts.append(f"max q/s under p99 ≤ {settings.get('slo_p99_ms'):g} ms: {max_rate(search)}")
    elif not scenario_class(r.scenario).judged_by_spread:  # a server judged against its target at one rate
        parts.append(f"{_num(s['target_qps'])} q/s · p99 ≤ {s['slo_p99_ms']:g} ms")
    if settings.get("max_batch", 1) > 1:
        wait = settings.get("max_wait_ms") or 0
        parts.append(f"batch ≤{settings['max_batch']}" + (f", wait ≤{wait:g} ms" if wait else ""))
    return " · ".join(parts)


def plus_minus(value: float, ci: list[float] | None, digits: int = 3) -> str:
    if ci is None:  # one sample: no interval to show
        return f"{_num(value, digits)} (n=1)"
    half = max(value - ci[0], ci[1] - value)
    return f"{_num(value, digits)} ± {_num(half, 2)}"


# the CPU features inference kernels dispatch on (int8 dot products, bf16/fp16 arithmetic, matrix tiles)
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16",
                "amx_int8", "amx_fp16")


def machine_line(run: Run) -> str:
    """`machine: <cpu> · 16 cores (affinity 0-15) · 62.8 GB · Python 3.12.3 · avx2 avx512f … · governor
    performance · OMP_NUM_THREADS=4 · engines torch 2.5.1, onnxruntime 1.20.1`; what is unknown is left out."""
    m = run.machine or {}
    flags = set(m.get("cpu_flags") or ())
    parts = [str(m.get("cpu") or "unknown CPU")]
    if m.get("logical_cores"):
        parts.append(f"{m['logical_cores']} cores (affinity {affinity_text(m.get('affinity'))})")
    if m.get("memory_gb"):
        parts.append(f"{m['memory_gb']} GB")
    if m.get("python"):
        parts.append(f"Python {m['python']}")
    if flags:
        parts.append(" ".join(f for f in KERNEL_FLAGS if f in flags) or "no AVX2")
    if m.get("governor"):
        parts.append(f"governor {m['governor']}")
    parts += [f"{k}={v}" for k, v in (m.get("env") or {}).items()]
    versions = {}
    for r in run.results:  # skipped and failed cells may not know their engine's version
        if r.engine_version:
            versions.setdefault(r.engine, r.engine_version)
    if versions:
        parts.append("engines " + ", ".join(f"{e} {v}" for e, v in versions.items()))
    return "machine: " + " · ".join(parts)


def affinity_text(affinity) -> str:
    """[0, 1, 2, 3, 6] -> `0-3,6` (taskset's syntax); `?` when unknown."""
    if not affinity:
        return "?"
    spans: list[list[int]] = []
    for cpu in sorted(affinity):
        if spans and cpu == spans[-1][1] + 1:
            spans[-1][1] = cpu
        else:
            spans.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
