"""Results and runs with known figures for compare and its outputs: cells sampled around a known median
(`cell_samples`, `make_result`), a machine and a config as a run stores them, and a pair of runs where the new
one lost, crashed, skipped and failed cells (`broken_runs`)."""

from __future__ import annotations

import numpy as np

from enginebench.plan import Cell
from enginebench.store.derive import build_result
from enginebench.store.model import Result, Run
from helpers.measurements import measurement


def cell_samples(rng, processes: int, calls: int, scale: float = 1.0, between: float = 0.01,
                 noise: float = 0.03, median_ns: float = 20e6) -> list[np.ndarray]:
    """One side of a comparison as the default stopping rule leaves it: `processes` independent processes, each
    offset from the others by a lognormal `between`, its calls with lognormal `noise` around that."""
    return [median_ns * scale * np.exp(between * rng.standard_normal()) * np.exp(noise * rng.standard_normal(calls))
            for _ in range(processes)]


def make_result(engine="onnxruntime", scenario="latency", batch=1, workers=1, threads=2, scale=1.0, seed=0,
                processes=3, calls=60, version="1.0") -> Result:
    rng = np.random.default_rng(seed)
    cell = Cell(engine, "fp32", scenario, "titles", batch, workers, threads)
    measured = [(r, measurement(s, workers, batch)) for r, s in
                enumerate(cell_samples(rng, processes, calls, scale=scale, noise=0.02))]
    return build_result(cell, measured, model="minilm", seq_len=16, engine_version=version, engine_options={},
                        details={})


MACHINE = {"cpu": "Intel Xeon 8480", "cpu_flags": ["avx2", "avx512f", "avx512_vnni"], "logical_cores": 16,
           "physical_cores": 8, "affinity": list(range(16)), "python": "3.11.7", "env": {},
           "libraries": {"onnxruntime": "1.0", "numpy": "2.0"}}


CONFIG = {"stopping_rule": {"duration_s": 10.0, "min_samples": 10, "warmup_s": 1.0, "min_warmup": 2}, "repeat": 3}


FIDELITY_OK = {"metric": "min_cosine", "value": 0.9999, "ok": True, "threshold": 0.999}


def with_probes(r: Result, gflops: list[float]) -> Result:
    """`r` as if its processes had timed numpy's GEMM before and after the cell at `gflops`, two a process."""
    for rep, before, after in zip(r.repetitions, gflops[::2], gflops[1::2]):
        details = rep.setdefault("measurement", {}).setdefault("details", {})
        details["gemm_probe"] = {"before": before, "after": after, "n": 1024, "threads": 2}
    return r


def not_ok_result(status: str, engine: str, error: str) -> Result:
    return Result(engine=engine, model="minilm", precision="fp32", scenario="latency", workload="titles",
                  batch_size=1, seq_len=16, workers=1, threads=2, status=status, error=error)


def with_fidelity(r: Result, fidelity: dict | None) -> Result:
    r.fidelity = fidelity
    return r


def broken_runs() -> tuple[Run, Run]:
    """`base` measured six cells well; `new` lost one, crashed one, skipped one, lost fidelity on one and has a
    single call in another; its batch-8 cell is measured again with the same code. Base also had a cell that
    failed there, which new measures fine, and one that failed in both."""
    base = Run("a", "t", MACHINE, CONFIG, [
        make_result(seed=1), make_result(engine="torch", seed=2), make_result(engine="openvino", seed=3),
        make_result(engine="tinygrad", seed=4), with_fidelity(make_result(engine="ctranslate2", seed=5), FIDELITY_OK),
        make_result(engine="jax", seed=6), make_result(batch=8, seed=7), not_ok_result("failed", "tvm", "boom"),
        not_ok_result("failed", "mlx", "no device")])
    new = Run("b", "t", MACHINE, CONFIG, [
        make_result(seed=11), not_ok_result("failed", "torch", "child exited with signal 11"),
        not_ok_result("skipped", "openvino", "fp32 unsupported here"),
        with_fidelity(make_result(engine="ctranslate2", seed=15),
                       {**FIDELITY_OK, "value": 0.93, "ok": False}),
        make_result(engine="jax", seed=16, processes=1, calls=1), make_result(batch=8, seed=17),
        make_result(engine="tvm", seed=18), not_ok_result("failed", "mlx", "no device")])
    return base, new
