"""The machine's two ceilings (`enginebench machine`) and where a decode result sits under them.

Memory bandwidth: a STREAM-like triad a[i] = b[i] + s*c[i] on float64 arrays far larger than the caches.
numpy runs one ufunc on one core, so the arrays are split into one contiguous slice per usable CPU
(sched_getaffinity) and each slice is driven by its own thread (numpy releases the GIL inside ufuncs). Inside
a slice the triad runs block by block (blocks small enough to stay in L2), so the temporary s*c never leaves
the cache: DRAM sees b and c read and a written once. Bytes counted as STREAM counts them: 3 x 8 bytes per
element (the write-allocate read of `a` is not counted, so the figure is conservative). Best of several runs.

GEMM, per precision: the fastest of the libraries installed, each timed alike (a warm-up call, then the best
of several) on the same n x n matrices at n/2 and n (gemm_sizes), 2 n^3 operations, checked first against
numpy in float64 or int64 (exact for int8); the library that won is recorded as the ceiling's source, with
every library tried. fp32 — numpy's matmul (its BLAS), torch.matmul, onnxruntime's MatMul (MLAS): MLAS was
seen well above numpy's BLAS, and a ceiling from numpy alone put engines at 141% of it. bf16 — torch.matmul on
bfloat16 tensors (oneDNN), marked emulated when the CPU lacks AVX512_BF16 and AMX-BF16 (the figure is then a
conversion to fp32, not a bf16 peak). int8 — torch._int_mm (int8 x int8 -> int32, oneDNN) and onnxruntime's
MatMulInteger (uint8 x int8 -> int32, the VNNI layout), integer operations counted like FLOPs (GOP/s); noted
"no VNNI" on AVX2 and AVX-512 CPUs without dot products (byte-pair products), emulated only without those.
OpenVINO in all three: a product with constant weights as its engines run a Linear (oneDNN's brgemm, AMX tiles
where the CPU has them), checked to run in the precision. Each library uses the threads it takes by default
(recorded); numpy's BLAS all it is allowed (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS limit it).

A decode step must read every weight once, so tokens/s per sequence cannot exceed bandwidth / weight bytes:
`decode_roofline` reports that bound and the share of it a result reached.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import lru_cache

import numpy as np

from enginebench.measure import cpu_features, openvino_runtime
from enginebench.measure.cpu_features import cpu_flags, usable_cpus
from enginebench.measure.host_load import OthersLoad
from enginebench.measure.machine import machine_info
from enginebench.measure.peak import Ceilings, gemm_native, gemm_source, measured_here
from enginebench.models.artifacts import artifact_key, cached_artifact, finished_artifact

TRIAD_ELEMENTS = 1 << 25  # 32 Mi float64 per array: 256 MiB each, 768 MiB for the three
TRIAD_BLOCK = 1 << 15  # 256 KiB per array block: three blocks fit in L2
GEMM_N = 2048
RUNS = 5
# bytes a weight occupies in memory, by executed precision (4-bit formats carry block scales)
BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "q8_0": 34 / 32, "q4_1": 20 / 32,
                   "q4_0": 18 / 32, "q4_k_m": 4.85 / 8, "q5_k_m": 5.7 / 8, "q6_k": 6.56 / 8}


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


class GemmUnavailable(Exception):
    """This precision's GEMM cannot be measured here (the message says why)."""


GEMM_BUDGET_S = 0.3  # a library's timed calls at a size stop here (after one): a slow one is not the ceiling
GEMM_RUNS = 10  # timed calls a library gets at most within the budget: on a busy machine the best needs several
CHECKED_ROWS = 16  # rows of each product checked against numpy in float64 / int64 (the whole would take seconds)


def _best_seconds(call, runs: int, budget_s: float = GEMM_BUDGET_S) -> tuple[float, list[float]]:
    """The fastest of up to `runs` timed calls after a warm-up one, stopping early once `budget_s` is spent."""
    call()
    seconds: list[float] = []
    started = time.perf_counter()
    while len(seconds) < runs and (not seconds or time.perf_counter() - started < budget_s):
        t0 = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - t0)
    return min(seconds), [round(x, 5) for x in seconds]


def _figure(n: int, call, runs: int, library: str, threads: int | None) -> dict:
    best, runs_s = _best_seconds(call, runs)
    return {"gflops": 2 * n ** 3 / best / 1e9, "n": n, "runs_s": runs_s, "library": library, "threads": threads}


def _check(out, x: np.ndarray, y: np.ndarray, tolerance: float, what: str) -> None:
    """The first rows of `out` against numpy in float64 (integers: int64, exact when tolerance is 0)."""
    wide = np.int64 if np.issubdtype(x.dtype, np.integer) else np.float64
    ref = x[:CHECKED_ROWS].astype(wide) @ y.astype(wide)
    got = np.asarray(out)[:CHECKED_ROWS].astype(wide)
    if np.abs(got - ref).max() > tolerance * np.abs(ref).max():
        raise GemmUnavailable(f"{what} gave wrong values")


def _float_operands(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)


def _int8_operands(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Activations 0..127 (uint8 and int8 alike), weights -64..63: without VNNI, oneDNN and MLAS add pairs of
    uint8 × int8 products in a saturating int16 (vpmaddubsw), with int8 activations shifted to 0..255 first;
    2·255·64 fits, full-range weights do not (seen with ONEDNN_MAX_CPU_ISA=AVX2)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 127, (n, n), dtype=np.int8, endpoint=True), rng.integers(-64, 63, (n, n), dtype=np.int8,
                                                                                      endpoint=True)


def _blas_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return next((pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"), None)


def _numpy_fp32(n: int, runs: int) -> dict:
    x, y = _float_operands(n)
    out = np.empty((n, n), dtype=np.float32)
    figure = _figure(n, lambda: np.matmul(x, y, out=out), runs, f"numpy {np.__version__} matmul", _blas_threads())
    _check(out, x, y, 1e-4, "numpy's float32 matmul")
    return figure


def _torch_fp32(n: int, runs: int) -> dict:
    import torch

    x, y = _float_operands(n)
    tx, ty, out = torch.from_numpy(x), torch.from_numpy(y), torch.empty((n, n))
    figure = _figure(n, lambda: torch.matmul(tx, ty, out=out), runs, f"torch {torch.__version__} matmul",
                     torch.get_num_threads())
    _check(out.numpy(), x, y, 1e-4, "torch's float32 matmul")
    return figure


def _onnxruntime_session(node: str, a_type: int, b_type: int, out_type: int, n: int):
    import onnxruntime as ort
    from onnx import helper

    graph = helper.make_graph([helper.make_node(node, ["a", "b"], ["c"])], f"gemm_{node}",
                              [helper.make_tensor_value_info("a", a_type, [n, n]),
                               helper.make_tensor_value_info("b", b_type, [n, n])],
                              [helper.make_tensor_value_info("c", out_type, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 10
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _onnxruntime_threads(session) -> int:
    return session.get_session_options().intra_op_num_threads or usable_cpus()


def _onnxruntime_fp32(n: int, runs: int) -> dict:
    import onnxruntime as ort
    from onnx import TensorProto

    session = _onnxruntime_session("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT, n)
    x, y = _float_operands(n)
    feeds = {"a": x, "b": y}
    _check(session.run(None, feeds)[0], x, y, 1e-4, "onnxruntime's float32 MatMul")
    return _figure(n, lambda: session.run(None, feeds), runs, f"onnxruntime {ort.__version__} MatMul (MLAS)",
                   _onnxruntime_threads(session))


def _torch_bf16(n: int, runs: int) -> dict:
    import torch

    x, y = (torch.from_numpy(a).to(torch.bfloat16) for a in _float_operands(n))
    _check(torch.matmul(x, y).float().numpy(), x.float().numpy(), y.float().numpy(), 2e-2, "torch's bfloat16 matmul")
    return _figure(n, lambda: torch.matmul(x, y), runs, f"torch {torch.__version__} matmul", torch.get_num_threads())


def _torch_int8(n: int, runs: int) -> dict:
    import torch

    a, b = _int8_operands(n)
    x, y = torch.from_numpy(a), torch.from_numpy(b)
    _check(torch._int_mm(x, y).numpy(), a, b, 0, "torch._int_mm")
    return _figure(n, lambda: torch._int_mm(x, y), runs, f"torch {torch.__version__} _int_mm (int8 × int8)",
                   torch.get_num_threads())


def _onnxruntime_int8(n: int, runs: int) -> dict:
    import onnxruntime as ort
    from onnx import TensorProto

    session = _onnxruntime_session("MatMulInteger", TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, n)
    a, b = _int8_operands(n)
    feeds = {"a": a.view(np.uint8), "b": b}  # 0..127: the same bits in uint8
    _check(session.run(None, feeds)[0], a, b, 0, "onnxruntime's MatMulInteger")
    return _figure(n, lambda: session.run(None, feeds), runs,
                   f"onnxruntime {ort.__version__} MatMulInteger (uint8 × int8)", _onnxruntime_threads(session))


_OPENVINO_RAN = {"fp32": ("f32",), "bf16": ("bf16",), "int8": openvino_runtime.INTEGER}  # what each must run in


def _openvino_product(precision: str, n: int):
    """(model, a, b, hint): a @ b with b a constant, as OpenVINO's engines run a Linear (a FullyConnected node
    with prepacked weights); int8 on FakeQuantize'd operands (256 levels over -128..127, the identity on these
    integers), which its low-precision transformations fold into an int8 product with f32 sums at scale 1."""
    import openvino as ov
    from openvino import opset13 as ops

    if precision == "int8":
        a, b = _int8_operands(n)
        x = ops.parameter([n, n], ov.Type.i8, name="a")
        quantized = [openvino_runtime.int8_operand(v) for v in (x, ops.constant(b))]
        return ov.Model([ops.matmul(*quantized, False, False)], [x], "gemm_int8"), a, b, "f32"
    a, b = _float_operands(n)
    x = ops.parameter([n, n], ov.Type.f32, name="a")
    return ov.Model([ops.matmul(x, ops.constant(b), False, False)], [x], "gemm"), a, b, _OPENVINO_RAN[precision][0]


def _openvino_gemm(precision: str, n: int, runs: int) -> dict:
    """OpenVINO's CPU plugin: oneDNN's brgemm kernels, which take AMX tiles for int8 and bf16 where the CPU has
    them (torch._int_mm and MLAS did not reach AMX speeds on an AMX Xeon: 856 and 860 GOP/s), so without it
    a share could be of a ceiling this machine's fastest engine passes."""
    import openvino as ov

    needs = openvino_runtime.CPU_NEEDS.get(precision)
    if needs and (reason := cpu_features.current().missing(needs, f"openvino {precision}")):
        raise GemmUnavailable(reason)
    model, a, b, hint = _openvino_product(precision, n)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "NUM_STREAMS": 1,
                                                      "PERFORMANCE_HINT": "LATENCY"})
    ran, kernel = openvino_runtime.product_runs(compiled) or ("unknown", "")
    if ran not in _OPENVINO_RAN[precision]:
        raise GemmUnavailable(f"openvino runs this {precision} product in {ran} here")
    request = compiled.create_infer_request()
    feeds = {"a": a}
    _check(np.array(request.infer(feeds)[0]), a, b, {"int8": 0, "fp32": 1e-4, "bf16": 2e-2}[precision],
           f"openvino's {precision} product")
    return _figure(n, lambda: request.infer(feeds, share_inputs=True), runs,
                   f"openvino {ov.__version__.split('-')[0]} FullyConnected, {ran} ({kernel})",
                   int(compiled.get_property("INFERENCE_NUM_THREADS")))


@lru_cache(maxsize=1)
def _probe_operands(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The probe's operands and output, made once per process (a cell's probes then time the GEMM alone)."""
    return *_float_operands(n), np.empty((n, n), dtype=np.float32)


def gemm_probe(n: int, threads: int | None) -> float:
    """numpy's float32 GEMM GFLOP/s now, timed as `enginebench machine` timed the reference (the best of up to
    GEMM_RUNS calls within GEMM_BUDGET_S, its BLAS threads as then): measured beside a cell, its ratio to the
    reference says how fast the machine was while the cell ran (a shared host's neighbours, throttling)."""
    from threadpoolctl import threadpool_limits

    x, y, out = _probe_operands(n)
    with threadpool_limits(limits=threads, user_api="blas"):
        best, _ = _best_seconds(lambda: np.matmul(x, y, out=out), GEMM_RUNS)
    return 2 * n ** 3 / best / 1e9


# each precision's GEMM in every library that has one, timed alike on the same n × n operands; numpy has no
# bfloat16 and no integer BLAS (its int8 matmul is a plain loop, never the ceiling)
GEMM_LIBRARIES = {
    "fp32": (("numpy", _numpy_fp32), ("torch", _torch_fp32), ("onnxruntime", _onnxruntime_fp32),
             ("openvino", functools.partial(_openvino_gemm, "fp32"))),
    "bf16": (("torch", _torch_bf16), ("openvino", functools.partial(_openvino_gemm, "bf16"))),
    "int8": (("torch", _torch_int8), ("onnxruntime", _onnxruntime_int8),
             ("openvino", functools.partial(_openvino_gemm, "int8"))),
}


def gemm_sizes(n: int) -> tuple[int, ...]:
    """The squares timed for a ceiling of size n: n/2 and n. The smaller one sits in cache as most operators'
    shapes do (on a 2-core Zen 5, 1024² ran up to 4× faster than 2048² in int8), and on a busy machine its
    shorter calls more often run undisturbed; the larger one keeps many cores busy."""
    return (n // 2, n) if n >= 64 else (n,)


CLEARLY_SLOWER = 4  # a library this many times below the best figure is not timed at the larger sizes
TIMED_ONCE = "clearly slower in the first pass: not timed again"


def time_gemms(precision: str, sizes: tuple[int, ...], runs: int, floor_gflops: float | None = None,
               timed_once: frozenset[str] = frozenset()) -> list[dict]:
    """Every installed library's GEMM of this precision at each size: one figure per library, its fastest size
    (the others' GFLOP/s under `by_n`), or {"library", "skipped": why}. Every library is timed at a size before
    any at the next; one that falls CLEARLY_SLOWER times below the best figure so far (or below `floor_gflops`,
    the fp32 ceiling for a reduced precision) is not timed at the larger sizes, where an emulated kernel spends
    seconds a call (torch._int_mm without VNNI: 2 GOP/s), and says so under `stopped`. Libraries in `timed_once`
    (stopped so in an earlier pass) are not timed at all: skipped, saying so."""
    import importlib.util

    skipped: dict[str, str] = {}
    figures: dict[str, list[dict]] = {}
    stopped: dict[str, str] = {}
    libraries = GEMM_LIBRARIES[precision]
    for module, _ in libraries:
        if importlib.util.find_spec(module) is None:
            skipped[module] = "not installed"
        elif module in timed_once:
            skipped[module] = TIMED_ONCE
    for k, n in enumerate(sizes):
        for module, measure in libraries:
            if module in skipped or module in stopped:
                continue
            try:
                figures.setdefault(module, []).append(measure(n, runs))
            except (GemmUnavailable, RuntimeError, AttributeError) as e:  # e.g. torch._int_mm missing on a build
                skipped[module] = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if k + 1 < len(sizes):
            stopped.update(_clearly_slower(figures, skipped, stopped, floor_gflops, sizes[k + 1:]))
    tried = []
    for module, _ in libraries:
        if module in skipped:
            tried.append({"library": module, "skipped": skipped[module]})
            continue
        best = max(figures[module], key=lambda f: f["gflops"])
        tried.append({**best, "by_n": {f["n"]: round(f["gflops"], 1) for f in figures[module]},
                      **({"stopped": stopped[module]} if module in stopped else {})})
    return tried


def _clearly_slower(figures: dict[str, list[dict]], skipped: dict, stopped: dict, floor_gflops: float | None,
                    larger: tuple[int, ...]) -> dict[str, str]:
    """{library: why it is not timed at the `larger` sizes} for those far below the best figure so far."""
    timed = {m: fs for m, fs in figures.items() if m not in skipped and m not in stopped}
    best = max([f["gflops"] for fs in timed.values() for f in fs] + [floor_gflops or 0.0])
    out = {}
    for module, fs in timed.items():
        got = max(f["gflops"] for f in fs)
        if got * CLEARLY_SLOWER < best:
            out[module] = (f"not timed at n={', '.join(map(str, larger))}: {got:.1f} GFLOP/s is under 1/"
                           f"{CLEARLY_SLOWER} of {best:.0f} (an emulated or unoptimized kernel)")
    return out


def best_gemm(precision: str, tried: list[dict], flags: set) -> dict:
    """The ceiling of a precision: the fastest library's figure (its `library` is the ceiling's source), with
    every library `tried` kept beside it, and whether the CPU computes the precision natively."""
    measured = [t for t in tried if "gflops" in t]
    if not measured:
        raise GemmUnavailable("; ".join(f"{t['library']}: {t['skipped']}" for t in tried) or "no library")
    best = max(measured, key=lambda t: t["gflops"])
    native, note = gemm_native(precision, flags)
    return {**best, "native": native, "note": note, "tried": tried}


def gemm_ceiling(precision: str, n: int = GEMM_N, runs: int = RUNS, flags: set | None = None,
                 floor_gflops: float | None = None, timed_once: frozenset[str] = frozenset()) -> dict:
    """This precision's ceiling: every library timed at the squares of gemm_sizes(n), the fastest kept."""
    return best_gemm(precision, time_gemms(precision, gemm_sizes(n), runs, floor_gflops, timed_once),
                     cpu_flags() if flags is None else flags)


def gemm_flops(n: int = GEMM_N, runs: int = RUNS) -> dict:
    """The fp32 ceiling: the fastest float32 GEMM among numpy, torch, onnxruntime and openvino, in GFLOP/s."""
    figure = gemm_ceiling("fp32", n, runs, set())
    return {"gemm_gflops": figure.pop("gflops"), **figure}


def torch_bf16_gemm(n: int, runs: int, flags: set) -> dict:
    return gemm_ceiling("bf16", n, runs, flags)


def int8_gemm(n: int, runs: int, flags: set) -> dict:
    """The faster of the int8 GEMMs installed; every one tried is kept under `tried`."""
    return gemm_ceiling("int8", n, runs, flags)


def gemm_by_precision(n: int = GEMM_N, runs: int = RUNS, flags: set | None = None,
                      precisions=("bf16", "int8"), fp32_gflops: float | None = None,
                      timed_once: dict[str, frozenset[str]] | None = None) -> dict[str, dict]:
    """{precision: ceiling figure or {"skipped": why}} for the reduced precisions; a library far below the fp32
    ceiling (`fp32_gflops`) is timed at the smaller size only, and one in `timed_once[precision]` not at all
    (time_gemms)."""
    flags = cpu_flags() if flags is None else flags
    out = {}
    for precision in precisions:
        try:
            out[precision] = gemm_ceiling(precision, n, runs, flags, fp32_gflops,
                                          (timed_once or {}).get(precision, frozenset()))
        except GemmUnavailable as e:
            out[precision] = {"skipped": str(e)}
    return out


GEMM_PASSES = 3  # every precision's GEMMs timed this many times, one pass after another, each figure its best


def _module(figure: dict) -> str:
    """The module a GEMM figure or skip is of: a figure names it first (`torch 2.13.0 matmul`), a skip alone."""
    return figure["library"].split()[0]


def merge_passes(passes: list[dict]) -> dict:
    """One precision's ceiling from several passes spread over time (best_gemm's records): each library's best
    figure at each size over the passes, then the fastest library. On a shared host a pass that ran in a slow
    moment (here bf16 at 358 GFLOP/s in one measurement, 637 in another the same day) cannot lower the ceiling;
    `passes_gflops` keeps what each pass gave."""
    measured = [p for p in passes if "gflops" in p]
    if not measured:
        return passes[0]
    entries: dict[str, list[dict]] = {}  # library's module -> what each pass recorded of it (timed or skipped)
    for figure in measured:
        for tried in figure["tried"]:
            entries.setdefault(_module(tried), []).append(tried)
    merged = {}
    for library, recorded in entries.items():
        timed = [t for t in recorded if "gflops" in t]
        if not timed:  # skipped in every pass
            merged[library] = recorded[0]
            continue
        sizes = dict.fromkeys(n for t in timed for n in t.get("by_n", {}))
        merged[library] = {**max(timed, key=lambda t: t["gflops"]), "timed_in_passes": len(timed),
                           "by_n": {n: max(t["by_n"][n] for t in timed if n in t.get("by_n", {})) for n in sizes}}
    best = max(measured, key=lambda p: p["gflops"])
    return {**best, **merged[_module(best)], "tried": list(merged.values()),
            "passes_gflops": [round(p["gflops"], 1) for p in measured], "passes": len(passes)}


def measure_machine(triad_elements: int = TRIAD_ELEMENTS, gemm_n: int = GEMM_N, runs: int = RUNS,
                    passes: int = GEMM_PASSES) -> dict:
    with OthersLoad() as others:  # what the rest of the machine did meanwhile: ceilings beside other work are low
        bw = memory_bandwidth(triad_elements, runs)
        runs = max(runs, GEMM_RUNS)
        fp32, reduced_passes = [], []
        emulated: dict[str, frozenset[str]] = {}
        for _ in range(passes):  # fp32 then the reduced precisions, again: a slow moment costs one pass, not a ceiling
            fp32.append(gemm_ceiling("fp32", gemm_n, runs, set()))
            reduced_passes.append(gemm_by_precision(gemm_n, runs, fp32_gflops=fp32[-1]["gflops"],
                                                    timed_once=emulated))
            # a kernel clearly slower than fp32 in the first pass (emulated: torch's bf16 at 1 GFLOP/s on AVX2,
            # seconds a call) is not timed again: a second pass could not lift it near the others, and it cost 2/3
            # of the time
            emulated = emulated or {p: frozenset(_module(t) for t in r.get("tried", ()) if t.get("stopped"))
                                    for p, r in reduced_passes[0].items()}
    figure = merge_passes(fp32)
    mm = {"gemm_gflops": figure.pop("gflops"), **figure}
    reduced = {p: merge_passes([r[p] for r in reduced_passes]) for p in reduced_passes[0]}
    return {
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "bandwidth_gbs": bw["bandwidth_gbs"],
        "gemm_gflops": mm["gemm_gflops"],
        "details": {"triad": {k: v for k, v in bw.items() if k != "bandwidth_gbs"},
                    "gemm": {k: v for k, v in mm.items() if k != "gemm_gflops"},
                    "gemm_source": mm["library"],  # which library's float32 GEMM gave gemm_gflops
                    # what ops' % of measured peak divides by, per precision (fp32 is gemm_gflops)
                    "gemm_gflops_by_precision": {p: r["gflops"] for p, r in reduced.items() if "gflops" in r},
                    "gemm_by_precision": reduced,
                    "method": "triad a=b+s*c float64, one thread per usable CPU, 24 bytes/element; GEMM 2n^3 "
                              "FLOPs at n/2 and n, per precision the fastest library (numpy, torch, onnxruntime, "
                              "openvino); "
                              f"best of runs, over {passes} passes of every precision one after another",
                    "cpu_features": cpu_features.current().record(),  # {}: the whole CPU
                    "numpy_threads_env": {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                                     "MKL_NUM_THREADS") if k in os.environ},
                    # cores other processes kept busy meanwhile, on average (measure/host_load.py; None: unknown)
                    "others_cores": None if others.cores is None else round(others.cores, 2)},
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


def measure_ceilings(triad_elements: int = 1 << 23, gemm_n: int = 1024, runs: int = 3,
                     precisions=()) -> Ceilings:
    """A short measurement: triad on 3 × 64 MiB, best of 3, and a 1024² GEMM, the fastest library's, in fp32 and
    in each of `precisions` (`enginebench machine` is longer)."""
    bw = memory_bandwidth(triad_elements, runs)
    mm = gemm_flops(gemm_n, max(runs, GEMM_RUNS))
    reduced = gemm_by_precision(gemm_n, max(runs, GEMM_RUNS), precisions=[p for p in precisions if p != "fp32"],
                                fp32_gflops=mm["gemm_gflops"])
    return Ceilings(mm["gemm_gflops"], bw["bandwidth_gbs"],
                    f"measured now (triad {triad_elements * 8 >> 20} MiB arrays, GEMM {gemm_n}²; "
                    "`enginebench machine` stores a longer measurement)", bw["threads"],
                    {p: r["gflops"] for p, r in reduced.items() if "gflops" in r},
                    {"fp32": gemm_source(mm), **{p: gemm_source(r) for p, r in reduced.items()}})


__all__ = ["gemm_probe", "merge_passes", "GEMM_PASSES", "measure_ceilings", "measure_machine", "memory_bandwidth", "gemm_flops", "gemm_by_precision", "gemm_ceiling", "best_gemm",
           "time_gemms", "GEMM_LIBRARIES", "torch_bf16_gemm", "int8_gemm", "GemmUnavailable", "decode_roofline",
           "weight_bytes", "BYTES_PER_PARAM"]


# -- measured once per machine ------------------------------------------------------------------------------------

SPEED_FILE = "speed.json"


def _speed_key() -> str:
    """This machine's ceilings are kept beside the artifact cache, so a run with any --db reuses them: keyed by
    host, CPU model, cores and the CPU features the process may use."""
    info = machine_info()
    return artifact_key(info["hostname"], info["cpu"], str(info["logical_cores"]),
                        cpu_features.current().narrowed_to or "native",
                        *(["cpuid-masked"] if cpu_features.current().masked_here else []))


def cached_machine_speed() -> dict | None:
    import json

    folder = finished_artifact("machine-speed", _speed_key())
    try:
        speed = json.loads((folder / SPEED_FILE).read_text()) if folder else None
    except (OSError, ValueError):
        return None
    return speed if measured_here(speed) else None


def keep_machine_speed(speed: dict) -> None:
    """`enginebench machine`'s new figures replace the ones kept for this machine, so that runs with any --db use
    them (a first measurement taken beside other work is not kept for good)."""
    import json

    text = json.dumps(speed)
    folder, cached = cached_artifact("machine-speed", _speed_key(), lambda f: (f / SPEED_FILE).write_text(text))
    if cached:  # the file is replaced whole: a run reading it meanwhile gets the old figures or the new
        tmp = folder / f".{SPEED_FILE}.{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, folder / SPEED_FILE)


def measure_and_cache_machine_speed() -> tuple[dict, bool]:
    """(ceilings, measured by this process): measure_machine(), kept for every later run on this machine. Runs
    started together on a fresh machine measure once: the others wait for that one's figures, since two
    measuring at once would each time the other's load and keep half the ceilings."""
    import json

    def measure(folder) -> None:
        (folder / SPEED_FILE).write_text(json.dumps(measure_machine()))

    folder, waited = cached_artifact("machine-speed", _speed_key(), measure)
    return json.loads((folder / SPEED_FILE).read_text()), not waited
