"""The DataFrame of a run: one row per result, flat typed columns, NaN (never 0) where a figure is absent."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from helpers.sample_run import SAMPLE_MACHINE, sample_run

from enginebench.store.frame import COLUMNS, to_frame
from enginebench.store.labels import precision_label


def test_one_row_per_result_with_every_column_typed():
    run = sample_run()
    frame = run.to_pandas()
    assert list(frame.columns) == list(COLUMNS) and len(frame) == len(run.results)
    assert {c: str(t) for c, t in frame.dtypes.items()} == {c: str(pd.Series(dtype=t).dtype) for c, t in COLUMNS.items()}
    assert frame["created_at"].iloc[0] == pd.Timestamp("2026-11-25T10:15:00", tz="UTC")
    assert set(frame["cpu"]) == {SAMPLE_MACHINE["cpu"]} and set(frame["affinity"]) == {"0-7"}


def test_figures_and_cis_are_the_results_own():
    run = sample_run()
    frame = to_frame(run).set_index(["engine", "workload"])
    torch = run.results[0]
    row = frame.loc[("torch", "titles")]
    assert row["median_ms"] == torch.latency_ms["median"] and row["p99_ms"] == torch.latency_ms["p99"]
    assert [row["median_ms_ci95_lo"], row["median_ms_ci95_hi"]] == torch.latency_ms["ci95"]
    assert [row["items_per_s_ci95_lo"], row["items_per_s_ci95_hi"]] == torch.throughput["ci95"]
    assert row["processes"] == 2 and row["n_samples"] == 60 and row["verdict_ok"] == torch.verdict["ok"]
    assert row["fidelity_metric"] == "min_cosine" and row["fidelity_value"] == 0.999 and row["fidelity_ok"]
    tg = run.results[-1]
    decode = frame.loc[("llamacpp", "tg16")]
    assert decode["decode_tokens_per_s"] == tg.decode_tokens_per_s["median"]
    assert decode["decode_tokens_per_s_ci95_lo"] == tg.decode_tokens_per_s["ci95"][0]
    assert decode["ttft_ms"] == pytest.approx(51) and math.isnan(decode["prefill_tokens_per_s"])
    assert frame.loc[("llamacpp", "pp128"), "prefill_tokens_per_s"] == run.results[-2].prefill_tokens_per_s["median"]


def test_quantized_share_and_label_for_int8_only():
    run = sample_run()
    frame = to_frame(run).set_index("engine")
    assert frame.loc["onnxruntime", "quantized_share"] == 0.667
    assert frame.loc["onnxruntime", "precision_label"] == precision_label(run.results[1]) == "int8 (w8a8, 67% of MatMul FLOPs)"
    assert math.isnan(frame.loc["torch", "quantized_share"])
    assert frame.loc["onnxruntime", "notes"] == "VPDPBUSD saturates: [see docs]"


def test_failed_and_skipped_rows_have_nan_figures_and_their_reason():
    frame = to_frame(sample_run()).set_index("engine")
    for engine, status in (("openvino", "failed"), ("tinygrad", "skipped")):
        row = frame.loc[engine]
        assert row["status"] == status and row["error"]
        assert math.isnan(row["median_ms"]) and math.isnan(row["items_per_s"]) and pd.isna(row["verdict_ok"])
        assert row["processes"] == 0 and row["n_samples"] == 0


def test_several_runs_stack_and_filter_like_any_frame():
    frame = to_frame([sample_run("a", "2026-11-25T10:00:00+00:00"), sample_run("b", "2026-11-26T10:00:00+00:00")])
    assert len(frame) == 2 * len(sample_run().results)
    ok = frame.query("status == 'ok' and scenario == 'latency'")
    assert sorted(ok.groupby("run_id").size().items()) == [("a", 2), ("b", 2)]
    assert to_frame([]).empty and list(to_frame([]).columns) == list(COLUMNS)


def test_a_served_result_shows_loadgens_own_percentiles_not_the_callbacks_stamps(tmp_path):
    """LoadGen counts each query from its scheduled arrival; enginebench's stamp inside the issue callback (the
    result's samples) can hide delays the system under test caused, so the row takes LoadGen's. The fixture's
    server cell, from the code before LoadGen's figures came first, gets LoadGen percentiles above its stamps."""
    import dataclasses
    import shutil
    from pathlib import Path

    from enginebench.store.database import ResultStore

    db = tmp_path / "s4.db"
    shutil.copy(Path(__file__).parent.parent / "fixtures" / "schema4.db", db)
    with ResultStore(db) as store:
        runs = [store.load_run(run_id) for run_id, _, _ in store.run_ids()]
    run = next(run for run in runs if any(r.scenario == "server" and r.status == "ok" for r in run.results))
    served = next(r for r in run.results if r.scenario == "server" and r.status == "ok")
    stamps = served.latency_ms
    loadgen = {"p50": {"value": stamps["median"] * 1.5, "ci95": [stamps["median"] * 1.4, stamps["median"] * 1.7]},
               "p90": {"value": stamps["median"] * 2, "ci95": None}, "p99": {"value": stamps["p99"] * 1.5, "ci95": None}}
    later = dataclasses.replace(served, serving={**served.serving, "latency_ms": loadgen, "issue_latency_ms": stamps})
    run = dataclasses.replace(run, results=[later])
    row = to_frame(run).iloc[0]
    assert row["p99_ms"] == pytest.approx(loadgen["p99"]["value"]) != stamps["p99"]
    assert row["median_ms"] == pytest.approx(loadgen["p50"]["value"])
    assert (row["median_ms_ci95_lo"], row["median_ms_ci95_hi"]) == pytest.approx(tuple(loadgen["p50"]["ci95"]))
