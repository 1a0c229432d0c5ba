"""Exports keep every figure, the notes and the machine: json, csv and parquet read back to the same numbers,
the Markdown has the footnotes and the machine line; `show --format parquet` needs --output."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from helpers.sample_run import (
    SAMPLE_CONFIG,
    SAMPLE_MACHINE,
    sample_run,
    stored_sample_run,
)

from enginebench.cli import main
from enginebench.formats.csv import to_csv
from enginebench.formats.json import from_json, run_notes, to_json
from enginebench.formats.md import to_markdown
from enginebench.formats.parquet import read_parquet_metadata, to_parquet
from enginebench.store.frame import to_frame

FIGURES = ["median_ms", "median_ms_ci95_lo", "median_ms_ci95_hi", "items_per_s", "items_per_s_ci95_lo",
           "items_per_s_ci95_hi", "prefill_tokens_per_s", "decode_tokens_per_s", "decode_tokens_per_s_ci95_lo"]


def test_json_round_trips_to_the_same_figures_and_carries_notes_and_machine():
    run = sample_run()
    text = to_json(run)
    d = json.loads(text)
    assert d["machine"]["cpu"] == SAMPLE_MACHINE["cpu"]
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
    assert set(back["cpu"]) == {SAMPLE_MACHINE["cpu"]} and set(back["affinity"]) == {"0-7"} and set(back["cores"]) == {16}
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
    assert meta["run_id"] == run.run_id and meta["machine"] == SAMPLE_MACHINE and meta["config"] == SAMPLE_CONFIG
    assert meta["notes"] == run_notes(run)


def test_markdown_has_every_table_its_notes_and_the_machine_line():
    md = to_markdown(sample_run())
    assert "**run 20261125-101500-ab12cd** · model minilm" in md
    assert "| torch |" in md and "| onnxruntime |" in md and "| tg16 |" in md and "| pp128 |" in md
    assert "int8 (w8a8, 67% of MatMul FLOPs)" in md
    assert "- [2] onnxruntime int8 latency titles b8: VPDPBUSD saturates: [see docs]" in md
    assert "- [3] openvino fp32 latency titles b1: failed: engine exploded | badly" in md
    assert "- tinygrad bf16: skipped (1 cell): no bf16 kernels on this CPU" in md
    assert "- % BW bound: decode t/s" in md  # the decoder table's note
    machine = md.strip().splitlines()[-1]
    assert machine.startswith("machine: Intel(R) Xeon(R) Platinum 8480C · 16 cores (affinity 0-7) · 62.8 GB")
    assert "avx2 fma avx512f amx_int8" in machine and "OMP_NUM_THREADS=4" in machine
    assert "engines torch 1.2.3, onnxruntime 1.2.3" in machine and "llamacpp 0.3" in machine


def test_show_parquet_needs_output_and_writes_it(tmp_path, capsys):
    db = stored_sample_run(tmp_path)
    assert main(["show", "--db", db, "--format", "parquet"]) == 2
    assert "--output FILE.parquet" in capsys.readouterr().err
    out = tmp_path / "r.parquet"
    assert main(["show", "--db", db, "--format", "parquet", "--output", str(out)]) == 0
    assert pd.read_parquet(out)["median_ms"].notna().sum() == 4  # not the failed and the skipped cell
    assert main(["show", "--db", db, "--format", "parquet", "--output", str(tmp_path / "no" / "r.parquet")]) == 2
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["json", "csv", "md"])
def test_show_text_formats_go_to_stdout_or_a_file(tmp_path, capsys, fmt):
    db = stored_sample_run(tmp_path)
    assert main(["show", "--db", db, "--format", fmt]) == 0
    printed = capsys.readouterr().out
    assert main(["show", "--db", db, "--format", fmt, "--output", str(tmp_path / f"r.{fmt}")]) == 0
    assert (tmp_path / f"r.{fmt}").read_text() == printed and "VPDPBUSD" in printed
