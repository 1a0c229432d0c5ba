"""Exports keep every figure, the notes and the machine: json, csv and parquet read back to the same numbers,
the Markdown has the footnotes and the machine line; `show --format parquet` needs --output."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from enginebench.cli import main
from enginebench.plan import Cell
from enginebench.results.build import build_result
from enginebench.formats.csv import to_csv
from enginebench.formats.json import from_json, run_notes, to_json
from enginebench.formats.md import to_markdown
from enginebench.formats.parquet import read_parquet_metadata, to_parquet
from enginebench.results.frame import to_frame
from enginebench.results.model import Run
from enginebench.results.store import ResultStore
from enginebench.scenarios.base import Measurement

MACHINE = {"hostname": "bench-1", "cpu": "Intel(R) Xeon(R) Platinum 8480C", "logical_cores": 16, "affinity": list(range(8)),
           "memory_gb": 62.8, "python": "3.12.3", "cpu_flags": ["sse4_2", "avx2", "fma", "avx512f", "amx_int8"],
           "governor": "performance", "env": {"OMP_NUM_THREADS": "4"}, "libraries": {"torch": "2.5.1"}}
CONFIG = {"argv": ["--engine", "torch"], "stopping_rule": {"duration_s": 1.0, "min_samples": 10, "warmup_s": 0.2},
          "repeat": 2, "quick": False, "model": {"params": 50_000_000, "size_bytes": 200 << 20}}
QUANTIZATION = {"scheme": "dynamic w8a8", "weights": "int8", "activations": "uint8",
                "share_of_matmul_flops": 0.667, "matmuls": {"quantized": 30, "total": 36}}


def _measurement(rng, median_ns, n, batch=1, details=None, executed="fp32"):
    return Measurement([rng.normal(median_ns, median_ns / 50, n).astype(np.int64)], batch, 12.0, 0.5, 300.0,
                       executed, n * median_ns / 1e9, details=details or {},
                       fidelity={"metric": "min_cosine", "value": 0.999, "ok": True, "threshold": 0.99})


def _encoder(rng, engine, precision, batch, median_ns, details=None):
    cell = Cell(engine, precision, "latency", "titles", batch, 1, 2)
    processes = [(i, _measurement(rng, median_ns, 30, batch, executed=precision)) for i in (0, 1)]
    return build_result(cell, processes,
                        model="minilm", seq_len=16, engine_version="1.2.3", engine_options={}, details=details or {})


def sample_run(run_id: str = "20261125-101500-ab12cd", created_at: str = "2026-11-25T10:15:00+00:00") -> Run:
    """Encoders (one int8 with an engine note), a failed and a skipped cell, and a decoder's pp and tg."""
    from enginebench.results.model import Result

    rng = np.random.default_rng(0)
    results = [
        _encoder(rng, "torch", "fp32", 1, 5e6),
        _encoder(rng, "onnxruntime", "int8", 8, 2e7, {"quantization": QUANTIZATION,
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
    return Run(run_id, created_at, MACHINE, CONFIG, results)


FIGURES = ["median_ms", "median_ms_ci95_lo", "median_ms_ci95_hi", "items_per_s", "items_per_s_ci95_lo",
           "items_per_s_ci95_hi", "prefill_tokens_per_s", "decode_tokens_per_s", "decode_tokens_per_s_ci95_lo"]


def test_json_round_trips_to_the_same_figures_and_carries_notes_and_machine():
    run = sample_run()
    text = to_json(run)
    d = json.loads(text)
    assert d["machine"]["cpu"] == MACHINE["cpu"]
    assert d["notes"] == run_notes(run) and any("VPDPBUSD" in n for n in d["notes"])
    assert any("engine exploded" in n for n in d["notes"]) and any("skipped" in n for n in d["notes"])
    back = from_json(text)
    assert back.results == run.results and back.machine == run.machine and back.config == run.config
    pd.testing.assert_frame_equal(to_frame(back), to_frame(run))


def test_csv_reads_back_with_plain_read_csv_to_the_frames_figures():
    run = sample_run()
    frame = to_frame(run)
    back = pd.read_csv(io.StringIO(to_csv(run)))
    assert list(back.columns) == list(frame.columns) and len(back) == len(run.results)
    for column in FIGURES:
        np.testing.assert_allclose(back[column].to_numpy(float), frame[column].to_numpy(float), rtol=1e-12)
    # the machine on every row, the notes on their rows
    assert set(back["cpu"]) == {MACHINE["cpu"]} and set(back["affinity"]) == {"0-7"} and set(back["cores"]) == {16}
    assert back.loc[1, "notes"] == "VPDPBUSD saturates: [see docs]"
    assert back.loc[2, "error"] == "engine exploded | badly" and back.loc[2, "status"] == "failed"


def test_parquet_keeps_types_figures_and_the_run_in_its_metadata(tmp_path):
    run = sample_run()
    path = tmp_path / "run.parquet"
    to_parquet(run, path)
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, to_frame(run), check_dtype=False)
    assert str(back["created_at"].dtype).startswith("datetime64") and back["fidelity_ok"].dtype == "boolean"
    meta = read_parquet_metadata(path)
    assert meta["run_id"] == run.run_id and meta["machine"] == MACHINE and meta["config"] == CONFIG
    assert meta["notes"] == run_notes(run)


def test_markdown_has_every_table_its_notes_and_the_machine_line():
    md = to_markdown(sample_run())
    assert "**run 20261125-101500-ab12cd** · model minilm" in md
    assert "| torch |" in md and "| onnxruntime |" in md and "| tg16 |" in md and "| pp128 |" in md
    assert "int8 (w8a8, 67% of MatMul FLOPs)" in md
    assert "- [2] onnxruntime int8 latency titles b8: VPDPBUSD saturates: [see docs]" in md
    assert "- [3] openvino fp32 latency titles b1: failed: engine exploded | badly" in md
    assert "- tinygrad bf16: skipped (1 cells): no bf16 kernels on this CPU" in md
    assert "- % BW bound: decode t/s" in md  # the decoder table's note
    machine = md.strip().splitlines()[-1]
    assert machine.startswith("machine: Intel(R) Xeon(R) Platinum 8480C · 16 cores (affinity 0-7) · 62.8 GB")
    assert "avx2 fma avx512f amx_int8" in machine and "OMP_NUM_THREADS=4" in machine
    assert "engines torch 1.2.3, onnxruntime 1.2.3" in machine and "llamacpp 0.3" in machine


def _stored(tmp_path) -> str:
    db = tmp_path / "e.db"
    run = sample_run()
    with ResultStore(db) as store:
        store.add_run(run)
        for i, r in enumerate(run.results):
            store.add_result(run.run_id, r, cell=i)
    return str(db)


def test_show_parquet_needs_output_and_writes_it(tmp_path, capsys):
    db = _stored(tmp_path)
    assert main(["show", "--db", db, "--format", "parquet"]) == 2
    assert "--output FILE.parquet" in capsys.readouterr().err
    out = tmp_path / "r.parquet"
    assert main(["show", "--db", db, "--format", "parquet", "--output", str(out)]) == 0
    assert pd.read_parquet(out)["median_ms"].notna().sum() == 4  # not the failed and the skipped cell
    assert main(["show", "--db", db, "--format", "parquet", "--output", str(tmp_path / "no" / "r.parquet")]) == 2
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["json", "csv", "md"])
def test_show_text_formats_go_to_stdout_or_a_file(tmp_path, capsys, fmt):
    db = _stored(tmp_path)
    assert main(["show", "--db", db, "--format", fmt]) == 0
    printed = capsys.readouterr().out
    assert main(["show", "--db", db, "--format", fmt, "--output", str(tmp_path / f"r.{fmt}")]) == 0
    assert (tmp_path / f"r.{fmt}").read_text() == printed and "VPDPBUSD" in printed
