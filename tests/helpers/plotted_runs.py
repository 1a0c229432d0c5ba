"""An encoder run and a decoder run with known figures, for the charts, the HTML report and the plot command
(their text includes HOSTILE, which must never run or be read as markup)."""

from __future__ import annotations

import functools

import numpy as np

from enginebench.plan import Cell
from enginebench.scenarios.base import Measurement
from enginebench.store.derive import build_result, failed_result
from enginebench.store.model import Result, Run

HOSTILE = "/tmp/<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"


PLOT_MACHINE = {"cpu": "Test CPU <b>", "logical_cores": 4, "physical_cores": 2, "affinity": [0, 1, 2, 3],
           "memory_gb": 16.0, "python": "3.11.7", "os": "Linux", "libraries": {"numpy": "2.0"}}


def plot_measurement(rng, median_ms: float, batch: int, precision: str, workers: int = 1, n: int = 60) -> Measurement:
    samples = [(median_ms * 1e6 * (1 + 0.05 * rng.standard_normal(n))).astype(np.int64) for _ in range(workers)]
    return Measurement(worker_samples=samples, items_per_call=batch, tokens_per_item=12.0, load_s=0.5,
                       peak_rss_mb=200.0, executed_precision=precision, wall_s=n * median_ms / 1e3)


def plot_encoder(rng, engine: str, precision: str, scenario: str, batch: int, workers: int, median_ms: float,
             fidelity: dict, model: str) -> Result:
    cell = Cell(engine, precision, scenario, "titles", batch, workers, 1)
    measured = [(r, plot_measurement(rng, median_ms * (1 + 0.02 * r), batch, precision, workers)) for r in range(2)]
    measured[0][1].fidelity = fidelity
    return build_result(cell, measured, model=model, seq_len=16, engine_version="1.0",
                        engine_options={"note": "<i>option</i>"}, details={})


def encoder_run(model: str = "minilm", run_id: str = "enc1") -> Run:
    """Three engines in the latency scenario at batch 1 and 8, onnxruntime also int8, two engines in the
    throughput scenario at 1, 2 and 4 workers; one failed and one skipped cell."""
    config = {"model": {"name": model, "path": model}, "engine_options": {"torch": {"x": "</pre><script>"}}}
    return Run(run_id, "2026-01-01T00:00:00+00:00", PLOT_MACHINE, config, list(encoder_results(model)))


@functools.cache  # bootstrapping the CIs takes a while; the Results are never changed
def encoder_results(model: str) -> tuple[Result, ...]:
    rng = np.random.default_rng(0)
    reference = {"metric": "min_cosine", "value": 1.0, "ok": True, "threshold": 0.9999, "reference": True}
    close = {"metric": "min_cosine", "value": 0.999999, "ok": True, "threshold": 0.9999}
    int8 = {"metric": "min_cosine", "value": 0.9953, "ok": True, "threshold": 0.99}
    results = []
    for engine, precision, ms, fidelity in [("torch", "fp32", 9.0, reference), ("onnxruntime", "fp32", 4.0, close),
                                            ("onnxruntime", "int8", 2.5, int8), ("openvino", "fp32", 3.0, close)]:
        for batch in (1, 8):
            results.append(plot_encoder(rng, engine, precision, "latency", batch, 1, ms * (1 + batch / 4), fidelity, model))
    for engine, ms in [("onnxruntime", 4.0), ("openvino", 3.0)]:
        for workers in (1, 2, 4):
            results.append(plot_encoder(rng, engine, "fp32", "throughput", 8, workers, ms * 3 * (1 + 0.3 * workers),
                                    close, model))
    results.append(failed_result(Cell("jax", "fp32", "latency", "titles", 1, 1, 1), model=model, seq_len=16,
                                 error=f"could not load {model}: <boom>"))
    results.append(failed_result(Cell("tinygrad", "int8", "latency", "titles", 1, 1, 1), model=model, seq_len=16,
                                 error="int8 is not supported by tinygrad", status="skipped"))
    return tuple(results)


def plot_decoder(engine: str, precision: str, test: str, tokens_per_s: float, top1: float | None) -> Result:
    rate = {"median": tokens_per_s, "mean": tokens_per_s, "ci95": [tokens_per_s * 0.97, tokens_per_s * 1.03],
            "n": 20, "processes": 1}
    ms = {"median": 1e3 / tokens_per_s, "mean": 1e3 / tokens_per_s, "p5": 1.0, "p90": 1.0, "p99": 1.0,
          "stdev": 0.1, "cv": 0.01, "ci95": [0.9, 1.1], "outliers": 0, "n": 20}
    fidelity = ({"metric": "top1_agreement", "reference": True, "ok": True, "value": 1.0} if top1 is None else
                {"metric": "top1_agreement", "value": top1, "ok": top1 > 0.9, "threshold": 0.9,
                 "greedy_agreement": top1, "cache_agreement": 1.0})
    samples = [int(1e9 / tokens_per_s)] * 20
    return Result(engine=engine, model="smollm2-135m", precision=precision, scenario="generate", workload=test,
                  batch_size=1, seq_len=32, workers=1, threads=2, engine_version="0.3", executed_precision=precision,
                  samples=samples, latency_ms=ms, throughput={"items_per_s": 1.0, "tokens_per_s": 1.0, "ci95": None},
                  verdict={"ok": True, "reasons": []}, fidelity=fidelity,
                  prefill_tokens_per_s=rate if test.startswith("pp") else None,
                  decode_tokens_per_s=rate if test.startswith("tg") else None,
                  ttft_ms=ms if test.startswith("tg") else None, itl_ms=ms if test.startswith("tg") else None,
                  repetitions=[{"index": 0, "worker_samples": [samples]}])


def decoder_run(run_id: str = "dec1") -> Run:
    results = [plot_decoder("torch", "fp32", "pp32", 900.0, None), plot_decoder("torch", "fp32", "tg16", 40.0, None),
               plot_decoder("llamacpp", "fp32", "pp32", 1500.0, 0.99), plot_decoder("llamacpp", "fp32", "tg16", 80.0, 0.99),
               plot_decoder("llamacpp", "int8", "pp32", 2100.0, 0.95), plot_decoder("llamacpp", "int8", "tg16", 130.0, 0.95)]
    return Run(run_id, "2026-01-02T00:00:00+00:00", PLOT_MACHINE, {"model": {"name": "smollm2-135m"}}, results)


def two_workload_run() -> Run:
    """The encoder run, and the same cells again on a corpus at 128 tokens with every call 5x slower."""
    from dataclasses import replace

    run = encoder_run()
    longer = [replace(r, workload="corpus", seq_len=128, latency_ms=r.latency_ms and {
        **r.latency_ms, "median": 5 * r.latency_ms["median"]}) for r in run.results]
    return Run(run.run_id, run.created_at, run.machine, run.config, list(run.results) + longer)


def store_runs(db):
    """The encoder and the decoder run in a new database at `db`."""
    from enginebench.store.database import ResultStore

    with ResultStore(db) as store:
        for run in (encoder_run(), decoder_run()):
            store.add_run(Run(run.run_id, run.created_at, run.machine, run.config))
            for i, r in enumerate(run.results):
                store.add_result(run.run_id, r, cell=i)
    return db


def report_cli():
    from enginebench.cli import report
    from enginebench.cli.args import Parser

    parser = Parser(prog="enginebench")
    report.add_parsers(parser.add_subparsers(dest="command", parser_class=Parser))
    return lambda *argv: report.COMMANDS[argv[0]](parser.parse_args(list(argv)))
