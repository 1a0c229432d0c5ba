"""One run holding a bit of everything (encoders, an int8 cell with its quantization, a failed and a skipped
cell, a decoder's pp and tg), for the exports and the commands that read a stored run."""

from __future__ import annotations

import numpy as np

from enginebench.plan import Cell
from enginebench.scenarios.base import Measurement
from enginebench.store.database import ResultStore
from enginebench.store.derive import build_result
from enginebench.store.model import Result, Run

SAMPLE_MACHINE = {"hostname": "bench-1", "cpu": "Intel(R) Xeon(R) Platinum 8480C", "logical_cores": 16, "affinity": list(range(8)),
           "memory_gb": 62.8, "python": "3.12.3", "cpu_flags": ["sse4_2", "avx2", "fma", "avx512f", "amx_int8"],
           "governor": "performance", "env": {"OMP_NUM_THREADS": "4"}, "libraries": {"torch": "2.5.1"}}


SAMPLE_CONFIG = {"argv": ["--engine", "torch"], "stopping_rule": {"duration_s": 1.0, "min_samples": 10, "warmup_s": 0.2},
          "repeat": 2, "quick": False, "model": {"params": 50_000_000, "size_bytes": 200 << 20}}


QUANTIZATION = {"scheme": "dynamic w8a8", "weights": "int8", "activations": "uint8",
                "share_of_matmul_flops": 0.667, "matmuls": {"quantized": 30, "total": 36}}


def sample_measurement(rng, median_ns, n, batch=1, details=None, executed="fp32"):
    return Measurement([rng.normal(median_ns, median_ns / 50, n).astype(np.int64)], batch, 12.0, 0.5, 300.0,
                       executed, n * median_ns / 1e9, details=details or {},
                       fidelity={"metric": "min_cosine", "value": 0.999, "ok": True, "threshold": 0.99})


def sample_encoder(rng, engine, precision, batch, median_ns, details=None):
    cell = Cell(engine, precision, "latency", "titles", batch, 1, 2)
    processes = [(i, sample_measurement(rng, median_ns, 30, batch, executed=precision)) for i in (0, 1)]
    return build_result(cell, processes,
                        model="minilm", seq_len=16, engine_version="1.2.3", engine_options={}, details=details or {})


def sample_run(run_id: str = "20261125-101500-ab12cd", created_at: str = "2026-11-25T10:15:00+00:00") -> Run:
    """Encoders (one int8 with an engine note), a failed and a skipped cell, and a decoder's pp and tg."""
    rng = np.random.default_rng(0)
    results = [
        sample_encoder(rng, "torch", "fp32", 1, 5e6),
        sample_encoder(rng, "onnxruntime", "int8", 8, 2e7, {"quantization": QUANTIZATION,
                                                      "notes": ["VPDPBUSD saturates: [see docs]"]}),
        Result("openvino", "minilm", "fp32", "latency", "titles", 1, 16, 1, 2, status="failed",
               error="engine exploded | badly"),
        Result("tinygrad", "minilm", "bf16", "latency", "titles", 1, 16, 1, 2, status="skipped",
               error="no bf16 kernels on this CPU"),
    ]
    context = dict(model="tiny", seq_len=128, engine_version="0.3", engine_options={},
                   details={"model_params": 50_000_000, "machine_speed": {"bandwidth_gbs": 10.0}})
    pp = Measurement([rng.normal(100e6, 1e6, 20).astype(np.int64)], 1, 128.0, 2.0, 500.0, "bf16", 2.0,
                     details={"test": "pp128"})
    tg = Measurement([rng.normal(10e6, 1e5, 200).astype(np.int64)], 1, 1.0, 2.0, 500.0, "bf16", 2.0,
                     details={"test": "tg16", "ttft_ns": [50_000_000, 52_000_000]})
    results += [build_result(Cell("llamacpp", "bf16", "generate", name, 1, 1, 2), [(0, m)], **context)
                for name, m in (("pp128", pp), ("tg16", tg))]
    return Run(run_id, created_at, SAMPLE_MACHINE, SAMPLE_CONFIG, results)


def stored_sample_run(tmp_path) -> str:
    db = tmp_path / "e.db"
    run = sample_run()
    with ResultStore(db) as store:
        store.add_run(run)
        for i, r in enumerate(run.results):
            store.add_result(run.run_id, r, cell=i)
    return str(db)
