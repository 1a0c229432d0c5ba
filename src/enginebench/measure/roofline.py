"""The machine's two ceilings (`enginebench machine`) and where a decode result sits under them.

Memory bandwidth: a STREAM-like triad a[i] = b[i] + s*c[i] on float64 arrays far larger than the caches.
numpy runs one ufunc on one core, so the arrays are split into one contiguous slice per usable CPU
(sched_getaffinity) and each slice is driven by its own thread (numpy releases the GIL inside ufuncs). Inside
a slice the triad runs block by block (blocks small enough to stay in L2), so the temporary s*c never leaves
the cache: DRAM sees b and c read and a written once. Bytes counted as STREAM counts them: 3 x 8 bytes per
element (the write-allocate read of `a` is not counted, so the figure is conservative). Best of several runs.

GEMM: numpy float32 matmul of two n x n matrices (2 n^3 FLOPs), best of several runs; numpy's BLAS uses all
cores it is allowed (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS limit it). Reduced precisions, where the libraries
are installed (each with the threads it uses by default, recorded): bf16 — torch.matmul on bfloat16 tensors
(oneDNN), marked emulated when the CPU lacks AVX512_BF16 and AMX-BF16 (the figure is then a conversion to
fp32, not a bf16 peak); int8 — the faster of torch._int_mm (int8 × int8 -> int32) and onnxruntime's
MatMulInteger (uint8 × int8 -> int32, the VNNI layout), integer operations counted like FLOPs (2 n^3); marked
emulated without AVX-VNNI, AVX512_VNNI or AMX-INT8. Each is checked exact (int8) or close (bf16) first.

A decode step must read every weight once, so tokens/s per sequence cannot exceed bandwidth / weight bytes:
`decode_roofline` reports that bound and the share of it a result reached.
"""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np

from enginebench.measure.machine import cpu_flags

TRIAD_ELEMENTS = 1 << 25  # 32 Mi float64 per array: 256 MiB each, 768 MiB for the three
TRIAD_BLOCK = 1 << 15  # 256 KiB per array block: three blocks fit in L2
GEMM_N = 2048
RUNS = 5
# bytes a weight occupies in memory, by executed precision (4-bit formats carry block scales)
BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "q8_0": 34 / 32, "q4_1": 20 / 32,
                   "q4_0": 18 / 32, "q4_k_m": 4.85 / 8, "q5_k_m": 5.7 / 8, "q6_k": 6.56 / 8}


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _triad_slice(a, b, c, scalar, lo, hi, block):
    for start in range(lo, hi, block):
        end = min(start + block, hi)
        out = a[start:end]
        np.multiply(c[start:end], scalar, out=out)
        np.add(out, b[start:end], out=out)


def memory_bandwidth(elements: int = TRIAD_ELEMENTS, runs: int = RUNS, threads: int | None = None,
                     block: int = TRIAD_BLOCK) -> dict:
    """Triad bandwidth in GB/s (1e9 bytes/s), best of `runs`, one thread per usable CPU."""
    threads = threads or usable_cpus()
    a = np.zeros(elements)
    b = np.full(elements, 1.0)
    c = np.full(elements, 2.0)
    bounds = np.linspace(0, elements, threads + 1).astype(int)
    seconds = []
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(runs + 1):  # the first run faults the pages in and is discarded
            t0 = time.perf_counter()
            list(pool.map(lambda i: _triad_slice(a, b, c, 3.0, bounds[i], bounds[i + 1], block), range(threads)))
            seconds.append(time.perf_counter() - t0)
    if not np.allclose(a[:: max(1, elements // 1000)], 7.0):
        raise RuntimeError("triad computed wrong values")
    best = min(seconds[1:])
    moved = 3 * 8 * elements
    return {"bandwidth_gbs": moved / best / 1e9, "bytes_per_run": moved, "threads": threads, "elements": elements,
            "runs_s": [round(s, 5) for s in seconds[1:]]}


def gemm_flops(n: int = GEMM_N, runs: int = RUNS) -> dict:
    """float32 matmul GFLOP/s, best of `runs` (after one warm-up)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, n), dtype=np.float32)
    y = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    seconds = []
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        np.matmul(x, y, out=out)
        seconds.append(time.perf_counter() - t0)
    best = min(seconds[1:])
    return {"gemm_gflops": 2 * n ** 3 / best / 1e9, "n": n, "runs_s": [round(s, 5) for s in seconds[1:]]}


def _best_seconds(call, runs: int) -> tuple[float, list[float]]:
    seconds = []
    for _ in range(runs + 1):  # the first call warms up
        t0 = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - t0)
    return min(seconds[1:]), [round(x, 5) for x in seconds[1:]]


class GemmUnavailable(Exception):
    """This precision's GEMM cannot be measured here (the message says why)."""


def torch_bf16_gemm(n: int, runs: int, flags: set) -> dict:
    try:
        import torch
    except ImportError:
        raise GemmUnavailable("torch is not installed (pip install 'enginebench[torch]')") from None
    rng = np.random.default_rng(0)
    x32, y32 = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    x, y = (torch.from_numpy(a).to(torch.bfloat16) for a in (x32, y32))
    out = torch.matmul(x, y).float().numpy()
    ref = x.float().numpy().astype(np.float64) @ y.float().numpy().astype(np.float64)
    if np.abs(out - ref).max() > 2e-2 * np.abs(ref).max():
        raise GemmUnavailable("torch's bfloat16 matmul gave wrong values")
    best, runs_s = _best_seconds(lambda: torch.matmul(x, y), runs)
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    return {"gflops": 2 * n ** 3 / best / 1e9, "n": n, "runs_s": runs_s, "library": f"torch {torch.__version__} "
            "matmul", "threads": torch.get_num_threads(), "native": native,
            "note": "" if native else "emulated: the CPU has neither AVX512_BF16 nor AMX-BF16"}


def _int8_operands(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 128, (n, n), dtype=np.int64)  # fits uint8 and int8 alike
    b = rng.integers(-127, 128, (n, n), dtype=np.int64)
    return a, b, a @ b


def _torch_int8(n: int, runs: int) -> dict:
    import torch

    a, b, ref = _int8_operands(n)
    x, y = torch.from_numpy(a.astype(np.int8)), torch.from_numpy(b.astype(np.int8))
    if not np.array_equal(torch._int_mm(x, y).numpy(), ref):
        raise GemmUnavailable("torch._int_mm gave wrong values")
    best, runs_s = _best_seconds(lambda: torch._int_mm(x, y), runs)
    return {"gflops": 2 * n ** 3 / best / 1e9, "runs_s": runs_s, "library": f"torch {torch.__version__} _int_mm",
            "threads": torch.get_num_threads()}


def _onnxruntime_int8(n: int, runs: int) -> dict:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "gemm_u8s8",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a, b, ref = _int8_operands(n)
    feeds = {"a": a.astype(np.uint8), "b": b.astype(np.int8)}
    if not np.array_equal(session.run(None, feeds)[0], ref):
        raise GemmUnavailable("onnxruntime's MatMulInteger gave wrong values")
    best, runs_s = _best_seconds(lambda: session.run(None, feeds), runs)
    return {"gflops": 2 * n ** 3 / best / 1e9, "runs_s": runs_s,
            "library": f"onnxruntime {ort.__version__} MatMulInteger (uint8 × int8)",
            "threads": session.get_session_options().intra_op_num_threads or usable_cpus()}


def int8_gemm(n: int, runs: int, flags: set) -> dict:
    """The faster of the int8 GEMMs installed; every one tried is kept under `tried`."""
    import importlib.util

    tried, why = [], []
    for module, measure in (("torch", _torch_int8), ("onnxruntime", _onnxruntime_int8)):
        if importlib.util.find_spec(module) is None:
            why.append(f"{module} is not installed")
            continue
        try:
            tried.append(measure(n, runs))
        except (GemmUnavailable, RuntimeError) as e:  # torch._int_mm is missing on some CPU builds
            why.append(f"{module}: {str(e).splitlines()[0]}")
    if not tried:
        raise GemmUnavailable("; ".join(why) or "no int8 GEMM")
    best = max(tried, key=lambda t: t["gflops"])
    native = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    return {**best, "n": n, "native": native, "tried": tried,
            "note": "" if native else "emulated: the CPU has no AVX-VNNI, AVX512_VNNI or AMX-INT8"}


def gemm_by_precision(n: int = GEMM_N, runs: int = RUNS, flags: set | None = None) -> dict[str, dict]:
    """{precision: figure dict or {"skipped": why}} for bf16 and int8."""
    flags = cpu_flags() if flags is None else flags
    out = {}
    for precision, measure in (("bf16", torch_bf16_gemm), ("int8", int8_gemm)):
        try:
            out[precision] = measure(n, runs, flags)
        except GemmUnavailable as e:
            out[precision] = {"skipped": str(e)}
    return out


def measure_machine(triad_elements: int = TRIAD_ELEMENTS, gemm_n: int = GEMM_N, runs: int = RUNS) -> dict:
    bw = memory_bandwidth(triad_elements, runs)
    mm = gemm_flops(gemm_n, runs)
    reduced = gemm_by_precision(gemm_n, runs)
    return {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "bandwidth_gbs": bw["bandwidth_gbs"],
        "gemm_gflops": mm["gemm_gflops"],
        "details": {"triad": {k: v for k, v in bw.items() if k != "bandwidth_gbs"},
                    "gemm": {k: v for k, v in mm.items() if k != "gemm_gflops"},
                    # what ops' % of measured peak divides by, per precision (fp32 is gemm_gflops)
                    "gemm_gflops_by_precision": {p: r["gflops"] for p, r in reduced.items() if "gflops" in r},
                    "gemm_by_precision": reduced,
                    "method": "triad a=b+s*c float64, one thread per usable CPU, 24 bytes/element; "
                              "numpy float32 matmul 2n^3 FLOPs; best of runs",
                    "numpy_threads_env": {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                                     "MKL_NUM_THREADS") if k in os.environ}},
    }


def weight_bytes(params: int, precision: str, details: dict) -> tuple[float | None, str]:
    """Bytes of weights one decode step reads: an engine's own figure if it gave one, else params x bytes/param."""
    if details.get("weight_bytes"):
        return float(details["weight_bytes"]), "engine"
    per = BYTES_PER_PARAM.get(precision)
    return (params * per, f"params x {per:g} bytes") if per else (None, "unknown bytes per parameter")


def decode_roofline(tokens_per_s: float, batch: int, params: int, precision: str, details: dict,
                    bandwidth_gbs: float | None) -> dict | None:
    """The bandwidth bound on decode tokens/s (each step reads the weights once for the whole batch)."""
    if not bandwidth_gbs:
        return None
    nbytes, source = weight_bytes(params, precision, details)
    if not nbytes:
        return None
    bound = batch * bandwidth_gbs * 1e9 / nbytes
    return {"bandwidth_gbs": bandwidth_gbs, "weight_bytes": nbytes, "weight_bytes_from": source,
            "bound_tokens_per_s": bound, "pct_of_bound": 100.0 * tokens_per_s / bound}


__all__ = ["measure_machine", "memory_bandwidth", "gemm_flops", "gemm_by_precision", "torch_bf16_gemm", "int8_gemm",
           "GemmUnavailable", "decode_roofline", "weight_bytes", "BYTES_PER_PARAM"]
