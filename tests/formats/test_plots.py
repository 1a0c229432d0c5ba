"""The charts: drawn only where the data supports them, the Pareto front, PNG files from `enginebench plot`.

The synthetic runs built here (no engine measured) serve the HTML report's tests too."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from enginebench.formats.charts import build_charts, pareto_front, write_pngs
from enginebench.plan import Cell
from enginebench.scenarios.base import Measurement
from enginebench.store.derive import build_result, failed_result
from enginebench.store.model import Result, Run

HOSTILE = "/tmp/<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"
MACHINE = {"cpu": "Test CPU <b>", "logical_cores": 4, "physical_cores": 2, "affinity": [0, 1, 2, 3],
           "memory_gb": 16.0, "python": "3.11.7", "os": "Linux", "libraries": {"numpy": "2.0"}}


def _measurement(rng, median_ms: float, batch: int, precision: str, workers: int = 1, n: int = 60) -> Measurement:
    samples = [(median_ms * 1e6 * (1 + 0.05 * rng.standard_normal(n))).astype(np.int64) for _ in range(workers)]
    return Measurement(worker_samples=samples, items_per_call=batch, tokens_per_item=12.0, load_s=0.5,
                       peak_rss_mb=200.0, executed_precision=precision, wall_s=n * median_ms / 1e3)


def _encoder(rng, engine: str, precision: str, scenario: str, batch: int, workers: int, median_ms: float,
             fidelity: dict, model: str) -> Result:
    cell = Cell(engine, precision, scenario, "titles", batch, workers, 1)
    measured = [(r, _measurement(rng, median_ms * (1 + 0.02 * r), batch, precision, workers)) for r in range(2)]
    measured[0][1].fidelity = fidelity
    return build_result(cell, measured, model=model, seq_len=16, engine_version="1.0",
                        engine_options={"note": "<i>option</i>"}, details={})


def encoder_run(model: str = "minilm", run_id: str = "enc1") -> Run:
    """Three engines in the latency scenario at batch 1 and 8, onnxruntime also int8, two engines in the
    throughput scenario at 1, 2 and 4 workers; one failed and one skipped cell."""
    config = {"model": {"name": model, "path": model}, "engine_options": {"torch": {"x": "</pre><script>"}}}
    return Run(run_id, "2026-01-01T00:00:00+00:00", MACHINE, config, list(_encoder_results(model)))


@functools.cache  # bootstrapping the CIs takes a while; the Results are never changed
def _encoder_results(model: str) -> tuple[Result, ...]:
    rng = np.random.default_rng(0)
    reference = {"metric": "min_cosine", "value": 1.0, "ok": True, "threshold": 0.9999, "reference": True}
    close = {"metric": "min_cosine", "value": 0.999999, "ok": True, "threshold": 0.9999}
    int8 = {"metric": "min_cosine", "value": 0.9953, "ok": True, "threshold": 0.99}
    results = []
    for engine, precision, ms, fidelity in [("torch", "fp32", 9.0, reference), ("onnxruntime", "fp32", 4.0, close),
                                            ("onnxruntime", "int8", 2.5, int8), ("openvino", "fp32", 3.0, close)]:
        for batch in (1, 8):
            results.append(_encoder(rng, engine, precision, "latency", batch, 1, ms * (1 + batch / 4), fidelity, model))
    for engine, ms in [("onnxruntime", 4.0), ("openvino", 3.0)]:
        for workers in (1, 2, 4):
            results.append(_encoder(rng, engine, "fp32", "throughput", 8, workers, ms * 3 * (1 + 0.3 * workers),
                                    close, model))
    results.append(failed_result(Cell("jax", "fp32", "latency", "titles", 1, 1, 1), model=model, seq_len=16,
                                 error=f"could not load {model}: <boom>"))
    results.append(failed_result(Cell("tinygrad", "int8", "latency", "titles", 1, 1, 1), model=model, seq_len=16,
                                 error="int8 is not supported by tinygrad", status="skipped"))
    return tuple(results)


def _decoder(engine: str, precision: str, test: str, tokens_per_s: float, top1: float | None) -> Result:
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
    results = [_decoder("torch", "fp32", "pp32", 900.0, None), _decoder("torch", "fp32", "tg16", 40.0, None),
               _decoder("llamacpp", "fp32", "pp32", 1500.0, 0.99), _decoder("llamacpp", "fp32", "tg16", 80.0, 0.99),
               _decoder("llamacpp", "int8", "pp32", 2100.0, 0.95), _decoder("llamacpp", "int8", "tg16", 130.0, 0.95)]
    return Run(run_id, "2026-01-02T00:00:00+00:00", MACHINE, {"model": {"name": "smollm2-135m"}}, results)


def _names(charts) -> list[str]:
    return [c.name for c in charts.drawn]


def test_an_encoder_run_gets_every_encoder_chart():
    charts = build_charts([encoder_run()])
    # a single stream and a pool of workers are different work: fidelity against speed is drawn for each
    assert _names(charts) == ["latency-by-engine", "latency-distribution", "throughput-by-workers",
                              "fidelity-vs-speed-latency-scenario", "fidelity-vs-speed-throughput-scenario"]
    assert charts.not_drawn == []
    latency = charts.drawn[0].figure.axes[0]
    assert latency.get_ylabel() == "median latency per call (ms)"
    assert [t.get_text() for t in latency.get_xticklabels()] == ["torch fp32", "onnxruntime fp32", "onnxruntime int8",
                                                                 "openvino fp32"]
    assert [t.get_text() for t in latency.get_legend().get_texts()] == ["batch 1", "batch 8"]
    # one violin per successful result; the failed and skipped cells have no samples to draw
    distribution = charts.drawn[1].figure.axes[0]
    assert len(distribution.get_yticklabels()) == 14


def two_workload_run() -> Run:
    """The encoder run, and the same cells again on a corpus at 128 tokens with every call 5x slower."""
    from dataclasses import replace

    run = encoder_run()
    longer = [replace(r, workload="corpus", seq_len=128, latency_ms=r.latency_ms and {
        **r.latency_ms, "median": 5 * r.latency_ms["median"]}) for r in run.results]
    return Run(run.run_id, run.created_at, run.machine, run.config, list(run.results) + longer)


def test_each_chart_holds_one_work_alone():
    charts = build_charts([two_workload_run()])
    names = _names(charts)
    assert names == ["latency-by-engine-titles-seq-16", "latency-distribution-titles-seq-16",
                     "throughput-by-workers-titles-seq-16", "fidelity-vs-speed-titles-seq-16-latency-scenario",
                     "fidelity-vs-speed-titles-seq-16-throughput-scenario",
                     "latency-by-engine-corpus-seq-128", "latency-distribution-corpus-seq-128",
                     "throughput-by-workers-corpus-seq-128", "fidelity-vs-speed-corpus-seq-128-latency-scenario",
                     "fidelity-vs-speed-corpus-seq-128-throughput-scenario"]
    by_name = {c.name: c for c in charts.drawn}
    assert by_name["latency-by-engine-corpus-seq-128"].title == "Latency by engine and batch size · corpus (seq 128)"
    for work, factor in (("titles-seq-16", 1), ("corpus-seq-128", 5)):
        bars = by_name[f"latency-by-engine-{work}"].figure.axes[0].patches
        assert len(bars) == 8  # 4 engines x 2 batch sizes: the other work's bars are on its own chart
        torch_b1 = [r for r in encoder_run().results if (r.engine, r.batch_size, r.scenario) == ("torch", 1, "latency")]
        assert bars[0].get_height() == pytest.approx(factor * torch_b1[0].latency_ms["median"])


def test_the_worker_chart_is_left_out_when_one_worker_count_ran():
    run = encoder_run()
    run.results = [r for r in run.results if r.scenario != "throughput" or r.workers == 2]
    charts = build_charts([run])
    assert "throughput-by-workers" not in _names(charts)
    assert any(line.startswith("throughput by workers:") for line in charts.not_drawn)


def test_a_decoder_run_gets_tokens_per_s_by_precision_and_no_encoder_chart():
    charts = build_charts([decoder_run()])
    assert _names(charts) == ["decoder-tokens-per-s", "decoder-fidelity-vs-speed"]
    panels = charts.drawn[0].figure.axes
    assert [ax.get_title() for ax in panels] == ["pp32 (prefill)", "tg16 (decode)"]
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["fp32", "int8"]
    assert panels[0].get_ylabel() == "tokens/s"
    assert charts.not_drawn == []


def test_failed_results_alone_draw_nothing():
    run = encoder_run()
    run.results = [r for r in run.results if r.status != "ok"]
    assert build_charts([run]).drawn == []


def test_the_pareto_front_keeps_what_nothing_beats_on_both_axes():
    points = [(100.0, 0.99), (50.0, 1.0), (80.0, 0.98), (100.0, 0.95), (120.0, 0.90), (10.0, 1.0)]
    assert pareto_front(points) == [4, 0, 1]
    assert pareto_front([(1.0, 1.0)]) == [0]


def test_chart_text_is_escaped_in_svg_and_never_read_as_a_formula():
    run = encoder_run(model=HOSTILE + " $x^2$")
    other = encoder_run(model="minilm", run_id="enc2")  # two models: the model is part of every label
    charts = build_charts([run, other])
    svg = "".join(c.svg() for c in charts.drawn)
    assert "<script>" not in svg and "<img" not in svg
    assert "&lt;script&gt;" in svg
    assert "$x^2$" in svg  # shown as typed, not as mathtext


def test_plot_writes_one_png_per_chart(tmp_path):
    charts = build_charts([encoder_run(), decoder_run()])
    paths = write_pngs(charts, tmp_path / "new" / "folder")
    assert [p.name for p in paths] == [f"{c.name}.png" for c in charts.drawn]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def store_runs(db):
    """The encoder and the decoder run in a new database at `db`."""
    from enginebench.store.database import ResultStore

    with ResultStore(db) as store:
        for run in (encoder_run(), decoder_run()):
            store.add_run(Run(run.run_id, run.created_at, run.machine, run.config))
            for i, r in enumerate(run.results):
                store.add_result(run.run_id, r, cell=i)
    return db


@pytest.fixture
def stored(tmp_path):
    return store_runs(tmp_path / "runs.db")


def _cli():
    from enginebench.cli import report
    from enginebench.cli.args import Parser

    parser = Parser(prog="enginebench")
    report.add_parsers(parser.add_subparsers(dest="command", parser_class=Parser))
    return lambda *argv: report.COMMANDS[argv[0]](parser.parse_args(list(argv)))


def test_the_plot_command_prints_the_paths_it_wrote(stored, tmp_path, capsys):
    out = tmp_path / "plots"
    assert _cli()("plot", "enc1", "--output", str(out), "--db", str(stored)) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / f"{name}.png") for name in
                       ("latency-by-engine", "latency-distribution", "throughput-by-workers",
                        "fidelity-vs-speed-latency-scenario", "fidelity-vs-speed-throughput-scenario")]
    assert all((out / p).exists() for p in printed)


def test_the_plot_command_says_what_is_wrong_in_one_line(stored, tmp_path):
    from enginebench.errors import UsageError

    with pytest.raises(UsageError, match="no run 'nope'"):
        _cli()("plot", "nope", "--output", str(tmp_path), "--db", str(stored))
    with pytest.raises(UsageError, match="no database"):
        _cli()("plot", "--output", str(tmp_path), "--db", str(tmp_path / "missing.db"))
    a_file = tmp_path / "file.png"
    a_file.write_text("")
    with pytest.raises(UsageError, match="is a file"):
        _cli()("plot", "--output", str(a_file), "--db", str(stored))
